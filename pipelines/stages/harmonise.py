"""Harmonise: map reported tests onto the panel, parse results, convert units, parse dates.

Nothing here decides acceptance: it only derives typed columns (null where a value cannot be read) so that
the validation rules can say precisely what is wrong. Rows whose test is outside the panel are split off
and counted by test.

Results are numbers, optionally censored ("<10"), except for the semi-quantitative urine sediment counts
(`SEMI_QUANTITATIVE_ANALYTES`), which are read by `immunostrat.followup.urinalysis.parse_count`: ranges become
intervals (`value` the lower bound, `value_high` the upper), "TNTC" a censored value, words only through
`harmonise.urine_count_words`.

The optional `lloq` (the assay's lower limit of quantification, in the row's unit) is converted exactly like
`ref_low`: with the value's factor and rounding (a kit unit: as a multiple of the lab's upper limit, like the
value), so a value and its LLOQ stay comparable in the canonical unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from immunostrat.config.run import HarmoniseConfig
from immunostrat.followup.urinalysis import SEMI_QUANTITATIVE_ANALYTES, parse_count
from immunostrat.ingest.reference import ReferenceTables

# A number with an optional censoring comparator: "12", "<10", ">= 800", "1.5e3", ".5". No thousands separators
# and no decimal commas: "1,5" is ambiguous between sites, so it is not read (never guessed).
_RESULT = r"^\s*(<=|>=|<|>)?\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$"
_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
# ISO 8601 calendar date, optionally with a time and offset. The offset is read but not applied: the
# collection date is the lab's local calendar date, as written.
_ISO = r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$"
#: Converted values keep at most this many significant digits: the binary error of a product or quotient is
#: near the 16th digit, far below it (docs/input.md, "Precision of converted values").
SIGNIFICANT_DIGITS = 12
# Rounding to `places` decimals is exact in float64 only while 10**|places| and the scaled value are exact.
_MAX_PLACES = 15
_POWERS_OF_TEN = pl.Series("power", [10.0**k for k in range(_MAX_PLACES + 1)], dtype=pl.Float64)
# log10 of a power of ten is not always exact in floating point (log10(1000) = 2.9999999999999996).
_LOG_SLACK = 1e-9


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


def decimals_of(number: pl.Expr) -> pl.Expr:
    """The decimal places a plain number is written with: digits after the point, less the exponent.

    `35` 0, `0.35` 2, `12.` 0, `.5` 1, `2.50` 2, `1.5e3` -2, `2.5E-2` 3. Null for null, and for an exponent too
    large to read (such a number is not finite anyway).
    """
    text = number.str.strip_chars()
    fraction = text.str.extract(r"\.(\d*)", 1).str.len_chars().fill_null(0).cast(pl.Int64)
    exponent_text = text.str.extract(r"[eE]([+-]?\d+)$", 1)
    exponent = pl.when(exponent_text.is_null()).then(0).otherwise(exponent_text.cast(pl.Int64, strict=False))
    return pl.when(text.is_not_null()).then(fraction - exponent).cast(pl.Int32, strict=False)


def round_to_places(value: pl.Expr, places: pl.Expr) -> pl.Expr:
    """`value` rounded (halves away from zero) to `places` decimals, row by row, then to 12 significant digits.

    Negative places round to tens, hundreds, ... A value is rounded to its places only where that is exact in
    float64 (|places| <= 15 and the scaled value below 2**52); elsewhere, and where `places` is null, only the
    significant-digit cap applies. Non-finite values are returned unchanged.
    """
    shift = places.abs()
    power = pl.lit(_POWERS_OF_TEN).gather(shift.clip(0, _MAX_PLACES))
    up = (value * power).round(0, mode="half_away_from_zero") / power
    down = (value / power).round(0, mode="half_away_from_zero") * power
    scaled = pl.when(places >= 0).then(value * power).otherwise(value).abs()
    exact = (shift <= _MAX_PLACES) & (scaled < 2.0**52)
    rounded = pl.when(exact & (places >= 0)).then(up).when(exact).then(down).otherwise(value)
    return pl.when(value.is_finite()).then(rounded.round_sig_figs(SIGNIFICANT_DIGITS)).otherwise(value)


def places_added(factor: pl.Expr) -> pl.Expr:
    """Decimal places a multiplication by `factor` adds: 0.01 adds 2, 1000 adds -3 (-floor(log10 factor))."""
    return -(factor.log10() + _LOG_SLACK).floor().cast(pl.Int32, strict=False)


def multiplied(numbers: pl.DataFrame, factors: pl.Series) -> pl.Series:
    """Every number (`number`, and the `places` it was written with) times every factor, at `i * len(factors) + f`.

    Each product is rounded to `places` + `places_added(factor)` decimals: the largest power of ten not above the
    reported resolution in the new unit (10**-places x factor). With a power-of-ten factor that resolution is
    itself a power of ten and the product exact: 35 mg/dL x 0.01 = 0.35 g/L (not 0.35000000000000003), 0.05
    10^9/L x 1000 = 50 cells/uL. With any other factor the product keeps less than one digit more than the
    resolution and never loses one: 1.2 mg/dL creatinine (resolution 0.1 x 88.42 = 8.842 umol/L) is 106 umol/L,
    not 106.104; 56.6 mg/mmol UPCR (resolution 0.000884 g/g) is 0.5003 g/g; 8.4 mmol/L hemoglobin (resolution
    1.611 g/L) is 135 g/L. Numbers are the distinct values of a column and factors a handful, so the grid is
    small; rows then pick their product by position.
    """
    grid = numbers.join(factors.alias("factor").to_frame(), how="cross", maintain_order="left_right")
    places = pl.col("places") + places_added(pl.col("factor"))
    return grid.select(round_to_places(pl.col("number") * pl.col("factor"), places)).to_series()


def per_upper_limit(number: pl.Expr, places: pl.Expr, upper: pl.Expr, upper_places: pl.Expr) -> pl.Expr:
    """A kit-unit number as a multiple of the lab's upper limit, rounded to what both were reported with.

    Places: the larger of the number's and the limit's decimals, plus ceil(log10 limit): 120 U/mL over 100 is
    1.2, 100 over 300 is 0.333. One reported unit over the limit is never finer than that, so a result above,
    at or below the limit stays above, at or below 1 x ULN after rounding.
    """
    shift = (upper.log10() - _LOG_SLACK).ceil().cast(pl.Int32, strict=False)
    return round_to_places(number / upper, pl.max_horizontal(places, upper_places) + shift)


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


def is_present(col: str) -> pl.Expr:
    """True where a string column holds anything but white space."""
    return pl.col(col).str.strip_chars().fill_null("") != ""


def _lookup(key: pl.Expr, table: pl.DataFrame, key_col: str, value_col: str) -> pl.Expr:
    """Map `key` through a small table (a hash lookup, no join), null where the key is not in the table."""
    values = table[value_col]
    return key.replace_strict(table[key_col], values, default=None, return_dtype=values.dtype)


def _code(col: str, known: pl.Series) -> pl.Expr:
    """`_code_<col>`: each row's position in `known` (the distinct values of `col`), `len(known)` for null."""
    # An Enum cast is one hash lookup per row and cheaper than `replace_strict` onto the positions.
    return pl.col(col).cast(pl.Enum(known)).to_physical().cast(pl.UInt32).fill_null(len(known)).alias(f"_code_{col}")


