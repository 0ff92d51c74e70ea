"""The immune course after infusion, one row per subject: B-cell aplasia and return, CAR-T expansion, anti-dsDNA,
complement, IgG, clinical flares and the LICATS renal signal (issue 13).

Pure, vectorised polars. Every `_day` column counts days since infusion (`subjects.day0`). Every result is
three-valued or nullable: a null comes with a reason code (`REASONS`) in the group's `_reason` column, so "did
not happen" (`NOT_OBSERVED`) is never confused with "unknown" (`UNDECIDED`, `NO_MEASUREMENT`, ...). "First day"
columns are the first day a result *shows* the event; a reading that cannot decide (a censored `<20` against a
threshold of 1) never counts for or against it.

Observation (every group). Post-infusion means day >= 1: a sample dated on a dosing day is taken as drawn
before the dose (as for the treatment baseline). The course ends at the earliest of `death_date`,
`discontinued_date` and `retreatment_date` (a second infusion or another B-cell-depleting therapy); results and
visits dated after it are ignored, those on it kept (pre-dose). `course_end_day`/`course_end_cause` say which.
`death_date`, `retreatment_date`, `ivig_start_date` (and the labs' `lloq`) are optional inputs: absent = null.

Rules and choices (defaults and sources in `ImmuneCourseConfig` and docs/immune_course.md):

- B cells (`cd19_b_cells`, cells/uL). Per row: below the aplasia threshold = `activity.below` against the row's
  `lloq`, else `b_cell_aplasia_below` (a censored `<x` is below any threshold >= x; below the LLOQ is below it);
  at or above the return threshold (`b_cell_return_at_least`, default: the row's aplasia threshold). Rows of
  one date combine: the day is below when any row is, returned when every row is (Kleene). Aplasia day = the
  first day shown below; return day = the first of `b_cell_return_consecutive` consecutive measurement days
  after it all shown at or above (a single high value between lows is not a return). Status: `returned`;
  `aplasia_ongoing` (no return shown and none possible: censored at the last measurement, `b_cell_censored_day`;
  a censored aplasia is never "returned"); `never_aplastic`; `no_measurement`; `not_infused`; null with
  `UNDECIDED` when undecidable readings could still make an aplasia or a return.
- CAR-T (`car_t_cells` flow cells/uL, `car_t_copies` qPCR copies/ug DNA): the highest exact value, ties to the
  earlier day. A `>x` (or interval) reading at or above it leaves the peak unknown (`PEAK_CENSORED`); only `<x`
  readings: `NOT_DETECTED`.
- anti-dsDNA: positivity is the activity table's row rule (`activity.lab_rule`: above the row's `ref_high`,
  else at or above `BaselineConfig.anti_dsdna_default_cutoff`; `anti_dsdna_xuln` above 1). At the treatment
  baseline: any row positive in the baseline visit's lookback window (`FollowUpConfig.lookback_days`), as the
  activity table's lab descriptor there. Seroconversion: the first post-infusion day shown negative after a
  positive baseline; serological relapse: the first day shown positive after it. Rows of a day: any positive.
- Complement: low is the activity table's C3/C4 row rule (below the row's `ref_low`, else the configured LLN).
  Low at baseline: any C3 or C4 low in the baseline window. Normalization day: the first post-infusion date on
  which the latest C3 and the latest C4, each dated at most `complement_pair_within_days` before (default 0: the
  same date), are both shown not low.
- IgG (g/L): results after infusion up to `ivig_start_date` (IgG after IVIG reflects the infusion). The nadir is
  the result with the lowest upper bound (`<x` is at most x; `>x` has none), ties to the earlier day, reported
  with its censoring. `igg_below_lln`: any of those results below its own `ref_low` (Kleene: null when none is
  and one is unknown, e.g. without a limit); `igg_below_replacement_threshold` likewise against
  `igg_replacement_below`.
- Flares (activity table, SELENA flare index): a post-infusion visit flares when SLEDAI-2K rose by at least
  `flare_rise_at_least` over the comparator (previous visit of any date, or the treatment-baseline visit),
  three-valued from the score bounds: shown when `sledai_2k_known - comparator sledai_2k_max >= rise`, excluded
  when `sledai_2k_max - comparator sledai_2k_known < rise`. Severe when the visit's score is > `severe_flare_above`
  (null when the bounds straddle it). `flare_b_cells_returned`: true when B cells returned on or before the flare
  day, false when the flare fell in a shown aplasia (aplasia day <= flare day, before the return or censoring),
  null otherwise (never aplastic, undecided, or after censoring).
- LICATS renal signal (Hagen et al. 2025), for subjects with renal involvement at the treatment baseline (the
  renal endpoints' population rule, `endpoints.renal_involvement`): the first day from day 1 to
  `licats_window_days`, and before the B-cell return day, with creatinine >= `licats_creatinine_ratio` x the
  treatment-baseline creatinine (the latest in the baseline window, as the baseline UPCR) or UPCR >= (1 +
  `licats_upcr_rise`) x the treatment-baseline UPCR and >= `licats_upcr_at_least`. The window starts at day 1,
  not at the aplasia day: CD19 CAR-T depletes B cells within days, LICATS' median onset (day 10) often precedes
  the first B-cell count, and only a subject shown `never_aplastic` is excluded. A censored baseline value
  leaves its criterion unknown. A signal for review, not a diagnosis.

`relapse_events` lists serological relapses and every flare visit in long form, for "what changed since the last
run".

It is one module: the groups below share the observation window, the per-day readings and the reason codes, and
docs/immune_course.md documents them together.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from immunostrat.config.endpoints import RenalPopulation
from immunostrat.config.followup import FollowUpConfig, ImmuneCourseConfig
from immunostrat.config.run import BaselineConfig
from immunostrat.followup.activity import item, lab_rule
from immunostrat.followup.columns import with_optional_columns
from immunostrat.followup.endpoints import renal_involvement
from immunostrat.followup.thresholds import compare

__all__ = [
    "B_CELL_STATUSES",
    "FLARE_SEVERITIES",
    "LICATS_SOURCES",
    "REASONS",
    "RELAPSE_KINDS",
    "immune_course",
    "relapse_events",
]

KEY = ["study_id", "subject_id"]

#: Reason code -> meaning; a group's `_reason` column holds one where its result is null (or not assessable).
REASONS: dict[str, str] = {
    "NOT_INFUSED": "The subject has no day 0 (no infusion date): not assessable.",
    "NO_MEASUREMENT": "No usable post-infusion result (or visit) in the observed course.",
    "NO_MEASUREMENT_BEFORE_IVIG": "IgG was measured after infusion only after IVIG began: no nadir.",
    "NO_TREATMENT_BASELINE": "The subject has no treatment-baseline visit.",
    "NO_BASELINE_VALUE": "No result in the treatment-baseline visit's lookback window.",
    "BASELINE_UNKNOWN": "The treatment-baseline results do not decide (censored, or a limit missing).",
    "BASELINE_NEGATIVE": "anti-dsDNA was not positive at the treatment baseline: no seroconversion to look for.",
    "BASELINE_NORMAL": "Complement was not low at the treatment baseline: no normalization to look for.",
    "NOT_SEROCONVERTED": "No seroconversion was shown: no serological relapse to look for.",
    "NOT_DETECTED": "Every post-infusion result was below its limit (`<x`): no peak value.",
    "PEAK_CENSORED": "A `>x` result at or above the highest exact value leaves the peak unknown.",
    "NOT_OBSERVED": "Assessed: the event was not shown up to the end of the observed course.",
    "UNDECIDED": "Not shown, but results that cannot decide (censored, unknown descriptors) leave it open.",
    "NOT_RENAL": "No renal involvement at the treatment baseline: the LICATS renal signal does not apply.",
    "RENAL_UNKNOWN": "Renal involvement at the treatment baseline is unknown.",
    "NEVER_APLASTIC": "B cells were never shown aplastic: no LICATS window.",
}
B_CELL_STATUSES: tuple[str, ...] = ("aplasia_ongoing", "returned", "never_aplastic", "no_measurement", "not_infused")
FLARE_SEVERITIES: tuple[str, ...] = ("mild_moderate", "severe")
RELAPSE_KINDS: tuple[str, ...] = ("serological_relapse", "flare")
LICATS_SOURCES: tuple[str, ...] = ("creatinine", "upcr", "creatinine_and_upcr")
#: Course-ending events, in the order that names the cause when two fall on one date.
END_CAUSES: tuple[str, ...] = ("death", "retreatment", "discontinued")

#: Optional inputs: absent columns count as all null.
OPTIONAL_SUBJECT_COLUMNS: dict[str, pl.DataType] = {
    "discontinued_date": pl.Date(),
    "death_date": pl.Date(),
    "retreatment_date": pl.Date(),
    "ivig_start_date": pl.Date(),
    "lupus_nephritis_class": pl.String(),
}
OPTIONAL_LAB_COLUMNS: dict[str, pl.DataType] = {
    "value_high": pl.Float64(),
    "censoring": pl.String(),
    "ref_low": pl.Float64(),
    "ref_high": pl.Float64(),
    "lloq": pl.Float64(),
}
_DSDNA = ("anti_dsdna", "anti_dsdna_xuln")
_COMPLEMENT = ("c3", "c4")
_V, _VH, _C = pl.col("value"), pl.col("value_high"), pl.col("censoring")


def _row(op: str, threshold: pl.Expr | float) -> pl.Expr:
    """A lab row against a threshold, three-valued (intervals and censored results as `thresholds.compare`)."""
    return compare(_V, op, threshold, censoring=_C, value_high=_VH)


def _days(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    return (later - earlier).dt.total_days().cast(pl.Int32)


def _first_reason(*cases: tuple[pl.Expr, str]) -> pl.Expr:
    """The code of the first case whose condition holds (null when none does)."""
    chained: Any = pl
    for condition, code in cases:
        chained = chained.when(condition).then(pl.lit(code))
    return chained.otherwise(pl.lit(None, pl.String))


# --------------------------------------------------------------------------------------------------
# Inputs: subject anchors, post-infusion series, treatment-baseline windows
# --------------------------------------------------------------------------------------------------


def _anchors(subjects: pl.DataFrame) -> pl.DataFrame:
    """One row per subject: day 0, the end of the observed course and its cause, IVIG start, LN class."""
    frame = with_optional_columns(subjects, OPTIONAL_SUBJECT_COLUMNS).unique(
        subset=KEY, keep="first", maintain_order=True
    )
    dates = {"death": "death_date", "retreatment": "retreatment_date", "discontinued": "discontinued_date"}
    end = pl.min_horizontal(*(pl.col(c).cast(pl.Date) for c in dates.values()))
    cause = _first_reason(*((pl.col(dates[c]) == end, c) for c in END_CAUSES))
    return frame.select(
        *KEY,
        pl.col("day0").cast(pl.Date),
        end.alias("_end_date"),
        cause.alias("course_end_cause"),
        pl.col("ivig_start_date").cast(pl.Date),
        pl.col("lupus_nephritis_class").cast(pl.String),
    )


def _lab_frame(labs: pl.DataFrame, analytes: tuple[str, ...]) -> pl.LazyFrame:
    columns = ["analyte", "value", *OPTIONAL_LAB_COLUMNS, "collected_date"]
    tie = ["collected_at"] if "collected_at" in labs.columns else []
    return (
        with_optional_columns(labs, OPTIONAL_LAB_COLUMNS)
        .lazy()
        .filter(pl.col("analyte").is_in(analytes) & _V.is_not_null())
        .select(*KEY, *columns, *tie)
        .with_row_index("_row")
    )


def _series(labs: pl.DataFrame, anchors: pl.DataFrame, analytes: tuple[str, ...]) -> pl.LazyFrame:
    """Post-infusion results of `analytes` in the observed course, with `day` (days since infusion)."""
    return (
        _lab_frame(labs, analytes)
        .join(anchors.lazy().select(*KEY, "day0", "_end_date", "ivig_start_date"), on=KEY, how="inner")
        .with_columns(day=_days(pl.col("collected_date"), pl.col("day0")))
        .filter(
            (pl.col("day") >= 1) & (pl.col("_end_date").is_null() | (pl.col("collected_date") <= pl.col("_end_date")))
        )
    )


def _baseline_rows(
    labs: pl.DataFrame, treatment_baseline: pl.DataFrame, analytes: tuple[str, ...], lookback_days: int
) -> pl.LazyFrame:
    """Results of `analytes` dated on the treatment-baseline visit day or up to `lookback_days` before it."""
    days_before = _days(pl.col("treatment_baseline_date"), pl.col("collected_date"))
    visits = treatment_baseline.lazy().select(*KEY, pl.col("treatment_baseline_date").cast(pl.Date)).drop_nulls()
    return (
        _lab_frame(labs, analytes)
        .join(visits.unique(subset=KEY, keep="first"), on=KEY, how="inner")
        .filter(days_before.is_between(0, lookback_days))
    )


def _first_run_start(days: pl.LazyFrame, flag: pl.Expr, length: int, name: str) -> pl.LazyFrame:
    """Per subject, the first day that starts `length` consecutive rows of `days` (sorted by subject and day)
    with `flag` true: column `name`."""
    runs = days.with_columns(_flag=flag).with_columns(
        _run=(pl.col("_flag") != pl.col("_flag").shift(1)).fill_null(True).cum_sum().over(KEY)
    )
    return (
        runs.filter(pl.col("_flag"))
        .group_by(*KEY, "_run")
        .agg(_start=pl.col("day").min(), _length=pl.len())
        .filter(pl.col("_length") >= length)
        .group_by(KEY)
        .agg(pl.col("_start").min().alias(name))
    )


# --------------------------------------------------------------------------------------------------
# The groups, each per subject
# --------------------------------------------------------------------------------------------------


def _b_cells(series: pl.LazyFrame, cfg: ImmuneCourseConfig) -> pl.LazyFrame:
    """Per measured subject: `_aplasia_day`, `_aplasia_undecided`, `_return_day`, `_return_possible`, `_last_day`."""
    aplasia_at = pl.coalesce(pl.col("lloq"), pl.lit(cfg.b_cell_aplasia_below))
    return_at = aplasia_at if cfg.b_cell_return_at_least is None else pl.lit(cfg.b_cell_return_at_least)
    per_day = (
        series.filter(pl.col("analyte") == "cd19_b_cells")
        .with_columns(_below=_row("<", aplasia_at), _back=_row(">=", return_at))
        .group_by(*KEY, "day")
        # A day is below when any of its results is; returned only when every one is (Kleene).
        .agg(pl.col("_below").any(ignore_nulls=False), pl.col("_back").all(ignore_nulls=False))
    )
    aplasia = per_day.group_by(KEY).agg(
        _aplasia_day=pl.col("day").filter(pl.col("_below")).min(),
        _aplasia_undecided=pl.col("_below").is_null().any(),
        _last_day=pl.col("day").max(),
    )
    after = (
        per_day.join(aplasia.select(*KEY, "_aplasia_day"), on=KEY, how="inner")
        .filter(pl.col("day") > pl.col("_aplasia_day"))
        .sort(*KEY, "day")
    )
    n = cfg.b_cell_return_consecutive
    shown = _first_run_start(after, pl.col("_back").fill_null(False), n, "_return_day")
    possible = _first_run_start(after, pl.col("_back").fill_null(True), n, "_possible_day")
    return (
        aplasia.join(shown, on=KEY, how="left")
        .join(possible, on=KEY, how="left")
        .with_columns(_return_possible=pl.col("_possible_day").is_not_null())
        .drop("_possible_day")
    )


def _b_cell_columns() -> list[pl.Expr]:
    infused, measured = pl.col("day0").is_not_null(), pl.col("_last_day").is_not_null()
    aplastic, returned = pl.col("_aplasia_day").is_not_null(), pl.col("_return_day").is_not_null()
    status = (
        pl.when(~infused)
        .then(pl.lit("not_infused"))
        .when(~measured)
        .then(pl.lit("no_measurement"))
        .when(aplastic & returned)
        .then(pl.lit("returned"))
        .when(aplastic & ~pl.col("_return_possible"))
        .then(pl.lit("aplasia_ongoing"))
        .when(~aplastic & ~pl.col("_aplasia_undecided"))
        .then(pl.lit("never_aplastic"))
        .otherwise(pl.lit(None, pl.String))
    )
    reason = _first_reason((~infused, "NOT_INFUSED"), (~measured, "NO_MEASUREMENT"), (status.is_null(), "UNDECIDED"))
    return [
        status.alias("b_cell_status"),
        pl.when(infused).then(pl.col("_aplasia_day")).alias("b_cell_aplasia_day"),
        pl.when(infused & aplastic).then(pl.col("_return_day")).alias("b_cell_return_day"),
        pl.when(infused & aplastic & ~returned).then(pl.col("_last_day")).alias("b_cell_censored_day"),
        reason.alias("b_cell_reason"),
    ]


def _peak(series: pl.LazyFrame, analyte: str) -> pl.LazyFrame:
    """Per measured subject: `_<analyte>_peak`, `_<analyte>_day`, `_<analyte>_why` (null when known)."""
    exact = _C.is_null() & _VH.is_null()
    lower_bound = _C.is_in([">", ">="]) | (_C.is_null() & _VH.is_not_null())
    rows = series.filter(pl.col("analyte") == analyte)
    best = (
        rows.filter(exact)
        .sort(*KEY, "value", "day", descending=[False, False, True, False])
        .unique(subset=KEY, keep="first")
        .select(*KEY, pl.col("value").alias("_best"), pl.col("day").alias("_best_day"))
    )
    bounds = rows.group_by(KEY).agg(_lower=_V.filter(lower_bound).max())
    censored = pl.col("_lower").is_not_null() & (pl.col("_best").is_null() | (pl.col("_lower") >= pl.col("_best")))
    why = _first_reason((censored, "PEAK_CENSORED"), (pl.col("_best").is_null(), "NOT_DETECTED"))
    return bounds.join(best, on=KEY, how="left").select(
        *KEY,
        pl.when(why.is_null()).then(pl.col("_best")).alias(f"_{analyte}_peak"),
        pl.when(why.is_null()).then(pl.col("_best_day")).alias(f"_{analyte}_day"),
        why.alias(f"_{analyte}_why"),
    )


def _peak_columns(analyte: str) -> list[pl.Expr]:
    infused, why = pl.col("day0").is_not_null(), pl.col(f"_{analyte}_why")
    measured = why.is_not_null() | pl.col(f"_{analyte}_peak").is_not_null()
    reason = pl.when(~infused).then(pl.lit("NOT_INFUSED")).when(~measured).then(pl.lit("NO_MEASUREMENT")).otherwise(why)
    return [
        pl.col(f"_{analyte}_peak").alias(f"{analyte}_peak"),
        pl.col(f"_{analyte}_day").alias(f"{analyte}_peak_day"),
        reason.alias(f"{analyte}_reason"),
    ]


def _dsdna(
    series: pl.LazyFrame, baseline_rows: pl.LazyFrame, followup: FollowUpConfig, baseline: BaselineConfig
) -> pl.LazyFrame:
    """Per subject: `_dsdna_baseline` (+ `_dsdna_baseline_rows`), `_seroconversion_day`, `_sero_undecided`,
    `_sero_measured`, `_relapse_day`, `_relapse_undecided`."""
    positive = (
        pl.when(pl.col("analyte") == "anti_dsdna")
        .then(lab_rule("anti_dsdna", followup, baseline))
        .otherwise(lab_rule("anti_dsdna_xuln", followup, baseline))
    )
    at_baseline = (
        baseline_rows.filter(pl.col("analyte").is_in(_DSDNA))
        .group_by(KEY)
        .agg(_dsdna_baseline=positive.any(ignore_nulls=False), _dsdna_baseline_rows=pl.len())
    )
    per_day = (
        series.filter(pl.col("analyte").is_in(_DSDNA))
        .group_by(*KEY, "day")
        .agg(_positive=positive.any(ignore_nulls=False))
    )
    sero = per_day.group_by(KEY).agg(
        _seroconversion_day=pl.col("day").filter(pl.col("_positive").not_()).min(),
        _sero_undecided=pl.col("_positive").is_null().any(),
        _sero_measured=pl.len() > 0,
    )
    relapse = (
        per_day.join(sero.select(*KEY, "_seroconversion_day"), on=KEY, how="inner")
        .filter(pl.col("day") > pl.col("_seroconversion_day"))
        .group_by(KEY)
        .agg(
            _relapse_day=pl.col("day").filter(pl.col("_positive")).min(),
            _relapse_undecided=pl.col("_positive").is_null().any(),
        )
    )
    return at_baseline.join(sero, on=KEY, how="full", coalesce=True).join(relapse, on=KEY, how="left")


def _dsdna_columns() -> list[pl.Expr]:
    infused, has_visit = pl.col("day0").is_not_null(), pl.col("treatment_baseline_date").is_not_null()
    positive = pl.col("_dsdna_baseline")
    baseline_reason = _first_reason(
        (~infused, "NOT_INFUSED"),
        (~has_visit, "NO_TREATMENT_BASELINE"),
        (pl.col("_dsdna_baseline_rows").is_null(), "NO_BASELINE_VALUE"),
        (positive.is_null(), "BASELINE_UNKNOWN"),
    )
    applies = infused & positive.fill_null(False)
    sero_day = pl.when(applies).then(pl.col("_seroconversion_day"))
    sero_reason = (
        pl.when(~infused | positive.is_null())
        .then(baseline_reason)
        .when(~positive)
        .then(pl.lit("BASELINE_NEGATIVE"))
        .when(~pl.col("_sero_measured").fill_null(False))
        .then(pl.lit("NO_MEASUREMENT"))
        .when(sero_day.is_not_null())
        .then(pl.lit(None, pl.String))
        .when(pl.col("_sero_undecided"))
        .then(pl.lit("UNDECIDED"))
        .otherwise(pl.lit("NOT_OBSERVED"))
    )
    relapse_day = pl.when(applies).then(pl.col("_relapse_day"))
    relapse_reason = (
        pl.when(~infused)
        .then(pl.lit("NOT_INFUSED"))
        .when(sero_day.is_null())
        .then(pl.lit("NOT_SEROCONVERTED"))
        .when(relapse_day.is_not_null())
        .then(pl.lit(None, pl.String))
        .when(pl.col("_relapse_undecided").fill_null(False))
        .then(pl.lit("UNDECIDED"))
        .otherwise(pl.lit("NOT_OBSERVED"))
    )
    return [
        pl.when(infused).then(positive).alias("anti_dsdna_baseline_positive"),
        baseline_reason.alias("anti_dsdna_baseline_reason"),
        sero_day.alias("anti_dsdna_seroconversion_day"),
        sero_reason.alias("anti_dsdna_seroconversion_reason"),
        relapse_day.alias("serological_relapse_day"),
        relapse_reason.alias("serological_relapse_reason"),
    ]


def _complement(
    series: pl.LazyFrame,
    baseline_rows: pl.LazyFrame,
    cfg: ImmuneCourseConfig,
    followup: FollowUpConfig,
    baseline: BaselineConfig,
) -> pl.LazyFrame:
    """Per subject: `_complement_baseline_low` (+ `_complement_baseline_rows`), `_normal_day`, `_normal_possible`,
    `_complement_measured`."""
    low = (
        pl.when(pl.col("analyte") == "c3")
        .then(lab_rule("c3", followup, baseline))
        .otherwise(lab_rule("c4", followup, baseline))
    )
    at_baseline = (
        baseline_rows.filter(pl.col("analyte").is_in(_COMPLEMENT))
        .group_by(KEY)
        .agg(_complement_baseline_low=low.any(ignore_nulls=False), _complement_baseline_rows=pl.len())
    )
    per_day = (
        series.filter(pl.col("analyte").is_in(_COMPLEMENT))
        .group_by(*KEY, "analyte", "day")
        .agg(_normal=low.any(ignore_nulls=False).not_())
        .sort("day")
    )
    dates = per_day.select(*KEY, "day").unique().sort("day")
    for analyte in _COMPLEMENT:  # C3 and C4: the latest result of each, within the pairing window
        latest = per_day.filter(pl.col("analyte") == analyte).select(
            *KEY, pl.col("day").alias(f"_{analyte}_day"), pl.col("_normal").alias(f"_{analyte}_normal")
        )
        dates = dates.join_asof(
            latest.sort(f"_{analyte}_day"),
            left_on="day",
            right_on=f"_{analyte}_day",
            by=KEY,
            strategy="backward",
            tolerance=cfg.complement_pair_within_days,
            check_sortedness=False,  # both sorted by day above
        )
    both = pl.col("_c3_normal") & pl.col("_c4_normal")
    after = dates.group_by(KEY).agg(
        _normal_day=pl.col("day").filter(both.fill_null(False)).min(),
        _normal_possible=both.is_null().any(),
        _complement_measured=pl.len() > 0,
    )
    return at_baseline.join(after, on=KEY, how="full", coalesce=True)


def _complement_columns() -> list[pl.Expr]:
    infused, has_visit = pl.col("day0").is_not_null(), pl.col("treatment_baseline_date").is_not_null()
    low = pl.col("_complement_baseline_low")
    day = pl.when(infused & low.fill_null(False)).then(pl.col("_normal_day"))
    reason = _first_reason(
        (~infused, "NOT_INFUSED"),
        (~has_visit, "NO_TREATMENT_BASELINE"),
        (pl.col("_complement_baseline_rows").is_null(), "NO_BASELINE_VALUE"),
        (low.is_null(), "BASELINE_UNKNOWN"),
        (~low, "BASELINE_NORMAL"),
        (~pl.col("_complement_measured").fill_null(False), "NO_MEASUREMENT"),
        (day.is_not_null(), "__none__"),
        (pl.col("_normal_possible").fill_null(False), "UNDECIDED"),
        (pl.lit(True), "NOT_OBSERVED"),
    )
    return [
        pl.when(infused).then(low).alias("complement_baseline_low"),
        day.alias("complement_normalization_day"),
        pl.when(reason != "__none__").then(reason).alias("complement_normalization_reason"),
    ]


def _igg(series: pl.LazyFrame, cfg: ImmuneCourseConfig) -> pl.LazyFrame:
    """Per subject measured after infusion: the nadir before IVIG and the two flags (`_igg_*`)."""
    rows = series.filter(pl.col("analyte") == "igg")
    before_ivig = pl.col("ivig_start_date").is_null() | (pl.col("collected_date") <= pl.col("ivig_start_date"))
    # The most a result can be: an exact value or `<x`/`<=x` its value, an interval its top, `>x` unbounded.
    upper = pl.when(_C.is_in([">", ">="])).then(None).when(_C.is_null() & _VH.is_not_null()).then(_VH).otherwise(_V)
    censoring = pl.when(_C.is_null() & _VH.is_not_null()).then(pl.lit("<=")).otherwise(_C)
    usable = rows.filter(before_ivig).with_columns(_upper=upper, _upper_censoring=censoring)
    nadir = (
        usable.filter(pl.col("_upper").is_not_null())
        .sort(*KEY, "_upper", "day")
        .unique(subset=KEY, keep="first")
        .select(*KEY, pl.col("_upper").alias("_igg_nadir"), "_upper_censoring", pl.col("day").alias("_igg_day"))
    )
    flags = usable.group_by(KEY).agg(
        _igg_lln=_row("<", pl.col("ref_low")).any(ignore_nulls=False),
        _igg_replacement=_row("<", cfg.igg_replacement_below).any(ignore_nulls=False),
    )
    measured = rows.group_by(KEY).agg(_igg_measured=pl.len() > 0, _igg_before_ivig=before_ivig.any())
    return measured.join(flags, on=KEY, how="left").join(nadir, on=KEY, how="left")


def _igg_columns() -> list[pl.Expr]:
    infused = pl.col("day0").is_not_null()
    reason = _first_reason(
        (~infused, "NOT_INFUSED"),
        (~pl.col("_igg_measured").fill_null(False), "NO_MEASUREMENT"),
        (~pl.col("_igg_before_ivig"), "NO_MEASUREMENT_BEFORE_IVIG"),
        (pl.col("_igg_nadir").is_null(), "UNDECIDED"),
    )
    return [
        pl.col("_igg_nadir").alias("igg_nadir"),
        pl.col("_upper_censoring").alias("igg_nadir_censoring"),
        pl.col("_igg_day").alias("igg_nadir_day"),
        pl.col("_igg_lln").alias("igg_below_lln"),
        pl.col("_igg_replacement").alias("igg_below_replacement_threshold"),
        reason.alias("igg_reason"),
    ]


def _flare_visits(
    activity: pl.DataFrame,
    anchors: pl.DataFrame,
    treatment_baseline: pl.DataFrame | None,
    cfg: ImmuneCourseConfig,
) -> pl.LazyFrame:
    """Post-infusion visits in the observed course: `day`, `visit_date`, `_flare` and `_severe` (three-valued)."""
    order = ["visit_date", "visit"] if "visit" in activity.columns else ["visit_date"]
    visits = (
        activity.lazy()
        .with_row_index("_row")
        .select(*KEY, *order, "_row", "sledai_2k_known", "sledai_2k_max")
        .sort(*KEY, *order, "_row", nulls_last=True)
    )
    if cfg.flare_comparator == "previous_visit":
        compared = visits.with_columns(
            _cmp_known=pl.col("sledai_2k_known").shift(1).over(KEY),
            _cmp_max=pl.col("sledai_2k_max").shift(1).over(KEY),
        )
    else:
        if treatment_baseline is None:
            raise ValueError("flare_comparator 'treatment_baseline' needs the treatment_baseline frame")
        chosen = (
            visits.join(treatment_baseline.lazy().select(*KEY, "treatment_baseline_date"), on=KEY, how="inner")
            .filter(pl.col("visit_date") == pl.col("treatment_baseline_date"))
            .sort("_row")  # the earlier input row on one date, as the treatment baseline chooses
            .unique(subset=KEY, keep="first")
            .select(*KEY, pl.col("sledai_2k_known").alias("_cmp_known"), pl.col("sledai_2k_max").alias("_cmp_max"))
        )
        compared = visits.join(chosen, on=KEY, how="left")
    rise = cfg.flare_rise_at_least
    known, most = pl.col("sledai_2k_known"), pl.col("sledai_2k_max")
    flare = (
        pl.when(known - pl.col("_cmp_max") >= rise)
        .then(True)
        .when(most - pl.col("_cmp_known") < rise)
        .then(False)
        .otherwise(pl.lit(None, pl.Boolean))
    )
    severe = (
        pl.when(known > cfg.severe_flare_above)
        .then(True)
        .when(most <= cfg.severe_flare_above)
        .then(False)
        .otherwise(pl.lit(None, pl.Boolean))
    )
    return (
        compared.join(anchors.lazy().select(*KEY, "day0", "_end_date"), on=KEY, how="inner")
        .with_columns(day=_days(pl.col("visit_date"), pl.col("day0")))
        .filter((pl.col("day") >= 1) & (pl.col("_end_date").is_null() | (pl.col("visit_date") <= pl.col("_end_date"))))
        .select(*KEY, "visit_date", "day", _flare=flare, _severe=severe)
    )


def _flares(visits: pl.LazyFrame) -> pl.LazyFrame:
    """Per subject with a post-infusion visit: the first shown flare, its severity, and whether one is open."""
    first = (
        visits.filter(pl.col("_flare").fill_null(False))
        .sort(*KEY, "day")
        .unique(subset=KEY, keep="first")
        .select(*KEY, pl.col("day").alias("_flare_day"), pl.col("_severe").alias("_flare_severe"))
    )
    summary = visits.group_by(KEY).agg(_flare_visits=pl.len(), _flare_undecided=pl.col("_flare").is_null().any())
    return summary.join(first, on=KEY, how="left")


def _flare_columns() -> list[pl.Expr]:
    infused, day = pl.col("day0").is_not_null(), pl.col("_flare_day")
    reason = _first_reason(
        (~infused, "NOT_INFUSED"),
        (pl.col("_flare_visits").is_null(), "NO_MEASUREMENT"),
        (day.is_not_null(), "__none__"),
        (pl.col("_flare_undecided"), "UNDECIDED"),
        (pl.lit(True), "NOT_OBSERVED"),
    )
    severity = pl.when(pl.col("_flare_severe")).then(pl.lit("severe")).when(~pl.col("_flare_severe"))
    returned_by = (
        pl.when(day.is_null())
        .then(pl.lit(None, pl.Boolean))
        .when(pl.col("b_cell_return_day") <= day)
        .then(True)
        .when(
            (pl.col("b_cell_aplasia_day") <= day)
            & (
                (pl.col("b_cell_return_day") > day)
                | ((pl.col("b_cell_status") == "aplasia_ongoing") & (pl.col("b_cell_censored_day") >= day))
            )
        )
        .then(False)
        .otherwise(pl.lit(None, pl.Boolean))
    )
    return [
        day.alias("first_flare_day"),
        severity.then(pl.lit("mild_moderate")).alias("first_flare_severity"),
        returned_by.alias("flare_b_cells_returned"),
        pl.when(reason != "__none__").then(reason).alias("flare_reason"),
    ]


def _licats(
    series: pl.LazyFrame,
    labs: pl.DataFrame,
    *,
    treatment_baseline: pl.DataFrame,
    b_cells: pl.DataFrame,
    cfg: ImmuneCourseConfig,
    followup: FollowUpConfig,
) -> pl.LazyFrame:
    """Per subject with a treatment-baseline value: `_licats_day`, `_licats_source`, `_licats_undecided`,
    `_licats_measured`, `_base_creatinine_known`."""
    tie = ["collected_at"] if "collected_at" in labs.columns else []
    creatinine = (
        _baseline_rows(labs, treatment_baseline, ("creatinine",), followup.lookback_days)
        .sort("collected_date", *tie, "_row", descending=[True] * (1 + len(tie)) + [False], nulls_last=True)
        .unique(subset=KEY, keep="first")
        .select(*KEY, pl.when(_C.is_null() & _VH.is_null()).then(_V).alias("_base_creatinine"))
    )
    upcr = treatment_baseline.lazy().select(
        *KEY,
        pl.when(pl.col("upcr_censoring").is_null()).then(pl.col("upcr")).cast(pl.Float64).alias("_base_upcr"),
        pl.col("upcr").is_not_null().alias("_has_base_upcr"),
    )
    # The window: day 1 to licats_window_days, and before the B-cell return day.
    window_end = pl.min_horizontal(pl.lit(cfg.licats_window_days), pl.col("b_cell_return_day") - 1)
    creatinine_up = _row(">=", cfg.licats_creatinine_ratio * pl.col("_base_creatinine"))
    upcr_up = _row(">=", (1 + cfg.licats_upcr_rise) * pl.col("_base_upcr"))
    if cfg.licats_upcr_at_least is not None:
        upcr_up = upcr_up & _row(">=", cfg.licats_upcr_at_least)
    is_creatinine = pl.col("analyte") == "creatinine"
    per_day = (
        series.filter(pl.col("analyte").is_in(["creatinine", "upcr"]))
        .join(b_cells.lazy().select(*KEY, "b_cell_return_day"), on=KEY, how="left")
        .filter(pl.col("day") <= window_end)
        .join(creatinine, on=KEY, how="left")
        .join(upcr, on=KEY, how="left")
        .with_columns(_up=pl.when(is_creatinine).then(creatinine_up).otherwise(upcr_up))
        .group_by(*KEY, "day")
        .agg(
            _up=pl.col("_up").any(ignore_nulls=False),
            _creatinine=(is_creatinine & pl.col("_up")).any(),
            _upcr=(~is_creatinine & pl.col("_up")).any(),
        )
    )
    source = (
        pl.when(pl.col("_creatinine") & pl.col("_upcr"))
        .then(pl.lit("creatinine_and_upcr"))
        .when(pl.col("_creatinine"))
        .then(pl.lit("creatinine"))
        .otherwise(pl.lit("upcr"))
    )
    first = (
        per_day.filter(pl.col("_up").fill_null(False))
        .sort(*KEY, "day")
        .unique(subset=KEY, keep="first")
        .select(*KEY, pl.col("day").alias("_licats_day"), source.alias("_licats_source"))
    )
    summary = per_day.group_by(KEY).agg(_licats_measured=pl.len() > 0, _licats_undecided=pl.col("_up").is_null().any())
    has_baseline = creatinine.select(*KEY, _has_base_creatinine=pl.lit(True)).join(
        upcr, on=KEY, how="full", coalesce=True
    )
    return has_baseline.join(summary, on=KEY, how="full", coalesce=True).join(first, on=KEY, how="left")


def _licats_columns() -> list[pl.Expr]:
    infused, renal, day = pl.col("day0").is_not_null(), pl.col("_renal"), pl.col("_licats_day")
    applies = infused & renal.fill_null(False) & (pl.col("b_cell_status") != "never_aplastic").fill_null(True)
    has_baseline = pl.col("_has_base_creatinine").fill_null(False) | pl.col("_has_base_upcr").fill_null(False)
    reason = _first_reason(
        (~infused, "NOT_INFUSED"),
        (renal.is_null(), "RENAL_UNKNOWN"),
        (~renal, "NOT_RENAL"),
        (pl.col("b_cell_status") == "never_aplastic", "NEVER_APLASTIC"),
        (~has_baseline, "NO_BASELINE_VALUE"),
        (~pl.col("_licats_measured").fill_null(False), "NO_MEASUREMENT"),
        (day.is_not_null(), "__none__"),
        (pl.col("_licats_undecided"), "UNDECIDED"),
        (pl.lit(True), "NOT_OBSERVED"),
    )
    return [
        pl.when(infused).then(renal).alias("licats_renal_involvement"),
        pl.when(applies).then(day).alias("licats_signal_day"),
        pl.when(applies).then(pl.col("_licats_source")).alias("licats_signal_source"),
        pl.when(reason != "__none__").then(reason).alias("licats_reason"),
    ]


def _renal_frame(subjects: pl.DataFrame, treatment_baseline: pl.DataFrame, population: RenalPopulation) -> pl.LazyFrame:
    """Per subject: `_renal`, the renal endpoints' population rule on the treatment baseline."""
    columns: dict[str, pl.DataType] = {item(d): pl.Boolean() for d in population.renal_descriptors}
    columns |= {"upcr": pl.Float64(), "upcr_censoring": pl.String()}
    baseline = with_optional_columns(treatment_baseline, columns).select(
        *KEY, *(pl.col(c).cast(t).alias("baseline_" + c) for c, t in columns.items())
    )
    return (
        subjects.lazy()
        .select(*KEY, "lupus_nephritis_class")
        .join(baseline.lazy(), on=KEY, how="left")
        .select(*KEY, renal_involvement(population).alias("_renal"))
    )


