"""The I/O edge: reading input files into all-string frames, and writing outputs atomically.

Stages never touch the file system; flows and the CLI call these functions at the edges.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.errors import UserError
from immunostrat.ingest.atomic import atomic_path
from immunostrat.ingest.diagnostics import csv_structure_problem, header_hint, text_encoding_problem

LAB_REQUIRED = ("study_id", "subject_id", "test", "result", "unit", "collected_at")
LAB_OPTIONAL = ("site_id", "method", "ref_low", "ref_high", "lloq")
SUBJECT_REQUIRED = ("study_id", "subject_id", "reference_date")
SUBJECT_OPTIONAL = (
    "site_id",
    "sex",
    "age_years",
    "first_exposure_date",
    "infusion_date",
    "discontinued_date",
    "death_date",
    "retreatment_date",
    "ivig_start_date",
    "sledai_2k",
    "prior_immunosuppressant_failures",
    "lupus_nephritis_class",
    "egfr",
    "active_cns_lupus",
)
OUTCOME_REQUIRED = ("study_id", "subject_id", "responded", "endpoint")
OUTCOME_OPTIONAL: tuple[str, ...] = ()


class InputError(UserError):
    """An input file that cannot be used at all (unreadable, or missing a required column).

    The run stops before any compute; `immunostrat validate` exits with status 2.
    """

    label = "unusable input"

    def __init__(self, path: str | Path, problem: str, column: str | None = None) -> None:
        self.path = str(path)
        self.column = column
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class InputTable:
    """One input file read as strings, with its provenance.

    The optional fields are filled by the format readers in `immunostrat.ingest.readers` (SDTM, FHIR, expression);
    a native CSV/Parquet file leaves them at their defaults.
    """

    path: str
    frame: pl.DataFrame  # contract columns (String) + source_file (String) + source_row (Int64)
    sha256: str
    extra_columns: tuple[str, ...]
    fmt: str = "native"  # the format the file was read as (see immunostrat.ingest.readers.detect)
    notes: dict[str, Any] = field(default_factory=dict)  # JSON-safe facts about the read, for run.json
    detail: pl.DataFrame | None = None  # per-row source fields outside the contract, keyed by source_file/row
    rejected: pl.DataFrame | None = None  # records the reader itself quarantined (quarantine layout)
    row_count: int | None = None  # set when `frame` does not hold the rows (a streaming run keeps them on disk)

    @property
    def rows_read(self) -> int:
        if self.row_count is not None:
            return self.row_count
        # Records the reader quarantined were read too: they count here so rows_read still adds up.
        return self.frame.height + (self.rejected.height if self.rejected is not None else 0)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: Path) -> str:
    """`parquet` or `csv`, from the file's first bytes (the suffix can lie)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == b"PAR1":
        return "parquet"
    return "csv"


def _normalise_header(name: str) -> str:
    # Sites send "Study_ID ", BOM-prefixed headers, etc.; the contract names are lower snake case.
    return name.lstrip("\ufeff").strip().lower()


def _as_written(names: list[str]) -> list[str]:
    # polars renames a repeated CSV header "x" to "x_duplicated_0", ...; undo that so repeats are caught.
    present = set(names)
    base = [m.group(1) if (m := re.fullmatch(r"(.+)_duplicated_\d+", n)) else n for n in names]
    return [b if b in present else n for b, n in zip(base, names, strict=True)]


def _as_text(path: Path, frame: pl.DataFrame, name: str) -> pl.Series:
    try:
        return frame.get_column(name).cast(pl.String)
    except pl.exceptions.PolarsError as exc:
        raise InputError(
            path, f"column {name} has type {frame.schema[name]}, which cannot be read as text", column=name
        ) from exc


def _precheck(p: Path, required: Sequence[str], kind: str) -> str:
    """Checks before any read: the file exists, is not empty and (CSV) is text polars will not misread."""
    if not p.is_file():
        raise InputError(p, f"{kind} file not found")
    if p.stat().st_size == 0:
        raise InputError(p, f"{kind} file is empty (0 bytes); expected a header with columns: {', '.join(required)}")
    fmt = detect_format(p)
    if fmt == "csv":
        # Refuse what polars would misread silently: non-UTF-8 text (decoded lossily) and CR-only line endings
        # (every row read as one header line). The message names the byte, line and column.
        problem = text_encoding_problem(p, max_bytes=1 << 16)
        hint = header_hint(p, required)
        if problem or (hint and "CR-only" in hint):
            raise InputError(p, f"cannot be read as CSV: {problem or hint}")
    return fmt


@contextlib.contextmanager
def read_errors(p: Path, fmt: str, kind: str, required: Sequence[str]) -> Iterator[None]:
    """Turn what polars raises while reading a file into `InputError` (bad file) or `OSError` (retry)."""
    try:
        yield
    except pl.exceptions.NoDataError as exc:
        raise InputError(p, f"{kind} file has no header row; expected columns: {', '.join(required)}") from exc
    except OSError as exc:
        # An I/O failure (not a bad file): raised as OSError so that Prefect retries it.
        raise OSError(exc.errno, f"{p}: {exc.strerror or exc}") from exc
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        detail = (text_encoding_problem(p) or csv_structure_problem(p)) if fmt == "csv" else None
        raise InputError(p, f"cannot be read as {fmt.upper()}: {detail or first_line}") from exc
    except pl.exceptions.PanicException as exc:  # a BaseException: corrupt Parquet can make polars panic
        raise InputError(
            p, f"cannot be read as {fmt.upper()}: the reader failed on corrupt or unsupported data"
        ) from exc