def _gather(table: pl.DataFrame, code: pl.Expr) -> list[pl.Expr]:
    """Every column of a small per-value table, spread onto the rows by their position in it."""
    return [pl.lit(table[name]).gather(code).alias(name) for name in table.columns]


def _per_distinct(known: pl.Series, parsed: Mapping[str, pl.Expr]) -> pl.DataFrame:
    """`parsed` evaluated once per distinct value (rows in the order of `known`, then null; see `_code`).

    Dates, results, units and reference limits repeat heavily (a few thousand distinct strings in millions
    of rows), so each row then costs one hash lookup for its position plus a cheap gather per parsed column.
    """
    # One chunk: gathering from a multi-chunk table is several times slower.
    return _with_null(known).to_frame().select(**parsed).rechunk()


def _with_null(known: pl.Series) -> pl.Series:
    """Distinct values as laid out in per-value tables: `known`, then null (see `_code`)."""
    return pl.concat([known, pl.Series(known.name, [None], known.dtype)])


def distinct_values(frame: pl.DataFrame, cols: Sequence[str]) -> dict[str, pl.Series]:
    """The distinct non-null values of each column, from one parallel pass."""
    found = frame.select(pl.col(c).unique().drop_nulls().implode() for c in cols)
    return {c: found[c][0].alias(c) for c in cols}


