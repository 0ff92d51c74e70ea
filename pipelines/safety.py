"""Safety helpers: one run per output folder, paths kept inside data roots, safe CSV exports, leak scanning.

Everything here is small and dependency-light so that the pipeline, the CLI and the tests can share it:

- `run_lock`: an exclusive, non-blocking `flock` on ``OUT/.immunostrat.lock``; a second run on the same output
  folder fails at once with a message naming the holder (pid, host, start time, run id). The kernel releases
  the lock when its holder dies, so a killed run never leaves a stale lock. While the lock is held,
  `RunLock.remove_stale_staging` removes what killed runs left behind (hidden ``.<run_id>.partial`` folders
  and ``.tmp-*`` files).
- `confine` (used by `immunostrat.pipeline.launch.check_data_roots`): a path from a config or schedules file (or from a
  Prefect UI parameter) must resolve, symlinks followed, inside one of the configured data roots.
- `csv_safe`: neutralise spreadsheet formulas (cells starting with ``=``, ``+``, ``-``, ``@``, tab or CR get a
  leading single quote) before a frame is written as CSV for people to open.
- `scan_for_identifiers`: a byte-level search of files (Parquet decoded too, zip and gzip opened) for raw
  identifiers, names and birth dates that must not reach sponsor outputs, reports or Prefect artifacts.
- Diagnostics for unreadable inputs: `text_encoding_problem`, `csv_structure_problem` and `header_hint` say
  where (byte, line, field) a file stops being readable, so an `InputError` can name it.
- `zip_archive_problem`: refuse zip archives (model files) whose members would decompress to too much data.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import errno
import fcntl
import gzip
import hashlib
import html
import io
import json
import os
import re
import shutil
import socket
import time
import zipfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import polars as pl

from immunostrat.config.settings import read_settings
from immunostrat.errors import UserError

if TYPE_CHECKING:
    pass

__all__ = [
    "DATA_ROOTS_ENV",
    "LOCK_NAME",
    "Finding",
    "PathEscapeError",
    "RunLock",
    "RunLockedError",
    "confine",
    "csv_safe",
    "csv_safe_text",
    "csv_structure_problem",
    "data_roots_from_env",
    "date_variants",
    "fsync_dir",
    "header_hint",
    "is_hidden_leftover",
    "run_lock",
    "scan_for_identifiers",
    "text_encoding_problem",
    "zip_archive_problem",
]

LOCK_NAME = ".immunostrat.lock"
DATA_ROOTS_ENV = "IMMUNOSTRAT_DATA_ROOTS"

# What `immunostrat.pipeline.engine.runfolder.staged_run_folder` (a hidden staging folder per run id) and
# `immunostrat.ingest.io.atomic_path` (hidden temp files, e.g. of OUT/sponsor-manifest.json) leave behind when a process
# is killed.
_PARTIAL_RE = re.compile(r"^\.\d{8}T\d{6}Z-[0-9a-f]+\.partial$")
_TMP_RE = re.compile(r"^\.tmp-")
#: A top-level temp file younger than this may belong to a live writer that does not take the run lock
#: (`immunostrat publish` updating OUT/sponsor-manifest.json), so it is left alone.
TMP_MIN_AGE_SECONDS = 3600.0


# --------------------------------------------------------------------------------------------------
# One run per output folder
# --------------------------------------------------------------------------------------------------


class RunLockedError(UserError, RuntimeError):
    """Another immunostrat run holds the output folder's lock."""

    def __init__(self, out_dir: Path, holder: Mapping[str, Any] | None) -> None:
        self.out_dir = out_dir
        self.holder = dict(holder or {})
        if self.holder:
            who = (
                f"pid {self.holder.get('pid', '?')} on host {self.holder.get('host', '?')}, "
                f"started {self.holder.get('started_at', '?')}"
            )
            if self.holder.get("run_id"):
                who += f", run {self.holder['run_id']}"
        else:
            who = "a process that has not recorded its details yet"
        super().__init__(
            f"output folder {out_dir} is in use by another immunostrat run ({who}); runs on one output folder "
            f"never interleave. Wait for that run to finish, or write to another --out. "
            f"(lock file: {out_dir / LOCK_NAME})"
        )