def _contract_header(
    p: Path, fmt: str, columns: Sequence[str], required: Sequence[str], optional: Sequence[str]
) -> tuple[list[str], tuple[str, ...]]:
    """Normalised column names and the extra (non-contract) ones; raises on repeated or missing columns."""
    names = [_normalise_header(c) for c in columns]
    written = _as_written(names)
    dupes = sorted({n for n in written if written.count(n) > 1})
    if dupes:
        raise InputError(p, f"column(s) appear more than once: {', '.join(dupes)}", column=dupes[0])
    missing = [c for c in required if c not in names]
    if missing:
        raise InputError(
            p,
            f"missing required column(s): {', '.join(missing)}; the file has: {', '.join(names) or '(none)'}"
            + (f" ({hint})" if fmt == "csv" and (hint := header_hint(p, required)) else ""),
            column=missing[0],
        )
    contract = [*required, *optional]
    return names, tuple(c for c in names if c not in contract)


def read_input(path: str | Path, required: Sequence[str], optional: Sequence[str], kind: str = "input") -> InputTable:
    """Read a CSV or Parquet file with every contract column as String.

    Raises:
        InputError: the file is missing, empty, unreadable, or lacks a required column.
    """
    p = Path(path)
    fmt = _precheck(p, required, kind)
    with read_errors(p, fmt, kind, required):
        if fmt == "parquet":
            frame = pl.read_parquet(p)
        else:
            frame = pl.read_csv(p, infer_schema=False, encoding="utf8", raise_if_empty=True)
    names, extra = _contract_header(p, fmt, frame.columns, required, optional)
    frame = frame.rename(dict(zip(frame.columns, names, strict=True)))
    frame = frame.select(
        *(_as_text(p, frame, c) if c in names else pl.lit(None, pl.String).alias(c) for c in [*required, *optional]),
        pl.lit(str(path), pl.String).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )
    return InputTable(path=str(path), frame=frame, sha256=sha256_file(p), extra_columns=extra)


@dataclass(frozen=True)
class ScannedInput:
    """A native CSV or Parquet file checked for structure and opened lazily (rows are read when collected)."""

    path: str
    fmt: str
    frame: pl.LazyFrame  # same columns and types as `InputTable.frame`
    extra_columns: tuple[str, ...]


def scan_input(path: str | Path, required: Sequence[str], optional: Sequence[str], kind: str = "input") -> ScannedInput:
    """`read_input` without reading the rows: the same structural checks, on the header only.

    Errors in the rows themselves (a ragged CSV line) surface when the frame is collected or sunk; wrap that in
    `read_errors` to report them like `read_input` does.
    """
    p = Path(path)
    fmt = _precheck(p, required, kind)
    row = "__immunostrat_row"  # private, so a file's own column of any name cannot clash with it
    with read_errors(p, fmt, kind, required):
        if fmt == "parquet":
            lazy = pl.scan_parquet(p, row_index_name=row, row_index_offset=1)
        else:
            lazy = pl.scan_csv(
                p, infer_schema=False, encoding="utf8", raise_if_empty=True, row_index_name=row, row_index_offset=1
            )
        schema = lazy.collect_schema()
    raw = [c for c in schema.names() if c != row]
    names, extra = _contract_header(p, fmt, raw, required, optional)
    by_name = dict(zip(names, raw, strict=True))
    for name, original in by_name.items():
        if name in (*required, *optional) and schema[original].is_nested():
            raise InputError(p, f"column {name} has type {schema[original]}, which cannot be read as text", column=name)
    lazy = lazy.select(
        *(
            pl.col(by_name[c]).cast(pl.String).alias(c) if c in by_name else pl.lit(None, pl.String).alias(c)
            for c in [*required, *optional]
        ),
        pl.lit(str(path), pl.String).alias("source_file"),
        pl.col(row).cast(pl.Int64).alias("source_row"),
    )
    return ScannedInput(path=str(path), fmt=fmt, frame=lazy, extra_columns=extra)


def read_outcomes(path: str | Path) -> InputTable:
    """Read an outcomes file (training only)."""
    return read_input(path, OUTCOME_REQUIRED, OUTCOME_OPTIONAL, kind="outcomes")


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------


def write_parquet_atomic(frame: pl.DataFrame, final: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a Parquet file atomically, with optional key-value metadata in its footer."""
    with atomic_path(final) as tmp:
        frame.write_parquet(tmp, compression="zstd", metadata=metadata)
    return Path(final)


def write_json_atomic(payload: Any, final: str | Path) -> Path:
    """Write JSON atomically (sorted keys, 2-space indent, ISO dates via `str`)."""
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return Path(final)


def write_text_atomic(text: str, final: str | Path) -> Path:
    """Write a text file atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)
