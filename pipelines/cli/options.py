"""The command line's one parameter table: each option declared once, as a typed record.

An `Option` names its flag and the field(s) of the command's pydantic model it sets (a dotted path such as
`config.scoring.model` from `StratifyParams`, or `site` from `PublishConfig`). From that one record:

- the argparse option is generated: its help is the field's `Field(description=...)` and its default the field's
  default (added to the help as "Default: ..."), its type, choices and `nargs` follow from the annotation
  (`Literal` -> choices, `list` -> one or more values, `date` -> an ISO date, `bool | None` -> `--x/--no-x`);
- parsing writes the given values back into the model through the same path (`parse_model`); options that were
  not given leave the model's default (or the YAML file's value) alone.

Options that set no model field (a command's own: `--engine`, `validate --report`, a positional RUN_DIR) carry
their help and default in the record itself, still declared once. Sub-models that can also come from a YAML file
(`--config` for `config`, `--training-config` for `training`) are validated on their own first, so an error names
the file and the setting, as before: the file is read first and the flags win over it.

Choices: the record names its flag explicitly (no flag is derived from a field name), so every documented spelling
stays exactly as it was; `tests/test_parameters.py` parses every command line of the docs and the Makefile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from immunostrat.config.run import (
    RunConfig,
    ScoringConfig,
    TrainingConfig,
    read_yaml_mapping,
    validated,
)

__all__ = [
    "ENGINE",
    "INPUTS",
    "PUBLISHING",
    "STREAMING",
    "Command",
    "Group",
    "Option",
    "add_command",
    "field_at",
    "iso_date",
    "options_of",
    "overrides",
    "parse_model",
    "run_config",
]

ModelT = TypeVar("ModelT", bound=BaseModel)


def iso_date(text: str) -> dt.date:
    """An ISO date (YYYY-MM-DD) from the command line."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an ISO date YYYY-MM-DD, got {text!r}") from exc


@dataclass(frozen=True)
class Option:
    """One command-line option (or positional argument) and where its value goes.

    `target`: dotted paths into the command's model (usually one; `train --registry` sets two). Empty: the
    command's own option, read from the namespace under `dest`; then `help` and `default` are its own.
    For a model option, `help` is an optional note after the field's description, and `default` overrides the
    field's default on the command line only (the help shows which applies).
    """

    flag: str
    target: tuple[str, ...] = ()
    help: str | None = None
    default: Any = None
    kind: Literal["value", "true", "false", "either"] = "value"
    metavar: str | None = None
    nargs: str | None = None
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] | None = None
    required: bool = False
    dest: str | None = None


@dataclass(frozen=True)
class Group:
    """Options shown together under a title, or (`exclusive`) of which one may be given (`required`: exactly one)."""

    options: tuple[Option, ...]
    title: str | None = None
    exclusive: bool = False
    required: bool = False


@dataclass(frozen=True)
class Command:
    """A sub-command: its help line, the model its options fill, and its options (in the order `--help` lists)."""

    name: str
    help: str
    model: type[BaseModel] | None
    options: tuple[Option | Group, ...] = field(default_factory=tuple)
    #: False when the command starts from other values than the fields' defaults (publish: the run's settings).
    show_defaults: bool = True


def to(flag: str, *target: str, **kw: Any) -> Option:
    """An option that sets the model field(s) `target`."""
    return Option(flag, tuple(target), **kw)


def own(flag: str, help: str, **kw: Any) -> Option:
    """A command's own option (no model field): its help and default are declared here."""
    return Option(flag, (), help=help, **kw)


# --------------------------------------------------------------------------------------------------
# The shared options (each list is used by several commands)
# --------------------------------------------------------------------------------------------------

CONFIG_FILE = own("--config", "YAML file with run configuration (see docs/operations.md)")

INPUTS: tuple[Option | Group, ...] = (
    to("--labs", "labs", nargs="+", required=True, metavar="FILE"),
    to("--as-of", "config.validation.as_of"),
    to("--alias-file", "config.harmonise.alias_file"),
    to("--ifn-default-method", "config.harmonise.ifn_default_method"),
    CONFIG_FILE,
    Group(
        title="other input formats (see docs/input.md)",
        options=(
            to("--format", "lab_format", dest="lab_format"),
            to("--study-id", "config.readers.study_id"),
            to("--crosswalk", "config.readers.crosswalk"),
            to("--expression", "expression", metavar="MATRIX"),
            to("--samples", "samples"),
            to("--ifn-method", "config.readers.ifn_method"),
            to("--ifn-genes", "config.readers.ifn_genes"),
            to("--ifn-statistic", "config.readers.ifn_statistic"),
            to("--min-controls", "config.readers.min_controls"),
            to("--patients", "patients"),
            to("--reference-date", "config.readers.reference_date_from"),
        ),
    ),
    Group(
        title="follow-up visits (see docs/input.md, Visits)",
        options=(
            to("--visits", "visits", metavar="FILE"),
            to("--descriptor-encoding", "config.visits.descriptor_encoding"),
            to("--events", "events", metavar="FILE"),
        ),
    ),
)