@dataclass
class RunLock:
    """A held output-folder lock (see `run_lock`)."""

    out_dir: Path
    path: Path
    holder: dict[str, Any]
    _fd: int = field(repr=False)
    _held: bool = field(default=True, repr=False)

    def remove_stale_staging(self, tmp_min_age: float = TMP_MIN_AGE_SECONDS) -> list[Path]:
        """Remove what killed runs left in the output folder: hidden ``.<run_id>.partial`` folders, ``.tmp-*`` files.

        Safe only under the lock (no other stratify run can be writing), which is why it is a method of the lock.
        Staging folders go whatever their age; top-level ``.tmp-*`` files only when older than ``tmp_min_age``
        seconds, since a publish (which does not take this lock) may be writing one right now. Nothing inside
        finished run folders is touched.

        Args:
            tmp_min_age: Minimum age (by modification time) of a top-level temp file to remove.

        Returns:
            The paths removed (for the run's log / run.json).

        Raises:
            RuntimeError: the lock has already been released.
        """
        if not self._held:
            raise RuntimeError(f"the lock on {self.out_dir} was released; stale staging is only removed under it")
        removed: list[Path] = []
        for entry in sorted(self.out_dir.iterdir()):
            if entry.name == LOCK_NAME:
                continue
            if _PARTIAL_RE.match(entry.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
            elif _TMP_RE.match(entry.name) and (entry.is_file() or entry.is_symlink()):
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - entry.lstat().st_mtime >= tmp_min_age:
                        entry.unlink()
                        removed.append(entry)
        return removed


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 65536, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike[str], *, run_id: str | None = None) -> Iterator[RunLock]:
    """Hold the output folder's lock for the body of the ``with``; fail at once if another run holds it.

    The lock is an exclusive, non-blocking ``flock`` on ``OUT/.immunostrat.lock`` (created if missing, never
    deleted: deleting a lock file lets two processes lock two different files). The holder's pid, host, start
    time and run id are written into the file so that a refused run can say who is in the way. The kernel drops
    the lock when the holder's file descriptor closes, including when the process is killed.

    ``flock`` locks an open file description: two `run_lock` calls on the same folder conflict even within one
    process, and a child process forked (not exec'd) while the lock is held keeps it held until it exits. On
    network file systems ``flock`` is only as good as the server's lock support (NFSv4: yes; some SMB/FUSE
    mounts: no, in which case the lock cannot be taken and this raises `OSError`).

    Args:
        out_dir: The run output folder (created if missing).
        run_id: Recorded in the lock file for the message another run gets.

    Yields:
        The held lock; call `RunLock.remove_stale_staging` to clean up after killed runs.

    Raises:
        RunLockedError: Another process holds the lock (never waits).
        OSError: The lock file cannot be created or the file system does not support locks.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    cloexec = getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o666)  # the umask decides who may share the folder
        writable = True
    except PermissionError:  # created by a colleague without group write: lock it read-only, record nothing
        fd = os.open(path, os.O_RDONLY | cloexec)
        writable = False
    lock: RunLock | None = None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(out, _read_holder(fd)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise OSError(
                    exc.errno, f"cannot lock {path}: the file system does not support locks ({exc.strerror})"
                ) from exc
            raise
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "run_id": run_id,
        }
        if writable:
            payload = json.dumps(holder, sort_keys=True).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, payload, 0)
            os.fsync(fd)
        lock = RunLock(out_dir=out, path=path, holder=holder, _fd=fd)
        yield lock
    finally:
        if lock is not None:
            lock._held = False
            if writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # still ours: say nobody holds it
        os.close(fd)  # releases the flock


def is_hidden_leftover(name: str) -> bool:
    """True for names a killed run may leave in an output folder (hidden staging folders and temp files)."""
    return bool(_PARTIAL_RE.match(name) or _TMP_RE.match(name)) or name == LOCK_NAME


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that renames into it survive a power cut (not only a killed process)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Paths confined to data roots
# --------------------------------------------------------------------------------------------------


class PathEscapeError(UserError, ValueError):
    """A configured path resolves outside every configured data root (exit 2, before any compute)."""


def data_roots_from_env(env: Mapping[str, str] | None = None) -> list[Path]:
    """Data roots from ``$IMMUNOSTRAT_DATA_ROOTS`` (``os.pathsep``-separated; `immunostrat.config.settings`, which a
    ``serve``d run scopes to its schedules file's roots), or from ``env`` when given; empty when unset.

    The roots must come from the operator's environment (or the schedules file, read at ``serve`` time), never
    from the run's own parameters: anyone who can start a deployment from the Prefect UI can change those.
    """
    return list(read_settings(env).data_roots)


def confine(path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]], *, what: str = "path") -> Path:
    """Resolve ``path`` (symlinks followed, ``..`` collapsed) and require it inside one of ``roots``.

    Relative paths resolve against the current directory. The path need not exist yet (an output folder).
    Use the returned path for the actual open: it is what was checked. A symlink swapped in after this check
    is not caught (time-of-check to time-of-use); keep data roots writable only by the people who run studies.

    Args:
        path: The path as configured.
        roots: Allowed roots (resolved the same way).
        what: What the path is, for the message (``labs``, ``out``, ``harmonise.alias_file``, ...).

    Returns:
        The resolved path.

    Raises:
        PathEscapeError: No roots are configured, the path cannot be resolved, or it lies outside every root.
    """
    if not roots:
        raise PathEscapeError(f"{what} {os.fspath(path)!r}: no data roots are configured, so no path is allowed")
    try:
        target = Path(path).resolve(strict=False)
        resolved_roots = [Path(r).resolve(strict=False) for r in roots]
    except (OSError, RuntimeError, ValueError) as exc:  # NUL bytes, symlink loops, names too long
        raise PathEscapeError(f"{what} {os.fspath(path)!r} cannot be resolved: {exc}") from exc
    for root in resolved_roots:
        if target == root or target.is_relative_to(root):
            return target
    shown = ", ".join(str(r) for r in resolved_roots)
    via = "" if str(target) == os.fspath(path) else f" (it resolves to {target})"
    raise PathEscapeError(f"{what} {os.fspath(path)!r} is outside the configured data roots{via}; allowed: {shown}")


# --------------------------------------------------------------------------------------------------
# CSV exports people open in a spreadsheet
# --------------------------------------------------------------------------------------------------

# OWASP "CSV injection": a cell starting with one of these may be run as a formula by Excel/LibreOffice/Sheets.
_FORMULA_START = r"^(?:[=+\-@\t\r]|[ \n]+[=+\-@])"
_PLAIN_NUMBER = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$"


def csv_safe_text(value: str) -> str:
    """One cell made safe for a spreadsheet: a formula-like cell gets a leading single quote.

    Plain numbers (``-5``, ``+1.5e3``) are left as they are: a spreadsheet reads them as numbers, never as
    formulas.
    """
    if re.match(_FORMULA_START, value) and not re.match(_PLAIN_NUMBER, value):
        return "'" + value
    return value


def _safe_expr(expr: pl.Expr) -> pl.Expr:
    risky = expr.str.contains(_FORMULA_START) & ~expr.str.contains(_PLAIN_NUMBER)
    return pl.when(risky.fill_null(False)).then(pl.lit("'") + expr).otherwise(expr)


def csv_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Neutralise spreadsheet formulas in every text cell and column name before writing ``frame`` as CSV.

    Text cells (String, Categorical and Enum columns, and the elements of List[String] columns) that start with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or spaces then ``=+-@``) get a leading ``'``, which
    spreadsheets show as text and do not evaluate. Plain numbers stay untouched; other column types are left
    as they are. Column names get the same treatment. The CSV writer's quoting takes care of commas, quotes
    and newlines inside cells.

    This is for files people open (validate reports, sponsor CSV exports). Never apply it to data that is read
    back by a program: the quote changes the value.
    """
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            exprs.append(_safe_expr(pl.col(name)).alias(name))
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            exprs.append(_safe_expr(pl.col(name).cast(pl.String)).alias(name))
        elif isinstance(dtype, pl.List) and dtype.inner == pl.String:
            exprs.append(pl.col(name).list.eval(_safe_expr(pl.element())).alias(name))
    safe = frame.with_columns(exprs) if exprs else frame
    renamed = {c: csv_safe_text(c) for c in safe.columns if csv_safe_text(c) != c}
    return safe.rename(renamed) if renamed else safe


# --------------------------------------------------------------------------------------------------
# Identifier scanning
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """An identifier found in a file, or a file that could not be scanned completely (``identifier`` None).

    ``str()`` masks the identifier (two characters and a hash), so findings can go to logs and CI output.
    """

    path: str
    identifier: str | None
    location: str

    def __str__(self) -> str:
        if self.identifier is None:
            return f"{self.path}: not fully scanned: {self.location}"
        digest = hashlib.sha256(self.identifier.encode("utf-8")).hexdigest()[:8]
        return f"{self.path}: identifier {self.identifier[:2]}… (sha256 {digest}) at {self.location}"


def date_variants(day: dt.date) -> list[str]:
    """Common spellings of a date (birth dates): ISO, compact, European and US, with / . - separators."""
    d, m, y = f"{day.day:02d}", f"{day.month:02d}", f"{day.year:04d}"
    out = [day.isoformat(), f"{y}{m}{d}", f"{y}/{m}/{d}"]
    out += [f"{d}{sep}{m}{sep}{y}" for sep in "/.-"] + [f"{m}/{d}/{y}"]
    return list(dict.fromkeys(out))


def _variants(identifier: str, ignore_case: bool) -> list[bytes]:
    texts = {identifier, html.escape(identifier, quote=True), json.dumps(identifier)[1:-1], quote(identifier)}
    out: list[bytes] = []
    for text in texts:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            try:
                raw = text.encode(encoding)
            except UnicodeEncodeError:
                continue
            out.append(raw.lower() if ignore_case else raw)
    return list(dict.fromkeys(out))


def _column_strings(column: Any) -> list[str | None]:
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        values: list[str | None] = pc.cast(column, pa.string()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        values = [None if v is None else json.dumps(v, default=str, ensure_ascii=False) for v in column.to_pylist()]
    return values


@dataclass
class _Scanner:
    """One scan: what to look for, and the findings so far."""

    identifiers: Sequence[str]
    ignore_case: bool
    findings: list[Finding] = field(default_factory=list)
    needles: dict[str, list[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.needles = {i: _variants(i, self.ignore_case) for i in self.identifiers}

    def _norm(self, text: str) -> str:
        return text.lower() if self.ignore_case else text

    def blob(self, data: bytes, path: str, where: str = "", depth: int = 0) -> None:
        """Search raw bytes, then look inside them if they are Parquet, zip or gzip."""
        hay = data.lower() if self.ignore_case else data
        for identifier, variants in self.needles.items():
            for variant in variants:
                pos = hay.find(variant)
                if pos >= 0:
                    self.findings.append(Finding(path, identifier, f"{where}byte {pos}"))
                    break
        if depth > 3:
            self.findings.append(Finding(path, None, f"{where}archives nested too deeply to scan"))
        elif data[:4] == b"PAR1" and data[-4:] == b"PAR1":
            self.parquet(data, path, where)
        elif data[:2] == b"PK":
            problem = zip_archive_problem(data)
            if problem:
                self.findings.append(Finding(path, None, f"{where}{problem}"))
                return
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    self.blob(archive.read(info), path, f"{where}zip member {info.filename!r} ", depth + 1)
        elif data[:2] == b"\x1f\x8b":
            try:
                with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
                    member = handle.read(_MAX_UNCOMPRESSED + 1)
            except (OSError, EOFError) as exc:
                self.findings.append(Finding(path, None, f"{where}cannot decompress gzip ({exc})"))
                return
            if len(member) > _MAX_UNCOMPRESSED:
                self.findings.append(Finding(path, None, f"{where}gzip holds more than {_MAX_UNCOMPRESSED} bytes"))
                return
            self.blob(member, path, f"{where}gzip ", depth + 1)

    def _text(self, blob: str, path: str, where: str, starts: list[int] | None = None) -> None:
        hay = self._norm(blob)
        for identifier in self.identifiers:
            pos = hay.find(self._norm(identifier))
            if pos >= 0:
                # bisect_right over the cells' start offsets gives the 1-based row within the row group.
                row = f" row {bisect_right(starts, pos)}" if starts is not None else ""
                self.findings.append(Finding(path, identifier, f"{where}{row}"))

    def parquet(self, data: bytes, path: str, where: str) -> None:
        """Decode a Parquet file: key-value metadata, column names, every cell as text."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(io.BytesIO(data))
            for key, value in (pf.schema_arrow.metadata or {}).items():
                name = key.decode("utf-8", "replace")
                text = name + "\x1f" + value.decode("utf-8", "replace")
                self._text(text, path, f"{where}Parquet key-value metadata {name!r}")
            self._text("\x1f".join(pf.schema_arrow.names), path, f"{where}Parquet column names")
            for group in range(pf.num_row_groups):
                table = pf.read_row_group(group)
                for name in table.column_names:
                    starts: list[int] = []
                    parts: list[str] = []
                    pos = 0
                    for value in _column_strings(table.column(name)):
                        cell = "" if value is None else value
                        starts.append(pos)
                        parts.append(cell)
                        pos += len(cell) + 1
                    self._text("\x1f".join(parts), path, f"{where}Parquet row group {group}, column {name!r}", starts)
        except (pa.ArrowException, OSError, ValueError) as exc:
            self.findings.append(Finding(path, None, f"{where}cannot decode Parquet ({type(exc).__name__}: {exc})"))


def _files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for p in paths:
        path = Path(p)
        if path.is_dir():
            yield from sorted(q for q in path.rglob("*") if q.is_file())
        else:
            yield path


def scan_for_identifiers(
    paths: Iterable[str | os.PathLike[str]],
    identifiers: Iterable[str],
    *,
    ignore_case: bool = True,
    min_length: int = 4,
) -> list[Finding]:
    """Search files for raw identifiers, names or birth dates that must not be there.

    Every file (folders are walked, hidden files included) is searched byte by byte for each identifier as
    UTF-8 and UTF-16, and in its HTML-escaped, JSON-escaped and URL-encoded spellings. Parquet files are also
    decoded (compressed pages hide text from a byte search): every column of every row group as text, column
    names and key-value metadata. Zip archives (xlsx, docx) and gzip files are opened and their members
    searched the same way. A file that cannot be read or decoded completely is reported as a finding with
    ``identifier`` None, so a scan never passes by not looking.

    Args:
        paths: Files or folders.
        identifiers: Values to look for (subject ids, names, birth dates; see `date_variants`).
        ignore_case: Match ASCII letters case-insensitively (default; sponsor outputs may upper-case ids).
        min_length: Refuse identifiers shorter than this (they match everywhere by chance).

    Returns:
        Findings, in file order; empty when nothing was found and every file was fully scanned.

    Raises:
        ValueError: An identifier is shorter than ``min_length``.
    """
    wanted = sorted({i for i in identifiers if i is not None and i.strip()})
    short = [i for i in wanted if len(i) < min_length]
    if short:
        raise ValueError(
            f"{len(short)} identifier(s) shorter than {min_length} characters cannot be scanned for reliably "
            "(they match by chance); pass min_length to override"
        )
    scanner = _Scanner(wanted, ignore_case)
    for path in _files(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            scanner.findings.append(Finding(str(path), None, f"cannot read ({exc.strerror or exc})"))
            continue
        scanner.blob(data, str(path))
    return scanner.findings


# --------------------------------------------------------------------------------------------------
# Zip archives (model files)
# --------------------------------------------------------------------------------------------------

_MAX_UNCOMPRESSED = 256 * 1024 * 1024
_MAX_MEMBERS = 10_000
_MAX_RATIO = 200


def zip_archive_problem(
    data: bytes,
    *,
    max_uncompressed: int = _MAX_UNCOMPRESSED,
    max_members: int = _MAX_MEMBERS,
    max_ratio: float = _MAX_RATIO,
) -> str | None:
    """Why a zip archive should not be opened (a zip bomb, or not a zip at all), or None when it looks sane.

    Uses the sizes the archive declares; Python's `zipfile` never decompresses a member past its declared
    size, so a limit on declared sizes bounds memory for anything read with `zipfile` (skops does).

    Args:
        data: The archive's bytes.
        max_uncompressed: Largest total declared uncompressed size.
        max_members: Most members.
        max_ratio: Largest uncompressed/compressed ratio of any member larger than 1 MiB.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        return f"not a readable zip archive ({exc})"
    if len(infos) > max_members:
        return f"zip archive has {len(infos)} members (limit {max_members})"
    total = sum(i.file_size for i in infos)
    if total > max_uncompressed:
        return f"zip archive would decompress to {total} bytes (limit {max_uncompressed}); refusing a possible zip bomb"
    for info in infos:
        if info.file_size > 1 << 20 and info.file_size > max_ratio * max(info.compress_size, 1):
            return (
                f"zip member {info.filename!r} would expand {info.file_size / max(info.compress_size, 1):.0f}-fold "
                f"(limit {max_ratio:.0f}); refusing a possible zip bomb"
            )
    return None


# --------------------------------------------------------------------------------------------------
# Where an input file stops being readable
# --------------------------------------------------------------------------------------------------

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)
_REEXPORT = "re-export it as UTF-8 (in Excel: 'CSV UTF-8'); immunostrat reads UTF-8 only and never guesses an encoding"


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def text_encoding_problem(path: str | os.PathLike[str], max_bytes: int | None = None) -> str | None:
    """Why a text (CSV) file is not UTF-8, naming the byte offset, line and column; None when it is UTF-8.

    Detects UTF-16/UTF-32 (by byte-order mark, or by NUL bytes in the first line) and the first byte sequence
    that is not valid UTF-8 (Latin-1, Windows-1252, Shift-JIS, damaged multi-byte characters).

    Args:
        path: The file.
        max_bytes: Look at this many bytes only (a character cut at the limit is not a problem). With
            ``1 << 16`` it is cheap enough to run before every CSV read, which catches UTF-16 files and a
            non-UTF-8 header (polars decodes the header lossily); without it the whole file is read, which is
            for the error path.
    """
    with open(path, "rb") as handle:
        data = handle.read() if max_bytes is None else handle.read(max_bytes)
    complete = max_bytes is None or len(data) < max_bytes
    for bom, name in _BOMS:
        if data.startswith(bom):
            return f"the file is {name} text (byte-order mark {bom.hex(' ').upper()}); {_REEXPORT}"
    first_line = data[: data.find(b"\n") if b"\n" in data[:4096] else 4096]
    if first_line.count(b"\x00") * 4 >= len(first_line) > 0:
        return f"the file looks like UTF-16 or UTF-32 text without a byte-order mark (NUL bytes in line 1); {_REEXPORT}"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=complete)
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        bad = data[exc.start : exc.end].hex(" ").upper()
        return (
            f"invalid utf-8 sequence at byte {exc.start} (line {line}, column {col}: bytes {bad}), typical of Latin-1, "
            f"Windows-1252 or Shift-JIS text or a damaged file; {_REEXPORT}"
        )
    return None


def csv_structure_problem(path: str | os.PathLike[str], delimiter: str = ",", quote_char: str = '"') -> str | None:
    """The first RFC 4180 structure problem of a CSV file, naming its line and field; None when there is none.

    Reports an unterminated quoted field (with the line it starts on), a quote inside an unquoted field, text
    after a closing quote, and a record with more or fewer fields than the header. Lines count from 1 (the
    header); a quoted field may span lines; blank lines are skipped. Undecodable bytes are replaced (see
    `text_encoding_problem`). Call it on the error path: it walks the file character by character.
    """
    text = Path(path).read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    line = record_line = quote_line = field_no = 1
    header_fields: int | None = None
    state = "start"  # start of a field | unquoted | quoted | quote (just read a quote inside a quoted field)
    empty = True  # nothing read yet on this record: a blank line
    i, n = 0, len(text)

    def width_problem() -> str | None:
        if header_fields is not None and field_no != header_fields:
            hint = " (is the delimiter ';'?)" if delimiter == "," and ";" in text[:200] else ""
            return f"line {record_line} has {field_no} field(s) but the header has {header_fields}{hint}"
        return None

    while i < n:
        ch = text[i]
        i += 1
        if state == "quoted":
            if ch == quote_char:
                state = "quote"
            elif ch == "\n":
                line += 1
            continue
        if state == "quote" and ch == quote_char:  # a doubled quote inside a quoted field
            state = "quoted"
            continue
        if ch in "\r\n":
            if ch == "\r" and i < n and text[i] == "\n":
                i += 1
            if not empty:
                if header_fields is None:
                    header_fields = field_no
                elif problem := width_problem():
                    return problem
            line += 1
            record_line, field_no, state, empty = line, 1, "start", True
            continue
        empty = False
        if ch == delimiter:
            field_no += 1
            state = "start"
        elif state == "quote":
            return (
                f"line {line}, field {field_no}: text after a closing quote ({ch!r}); quotes inside a field are doubled"
            )
        elif ch == quote_char:
            if state != "start":
                return (
                    f"line {line}, field {field_no}: a quote inside an unquoted field; quote the whole field "
                    'and double the quote ("")'
                )
            state, quote_line = "quoted", line
        else:
            state = "unquoted"
    if state == "quoted":
        return f"line {quote_line}, field {field_no}: a quoted field is never closed (a missing closing quote)"
    return None if empty else width_problem()


def header_hint(path: str | os.PathLike[str], required: Sequence[str]) -> str | None:
    """Why a CSV whose required columns were not found may still hold them: wrong delimiter or line endings.

    Returns a hint to append to the "missing required column(s)" message, or None.
    """
    with open(path, "rb") as handle:
        head = handle.read(65536).decode("utf-8", errors="replace").lstrip("\ufeff")
    if "\r" in head and "\n" not in head:
        return "the file uses CR-only (classic Mac) line endings; save it with LF or CRLF line endings"
    first = head.splitlines()[0] if head.splitlines() else ""
    lowered = first.lower()
    for sep in (";", "\t", "|"):
        names = [c.strip().strip('"').lower() for c in lowered.split(sep)]
        if sep in first and all(r in names for r in required):
            shown = "tab" if sep == "\t" else repr(sep)
            return f"the header is separated by {shown}; immunostrat reads comma-separated files"
    return None
