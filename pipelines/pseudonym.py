"""Keyed pseudonyms for the sponsor dataset: HMAC-SHA256 with a per-project secret key.

The key comes from, in order:

1. the environment variable ``IMMUNOSTRAT_PSEUDONYM_KEY`` (the key itself);
2. a key file given explicitly (``publish.key_file`` in the run configuration, ``--key-file``), or named by
   ``IMMUNOSTRAT_PSEUDONYM_KEY_FILE``; the file must lie outside any git work tree and be readable by its
   owner only (mode 0600);
3. demo only (``publish.demo_key``, ``--demo-key``): a local key file created on first use at
   ``$XDG_CONFIG_HOME/immunostrat/demo-pseudonym.key`` (default ``~/.config/immunostrat/``), mode 0600.

Anything else is a :class:`PseudonymKeyError`: there is never a silent default key. The key is never written
anywhere; outputs record its *key id* (:func:`key_id`), which tells two keys apart without revealing either.

A pseudonym is ``HMAC-SHA256(key, message)`` in lower-case hex, where ``message`` is
``b"immunostrat:v1:" + domain + b"\\x00" + json.dumps(fields)`` (UTF-8, ``ensure_ascii=False``, no spaces
after separators): the JSON array makes the encoding of (study, subject) unambiguous, and the domain
(``subject``, ``site``, ``date-shift``) keeps the three uses independent. The same key and the same
(study_id, subject_id) always give the same pseudonym, so a subject keeps it across runs; only the key holder
can recompute it for a known subject, which is the only way back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

__all__ = [
    "DEMO_KEY_NAME",
    "KEY_ENV",
    "KEY_FILE_ENV",
    "MIN_KEY_CHARS",
    "SITE_HEX",
    "SUBJECT_HEX",
    "PseudonymKey",
    "PseudonymKeyError",
    "date_shifts",
    "demo_key_path",
    "key_id",
    "load_key",
    "pseudonymise",
    "site_pseudonyms",
    "subject_pseudonyms",
]

KEY_ENV = "IMMUNOSTRAT_PSEUDONYM_KEY"
KEY_FILE_ENV = "IMMUNOSTRAT_PSEUDONYM_KEY_FILE"
DEMO_KEY_NAME = "demo-pseudonym.key"
#: A key shorter than this many characters is refused (a generated key has 64 hex digits).
MIN_KEY_CHARS = 32
#: Hex digits kept of a subject pseudonym (128 bits) and of a site pseudonym (40 bits, few sites per study).
SUBJECT_HEX = 32
SITE_HEX = 10
_PREFIX = b"immunostrat:v1:"
_GENERATE = "python3 -c 'import secrets; print(secrets.token_hex(32))'"


class PseudonymKeyError(RuntimeError):
    """No usable pseudonym key: missing, too short, inside a repository, or readable by others."""


@dataclass(frozen=True)
class PseudonymKey:
    """A loaded project key.

    Attributes:
        secret: The key bytes (the UTF-8 of the key text, surrounding whitespace removed). Never printed.
        key_id: First 8 hex digits of ``sha256(b"immunostrat-key-id:" + secret)``; safe to record.
        source: Where it came from: ``environment``, ``key file`` or ``demo key file`` (no path, no key).
        path: The key file, when it came from one.
        created: True when this call created the demo key file.
    """

    secret: bytes = field(repr=False)
    key_id: str
    source: str
    path: Path | None = None
    created: bool = False


def key_id(secret: bytes) -> str:
    """Public id of a key: 8 hex digits of a domain-separated SHA-256 of it (tells keys apart, reveals nothing)."""
    return hashlib.sha256(b"immunostrat-key-id:" + secret).hexdigest()[:8]


def demo_key_path() -> Path:
    """Where the demo key lives: ``$XDG_CONFIG_HOME/immunostrat/demo-pseudonym.key`` (default ``~/.config``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "immunostrat" / DEMO_KEY_NAME


def _from_text(text: str, where: str) -> bytes:
    secret = text.strip()
    if len(secret) < MIN_KEY_CHARS:
        raise PseudonymKeyError(
            f"the pseudonym key from {where} has {len(secret)} characters; at least {MIN_KEY_CHARS} are needed. "
            f"Generate one with: {_GENERATE}"
        )
    return secret.encode("utf-8")


def _enclosing_repository(path: Path) -> Path | None:
    for parent in path.resolve().parents:
        if (parent / ".git").exists():
            return parent
    return None


def _read_key_file(path: Path, source: str) -> PseudonymKey:
    path = path.expanduser()
    if not path.is_file():
        raise PseudonymKeyError(f"pseudonym key file {path} does not exist")
    repo = _enclosing_repository(path)
    if repo is not None:
        raise PseudonymKeyError(
            f"pseudonym key file {path} lies inside the git work tree {repo}; keep the key outside any repository "
            "(e.g. ~/.config/immunostrat/) so that it can never be committed"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if os.name == "posix" and mode & 0o077:
        raise PseudonymKeyError(
            f"pseudonym key file {path} is readable by other users (mode {mode:04o}); "
            f"restrict it with: chmod 600 {path}"
        )
    secret = _from_text(path.read_text(encoding="utf-8"), f"file {path}")
    return PseudonymKey(secret=secret, key_id=key_id(secret), source=source, path=path)


def _create_demo_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32) + "\n")


