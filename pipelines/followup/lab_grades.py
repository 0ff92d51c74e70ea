"""CTCAE v5 laboratory toxicity grades from a criteria table shipped as data (issue 13; docs/toxicity.md).

**Criteria as data.** `pipelines/protocols/ctcae_v5_lab_criteria.csv` holds one row per term, grade and
condition: `term`, `analyte` (our canonical analyte), `direction` (low|high), `grade` (1-4), `comparator` (`<`,
`<=`, `>`, `>=`), `threshold`, `threshold_basis` (`absolute`, or a multiple of `lln`, `uln` or `baseline`),
`unit` (absolute thresholds only) and `source`. The thresholds are NCI CTCAE v5.0 as encoded in pharmaverse
admiral's `ncictcaev5` grading metadata (Apache-2.0). A grade with alternative conditions (creatinine grade 3:
> 3 x ULN or > 3 x baseline) has one row per condition: any condition met gives the grade. A user's table with
the same columns extends (its terms replace the shipped ones of the same name) or replaces it (`load_criteria`).

**Units.** Lab values arrive in the analyte's canonical unit (harmonised); an absolute threshold is converted
from the criterion's unit into that unit through the unit table (`schemas/reference/units.csv`, factor and
rounding exactly as harmonise converts a reported value, so a value reported exactly at the threshold in the
criterion's unit lands exactly on it): 0.2 x 10^9/L lymphocytes is 200 cells/uL. A unit the table cannot
convert to the analyte's canonical unit is never guessed: its conditions are unknown (`UNIT_NOT_CONVERTIBLE`).

**Grading one measurement for one term**, three-valued:

- each condition is true, false or unknown. Limit-based conditions compare the ratio value / limit (LLN =
  `ref_low`, ULN = `ref_high`, baseline = the treatment baseline value), rounded to `ratio_decimals` (default 6,
  halves away from zero) so that 1.2 / 0.8 counts as exactly 1.5 and not 1.4999999999999998; absolute ones
  compare the value itself (already at its reported precision). Boundaries are exactly the comparator's: > 1.5 x
  ULN is false at exactly 1.5.
- the grade is the highest grade one of whose conditions is true, provided every higher grade is known false;
  0 when every condition is false; null (not gradable) as soon as a higher grade is unknown. So an absolute
  threshold decides without the lab's limit (neutrophils 0.4 -> 4 without `ref_low`), while 1.9 without an LLN
  is not gradable (`NO_REFERENCE_LIMIT`: grade 1 or 0 depends on the LLN).
- a censored result decides a condition only when its comparator implies it ("<0.1" is < 0.5, so grade 4;
  ">2" against < 1.5 is false); an interval (`value`-`value_high`, both included) decides when it lies wholly on
  one side. Otherwise the condition is unknown (`CENSORED_UNDECIDED`).
- a missing or non-positive limit leaves its condition unknown (`NO_REFERENCE_LIMIT`); a missing or censored
  treatment baseline leaves a baseline condition unknown (`NO_BASELINE`), or false with `missing_baseline:
  not_applicable` (admiral's reading).
- low and high terms are separate rows (`direction`), so a test graded both ways never overwrites itself.

The reason of a not-gradable row is that of the highest undecided grade; when several conditions of it are
unknown, the first in `REASONS` order names it.

**Baseline grade**: the treatment-baseline value (`treatment_baseline_labs`: the last value on or before first
exposure, within `baseline_window_days`) graded by the same rules, with its own limits; a multiple of the
baseline is never met by the baseline itself.

**Worst treatment-emergent grade** (`worst_emergent_grades`, long; `worst_grades_wide`, one column per term):
post-infusion means `days_since_infusion >= emergent_from_day` (default 1: samples on day 0 are usually drawn
before the infusion); a grade is treatment-emergent when it is worse than the subject's baseline grade for that
term. When the baseline grade is unknown, whether a grade >= 1 is emergent is unknown (default), or it counts as
emergent (`unknown_baseline_grade: emergent`). Not-gradable measurements are counted, never guessed.

It is one module: reading and checking the criteria table and grading by it share the table's columns and the
three-valued rules above, and change together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import polars as pl

from immunostrat.config.followup import LabGradesConfig
from immunostrat.errors import SettingsError
from immunostrat.followup.activity import KEY
from immunostrat.followup.thresholds import compare
from immunostrat.ingest.reference import ReferenceTables, load_reference
from immunostrat.stages.harmonise import decimals_of, places_added, round_to_places

__all__ = [
    "CRITERIA_COLUMNS",
    "REASONS",
    "WORST_REASONS",
    "baseline_grades",
    "criteria_from_config",
    "default_criteria_path",
    "grade_labs",
    "load_criteria",
    "term_slug",
    "treatment_baseline_labs",
    "worst_emergent_grades",
    "worst_grade_column",
    "worst_grades_wide",
]

CRITERIA_COLUMNS = (
    "term",
    "analyte",
    "direction",
    "grade",
    "comparator",
    "threshold",
    "threshold_basis",
    "unit",
    "source",
)
#: Comparators a direction allows: a low term grades values below a threshold, a high term values above.
DIRECTION_COMPARATORS: dict[str, tuple[str, ...]] = {"low": ("<", "<="), "high": (">", ">=")}
BASES = ("absolute", "lln", "uln", "baseline")
GRADES = (1, 2, 3, 4)

#: Reason code -> meaning, for `lab_grades.parquet`. The not-gradable codes are in priority order: when several
#: conditions of the deciding grade are unknown, the first code here names the row.
REASONS: dict[str, str] = {
    "GRADED": "Graded: `grade` is 0 (no condition met) to 4.",
    "UNIT_NOT_CONVERTIBLE": "A deciding criterion's unit cannot be converted to the analyte's canonical unit "
    "through the unit table: not gradable.",
    "NO_VALUE": "The measurement has no numeric value: not gradable.",
    "NO_REFERENCE_LIMIT": "A deciding criterion is a multiple of the lab's LLN or ULN and the row has no (positive) "
    "limit, and no absolute criterion decides: not gradable.",
    "NO_BASELINE": "A deciding criterion is a multiple of the treatment baseline and the subject has no exact "
    "baseline value for the analyte: not gradable.",
    "CENSORED_UNDECIDED": "The result is censored (`<0.5`) or an interval, and its bound does not settle a deciding "
    "criterion: not gradable.",
}
_UNKNOWN = tuple(code for code in REASONS if code != "GRADED")

#: Reason code -> meaning, for the worst treatment-emergent grade per subject and term.
WORST_REASONS: dict[str, str] = {
    "EVALUATED": "`worst_emergent_grade` is known (0 when no post-infusion grade is worse than baseline).",
    "NOT_INFUSED": "The subject has no day 0: nothing is post-infusion.",
    "NO_POST_INFUSION_GRADE": "No gradable measurement from `emergent_from_day` on.",
    "BASELINE_GRADE_UNKNOWN": "A post-infusion grade may or may not be worse than the unknown baseline grade, and "
    "it is above the worst grade known to be emergent.",
}

_GRADE = pl.Int8


def default_criteria_path() -> Path:
    """The shipped NCI CTCAE v5.0 criteria table."""
    return Path(str(resources.files("immunostrat") / "protocols" / "ctcae_v5_lab_criteria.csv"))


def term_slug(term: str) -> str:
    """A term as a column-name fragment: lower case, runs of other characters as `_` ("CD4 lymphocytes
    decreased" -> `cd4_lymphocytes_decreased`)."""
    return re.sub(r"[^a-z0-9]+", "_", term.lower()).strip("_")


def worst_grade_column(term: str) -> str:
    """The wide column of a term's worst treatment-emergent grade: `ctcae_<term_slug>_worst_grade`."""
    return f"ctcae_{term_slug(term)}_worst_grade"


# --------------------------------------------------------------------------------------------------
# The criteria table
# --------------------------------------------------------------------------------------------------


def _invalid(source: Path, line: int, column: str, value: object, expected: str) -> SettingsError:
    return SettingsError(f"{source}: line {line}, column {column}: {value!r} is not valid; expected {expected}")


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _checked_fields(source: Path, line: int, row: dict[str, str], analytes: set[str]) -> float:
    """Check one criteria row's fields on their own (the checks across rows are the caller's); its threshold."""
    if not row["term"] or not term_slug(row["term"]):
        raise _invalid(source, line, "term", row["term"], "a term name with at least one letter or digit")
    if row["analyte"] not in analytes:
        raise _invalid(source, line, "analyte", row["analyte"], "a canonical analyte of analytes.csv")
    if row["direction"] not in DIRECTION_COMPARATORS:
        raise _invalid(source, line, "direction", row["direction"], "low or high")
    if row["grade"] not in {str(g) for g in GRADES}:
        raise _invalid(source, line, "grade", row["grade"], "a whole number from 1 to 4")
    allowed = DIRECTION_COMPARATORS[row["direction"]]
    if row["comparator"] not in allowed:
        raise _invalid(
            source, line, "comparator", row["comparator"], f"{' or '.join(allowed)} for a {row['direction']} term"
        )
    if row["threshold_basis"] not in BASES:
        raise _invalid(source, line, "threshold_basis", row["threshold_basis"], " or ".join(BASES))
    threshold = _number(row["threshold"])
    if threshold is None or threshold <= 0:
        raise _invalid(source, line, "threshold", row["threshold"], "a number > 0")
    absolute = row["threshold_basis"] == "absolute"
    if absolute and not row["unit"]:
        raise _invalid(source, line, "unit", row["unit"], "the threshold's unit for an absolute threshold")
    if not absolute and row["unit"]:
        raise _invalid(
            source, line, "unit", row["unit"], f"empty: the threshold is a multiple of {row['threshold_basis']}"
        )
    if not row["source"]:
        raise _invalid(source, line, "source", row["source"], "the source of the threshold (attribution)")
    return threshold


def _checked(source: Path, analytes: set[str]) -> pl.DataFrame:
    """One criteria file read and checked row by row (a few dozen rows of configuration, not data)."""
    try:
        table = pl.read_csv(source, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SettingsError(f"cannot read the CTCAE criteria table {source}: {exc}") from exc
    missing = [c for c in CRITERIA_COLUMNS if c not in table.columns]
    if missing:
        raise SettingsError(f"CTCAE criteria table {source} lacks column(s): {', '.join(missing)}")
    rows = []
    term_of: dict[str, tuple[str, str, str, int]] = {}  # slug -> (term, analyte, direction, first line)
    seen: set[tuple[str, int, str]] = set()
    for index, raw in enumerate(table.select(CRITERIA_COLUMNS).iter_rows(named=True)):
        line = index + 2  # the header is line 1
        row = {k: (v or "").strip() for k, v in raw.items()}
        threshold = _checked_fields(source, line, row, analytes)
        slug = term_slug(row["term"])
        first = term_of.setdefault(slug, (row["term"], row["analyte"], row["direction"], line))
        for column, position in (("term", 0), ("analyte", 1), ("direction", 2)):
            if row[column] != first[position]:
                raise _invalid(
                    source, line, column, row[column], f"{first[position]!r} as on line {first[3]} for this term"
                )
        condition = (slug, int(row["grade"]), row["threshold_basis"])
        if condition in seen:
            raise _invalid(source, line, "threshold_basis", row["threshold_basis"], "one row per term, grade and basis")
        seen.add(condition)
        rows.append(row | {"grade": int(row["grade"]), "threshold": threshold, "unit": row["unit"] or None})
    return pl.DataFrame(
        rows,
        schema={
            "term": pl.String,
            "analyte": pl.String,
            "direction": pl.String,
            "grade": _GRADE,
            "comparator": pl.String,
            "threshold": pl.Float64,
            "threshold_basis": pl.String,
            "unit": pl.String,
            "source": pl.String,
        },
    )


def load_criteria(
    path: str | Path | None = None,
    *,
    mode: Literal["extend", "replace"] = "extend",
    reference: ReferenceTables | None = None,
) -> pl.DataFrame:
    """The grading criteria: the shipped CTCAE v5.0 table, extended or replaced by a user's table at `path`.

    Args:
        path: a user's criteria CSV with the columns `CRITERIA_COLUMNS`; None: the shipped table alone.
        mode: `extend` (the user's terms replace the shipped rows of the same term, matched by `term_slug`; new
            terms are added after them) or `replace` (the user's table alone).
        reference: the mapping tables (for the known analytes); the built-in ones when None.

    Returns:
        One row per criterion: the columns `CRITERIA_COLUMNS`, `grade` Int8, `threshold` Float64, `unit` null for
        a multiple of a limit.

    Raises:
        SettingsError: an unreadable file or a missing column; or, naming file, line, column, value and what was
            expected: an empty term, an unknown analyte, a direction other than low/high, a grade outside 1-4, a
            comparator the direction does not allow, an unknown basis, a threshold that is not a number > 0, a unit
            missing on an absolute threshold (or given on a multiple), an empty source, a term whose rows disagree
            on its analyte or direction, or a term, grade and basis listed twice.
    """
    if mode not in ("extend", "replace"):
        raise SettingsError(f"criteria mode {mode!r} is not valid; expected extend or replace")
    analytes = set((reference or load_reference()).panel)
    shipped = _checked(default_criteria_path(), analytes)
    if path is None:
        return shipped
    user = _checked(Path(path), analytes)
    if mode == "replace":
        return user
    slugs = {term_slug(t) for t in user["term"].to_list()}
    kept = shipped.filter(~pl.col("term").map_elements(term_slug, return_dtype=pl.String).is_in(list(slugs)))
    return pl.concat([kept, user])


def criteria_from_config(
    config: LabGradesConfig | None = None, reference: ReferenceTables | None = None
) -> pl.DataFrame:
    """`load_criteria` with the file and mode of `config` (defaults when None)."""
    cfg = config or LabGradesConfig()
    return load_criteria(cfg.criteria_file, mode=cfg.criteria_mode, reference=reference)


def _resolved(criteria: pl.DataFrame, reference: ReferenceTables) -> pl.DataFrame:
    """`criteria` plus `_limit_value` (an absolute threshold in the analyte's canonical unit, else the multiplier;
    null when the unit cannot be converted).

    The factor is the unit table's multiplying factor from (analyte, unit) to the same analyte; the product is
    rounded as harmonise rounds a converted value (`round_to_places`).
    """
    factors = (
        reference.units.filter((pl.col("conversion") == "multiply") & (pl.col("target_analyte") == pl.col("analyte")))
        .select("analyte", "unit_key", "factor")
        .unique(["analyte", "unit_key"], keep="first", maintain_order=True)
    )
    # Shortest decimal form of the threshold, without a trailing ".0" (25.0 -> "25": 0 places).
    text = pl.col("threshold").cast(pl.String).str.replace(r"\.0$", "")
    places = decimals_of(text) + places_added(pl.col("factor"))
    return (
        criteria.with_columns(unit_key=pl.col("unit").str.strip_chars().str.to_lowercase())
        .join(factors, on=["analyte", "unit_key"], how="left", maintain_order="left")
        .with_columns(
            _limit_value=pl.when(pl.col("threshold_basis") != "absolute")
            .then(pl.col("threshold"))
            .otherwise(round_to_places(pl.col("threshold") * pl.col("factor"), places))
        )
        .drop("unit_key", "factor")
    )


# --------------------------------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------------------------------


def _condition(criterion: dict[str, object], cfg: LabGradesConfig, of_baseline: bool) -> tuple[pl.Expr, pl.Expr]:
    """(met, cause) of one criterion row: met three-valued; cause the position in `_UNKNOWN` when met is null.

    With `of_baseline` the rows are baseline values themselves: a multiple (> 1) of the baseline is never met.
    """
    basis, comparator = criterion["threshold_basis"], str(criterion["comparator"])
    limit_value = criterion["_limit_value"]
    code = {c: pl.lit(i, pl.Int8) for i, c in enumerate(_UNKNOWN)}
    if basis == "baseline" and of_baseline:
        return pl.lit(False), pl.lit(None, pl.Int8)
    if limit_value is None:  # an absolute threshold in a unit the table cannot convert
        return pl.lit(None, pl.Boolean), code["UNIT_NOT_CONVERTIBLE"]
    value, value_high, censoring = pl.col("value"), pl.col("value_high"), pl.col("censoring")
    threshold = pl.lit(float(limit_value))  # type: ignore[arg-type]
    if basis == "absolute":
        usable, missing = pl.lit(True), code["NO_VALUE"]
        met = compare(value, comparator, threshold, censoring=censoring, value_high=value_high)
    else:
        limit = {"lln": pl.col("ref_low"), "uln": pl.col("ref_high"), "baseline": pl.col("_baseline_value")}[str(basis)]
        usable = (limit > 0).fill_null(False)
        missing = code["NO_BASELINE"] if basis == "baseline" else code["NO_REFERENCE_LIMIT"]

        def ratio(x: pl.Expr) -> pl.Expr:
            return (x / limit).round(cfg.ratio_decimals, mode="half_away_from_zero")

        # A positive limit keeps the order, so a censored or interval result compares as its ratio does.
        met = compare(ratio(value), comparator, threshold, censoring=censoring, value_high=ratio(value_high))
    if basis == "baseline" and cfg.missing_baseline == "not_applicable":
        unusable: pl.Expr = pl.lit(False)
    else:
        unusable = pl.lit(None, pl.Boolean)
    value_missing = pl.col("value").is_null()
    met = pl.when(value_missing).then(None).when(~usable).then(unusable).otherwise(met)
    cause = (
        pl.when(met.is_not_null())
        .then(None)
        .when(value_missing)
        .then(code["NO_VALUE"])
        .when(~usable)
        .then(missing)
        .otherwise(code["CENSORED_UNDECIDED"])
    )
    return met.cast(pl.Boolean), cause


def _grade_term(rows: pl.LazyFrame, criteria: pl.DataFrame, cfg: LabGradesConfig, of_baseline: bool) -> pl.LazyFrame:
    """`rows` (one analyte's measurements) with `grade` and `reason` for one term's criteria."""
    conditions = [
        _condition(c, cfg, of_baseline) for c in criteria.iter_rows(named=True)
    ]  # a handful of criterion rows
    grades = criteria["grade"].to_list()
    met_cols, cause_cols = [], []
    for g in sorted(set(grades)):
        mine = [i for i, grade in enumerate(grades) if grade == g]
        # Kleene: any condition true -> true; all false -> false; else unknown.
        met_cols.append(pl.any_horizontal([conditions[i][0] for i in mine]).alias(f"_met_{g}"))
        cause_cols.append(pl.min_horizontal([conditions[i][1] for i in mine]).alias(f"_cause_{g}"))
    staged = rows.with_columns(*met_cols, *cause_cols)
    grade: pl.Expr = pl.lit(0, _GRADE)
    reason: pl.Expr = pl.lit("GRADED")
    names = pl.Series(list(_UNKNOWN))
    for g in sorted(set(grades)):  # the highest grade ends up outermost
        met = pl.col(f"_met_{g}")
        grade = pl.when(met).then(pl.lit(g, _GRADE)).when(met.is_null()).then(pl.lit(None, _GRADE)).otherwise(grade)
        cause = pl.lit(names).gather(pl.col(f"_cause_{g}").cast(pl.UInt32))
        reason = pl.when(met).then(pl.lit("GRADED")).when(met.is_null()).then(cause).otherwise(reason)
    return staged.with_columns(grade=grade, reason=reason).drop(c.meta.output_name() for c in met_cols + cause_cols)


def _with_optional(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with each of `columns` cast to its type, or added as null when absent."""
    return frame.with_columns(
        pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in columns.items()
    )


_MEASUREMENT = {
    "value": pl.Float64(),
    "value_high": pl.Float64(),
    "censoring": pl.String(),
    "ref_low": pl.Float64(),
    "ref_high": pl.Float64(),
}


def _graded(
    rows: pl.LazyFrame, resolved: pl.DataFrame, cfg: LabGradesConfig, *, of_baseline: bool = False
) -> pl.LazyFrame:
    """Every row of `rows` whose analyte a term grades, once per such term: `term`, `direction`, `grade`,
    `reason` added; terms in table order, rows in input order within a term. One lazy plan for every term (the
    terms' conditions share their sub-expressions and the terms run side by side)."""
    out = []
    for term in resolved["term"].unique(maintain_order=True).to_list():  # a handful of terms
        criteria = resolved.filter(pl.col("term") == term)
        analyte, direction = criteria["analyte"][0], criteria["direction"][0]
        subset = rows.filter(pl.col("analyte") == analyte)
        out.append(
            _grade_term(subset, criteria, cfg, of_baseline).with_columns(term=pl.lit(term), direction=pl.lit(direction))
        )
    if not out:
        return rows.clear().with_columns(
            term=pl.lit(None, pl.String),
            direction=pl.lit(None, pl.String),
            grade=pl.lit(None, _GRADE),
            reason=pl.lit(None, pl.String),
        )
    return pl.concat(out)


def baseline_grades(
    baseline_values: pl.DataFrame,
    criteria: pl.DataFrame,
    config: LabGradesConfig | None = None,
    reference: ReferenceTables | None = None,
) -> pl.DataFrame:
    """The grade of each subject's treatment-baseline value per term (the baseline is its own baseline).

    Returns:
        `study_id`, `subject_id`, `term`, `baseline_grade` (null when not gradable), `baseline_reason`.
    """
    cfg = config or LabGradesConfig()
    resolved = _resolved(criteria, reference or load_reference())
    rows = (
        _with_optional(baseline_values, _MEASUREMENT)
        .select(*KEY, "analyte", *_MEASUREMENT)
        .unique([*KEY, "analyte"], keep="first", maintain_order=True)
    )
    return (
        _graded(rows.lazy(), resolved, cfg, of_baseline=True)
        .select(*KEY, "term", pl.col("grade").alias("baseline_grade"), pl.col("reason").alias("baseline_reason"))
        .collect()
    )


def grade_labs(
    labs: pl.DataFrame,
    subjects: pl.DataFrame,
    baseline_values: pl.DataFrame,
    criteria: pl.DataFrame,
    config: LabGradesConfig | None = None,
    *,
    reference: ReferenceTables | None = None,
) -> pl.DataFrame:
    """CTCAE grade of every measurement of a graded analyte, once per term (rules in the module docstring).

    Args:
        labs: harmonised labs (`study_id`, `subject_id`, `analyte`, `value`, `collected_date`, `source_file`,
            `source_row`; `value_high`, `censoring`, `ref_low`, `ref_high` when present, else null).
        subjects: accepted subjects (`study_id`, `subject_id`, `day0`; the first row of a repeated subject).
        baseline_values: the treatment baseline per subject and analyte (`treatment_baseline_labs`): `value`,
            `ref_low`, `ref_high`, and `censoring`, `value_high` when present. A censored or interval baseline is
            no baseline for a multiple of it.
        criteria: `load_criteria`'s table.
        config: ratio rounding and the missing-baseline rule (defaults when None).
        reference: the mapping tables (unit conversions); the built-in ones when None.

    Returns:
        One row per measurement and term, keyed by `source_file`, `source_row`, `term`: `study_id`,
        `subject_id`, `analyte`, `collected_date`, `days_since_infusion` (null without day 0), `direction`,
        `grade` (Int8; null when not gradable), `reason` (`REASONS`), `baseline_grade`; terms in table order, the
        measurements of one term in input order.
    """
    cfg = config or LabGradesConfig()
    ref = reference or load_reference()
    resolved = _resolved(criteria, ref)
    day0 = _with_optional(subjects.select(*KEY, *(c for c in ("day0",) if c in subjects.columns)), {"day0": pl.Date()})
    base = (
        _with_optional(baseline_values, {"censoring": pl.String(), "value_high": pl.Float64()})
        .filter(pl.col("censoring").is_null() & pl.col("value_high").is_null())
        .select(*KEY, "analyte", pl.col("value").cast(pl.Float64).alias("_baseline_value"))
        .unique([*KEY, "analyte"], keep="first", maintain_order=True)
    )
    rows = (
        _with_optional(labs.filter(pl.col("analyte").is_in(resolved["analyte"].unique().to_list())), _MEASUREMENT)
        .lazy()
        .select("source_file", "source_row", *KEY, "analyte", "collected_date", *_MEASUREMENT)
        .join(
            day0.unique(KEY, keep="first", maintain_order=True).select(*KEY, pl.col("day0").cast(pl.Date)).lazy(),
            on=KEY,
            how="left",
            maintain_order="left",
        )
        .join(base.lazy(), on=[*KEY, "analyte"], how="left", maintain_order="left")
    )
    graded = _graded(rows, resolved, cfg)
    baseline = baseline_grades(baseline_values, criteria, cfg, ref).drop("baseline_reason").lazy()
    return (
        graded.join(baseline, on=[*KEY, "term"], how="left", maintain_order="left")
        .select(
            "source_file",
            "source_row",
            "term",
            *KEY,
            "analyte",
            "collected_date",
            (pl.col("collected_date") - pl.col("day0")).dt.total_days().cast(pl.Int32).alias("days_since_infusion"),
            "direction",
            "grade",
            "reason",
            "baseline_grade",
        )
        .collect()
    )


# --------------------------------------------------------------------------------------------------
# Treatment baseline values
# --------------------------------------------------------------------------------------------------


def treatment_baseline_labs(
    labs: pl.DataFrame, subjects: pl.DataFrame, window_days: int = 30, *, include_exposure_day: bool = True
) -> pl.DataFrame:
    """Per subject and analyte, the treatment-baseline lab value: the last one before treatment.

    The anchor is first exposure (`first_exposure_date`, else `day0`, whichever `subjects` has). The value is the
    latest dated at most `window_days` before it, and on the anchor day itself when `include_exposure_day`
    (the ADaM convention: last value on or before the first dose date, samples that day being drawn before
    dosing), else strictly before. On one date the later `collected_at` wins (when present), then the earlier
    input row. Subjects without an anchor get no rows (not assessable later: `NO_BASELINE`).

    Returns:
        `study_id`, `subject_id`, `analyte`, `value`, `value_high`, `censoring`, `ref_low`, `ref_high`,
        `collected_date`; one row per subject and analyte with such a value, in input order of the chosen rows.
    """
    anchors = [c for c in ("first_exposure_date", "day0") if c in subjects.columns]
    exposure = pl.coalesce(pl.col(c).cast(pl.Date) for c in anchors) if anchors else pl.lit(None, pl.Date)
    anchor = subjects.select(*KEY, exposure.alias("_exposure")).unique(KEY, keep="first", maintain_order=True)
    tie = [c for c in ("collected_at",) if c in labs.columns]
    days_before = (pl.col("_exposure") - pl.col("collected_date")).dt.total_days()
    return (
        _with_optional(labs, _MEASUREMENT)
        .select(*KEY, "analyte", *_MEASUREMENT, "collected_date", *tie)
        .with_row_index("_row")
        .join(anchor, on=KEY, how="inner")
        .filter(days_before.is_between(0 if include_exposure_day else 1, window_days))
        .sort("collected_date", *tie, "_row", descending=[True] * (1 + len(tie)) + [False], nulls_last=True)
        .unique([*KEY, "analyte"], keep="first", maintain_order=True)
        .sort("_row")
        .select(*KEY, "analyte", *_MEASUREMENT, "collected_date")
    )


# --------------------------------------------------------------------------------------------------
# Worst treatment-emergent grade
# --------------------------------------------------------------------------------------------------


def worst_emergent_grades(grades: pl.DataFrame, config: LabGradesConfig | None = None) -> pl.DataFrame:
    """Per subject and term, the worst post-infusion treatment-emergent grade (rules in the module docstring).

    A post-infusion row (`days_since_infusion >= emergent_from_day`) is emergent when its grade is above the
    baseline grade; grade 0 never is; with the baseline grade unknown, a grade >= 1 is of unknown emergence
    (`unknown_baseline_grade: unknown`) or emergent (`emergent`). The worst emergent grade is the highest grade
    known emergent (0 when none), unless a row of unknown emergence has a higher grade: then it is null
    (`BASELINE_GRADE_UNKNOWN`).

    Args:
        grades: `grade_labs`'s table.
        config: `emergent_from_day` and `unknown_baseline_grade` (defaults when None).

    Returns:
        One row per subject and term in `grades`, in order of first appearance: `study_id`, `subject_id`,
        `term`, `baseline_grade`, `worst_grade` (any post-infusion grade, emergent or not), `worst_emergent_grade`,
        `worst_emergent_day` (first day since infusion at that grade; null when the grade is 0 or null),
        `post_infusion_measurements`, `post_infusion_not_gradable`, `reason` (`WORST_REASONS`).
    """
    cfg = config or LabGradesConfig()
    grade, baseline, day = pl.col("grade"), pl.col("baseline_grade"), pl.col("days_since_infusion")
    post = (day >= cfg.emergent_from_day).fill_null(False)
    unknown_as: pl.Expr = (grade >= 1) if cfg.unknown_baseline_grade == "emergent" else pl.lit(None, pl.Boolean)
    emergent = pl.when(grade == 0).then(False).when(baseline.is_not_null()).then(grade > baseline).otherwise(unknown_as)
    group = [*KEY, "term"]
    rows = grades.with_columns(_post=post, _emergent=(post & emergent).cast(pl.Boolean))
    known = grade.filter(pl.col("_post") & pl.col("_emergent").fill_null(False)).max()
    per = rows.group_by(group, maintain_order=True).agg(
        pl.col("baseline_grade").first(),
        grade.filter(pl.col("_post")).max().alias("worst_grade"),
        known.alias("_known"),
        grade.filter(pl.col("_post") & pl.col("_emergent").is_null() & grade.is_not_null()).max().alias("_open"),
        pl.col("_post").sum().cast(pl.Int32).alias("post_infusion_measurements"),
        (pl.col("_post") & grade.is_null()).sum().cast(pl.Int32).alias("post_infusion_not_gradable"),
        day.is_not_null().any().alias("_infused"),
    )
    known_or_0 = pl.col("_known").fill_null(0).cast(_GRADE)
    reason = (
        pl.when(~pl.col("_infused"))
        .then(pl.lit("NOT_INFUSED"))
        .when(pl.col("worst_grade").is_null())
        .then(pl.lit("NO_POST_INFUSION_GRADE"))
        .when((pl.col("_open") > known_or_0).fill_null(False))
        .then(pl.lit("BASELINE_GRADE_UNKNOWN"))
        .otherwise(pl.lit("EVALUATED"))
    )
    worst = pl.when(pl.col("reason") == "EVALUATED").then(known_or_0)
    out = per.with_columns(reason=reason).with_columns(worst_emergent_grade=worst.cast(_GRADE))
    onset = (
        rows.filter(pl.col("_post") & pl.col("_emergent").fill_null(False))
        .join(out.select(*group, "worst_emergent_grade"), on=group, how="inner")
        .filter(grade == pl.col("worst_emergent_grade"))
        .group_by(group)
        .agg(day.min().alias("worst_emergent_day"))
    )
    return out.join(onset, on=group, how="left", maintain_order="left").select(
        *group,
        pl.col("baseline_grade").cast(_GRADE),
        pl.col("worst_grade").cast(_GRADE),
        "worst_emergent_grade",
        pl.when(pl.col("worst_emergent_grade") >= 1)
        .then(pl.col("worst_emergent_day"))
        .cast(pl.Int32)
        .alias("worst_emergent_day"),
        "post_infusion_measurements",
        "post_infusion_not_gradable",
        "reason",
    )


def worst_grades_wide(worst: pl.DataFrame, terms: Sequence[str]) -> pl.DataFrame:
    """`worst_emergent_grades` as one row per subject and one column per term (`worst_grade_column(term)`),
    the form `toxicity.parquet` takes; null where the subject has no such row or its grade is not known.

    Args:
        worst: `worst_emergent_grades`'s table.
        terms: every term to give a column, in column order (e.g. the criteria's terms).
    """
    subjects = worst.select(KEY).unique(keep="first", maintain_order=True)
    for term in terms:  # a handful of terms
        column = worst.filter(pl.col("term") == term).select(
            *KEY, pl.col("worst_emergent_grade").cast(_GRADE).alias(worst_grade_column(term))
        )
        subjects = subjects.join(column, on=KEY, how="left", maintain_order="left")
    return subjects