STREAMING: tuple[Option, ...] = (
    to("--streaming", "streaming", kind="either"),
    to("--partition-rows", "partition_rows"),
)

PUBLISHING: tuple[Option, ...] = (
    to("--key-file", "config.publish.key_file"),
    to("--demo-key", "config.publish.demo_key", kind="true"),
    to("--no-publish", "config.publish.enabled", kind="false"),
)

PARTITIONS: tuple[Option, ...] = (
    to("--partitions", "partitions"),
    to("--dask-address", "dask_address"),
)

ENGINE = own(
    "--engine", "run as a Prefect flow (default) or directly, without Prefect", choices=("prefect", "local"),
    default="prefect",
)  # fmt: skip

#: Sub-models that may come from a YAML file: model key -> (the option naming the file, its model, what it is).
YAML_SOURCES: dict[str, tuple[str, type[BaseModel], str]] = {
    "config": ("config", RunConfig, "config file"),
    "training": ("training_config", TrainingConfig, "training config"),
}

#: The alias `stratify` scores with by default, and that `models promote` points by default.
DEFAULT_ALIAS: str = ScoringConfig.model_fields["model"].default


# --------------------------------------------------------------------------------------------------
# From the models to argparse
# --------------------------------------------------------------------------------------------------


def field_at(model: type[BaseModel], path: str) -> FieldInfo:
    """The pydantic field at a dotted path (`config.scoring.model`), through nested models."""
    current: Any = model
    info: FieldInfo | None = None
    for name in path.split("."):
        fields = getattr(current, "model_fields", None)
        if not fields or name not in fields:
            raise KeyError(f"{model.__name__} has no field {path!r} (at {name!r})")
        info = fields[name]
        current = _plain(info.annotation)
    assert info is not None
    return info


def _plain(annotation: Any) -> Any:
    """The annotation without `None` (`Path | None` -> `Path`)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _default_of(info: FieldInfo) -> Any:
    return None if info.default is PydanticUndefined else info.default


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _model_argument(option: Option, model: type[BaseModel], show_defaults: bool = True) -> dict[str, Any]:
    """argparse keywords of an option that sets a model field: help, type, choices and nargs from the field."""
    info = field_at(model, option.target[0])
    kw: dict[str, Any] = {"default": argparse.SUPPRESS}  # not given: the model's default (or its YAML) stays
    kw["help"] = _model_help(option, info, show_defaults)
    if option.kind == "true":
        return {**kw, "action": "store_const", "const": True}
    if option.kind == "false":
        return {**kw, "action": "store_const", "const": False}
    if option.kind == "either":
        return {**kw, "action": argparse.BooleanOptionalAction}
    if option.default is not None:
        kw["default"] = option.default
    return {**kw, **_value_form(option, _plain(info.annotation))}


def _model_help(option: Option, info: FieldInfo, show_defaults: bool) -> str:
    """The help of an option that sets a model field: the field's description, the option's own note, the
    default, and the key of the same setting in a --config file."""
    text = (info.description or "").replace("%", "%%")  # argparse formats help with %
    if option.kind == "false":  # the description says what the field turns on; the flag turns it off
        text = f"Turns off: {text[:1].lower()}{text[1:]}"
    if option.help:
        text += f" {option.help}"
    default = option.default if option.default is not None else _default_of(info)
    if show_defaults and option.kind == "value" and default not in (None, (), [], {}) and not isinstance(default, bool):
        text += f" Default: {_shown(default)}."
    in_file = [p.removeprefix("config.") for p in option.target if p.startswith("config.")]
    if in_file:  # the same setting's key in a --config file
        text += f" [config: {in_file[0]}]"
    return text


def _value_form(option: Option, annotation: Any) -> dict[str, Any]:
    """argparse's choices, nargs or type for a value option, from the field's annotation."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {"choices": list(typing.get_args(annotation))}
    if origin in (list, tuple):
        return {"nargs": "+"}
    if annotation in (int, float):
        return {"type": annotation}
    if annotation is dt.date:
        return {"type": iso_date}
    if annotation not in (str, Path):
        raise TypeError(f"option {option.flag}: no command-line form for {option.target[0]} ({annotation})")
    return {}