def load_key(key_file: str | Path | None = None, *, demo: bool = False) -> PseudonymKey:
    """Load the project's pseudonym key (see the module docstring for the order of sources).

    Args:
        key_file: An explicit key file (``publish.key_file`` / ``--key-file``); wins over
            ``IMMUNOSTRAT_PSEUDONYM_KEY_FILE`` but not over ``IMMUNOSTRAT_PSEUDONYM_KEY``.
        demo: Allow the demo key: created on first use at :func:`demo_key_path`, outside the repository.

    Returns:
        The key, its id and where it came from.

    Raises:
        PseudonymKeyError: No key is configured (and ``demo`` is false), or the key is unusable.
    """
    env_key = os.environ.get(KEY_ENV)
    if env_key:
        secret = _from_text(env_key, f"${KEY_ENV}")
        return PseudonymKey(secret=secret, key_id=key_id(secret), source="environment")
    explicit = key_file or os.environ.get(KEY_FILE_ENV)
    if explicit:
        return _read_key_file(Path(explicit), "key file")
    if not demo:
        raise PseudonymKeyError(
            f"no pseudonym key: set ${KEY_ENV} to the project's secret key, or point publish.key_file "
            f"(--key-file, ${KEY_FILE_ENV}) at a file outside the repository holding it (mode 0600). "
            f"Generate a key once per project with: {_GENERATE}. "
            "Keep it safe: it is the only way to link pseudonyms back to subjects, and a new key gives every "
            "subject a new pseudonym. (For the synthetic demo only, --demo-key creates a local key.)"
        )
    path = demo_key_path()
    created = not path.exists()
    if created:
        _create_demo_key(path)
    loaded = _read_key_file(path, "demo key file")
    return PseudonymKey(secret=loaded.secret, key_id=loaded.key_id, source=loaded.source, path=path, created=created)


# --------------------------------------------------------------------------------------------------
# Pseudonyms
# --------------------------------------------------------------------------------------------------


_encode_string = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) uses for a str


def pseudonymise(key: PseudonymKey, domain: str, fields: Sequence[str]) -> str:
    """Full HMAC-SHA256 hex digest of one tuple of fields in one domain (see the module docstring).

    The message is byte-for-byte `json.dumps(list(fields), ensure_ascii=False, separators=(",", ":"))`, built
    from the C string encoder, and the digest uses the one-shot `hmac.digest`: the same pseudonyms, several
    times faster for a million subjects.
    """
    message = _PREFIX + domain.encode("utf-8") + b"\x00"
    message += ("[" + ",".join(_encode_string(f) for f in fields) + "]").encode("utf-8")
    return hmac.digest(key.secret, message, "sha256").hex()


def _per_pair(study: pl.Series, other: pl.Series, dtype: pl.DataType, fn: Callable[[str, str], str | int]) -> pl.Series:
    """Apply `fn(study, other)` once per distinct non-null pair and broadcast back (nulls stay null)."""
    pairs = pl.DataFrame({"a": study.cast(pl.String), "b": other.cast(pl.String)})
    distinct = pairs.drop_nulls().unique(maintain_order=True)
    values = [fn(a, b) for a, b in distinct.iter_rows()]  # HMAC has no polars expression: once per distinct pair
    distinct = distinct.with_columns(pl.Series("out", values, dtype=dtype))
    return pairs.join(distinct, on=["a", "b"], how="left", maintain_order="left")["out"]


def subject_pseudonyms(key: PseudonymKey, study_id: pl.Series, subject_id: pl.Series) -> pl.Series:
    """Pseudonym per row: the first :data:`SUBJECT_HEX` hex digits of the HMAC of (study_id, subject_id)."""
    out = _per_pair(study_id, subject_id, pl.String(), lambda a, b: pseudonymise(key, "subject", [a, b])[:SUBJECT_HEX])
    return out.alias("subject_pseudonym")


def site_pseudonyms(key: PseudonymKey, study_id: pl.Series, site_id: pl.Series) -> pl.Series:
    """``site-`` + the first :data:`SITE_HEX` hex digits of the HMAC of (study_id, site_id); null stays null."""
    out = _per_pair(study_id, site_id, pl.String(), lambda a, b: "site-" + pseudonymise(key, "site", [a, b])[:SITE_HEX])
    return out.alias("site")


def date_shifts(key: PseudonymKey, study_id: pl.Series, subject_id: pl.Series, max_days: int) -> pl.Series:
    """Per-subject date offset in days, uniform on [-max_days, max_days], fixed by the key (Int32)."""
    span = 2 * max_days + 1

    def shift(a: str, b: str) -> int:
        return int(pseudonymise(key, "date-shift", [a, b])[:12], 16) % span - max_days

    return _per_pair(study_id, subject_id, pl.Int32(), shift).alias("date_shift_days")
