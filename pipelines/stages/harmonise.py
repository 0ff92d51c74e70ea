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
_RESULT = r"^\s*(<=|>=|<|>)?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$"
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
    # Year 0 parses but is no calendar date a lab could have written (and breaks downstream formatting).
    date = pl.when(time_ok & (day.dt.year() >= 1)).then(day).otherwise(None)
    datetime = date.cast(pl.Datetime("us")) + pl.duration(hours=hour, minutes=minute, seconds=second)
    return date, datetime


def _lookup(key: pl.Expr, table: pl.DataFrame, key_col: str, value_col: str) -> pl.Expr:
    """Map `key` through a small table (a hash lookup, no join), null where the key is not in the table."""
    values = table[value_col]
    return key.replace_strict(table[key_col], values, default=None, return_dtype=values.dtype)


def _parsed_per_distinct(raw: pl.DataFrame, col: str, parsed: dict[str, pl.Expr]) -> list[pl.Expr]:
    """Expressions computing `parsed` once per distinct value of `col` and mapping them onto every row.

    Dates, units and reference limits repeat heavily (a few thousand distinct strings in millions of rows),
    so parsing each distinct value once is the same logic at a fraction of the work.
    """
    # Parsed values get private names in the lookup table, so a parse may replace its own column (site_id).
    distinct = raw.select(pl.col(col).unique().drop_nulls()).with_columns(
        **{f"__parsed_{name}": expr for name, expr in parsed.items()}
    )
    out = []
    for name, expr in parsed.items():
        # Null input: evaluate the expression on null itself (it defines what a missing value parses to).
        on_null = pl.select(pl.lit(None, pl.String).alias(col)).select(expr.alias(name))[name]
        mapped = _lookup(pl.col(col), distinct, col, f"__parsed_{name}")
        out.append(
            pl.when(pl.col(col).is_null()).then(pl.lit(on_null.item(), on_null.dtype)).otherwise(mapped).alias(name)
        )
    return out


def _stripped(frame: pl.DataFrame, col: str) -> pl.Expr:
    """`col` without surrounding white space; the strip (a copy of every string) only runs when needed."""
    needs = frame.select(pl.col(col).str.contains(r"^\s|\s$").any()).item()
    return pl.col(col).str.strip_chars() if needs else pl.col(col)


def _with_unit_mapping(panel: pl.DataFrame, ref: ReferenceTables) -> pl.DataFrame:
    """Add `analyte` (after conversion), `conversion` and `factor` for each row's (analyte, unit) pair.

    The pairs are few, so they are resolved once each and joined back on a two-column frame; the result is
    stacked beside the wide frame instead of joining the wide frame itself.
    """
    keys = panel.select("analyte_reported", "unit")
    pairs = (
        keys.unique()
        .with_columns(unit_key=pl.col("unit").str.strip_chars().str.to_lowercase().fill_null(""))
        .join(
            ref.units.select(
                pl.col("analyte").alias("analyte_reported"),
                "unit_key",
                pl.col("target_analyte").alias("analyte"),
                "conversion",
                "factor",
            ),
            on=["analyte_reported", "unit_key"],
            how="left",
        )
        .drop("unit_key")
    )
    mapped = keys.join(pairs, on=["analyte_reported", "unit"], how="left", nulls_equal=True, maintain_order="left")
    return panel.hstack(mapped.select("analyte", "conversion", "factor"))


def harmonise_labs(raw: pl.DataFrame, ref: ReferenceTables, cfg: HarmoniseConfig) -> Harmonised:
    """Map, parse and convert raw lab rows.

    Mapping tables are applied as hash lookups on single columns rather than joins of the wide frame, and
    repeated strings are parsed once per distinct value: at ten million rows, joins that gather every column
    cost more than all the parsing.

    Args:
        raw: lab rows as read by `immunostrat.io.read_labs` (all String, plus source_file/source_row).
        ref: the mapping tables.
        cfg: harmonisation options.

    Returns:
        The typed candidate rows and the rows outside the panel.
    """
    test_key = pl.col("test").str.strip_chars().str.to_uppercase().fill_null("")
    keyed = raw.with_columns(
        # Verbatim copies for the quarantine, which shows rows exactly as they were sent.
        *(pl.col(c).alias(f"_raw_{c}") for c in ("study_id", "subject_id", "site_id", "method")),
        # Identifiers are matched without surrounding white space (never otherwise altered).
        *(_stripped(raw, c) for c in ("study_id", "subject_id")),
        *_parsed_per_distinct(raw, "site_id", {"site_id": _blank_to_null("site_id")}),
        *_parsed_per_distinct(
            raw,
            "test",
            {
                "analyte_reported": _lookup(test_key, ref.test_codes, "code_key", "analyte"),
                "_test_blank": test_key == "",
            },
        ),
    )
    outside = keyed.filter(~pl.col("_test_blank") & pl.col("analyte_reported").is_null()).select(
        "source_file", "source_row", "test"
    )
    panel = keyed.filter(pl.col("_test_blank") | pl.col("analyte_reported").is_not_null()).drop("_test_blank")

    date, datetime = parse_iso_date("collected_at")
    method = pl.col("_method_clean")
    if cfg.ifn_default_method:
        method = (
            pl.when((pl.col("analyte_reported") == "ifn_score") & method.is_null())
            .then(pl.lit(cfg.ifn_default_method.strip().upper()))
            .otherwise(method)
        )
    result = pl.col("result").str.extract_groups(_RESULT)
    panel = panel.with_columns(
        *_parsed_per_distinct(panel, "method", {"_method_clean": _blank_to_null("method").str.to_uppercase()})
    )
    typed = _with_unit_mapping(panel, ref).with_columns(
        *_parsed_per_distinct(panel, "collected_at", {"collected_date": date, "collected_at_parsed": datetime}),
        *_parsed_per_distinct(panel, "ref_low", {"ref_low_reported": parse_number("ref_low")}),
        *_parsed_per_distinct(panel, "ref_high", {"ref_high_reported": parse_number("ref_high")}),
        method=method,
        censoring=result.struct.field("1"),
        value_reported=result.struct.field("2").cast(pl.Float64, strict=False),
    )
    analytes = ref.analytes.rename({"canonical_unit": "unit_canonical"})
    # The accepted-unit list is only read in UNIT_UNKNOWN messages: categorical keeps it at 4 bytes a row.
    allowed = ref.allowed_units().with_columns(pl.col("allowed_units").cast(pl.Categorical))
    per_uln = pl.col("conversion") == "per_upper_limit"
    scale = pl.when(per_uln).then(1.0 / pl.col("ref_high_reported")).otherwise(pl.col("factor"))
    candidates = typed.with_columns(
        unit_canonical=_lookup(pl.col("analyte"), analytes, "analyte", "unit_canonical"),
        plausible_min=_lookup(pl.col("analyte"), analytes, "analyte", "plausible_min"),
        plausible_max=_lookup(pl.col("analyte"), analytes, "analyte", "plausible_max"),
        allowed_units=_lookup(pl.col("analyte_reported"), allowed, "analyte", "allowed_units"),
        value=pl.col("value_reported") * scale,
        ref_low_value=pl.col("ref_low_reported") * scale,
        ref_high_value=pl.col("ref_high_reported") * scale,
    )
    return Harmonised(candidates=candidates, outside_panel=outside)


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
