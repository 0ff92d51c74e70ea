"""Harmonise: map reported tests onto the panel, parse results, convert units, parse dates.

Nothing here decides acceptance: it only derives typed columns (null where a value cannot be read) so that
the validation rules can say precisely what is wrong. Rows whose test is outside the panel are split off
and counted by test.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from immunostrat.config import HarmoniseConfig
from immunostrat.reference import ReferenceTables

# A number with an optional censoring comparator: "12", "<10", ">= 800", "1.5e3", ".5". No thousands separators
# and no decimal commas: "1,5" is ambiguous between sites, so it is not read (never guessed).
_RESULT = r"^(<=|>=|<|>)?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)$"
_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
# ISO 8601 calendar date, optionally with a time and offset. The offset is read but not applied: the
# collection date is the lab's local calendar date, as written.
_ISO = r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$"


@dataclass(frozen=True)
class Harmonised:
    """Output of `harmonise_labs`."""

    candidates: pl.DataFrame  # panel rows (and rows with an empty test), typed, awaiting validation
    outside_panel: pl.DataFrame  # source_file, source_row, test: rows whose test is not in the panel


def _blank_to_null(col: str) -> pl.Expr:
    stripped = pl.col(col).str.strip_chars()
    return pl.when(stripped == "").then(None).otherwise(stripped).alias(col)


def parse_number(col: str) -> pl.Expr:
    """A plain number from a string column; null when empty or not a plain number."""
    text = pl.col(col).str.strip_chars()
    return pl.when(text.str.contains(_NUMBER)).then(text.cast(pl.Float64, strict=False)).otherwise(None)


def parse_iso_date(col: str) -> tuple[pl.Expr, pl.Expr]:
    """(date, datetime) parsed from an ISO 8601 string column; both null when the text is not a valid date."""
    text = pl.col(col).str.strip_chars()
    groups = text.str.extract_groups(_ISO)
    day = groups.struct.field("1").str.to_date("%Y-%m-%d", strict=False)
    hour = groups.struct.field("2").cast(pl.Int64, strict=False).fill_null(0)
    minute = groups.struct.field("3").cast(pl.Int64, strict=False).fill_null(0)
    second = groups.struct.field("4").cast(pl.Int64, strict=False).fill_null(0)
    time_ok = (hour < 24) & (minute < 60) & (second < 60)
    date = pl.when(time_ok).then(day).otherwise(None)
    datetime = date.cast(pl.Datetime("us")) + pl.duration(hours=hour, minutes=minute, seconds=second)
    return date, datetime


def harmonise_labs(raw: pl.DataFrame, ref: ReferenceTables, cfg: HarmoniseConfig) -> Harmonised:
    """Map, parse and convert raw lab rows.

    Args:
        raw: lab rows as read by `immunostrat.io.read_labs` (all String, plus source_file/source_row).
        ref: the mapping tables.
        cfg: harmonisation options.

    Returns:
        The typed candidate rows and the rows outside the panel.
    """
    keyed = (
        raw.with_columns(
            # Verbatim copies for the quarantine, which shows rows exactly as they were sent.
            *(pl.col(c).alias(f"_raw_{c}") for c in ("study_id", "subject_id", "site_id", "method")),
        )
        .with_columns(
            # Identifiers are matched without surrounding white space (never otherwise altered).
            pl.col("study_id").str.strip_chars(),
            pl.col("subject_id").str.strip_chars(),
            _blank_to_null("site_id"),
            _test_key=pl.col("test").str.strip_chars().str.to_uppercase().fill_null(""),
        )
        .join(ref.test_codes, left_on="_test_key", right_on="code_key", how="left", maintain_order="left")
    )
    outside = keyed.filter((pl.col("_test_key") != "") & pl.col("analyte").is_null())
    panel = keyed.filter((pl.col("_test_key") == "") | pl.col("analyte").is_not_null())

    result = pl.col("result").str.strip_chars().str.extract_groups(_RESULT)
    date, datetime = parse_iso_date("collected_at")
    method = _blank_to_null("method").str.to_uppercase()
    if cfg.ifn_default_method:
        method = (
            pl.when((pl.col("analyte_reported") == "ifn_score") & method.is_null())
            .then(pl.lit(cfg.ifn_default_method.strip().upper()))
            .otherwise(method)
        )
    typed = panel.rename({"analyte": "analyte_reported"}).with_columns(
        censoring=result.struct.field("1"),
        value_reported=result.struct.field("2").cast(pl.Float64, strict=False),
        ref_low_reported=parse_number("ref_low"),
        ref_high_reported=parse_number("ref_high"),
        _unit_key=pl.col("unit").str.strip_chars().str.to_lowercase().fill_null(""),
        method=method,
        collected_date=date,
        collected_at_parsed=datetime,
    )
    units = ref.units.select(
        pl.col("analyte").alias("analyte_reported"),
        "unit_key",
        pl.col("target_analyte").alias("analyte"),
        "conversion",
        "factor",
    )
    ranges = ref.analytes.select(
        "analyte", pl.col("canonical_unit").alias("unit_canonical"), "plausible_min", "plausible_max"
    )
    converted = (
        typed.join(
            units,
            left_on=["analyte_reported", "_unit_key"],
            right_on=["analyte_reported", "unit_key"],
            how="left",
            maintain_order="left",
        )
        .join(ranges, on="analyte", how="left", maintain_order="left")
        .join(
            ref.allowed_units().rename({"analyte": "analyte_reported"}),
            on="analyte_reported",
            how="left",
            maintain_order="left",
        )
    )
    per_uln = pl.col("conversion") == "per_upper_limit"
    scale = pl.when(per_uln).then(1.0 / pl.col("ref_high_reported")).otherwise(pl.col("factor"))
    candidates = converted.with_columns(
        value=pl.col("value_reported") * scale,
        ref_low_value=pl.col("ref_low_reported") * scale,
        ref_high_value=pl.col("ref_high_reported") * scale,
    ).drop("_test_key", "_unit_key")
    return Harmonised(
        candidates=candidates,
        outside_panel=outside.select("source_file", "source_row", "test"),
    )


HARMONISED_COLUMNS = (
    "study_id",
    "subject_id",
    "site_id",
    "analyte",
    "value",
    "unit",
    "censoring",
    "ref_low",
    "ref_high",
    "method",
    "collected_at",
    "collected_date",
    "test_reported",
    "result_reported",
    "unit_reported",
    "source_file",
    "source_row",
)


def harmonised_table(accepted: pl.DataFrame) -> pl.DataFrame:
    """Project accepted candidates onto the harmonised-table contract (see docs/output.md)."""
    return accepted.select(
        "study_id",
        "subject_id",
        "site_id",
        "analyte",
        "value",
        pl.col("unit_canonical").alias("unit"),
        "censoring",
        pl.col("ref_low_value").alias("ref_low"),
        pl.col("ref_high_value").alias("ref_high"),
        "method",
        pl.col("collected_at_parsed").alias("collected_at"),
        "collected_date",
        pl.col("test").alias("test_reported"),
        pl.col("result").alias("result_reported"),
        pl.col("unit").alias("unit_reported"),
        "source_file",
        "source_row",
    )
