"""The environment, read in one place: `IMMUNOSTRAT_*` variables as one typed settings object.

| variable | field | read by |
|---|---|---|
| `IMMUNOSTRAT_DATA_ROOTS` | `data_roots` (`os.pathsep`-separated folders) | `config.data_roots`, `launch` |
| `IMMUNOSTRAT_MODEL_REGISTRY` | `model_registry` | `registry.default_registry_dir` |
| `IMMUNOSTRAT_PSEUDONYM_KEY` | `pseudonym_key` (a `SecretStr`) | `pseudonym.load_key` only |
| `IMMUNOSTRAT_PSEUDONYM_KEY_FILE` | `pseudonym_key_file` | `pseudonym.load_key` |

Choices:
- The environment is read when `read_settings()` is called, never cached at import: a test or a long-lived
  process that changes a variable sees the change, and importing the package reads nothing.
- An empty variable counts as unset (`env_ignore_empty`), as the modules treated it before.
- The pseudonym key is a `SecretStr`: its repr, str and `model_dump` print `**********`. Only
  `immunostrat.sponsor.pseudonym` calls `get_secret_value()`.
- `scoped(...)` replaces the settings for the code it wraps (a `ContextVar`, so other threads and runs are not
  affected). `immunostrat serve` uses it to bind the schedules file's data roots into the runs it starts: those
  roots come from the operator's file, not from the runs' parameters (which anyone who can start a deployment
  may edit) and not from writing `os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["ENV_PREFIX", "Settings", "env_name", "read_settings", "scoped"]

ENV_PREFIX = "IMMUNOSTRAT_"

#: True while `read_settings(environ)` validates an explicit mapping: the process environment is not read then.
_ENVIRONMENT_OFF: ContextVar[bool] = ContextVar("immunostrat_environment_off", default=False)


class Settings(BaseSettings):
    """What the operator's environment configures (each field is read from `IMMUNOSTRAT_<FIELD>`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    data_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        default=(),
        description="Folders every input, output, registry and protocol path of a run must stay inside "
        "(`os.pathsep`-separated in the environment); empty: paths are not confined.",
    )
    model_registry: Path | None = Field(
        default=None, description="Model registry folder used when none is given; default the shipped models."
    )
    pseudonym_key: SecretStr | None = Field(
        default=None, description="The project's pseudonym key itself (wins over every key file)."
    )
    pseudonym_key_file: Path | None = Field(
        default=None, description="Key file used when neither the key nor `publish.key_file` is given."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment only (no .env or secrets files: nothing is read that the operator did not export)."""
        return (init_settings,) if _ENVIRONMENT_OFF.get() else (init_settings, env_settings)

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        """The environment's `a:b` form (blank entries dropped); a list is taken as given."""
        if isinstance(value, str):
            return tuple(p for p in value.split(os.pathsep) if p.strip())
        return value


def env_name(field: str) -> str:
    """The environment variable of a settings field (`data_roots` -> `IMMUNOSTRAT_DATA_ROOTS`)."""
    if field not in Settings.model_fields:
        raise KeyError(f"no setting named {field!r}")
    return ENV_PREFIX + field.upper()


_SCOPED: ContextVar[Settings | None] = ContextVar("immunostrat_settings", default=None)


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings in force: those of an enclosing `scoped(...)`, else read from the environment now.

    Args:
        environ: Read these variables instead of `os.environ` (and ignore any scope), e.g. a schedules file's
            roots checked before they are served.
    """
    if environ is None:
        scoped_settings = _SCOPED.get()
        return scoped_settings if scoped_settings is not None else Settings()
    values = {f: environ[env_name(f)] for f in Settings.model_fields if environ.get(env_name(f))}
    token = _ENVIRONMENT_OFF.set(True)  # the mapping replaces the environment, never mixes with it
    try:
        return Settings.model_validate(values)
    finally:
        _ENVIRONMENT_OFF.reset(token)


@contextmanager
def scoped(settings: Settings) -> Iterator[Settings]:
    """Use `settings` for the code inside the `with` block (this thread or task only)."""
    token = _SCOPED.set(settings)
    try:
        yield settings
    finally:
        _SCOPED.reset(token)