def with_parsed(frame: pl.DataFrame, parsed: Mapping[str, Mapping[str, pl.Expr]]) -> pl.DataFrame:
    """`frame` plus the columns `parsed[col]` defines on each `col`, evaluated once per distinct value."""
    values = distinct_values(frame, list(parsed))
    codes = frame.select(_code(c, values[c]) for c in parsed)
    spread = codes.select(
        expr for c, exprs in parsed.items() for expr in _gather(_per_distinct(values[c], exprs), pl.col(f"_code_{c}"))
    )
    # Stacked, not added with `with_columns`, which would copy every column of `frame` into one chunk.
    return frame.hstack(spread.get_columns())


def _stripped(column: pl.Series) -> pl.Series:
    """`column` without surrounding white space; the unchanged column (no copy) when nothing was stripped."""
    stripped = column.str.strip_chars()
    return column if stripped.equals(column) else stripped


def _unit_pairs(reported: pl.Series, units: pl.Series, ref: ReferenceTables, factors: pl.Series) -> pl.DataFrame:
    """Conversion and analyte facts for every (reported analyte, unit) pair, at row `a * len(units) + u`.

    `_factor_code` is the position of a multiplying pair's factor among `factors` (null for other pairs).

    Reported analytes come from the panel (a few dozen) and units repeat heavily, so the whole grid is
    small: rows then find their pair by arithmetic on two positions instead of a join of the wide frame.
    """
    analytes = ref.analytes.rename({"canonical_unit": "unit_canonical"})
    # The accepted-unit list is only read in UNIT_UNKNOWN messages: categorical keeps it at 4 bytes a row.
    allowed = ref.allowed_units().with_columns(pl.col("allowed_units").cast(pl.Categorical))
    grid = (
        reported.alias("analyte_reported")
        .to_frame()
        .join(units.alias("unit").to_frame(), how="cross", maintain_order="left_right")
        .with_columns(unit_key=pl.col("unit").str.strip_chars().str.to_lowercase().fill_null(""))
    )
    pairs = grid.join(
        ref.units.select(
            pl.col("analyte").alias("analyte_reported"),
            "unit_key",
            pl.col("target_analyte").alias("analyte"),
            "conversion",
            "factor",
        ),
        on=["analyte_reported", "unit_key"],
        how="left",
        maintain_order="left",
    )
    if pairs.height != grid.height:
        raise ValueError("the units table lists an (analyte, unit) pair more than once")
    return pairs.rechunk().select(
        "analyte",
        "conversion",
        "factor",
        _factor_code=pl.when(pl.col("conversion") == "multiply").then(
            pl.col("factor").replace_strict(factors, pl.Series(range(factors.len()), dtype=pl.UInt32), default=None)
        ),
        unit_canonical=_lookup(pl.col("analyte"), analytes, "analyte", "unit_canonical"),
        plausible_min=_lookup(pl.col("analyte"), analytes, "analyte", "plausible_min"),
        plausible_max=_lookup(pl.col("analyte"), analytes, "analyte", "plausible_max"),
        allowed_units=_lookup(pl.col("analyte_reported"), allowed, "analyte", "allowed_units"),
    )


