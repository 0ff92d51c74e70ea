"""What the subject-keyed follow-up inputs (visits, events) share: reading the contract columns only, repeated rows
at one time, and the accounting of refused rows apart from bad fields.

Each input keeps its own columns, rules and typed output; this module holds the mechanisms they run the same way.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.ingest.io import InputError, InputTable, read_input, scan_input
from immunostrat.stages.harmonise import is_present, parse_number
from immunostrat.stages.rules import Split, count_by

__all__ = [
    "check_keyed_header",
    "contract_columns",
    "duplicate_flags",
    "keyed_counts",
    "read_keyed_input",
    "stripped",
    "whole_number",
]


def stripped(col: str) -> pl.Expr:
    """A text cell without surrounding spaces."""
    return pl.col(col).str.strip_chars()


def whole_number(col: str) -> pl.Expr:
    """The cell as a whole number (Int64), null when empty, unreadable or not whole."""
    number = parse_number(col)
    return pl.when(number == number.round(0)).then(number.cast(pl.Int64, strict=False)).otherwise(None)


def _refuse_unknown(path: str | Path, extra: Sequence[str], known: Sequence[str], *, kind: str, why: str) -> None:
    """An `InputError` naming the first column outside the contract, the closest contract column, and `why`."""
    if extra:
        column = extra[0]
        close = difflib.get_close_matches(column, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InputError(path, f"unknown {kind} column '{column}'{hint}: {why}", column=column)


def read_keyed_input(
    path: str | Path, required: Sequence[str], optional: Sequence[str], *, kind: str, why: str
) -> InputTable:
    """Read a subject-keyed file (CSV or Parquet) with every contract column as text, plus `source_file` and
    `source_row`; a missing optional column reads as all empty (not assessed).

    Raises:
        InputError: the file is missing, empty, unreadable or lacks a required column, or it has a column outside
            the contract: the one-line message names it, the closest contract column if any, and `why` a stray
            column is refused.
    """
    table = read_input(path, tuple(required), tuple(optional), kind=kind)
    _refuse_unknown(path, table.extra_columns, [*required, *optional], kind=kind, why=why)
    return table


def check_keyed_header(
    path: str | Path, required: Sequence[str], optional: Sequence[str], *, kind: str, why: str
) -> None:
    """At launch, on the header only (rows unread): the checks of `read_keyed_input`, so that a stray column is
    refused before any compute or Prefect server."""
    scanned = scan_input(path, tuple(required), tuple(optional), kind=kind)
    _refuse_unknown(path, scanned.extra_columns, [*required, *optional], kind=kind, why=why)


def contract_columns(raw: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """`raw` with every contract column as text: a missing one is all empty (not assessed)."""
    return raw.with_columns(
        pl.col(c).cast(pl.String) if c in raw.columns else pl.lit(None, pl.String).alias(c) for c in columns
    )


def duplicate_flags(frame: pl.DataFrame, time: str, content: Sequence[pl.Expr]) -> pl.DataFrame:
    """`_dup_conflict`, `_dup_repeat`, `_dup_rows` and `_dup_first_row` for rows repeated at one time.

    Only rows with both identifiers and a readable `time` (the parsed column) have a key. Within a (study_id,
    subject_id, time) group, rows whose `content` differs all conflict; when all say the same, the first is kept
    and the others repeat it.
    """
    group = ["_k_study", "_k_subject", time]
    keyed = frame.select(
        stripped("study_id").alias("_k_study"),
        stripped("subject_id").alias("_k_subject"),
        time,
        pl.struct(list(content)).alias("_content"),
        "source_row",
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("_pos"),
        (is_present("study_id") & is_present("subject_id") & pl.col(time).is_not_null()).alias("_has_key"),
    )
    analysed = (
        keyed.filter(pl.col("_has_key") & (pl.len().over(group) > 1))
        .with_columns(
            _n_versions=pl.col("_content").n_unique().over(group),
            _first_pos=pl.col("_pos").min().over(group),
            _dup_first_row=pl.col("source_row").first().over(group),
            _dup_rows=pl.col("source_row").sort().cast(pl.String).str.join(", ").over(group),
        )
        .select(
            "_pos",
            (pl.col("_n_versions") > 1).alias("_dup_conflict"),
            ((pl.col("_n_versions") == 1) & (pl.col("_pos") != pl.col("_first_pos"))).alias("_dup_repeat"),
            "_dup_rows",
            "_dup_first_row",
        )
    )
    return (
        keyed.select("_pos")
        .join(analysed, on="_pos", how="left", maintain_order="left")
        .select(
            pl.col("_dup_conflict").fill_null(False),
            pl.col("_dup_repeat").fill_null(False),
            "_dup_rows",
            "_dup_first_row",
        )
    )


def keyed_counts(rows_read: int, split: Split, field_codes: Sequence[str]) -> dict[str, Any]:
    """The accounting for run.json: refused rows and field records counted apart.

    Every row read ends in one place, so `rows_read` = `accepted` + `quarantined` (refused rows); a row kept with
    a bad field unknown is `accepted`, and each bad field (a code of `field_codes`) is one of `fields_quarantined`.
    """
    quarantine = split.quarantine
    field = pl.col("reason_code").is_in(list(field_codes))
    refused, fields = quarantine.filter(~field), quarantine.filter(field)
    return {
        "rows_read": rows_read,
        "accepted": split.accepted.height,
        "quarantined": refused.height,
        "quarantined_by_reason": count_by(refused, "reason_code"),
        "fields_quarantined": fields.height,
        "fields_quarantined_by_reason": count_by(fields, "reason_code"),
    }