def _own_argument(option: Option) -> dict[str, Any]:
    kw: dict[str, Any] = {"help": option.help}
    if option.kind in ("true", "false"):  # default None unless given: "not given" stays visible
        kw.update(action="store_const", const=option.kind == "true")
    if option.default is not None:
        kw["default"] = option.default
    if option.type is not None:
        kw["type"] = option.type
    if option.choices is not None:
        kw["choices"] = list(option.choices)
    return kw


def _add(parser: Any, option: Option, model: type[BaseModel] | None, show_defaults: bool) -> None:
    if option.target:
        if model is None:
            raise TypeError(f"option {option.flag} sets {option.target} but its command has no model")
        kw = _model_argument(option, model, show_defaults)
    else:
        kw = _own_argument(option)
    for key in ("metavar", "nargs", "choices"):
        if getattr(option, key) is not None:
            kw[key] = list(option.choices or ()) if key == "choices" else getattr(option, key)
    if not option.flag.startswith("-"):  # a positional argument: argparse takes neither dest nor required
        parser.add_argument(option.flag, **kw)
        return
    if option.required:
        kw["required"] = True
    if option.dest:
        kw["dest"] = option.dest
    parser.add_argument(option.flag, **kw)


def add_options(
    parser: argparse.ArgumentParser,
    options: Iterable[Option | Group],
    model: type[BaseModel] | None,
    *,
    show_defaults: bool = True,
) -> None:
    """Add `options` (and their groups) to `parser`, their help and defaults from `model`'s fields."""
    for item in options:
        if isinstance(item, Option):
            _add(parser, item, model, show_defaults)
            continue
        group: Any = (
            parser.add_mutually_exclusive_group(required=item.required)
            if item.exclusive
            else parser.add_argument_group(item.title)
        )
        for option in item.options:
            _add(group, option, model, show_defaults)


def add_command(subparsers: Any, command: Command, *, with_options: bool = True) -> argparse.ArgumentParser:
    """A sub-command's parser, generated from its table entry (`with_options=False`: its name and help only, for a
    command that is listed but not run)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(command.name, help=command.help)
    if not with_options:
        return parser
    add_options(parser, command.options, command.model, show_defaults=command.show_defaults)
    parser.set_defaults(_options=command)
    return parser


# --------------------------------------------------------------------------------------------------
# From argparse back to the models
# --------------------------------------------------------------------------------------------------


def options_of(command: Command | Iterable[Option | Group]) -> list[Option]:
    """Every option of a command (or option list), groups flattened."""
    items = command.options if isinstance(command, Command) else command
    flat: list[Option] = []
    for item in items:
        flat.extend(item.options if isinstance(item, Group) else (item,))
    return flat


def _dest(option: Option) -> str:
    return option.dest or option.flag.lstrip("-").replace("-", "_")


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for name in parents:
        data = data.setdefault(name, {})
    data[leaf] = value


def overrides(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, Any]:
    """The values given on the command line, nested by their target paths (options not given are absent)."""
    data: dict[str, Any] = {}
    for option in options:
        if option.target and hasattr(args, _dest(option)):
            for path in option.target:
                _put(data, path, getattr(args, _dest(option)))
    return data


def _merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = _merged(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return out


def parse_model(
    model: type[ModelT],
    args: argparse.Namespace,
    options: Command | Iterable[Option | Group] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
) -> ModelT:
    """The command's model: `base`, then any YAML file of a sub-model, then the flags given.

    Raises:
        SettingsError: a YAML file cannot be read or its sub-model (with the flags on top) does not validate.
        pydantic.ValidationError: a flag's value is outside its field's range (`immunostrat.cli.main.main` reports it).
    """
    listed = options_of(options if options is not None else args._options)
    given = overrides(args, listed)
    data = dict(base or {})
    for key, (dest, sub_model, what) in YAML_SOURCES.items():
        if key not in model.model_fields:
            continue
        path = getattr(args, dest, None)
        loaded = read_yaml_mapping(path, what) if path else {}
        sub = _merged(_merged(loaded, data.get(key) or {}), given.pop(key, {}))
        data[key] = validated(sub_model, sub, f"{what} {path}" if path else "settings")
    return model.model_validate(_merged(data, given))


class _ConfigOnly(BaseModel):
    """The run configuration alone (what `run_config` parses)."""

    config: RunConfig = Field(default_factory=RunConfig, description="Run configuration.")


def run_config(args: argparse.Namespace, options: Command | Iterable[Option | Group] | None = None) -> RunConfig:
    """The RunConfig of a parsed command: the `--config` file, with the flags given on top."""
    return parse_model(_ConfigOnly, args, options).config