# --------------------------------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------------------------------


def immune_course(
    labs: pl.DataFrame,
    subjects: pl.DataFrame,
    activity: pl.DataFrame,
    treatment_baseline: pl.DataFrame,
    config: ImmuneCourseConfig | None = None,
    *,
    followup: FollowUpConfig | None = None,
    baseline: BaselineConfig | None = None,
    renal_population: RenalPopulation | None = None,
) -> pl.DataFrame:
    """The immune course of every subject (schemas.immune_course.ImmuneCourse; rules in the module docstring).

    Args:
        labs: harmonised labs (`analyte`, `value`, `collected_date`; optional `value_high`, `censoring`,
            `ref_low`, `ref_high`, `lloq`, `collected_at`). Analytes read: `cd19_b_cells`, `car_t_cells`,
            `car_t_copies`, `anti_dsdna`, `anti_dsdna_xuln`, `c3`, `c4`, `igg`, `creatinine`, `upcr`.
        subjects: accepted subjects (`day0`; optional `discontinued_date`, `death_date`, `retreatment_date`,
            `ivig_start_date`, `lupus_nephritis_class`).
        activity: the activity table (`visit_date`, `sledai_2k_known`, `sledai_2k_max`, optional `visit`).
        treatment_baseline: `baselines.treatment_baseline`'s frame (`treatment_baseline_date`, `upcr`,
            `upcr_censoring`, `item_<renal>`).
        config: the immune-course settings (defaults when None).
        followup: `lookback_days` (the treatment-baseline window) and the lab rules' settings.
        baseline: anti-dsDNA and complement default cut-offs, shared with the baseline stage.
        renal_population: renal involvement at the treatment baseline (the endpoint definition's; default
            `RenalPopulation()`).

    Returns:
        One row per subject of `subjects`, in its order.
    """
    cfg, fu = config or ImmuneCourseConfig(), followup or FollowUpConfig()
    base, population = baseline or BaselineConfig(), renal_population or RenalPopulation()
    anchors = _anchors(subjects)
    series = _series(
        labs,
        anchors,
        ("cd19_b_cells", "car_t_cells", "car_t_copies", *_DSDNA, *_COMPLEMENT, "igg", "creatinine", "upcr"),
    )
    tb = treatment_baseline.select(*KEY, pl.col("treatment_baseline_date").cast(pl.Date)).unique(
        subset=KEY, keep="first"
    )
    baseline_rows = _baseline_rows(labs, treatment_baseline, (*_DSDNA, *_COMPLEMENT), fu.lookback_days)
    frame = (
        anchors.lazy()
        .join(tb.lazy(), on=KEY, how="left", maintain_order="left")
        .join(_b_cells(series, cfg), on=KEY, how="left", maintain_order="left")
    )
    b_cells = frame.select(*KEY, "day0", *_b_cell_columns()).collect()
    parts = [
        _peak(series, "car_t_cells"),
        _peak(series, "car_t_copies"),
        _dsdna(series, baseline_rows, fu, base),
        _complement(series, baseline_rows, cfg, fu, base),
        _igg(series, cfg),
        _flares(_flare_visits(activity, anchors, treatment_baseline, cfg)),
        _licats(series, labs, treatment_baseline=treatment_baseline, b_cells=b_cells, cfg=cfg, followup=fu),
        _renal_frame(anchors, treatment_baseline, population),
    ]
    frame = frame.join(b_cells.lazy().drop("day0"), on=KEY, how="left", maintain_order="left")
    for part in parts:  # eight per-subject parts, each keyed by subject
        frame = frame.join(part, on=KEY, how="left", maintain_order="left")
    return frame.select(
        *KEY,
        "day0",
        pl.when(pl.col("day0").is_not_null()).then(_days(pl.col("_end_date"), pl.col("day0"))).alias("course_end_day"),
        pl.when(pl.col("_end_date").is_not_null()).then(pl.col("course_end_cause")).alias("course_end_cause"),
        *(pl.col(c) for c in ("b_cell_status", "b_cell_aplasia_day", "b_cell_return_day", "b_cell_censored_day")),
        "b_cell_reason",
        *_peak_columns("car_t_cells"),
        *_peak_columns("car_t_copies"),
        *_dsdna_columns(),
        *_complement_columns(),
        *_igg_columns(),
        *_flare_columns(),
        *_licats_columns(),
    ).collect()


