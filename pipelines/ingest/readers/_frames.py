"""Shared building blocks of the format readers: the raw lab frame, reader quarantine, text and dates.

Every reader ends in `finish_labs`, which projects its rows onto exactly the native lab contract (all String)
plus `source_file`/`source_row`, and splits off the records the reader itself must reject (for example a FHIR
Observation marked entered-in-error) into a frame in the layout of `quarantine.parquet`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.ingest.io import LAB_OPTIONAL, LAB_REQUIRED, SUBJECT_OPTIONAL, SUBJECT_REQUIRED, InputError, InputTable
from immunostrat.ingest.reference import ReferenceTables

LAB_COLUMNS: tuple[str, ...] = (*LAB_REQUIRED, *LAB_OPTIONAL)
SUBJECT_COLUMNS: tuple[str, ...] = (*SUBJECT_REQUIRED, *SUBJECT_OPTIONAL)
PROVENANCE: tuple[str, ...] = ("source_file", "source_row")

# ISO 8601 shapes the readers tell apart before the pipeline's own date rule (harmonise.parse_iso_date) runs.
_FULL_DATE = r"^\d{4}-\d{2}-\d{2}$"
_DATE_TIME = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}"
_HOUR_ONLY = r"^(\d{4}-\d{2}-\d{2})T\d{2}$"


@dataclass(frozen=True)
class RejectRule:
    """A record the reader rejects before harmonisation, with the reason code it is quarantined under.

    `when` is True for a rejected row (never null); `expected` is a String expression for the message.
    """

    code: str
    column: str
    when: pl.Expr
    expected: pl.Expr


def check_file(path: str | Path, kind: str) -> Path:
    """The path, or InputError when it is missing or empty (the same wording as the native reader)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"{kind} file not found")
    if p.stat().st_size == 0:
        raise InputError(p, f"{kind} file is empty (0 bytes)")
    return p


def sha256_bytes(data: bytes) -> str:
    """SHA-256 of bytes already in memory (the readers that load a whole file hash what they parsed)."""
    return hashlib.sha256(data).hexdigest()


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Null for an empty or all-blank string; otherwise the string without trailing blanks.

    SAS pads character values with blanks and some writers keep them: trailing blanks are never data here.
    """
    stripped = expr.cast(pl.String).str.strip_chars_end()
    return pl.when(stripped.str.strip_chars() == "").then(None).otherwise(stripped)


def number_text(expr: pl.Expr) -> pl.Expr:
    """A binary number as text, to 15 significant digits (the precision SAS guarantees for a double).

    SAS XPORT stores IBM floating point: 8.55 comes back as 8.549999999999999. Rounding to 15 significant
    digits gives back the decimal that was written, so XPT and Dataset-JSON read to the same text.
    """
    number = expr.cast(pl.Float64, strict=False)
    # + 0.0 turns -0.0 into 0.0: XPT cannot store a negative zero, so neither form may depend on it.
    return pl.when(number.is_nan()).then(None).otherwise((number.round_sig_figs(15) + 0.0).cast(pl.String))


def place_date(expr: pl.Expr) -> pl.Expr:
    """An ISO 8601 collection date placed for the pipeline's date rule (see docs/input.md, Partial dates).

    A complete date or date-time is kept as written. A date with an hour but no minutes (`2024-03-05T09`, valid
    reduced precision in SDTM) keeps its date (so it is placed at midnight, like any date-only value). Anything
    less than a full date (`2024-03`, `2024`, `2024---05`) is kept verbatim, so validation quarantines it as
    DATE_INVALID: placing it on a day would be a guess that can move a sample into or out of the baseline window.
    """
    text = expr.cast(pl.String).str.strip_chars()
    hour_only = text.str.extract(_HOUR_ONLY, 1)
    return pl.when(hour_only.is_not_null()).then(hour_only).otherwise(text)


def date_shape(expr: pl.Expr) -> pl.Expr:
    """`datetime`, `date`, `hour_only`, `partial` or `missing`: how precise a reported ISO 8601 value is."""
    text = expr.cast(pl.String).str.strip_chars().fill_null("")
    return (
        pl.when(text == "")
        .then(pl.lit("missing"))
        .when(text.str.contains(_DATE_TIME))
        .then(pl.lit("datetime"))
        .when(text.str.contains(_FULL_DATE))
        .then(pl.lit("date"))
        .when(text.str.contains(_HOUR_ONLY))
        .then(pl.lit("hour_only"))
        .otherwise(pl.lit("partial"))
    )


def value_counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """{value: count} of one column, nulls as "", for run.json."""
    if frame.height == 0:
        return {}
    counts = frame.group_by(column).len().sort("len", column, descending=[True, False], nulls_last=True)
    return {("" if k is None else str(k)): int(v) for k, v in counts.iter_rows()}


def panel_keys(ref: ReferenceTables) -> pl.DataFrame:
    """(code_key, analyte) of every code that maps onto the panel (upper-cased keys)."""
    return ref.test_codes.select("code_key", "analyte")


def maps_to_panel(expr: pl.Expr, ref: ReferenceTables) -> pl.Expr:
    """True when the test text maps onto the panel, exactly as harmonise matches it (trimmed, case-insensitive)."""
    keys = ref.test_codes["code_key"].to_list()
    return expr.cast(pl.String).str.strip_chars().str.to_uppercase().is_in(keys).fill_null(False)


def analyte_of(expr: pl.Expr, ref: ReferenceTables) -> pl.Expr:
    """The panel analyte a test text maps to, or null."""
    mapping = dict(zip(ref.test_codes["code_key"].to_list(), ref.test_codes["analyte"].to_list(), strict=True))
    key = expr.cast(pl.String).str.strip_chars().str.to_uppercase()
    return key.replace_strict(mapping, default=None, return_dtype=pl.String)


def _quarantine_layout(
    rows: pl.DataFrame, rules: Sequence[RejectRule], originals: Sequence[str], source_label: str
) -> pl.DataFrame:
    """Reader-rejected rows in the layout of validate's quarantine (reason, every reason, column, value, message)."""
    codes = pl.concat_list([pl.when(r.when).then(pl.lit(r.code)).otherwise(None) for r in rules]).list.drop_nulls()
    column = pl.lit(None, pl.String)
    value = pl.lit(None, pl.String)
    expected = pl.lit(None, pl.String)
    for rule in reversed(rules):
        hit = pl.col("reason_code") == rule.code
        column = pl.when(hit).then(pl.lit(rule.column)).otherwise(column)
        value = pl.when(hit).then(pl.col(rule.column).cast(pl.String).fill_null("")).otherwise(value)
        expected = pl.when(hit).then(rule.expected).otherwise(expected)
    return (
        rows.with_columns(reason_codes=codes)
        .with_columns(reason_code=pl.col("reason_codes").list.first())
        .with_columns(column=column, value=value, _expected=expected)
        .with_columns(
            message=pl.format(
                "{} row {}, column '{}': value '{}' rejected ({}) by the {} reader; expected {}",
                "source_file",
                "source_row",
                "column",
                "value",
                "reason_code",
                pl.lit(source_label),
                "_expected",
            )
        )
        .select(
            *PROVENANCE, "reason_code", "reason_codes", "column", "value", "message", *(pl.col(c) for c in originals)
        )
    )