#: Reported number -> its value in the canonical unit.
_CONVERTED = {"result": "value", "ref_low": "ref_low_value", "ref_high": "ref_high_value", "lloq": "lloq_value"}


def _per_upper_limit_rows(derived: pl.DataFrame, codes: pl.DataFrame, numbers: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """`derived` with the values of kit-unit rows (conversion `per_upper_limit`) set: result / ref_high.

    These are few (anti-dsDNA in U/mL or AU/mL), so they are computed on their own rows and scattered in.
    """
    rows = (derived["conversion"] == "per_upper_limit").fill_null(False).arg_true()
    if rows.len() == 0:
        return derived
    picked = codes.select(pl.col(f"_code_{c}").gather(rows) for c in _CONVERTED)

    def spread(c: str, field: str) -> pl.Expr:
        return pl.lit(numbers[c][field]).gather(pl.col(f"_code_{c}"))

    upper, upper_places = spread("ref_high", "number"), spread("ref_high", "places")
    ratios = picked.select(
        per_upper_limit(spread(c, "number"), spread(c, "places"), upper, upper_places).alias(name)
        for c, name in _CONVERTED.items()
    )
    return derived.with_columns(derived[name].clone().scatter(rows, ratios[name]) for name in _CONVERTED.values())


#: The semi-quantitative reading of a result, per distinct result text: read by count rows only.
_COUNT_FIELDS = ("_count_value", "_count_high", "_count_censoring", "_count_problem")


def _with_counts(derived: pl.DataFrame, codes: pl.DataFrame, results: pl.DataFrame) -> pl.DataFrame:
    """Semi-quantitative rows take their count reading; every row gets `value_high` and `_result_problem`.

    A row is a count when its analyte (or, with an unknown unit, its reported analyte) is semi-quantitative. Its
    units are per-field counts with factor 1 (units.csv), so the reading is the value in the canonical unit.
    `_result_problem` is the reading's problem (WORD_UNMAPPED, RANGE_REVERSED, UNREADABLE) for count rows.
    `results` is the per-distinct-result table (`_parsed_tables`); count rows are few (urine sediment), so
    their readings are gathered for those rows alone and scattered in, like `_per_upper_limit_rows`.
    """
    is_count = pl.coalesce("analyte", "analyte_reported").is_in(SEMI_QUANTITATIVE_ANALYTES).fill_null(False)
    rows = derived.select(is_count.arg_true()).to_series()
    count = results.select(_COUNT_FIELDS)
    derived = derived.hstack(
        [
            pl.repeat(None, derived.height, dtype=count["_count_high"].dtype, eager=True).alias("value_high"),
            pl.repeat(None, derived.height, dtype=count["_count_problem"].dtype, eager=True).alias("_result_problem"),
        ]
    )
    if rows.len() == 0:
        return derived
    factor = derived["factor"].gather(rows).fill_null(1.0)
    read = count[codes["_code_result"].gather(rows)]
    scattered = {
        "value_reported": read["_count_value"],
        "censoring": read["_count_censoring"],
        "value": read["_count_value"] * factor,
        "value_high": read["_count_high"] * factor,
        "_result_problem": read["_count_problem"],
    }
    return derived.with_columns(derived[name].clone().scatter(rows, values) for name, values in scattered.items())


def _test_analytes(known_tests: pl.Series, ref: ReferenceTables) -> pl.DataFrame:
    """Per distinct test code: the analyte it reports (`analyte_reported`) and whether it is in the panel."""
    test_key = pl.col("test").str.strip_chars().str.to_uppercase().fill_null("")
    analyte = _lookup(test_key, ref.test_codes, "code_key", "analyte")
    # An empty test stays with the panel rows: validate calls it TEST_MISSING.
    return _per_distinct(
        known_tests, {"analyte_reported": analyte, "_in_panel": (test_key == "") | analyte.is_not_null()}
    )


def _result_parts() -> pl.Expr:
    """The result text split into its censoring operator ("1") and its number ("2")."""
    return pl.col("result").str.extract_groups(_RESULT)


def _parsed_tables(values: dict[str, pl.Series], cfg: HarmoniseConfig) -> dict[str, pl.DataFrame]:
    """Per parsed column, its distinct values parsed once: the typed columns and `_present_<col>` flags."""
    date, datetime = parse_iso_date("collected_at")
    result = _result_parts()
    count = parse_count(pl.col("result"), cfg.urine_count_words, cfg.urine_tntc_above)
    return {
        "site_id": _per_distinct(values["site_id"], {"site_id": _blank_to_null("site_id")}),
        "method": _per_distinct(values["method"], {"_method_clean": _blank_to_null("method").str.to_uppercase()}),
        "collected_at": _per_distinct(
            values["collected_at"],
            {
                "collected_date": date,
                "collected_at_parsed": datetime,
                "_present_collected_at": is_present("collected_at"),
            },
        ),
        "ref_low": _per_distinct(
            values["ref_low"], {"ref_low_reported": parse_number("ref_low"), "_present_ref_low": is_present("ref_low")}
        ),
        "ref_high": _per_distinct(
            values["ref_high"],
            {"ref_high_reported": parse_number("ref_high"), "_present_ref_high": is_present("ref_high")},
        ),
        "lloq": _per_distinct(
            values["lloq"], {"lloq_reported": parse_number("lloq"), "_present_lloq": is_present("lloq")}
        ),
        "result": _per_distinct(
            values["result"],
            {
                "censoring": result.struct.field("1"),
                "value_reported": result.struct.field("2").cast(pl.Float64, strict=False),
                "_present_result": is_present("result"),
                # The reading as a semi-quantitative count, used by the rows of those analytes only.
                "_count_value": count.value,
                "_count_high": count.value_high,
                "_count_censoring": count.censoring,
                "_count_problem": count.problem,
            },
        ),
    }


def _numbers(values: dict[str, pl.Series]) -> dict[str, pl.DataFrame]:
    """The numbers converted with the unit, once per distinct value: the number and its decimal places."""
    result = _result_parts()
    return {
        "result": _per_distinct(
            values["result"],
            {
                "number": result.struct.field("2").cast(pl.Float64, strict=False),
                "places": decimals_of(result.struct.field("2")),
            },
        ),
        **{
            c: _per_distinct(values[c], {"number": parse_number(c), "places": decimals_of(pl.col(c))})
            for c in ("ref_low", "ref_high", "lloq")
        },
    }


def harmonise_labs(raw: pl.DataFrame, ref: ReferenceTables, cfg: HarmoniseConfig) -> Harmonised:
    """Map, parse and convert raw lab rows.

    Every repeated string column is parsed once per distinct value and spread back onto the rows by
    position (see `_per_distinct`); the wide frame is never joined or copied beyond the panel filter, and
    each step is one parallel `select`. Besides the typed columns, candidates carry `_present_<col>` (the
    field is not blank) for result, ref_low, ref_high, lloq and collected_at, and `_raw_<col>` verbatim copies
    of the identifiers, site and method for the quarantine. Converted numbers keep the precision they were
    reported with, without binary artefacts (`multiplied`, `per_upper_limit`; docs/input.md).

    Args:
        raw: lab rows as read by `immunostrat.ingest.io.read_labs` (all String, plus source_file/source_row).
        ref: the mapping tables.
        cfg: harmonisation options.

    Returns:
        The typed candidate rows and the rows outside the panel.
    """
    # Readers hand over many chunks (one per parquet row group); hash lookups and filters on one chunk run
    # about twice as fast, and an explicit rechunk is cheap (it is `select` that copies while rechunking).
    raw = raw.rechunk()
    known_tests = raw["test"].unique().drop_nulls()
    tests = _test_analytes(known_tests, ref)
    test_code = raw.select(_code("test", known_tests)).to_series()
    in_panel = tests["_in_panel"].gather(test_code)
    outside = raw.filter(~in_panel).select("source_file", "source_row", "test")
    panel = raw.filter(in_panel)

    parsed_cols = ("unit", "site_id", "method", "collected_at", "ref_low", "ref_high", "lloq", "result")
    # One parallel pass for the distinct values of every repeated column.
    values = distinct_values(panel, parsed_cols)
    tables = _parsed_tables(values, cfg)
    # Each test's reported analyte as a position among the panel's, to find its (analyte, unit) pair.
    reported = ref.test_codes["analyte"].unique(maintain_order=True)
    reported_code = tests.select(_code("analyte_reported", reported)).to_series()
    units = _with_null(values["unit"])
    factors = ref.units.filter(pl.col("conversion") == "multiply")["factor"].unique().sort()
    pairs = _unit_pairs(_with_null(reported), units, ref, factors)
    numbers = _numbers(values)
    # Each number times each multiplying factor (rounded; see `multiplied`): rows pick theirs by position.
    products = {c: multiplied(table, factors) for c, table in numbers.items()}
    factor_code = pl.lit(pairs["_factor_code"]).gather(pl.col("_code_pair"))

    # Derived columns are computed from the codes alone and stacked beside the input columns: selecting or
    # adding columns to the wide frame would make polars copy every input column into one chunk.
    panel_test_code = test_code.filter(in_panel)
    codes = panel.select(
        *(_code(c, values[c]) for c in parsed_cols if c != "unit"),
        _code_test=pl.lit(panel_test_code),
        _code_pair=pl.lit(reported_code.gather(panel_test_code)) * len(units) + _code("unit", values["unit"]),
    )
    derived = codes.select(
        pl.lit(tests["analyte_reported"]).gather(pl.col("_code_test")).alias("analyte_reported"),
        *(
            expr
            for c, table in tables.items()
            for expr in _gather(table.drop(_COUNT_FIELDS, strict=False), pl.col(f"_code_{c}"))
        ),
        *_gather(pairs.drop("_factor_code"), pl.col("_code_pair")),
        *(
            pl.lit(products[c]).gather(pl.col(f"_code_{c}") * factors.len() + factor_code).alias(name)
            for c, name in _CONVERTED.items()
        ),
    )
    method = pl.col("_method_clean")
    if cfg.ifn_default_method:
        method = (
            pl.when((pl.col("analyte_reported") == "ifn_score") & method.is_null())
            .then(pl.lit(cfg.ifn_default_method.strip().upper()))
            .otherwise(method)
        )
    derived = _with_counts(
        _per_upper_limit_rows(derived.with_columns(method=method), codes, numbers), codes, tables["result"]
    )
    verbatim = ("study_id", "subject_id", "site_id", "method")
    candidates = panel.rename({c: f"_raw_{c}" for c in verbatim}).hstack(
        # Identifiers are matched without surrounding white space (never otherwise altered); `_raw_<col>`
        # keeps the verbatim values for the quarantine, which shows rows exactly as they were sent.
        [_stripped(panel[c]) for c in ("study_id", "subject_id")] + derived.get_columns()
    )
    return Harmonised(candidates=candidates, outside_panel=outside)


HARMONISED_COLUMNS = (
    "study_id",
    "subject_id",
    "site_id",
    "analyte",
    "value",
    "value_high",
    "unit",
    "censoring",
    "ref_low",
    "ref_high",
    "lloq",
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
    source = {
        **dict(zip(HARMONISED_COLUMNS, HARMONISED_COLUMNS, strict=True)),
        "unit": "unit_canonical",
        "ref_low": "ref_low_value",
        "ref_high": "ref_high_value",
        "lloq": "lloq_value",
        "collected_at": "collected_at_parsed",
        "test_reported": "test",
        "result_reported": "result",
        "unit_reported": "unit",
    }
    # A plain column pick and renames: `select` would copy every column into one chunk first.
    picked = accepted[[source[c] for c in HARMONISED_COLUMNS]]
    return picked.rename({source[c]: c for c in HARMONISED_COLUMNS if source[c] != c})