def relapse_events(
    course: pl.DataFrame,
    activity: pl.DataFrame,
    config: ImmuneCourseConfig | None = None,
    *,
    treatment_baseline: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Relapse events in long form, for "what changed since the last run" (schemas.immune_course.RelapseEvent).

    Args:
        course: `immune_course`'s frame (`day0`, `course_end_day`, `serological_relapse_day`).
        activity: the activity table (as for `immune_course`).
        config: the flare rule (defaults when None); use the one the course was derived with.
        treatment_baseline: needed only when `config.flare_comparator` is `treatment_baseline`.

    Returns:
        `study_id`, `subject_id`, `kind` (`serological_relapse` or `flare`), `day` (days since infusion) and
        `severity` (flares: `mild_moderate`, `severe` or null when undecided; null for serological relapses):
        the serological relapse of each subject that has one and every post-infusion visit shown to flare in the
        observed course (with the `treatment_baseline` comparator, every visit at the flare level); sorted by
        subject, day and kind.
    """
    cfg = config or ImmuneCourseConfig()
    anchors = course.select(
        *KEY,
        pl.col("day0").cast(pl.Date),
        (pl.col("day0") + pl.duration(days=pl.col("course_end_day"))).cast(pl.Date).alias("_end_date"),
    )
    serological = course.filter(pl.col("serological_relapse_day").is_not_null()).select(
        *KEY,
        pl.lit("serological_relapse").alias("kind"),
        pl.col("serological_relapse_day").cast(pl.Int32).alias("day"),
        pl.lit(None, pl.String).alias("severity"),
    )
    flares = (
        _flare_visits(activity, anchors, treatment_baseline, cfg)
        .filter(pl.col("_flare").fill_null(False))
        .select(
            *KEY,
            pl.lit("flare").alias("kind"),
            pl.col("day"),
            pl.when(pl.col("_severe"))
            .then(pl.lit("severe"))
            .when(~pl.col("_severe"))
            .then(pl.lit("mild_moderate"))
            .alias("severity"),
        )
        .collect()
    )
    return pl.concat([serological, flares]).sort(*KEY, "day", "kind")
