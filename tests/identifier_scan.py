"""A test helper: search files for raw identifiers, names and birth dates that must not reach sponsor outputs,
reports or Prefect artifacts (a byte-level search; Parquet decoded, zip and gzip opened).

Only tests use it (`tests/test_security.py`), so it lives here rather than in the runtime package.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import html
import io
import json
import os
import zipfile
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from immunostrat.ingest.diagnostics import zip_archive_problem

__all__ = ["Finding", "date_variants", "scan_for_identifiers"]

#: The most a gzip member may decompress to before the scan refuses it (as `zip_archive_problem` does for zip).
_MAX_UNCOMPRESSED = 256 * 1024 * 1024


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
    """The byte strings an identifier may appear as: escaped for HTML, JSON and URLs, in UTF-8 and UTF-16."""
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
    """Every cell of an Arrow column as text (nested values as JSON)."""
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
        """Text as compared: lower-cased when the scan ignores case."""
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
        """Search decoded text; `starts` (cell start offsets) turns a match position into a row number."""
        hay = self._norm(blob)
        for identifier in self.identifiers:
            pos = hay.find(self._norm(identifier))
            if pos >= 0:
                # bisect_right over the cells' start offsets gives the 1-based row within the row group.
                row = f" row {bisect_right(starts, pos)}" if starts is not None else ""
                self.findings.append(Finding(path, identifier, f"{where}{row}"))

    def parquet(self, data: bytes, path: str, where: str) -> None:
        """Decode a Parquet file: key-value metadata, column names, every cell as text."""
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
    """The files of `paths`, folders walked (hidden files included)."""
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