def split_rejected(
    rows: pl.DataFrame, rules: Sequence[RejectRule], columns: Sequence[str], source_label: str
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(kept, rejected): rows failing any rule leave the frame for the reader's own quarantine."""
    if not rules:
        return rows, None
    # A rule that cannot be evaluated (null) does not reject: a row must be provably rejected to leave the frame.
    rules = [RejectRule(r.code, r.column, r.when.fill_null(False), r.expected) for r in rules]
    failing = pl.any_horizontal([r.when for r in rules])
    rejected = rows.filter(failing)
    kept = rows.filter(~failing)
    if rejected.height == 0:
        return kept, None
    return kept, _quarantine_layout(rejected, rules, columns, source_label)


def finish(
    path: str | Path,
    rows: pl.DataFrame,
    *,
    columns: Sequence[str],
    sha256: str,
    fmt: str,
    notes: dict[str, Any],
    detail: pl.DataFrame | None = None,
    rules: Sequence[RejectRule] = (),
    source_label: str = "",
) -> InputTable:
    """Project reader rows onto a contract (String columns + provenance) and build the InputTable.

    `rows` must hold every contract column (String or null) and an Int64 `source_row`; anything else is dropped.
    """
    shaped = rows.with_columns(
        *(pl.col(c).cast(pl.String) if c in rows.columns else pl.lit(None, pl.String).alias(c) for c in columns),
        pl.lit(str(path), pl.String).alias("source_file"),
        pl.col("source_row").cast(pl.Int64),
    )
    kept, rejected = split_rejected(shaped, rules, columns, source_label or fmt)
    if detail is not None and "source_file" not in detail.columns:
        detail = detail.with_columns(pl.lit(str(path), pl.String).alias("source_file"))
    frame = kept.select(*columns, *PROVENANCE).sort("source_row")
    if rejected is not None:
        rejected = rejected.sort("source_row")
        notes = {**notes, "rejected_by_reader": value_counts(rejected, "reason_code")}
    return InputTable(
        path=str(path),
        frame=frame,
        sha256=sha256,
        extra_columns=(),
        fmt=fmt,
        notes=notes,
        detail=detail,
        rejected=rejected,
    )
