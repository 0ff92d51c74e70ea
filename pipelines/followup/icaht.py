"""Immune effector cell-associated hematotoxicity (ICAHT; EHA/EBMT consensus, Rejeski et al., Blood 2023;142:865)
and its platelet companion grades, from harmonised neutrophil (ANC) and platelet rows (10^9/L).

Day 0 is `subjects.day0`; days are calendar days since it, and rows before day 0 are not used (an episode under
way at day 0 starts at day 0). Rules, with `IcahtConfig` defaults (follow-up-facts.md §4):

- **Daily minimum.** A day is below a threshold when its lowest result is: three-valued, a day is below when any
  of its results is known below, not below when all are known not below, else unknown. A censored result decides
  only when its comparator does (`<0.1` is at or below 0.5; `>0.3` is neither known at or below 0.5 nor above
  it), through `followup.activity.above`. ANC counts "at or below" (ANC <= 500/uL); platelets "strictly below".
- **Episodes.** Consecutive measured days below the threshold form an episode; unmeasured days between two
  consecutive measurements both below count as below when the measurements are at most `interpolate_gap_days`
  (7) apart; every other unmeasured day counts as not below (the open implementation's convention: without it no
  sparse series could be graded). Two episodes are joined (one episode, the days between included) unless at
  least `join_gap_days` (3) consecutive days between them are not below. An episode lasts from its first to its
  last below day, capped at `late_last_day` (100).
- **Early grade** (ANC): the longest episode starting on days 0 to `early_last_day` (30), counted to its end even
  past day 30, so grade 4 is reachable: at or below 500/uL for 1-6 days -> 1, 7-13 -> 2, 14-30 -> 3, >= 31 -> 4;
  at or below 100/uL for 7-13 days -> at least 3, >= 14 -> 4. No day below: 0.
- **Late grade** (ANC, days 31-100): the highest grade whose threshold (1.5, 1.0, 0.5, 0.1 x10^9/L for grades
  1-4) the daily minimum reached on at least `late_min_measurements` (2) days: "not transient".
- **Platelets** (T-ICAHT): early, the longest early episode below 50 x10^9/L: 1-6 days -> 1, >= 7 -> 2; below 20:
  1-13 days -> 3, >= 14 -> 4. Late (days 31-100): below 100 on at least `platelet_late_min_measurements` (1) days
  -> 1, below 50 -> 2; below 20 for 1-13 days -> 3, >= 14 -> 4, counting the longest episode's days inside the
  late phase.

Three-valued: a day whose results leave its status unknown allows both; the grade is computed with every unknown
day not below and with every unknown day below (durations, counts and grades only grow with more below days),
and it is known when the two agree; otherwise null with reason `INPUT_UNKNOWN`. A phase without any measurement
of the analyte has a null grade with reason `NO_MEASUREMENT`. A phase still under way (day 100 not yet reached)
is graded on the data so far.
"""

from __future__ import annotations

import polars as pl

from immunostrat.config.followup import IcahtConfig
from immunostrat.followup.thresholds import compare

__all__ = ["ANC_EARLY_DAYS_BANDS", "PLATELET_EARLY_DAYS_BANDS", "REASONS", "icaht_grades"]

KEY = ["study_id", "subject_id"]
GRADE = pl.Int8
ANC, PLATELETS = "neutrophils", "platelets"

#: Reason code -> meaning, for every `*_reason` column (null when the grade is known).
REASONS: dict[str, str] = {
    "NOT_INFUSED": "The subject has no day 0 (no infusion): not assessable.",
    "NO_MEASUREMENT": "No result of the analyte in the phase (days 0-30 early, 31-100 late): not assessable.",
    "INPUT_UNKNOWN": "A day's status is unknown (a censored or interval result that does not decide the "
    "threshold) and the grade depends on it.",
}
#: Early ANC grade by episode days at or below 500/uL, as (at least days, grade) (Rejeski 2023, follow-up-facts §4).
ANC_EARLY_DAYS_BANDS: tuple[tuple[int, int], ...] = ((1, 1), (7, 2), (14, 3), (31, 4))
#: Early ANC grade by episode days at or below 100/uL.
ANC_PROFOUND_DAYS_BANDS: tuple[tuple[int, int], ...] = ((7, 3), (14, 4))
#: Early platelet grade by episode days below 50 and below 20 x10^9/L (T-ICAHT, follow-up-facts §4).
PLATELET_EARLY_DAYS_BANDS: tuple[tuple[int, int], ...] = ((1, 1), (7, 2))
PLATELET_SEVERE_DAYS_BANDS: tuple[tuple[int, int], ...] = ((1, 3), (14, 4))
_SCENARIOS = {"lo": False, "hi": True}  # an unknown day counted as not below / below
_LAB_OPTIONAL: dict[str, pl.DataType] = {"value_high": pl.Float64(), "censoring": pl.String()}


def _tests(cfg: IcahtConfig) -> dict[str, tuple[str, float, bool]]:
    """Test name -> (analyte, threshold, at_or_below); at_or_below False means strictly below."""
    tests: dict[str, tuple[str, float, bool]] = {
        "anc_early": (ANC, cfg.anc_early_at_most, True),
        "anc_profound": (ANC, cfg.anc_profound_at_most, True),
        "plt_early": (PLATELETS, cfg.platelet_early_below[0], False),
        "plt_early_severe": (PLATELETS, cfg.platelet_early_below[1], False),
        "plt_late_1": (PLATELETS, cfg.platelet_late_below[0], False),
        "plt_late_2": (PLATELETS, cfg.platelet_late_below[1], False),
        "plt_late_severe": (PLATELETS, cfg.platelet_late_below[2], False),
    }
    for grade, threshold in enumerate(cfg.anc_late_at_most, start=1):
        tests[f"anc_late_{grade}"] = (ANC, threshold, True)
    return tests


def _band(days: pl.Expr, bands: tuple[tuple[int, int], ...]) -> pl.Expr:
    """The grade of the highest band whose minimum `days` reaches; 0 below the first."""
    grade: pl.Expr = pl.lit(0)
    for at_least, value in bands:  # a handful of bands
        grade = pl.when(days >= at_least).then(value).otherwise(grade)
    return grade


def _daily(labs: pl.DataFrame, infused: pl.DataFrame, cfg: IcahtConfig) -> pl.LazyFrame:
    """Per subject (`_s`, its row in `infused`), test and measured day since infusion (>= 0): the three-valued
    "daily minimum below" flag; sorted by subject, test and day (each test's series in day order)."""
    tests = _tests(cfg)
    missing = [pl.lit(None, t).alias(c) for c, t in _LAB_OPTIONAL.items() if c not in labs.columns]
    rows = (
        labs.lazy()
        .select(*KEY, "analyte", "value", "collected_date", *(c for c in _LAB_OPTIONAL if c in labs.columns))
        .with_columns(missing)
        .filter(pl.col("analyte").is_in([ANC, PLATELETS]))
        .join(infused.lazy(), on=KEY, how="inner")
        .with_columns(_day=(pl.col("collected_date") - pl.col("_day0")).dt.total_days().cast(pl.Int32))
        .filter(pl.col("_day") >= 0)
    )
    v, vh, c = pl.col("value"), pl.col("value_high"), pl.col("censoring")
    per_test = [
        rows.filter(pl.col("analyte") == analyte).select(
            "_s",
            pl.lit(name, pl.Enum(list(tests))).alias("_test"),  # an Enum: the sort below is on integers
            "_day",
            compare(v, "<=" if at_or_below else "<", threshold, censoring=c, value_high=vh).alias("_flag"),
        )
        for name, (analyte, threshold, at_or_below) in tests.items()
    ]
    # Kleene any: below when any result is; not below when every one is known not below.
    return (
        pl.concat(per_test)
        .group_by("_s", "_test", "_day")
        .agg(pl.col("_flag").any(ignore_nulls=False))
        .sort("_s", "_test", "_day")
    )


def _episodes(daily: pl.LazyFrame, cfg: IcahtConfig) -> pl.LazyFrame:
    """Episodes (first and last below day) per subject, test and scenario, after interpolation and joining.

    `daily` holds each series (scenario, subject, test) in day order, one after another (as `_per_scenario`
    builds it): each row compares with the row before it, a series starting where the series columns change;
    cheaper than per-series windows over many small series."""
    series = ["_scenario", "_s", "_test"]
    day, below = pl.col("_day"), pl.col("_below")
    starts_series = pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in series)
    # An unmeasured gap between two measured days both below counts as below when short enough.
    interpolated = ~starts_series & below.shift(1) & ((day - day.shift(1)) <= cfg.interpolate_gap_days)
    # Among the below days: joined to the previous below day of the series when few enough days lie between.
    joined = ~starts_series & ((day - day.shift(1) - 1) < cfg.join_gap_days)
    return (
        daily.with_columns(_interpolated=interpolated.fill_null(False))
        .filter(below)
        .with_columns(_continues=pl.col("_interpolated") | joined.fill_null(False))
        .with_columns(_episode=(~pl.col("_continues")).cum_sum())
        .group_by(*series, "_episode")
        .agg(_start=day.min(), _end=day.max())
    )


def _per_scenario(daily: pl.LazyFrame, cfg: IcahtConfig) -> pl.LazyFrame:
    """Per subject and scenario: the four grades."""
    early, last = cfg.early_last_day, cfg.late_last_day
    scenarios = pl.concat(  # scenario after scenario, each in `daily`'s order (what `_episodes` needs)
        daily.with_columns(_scenario=pl.lit(name), _below=pl.col("_flag").fill_null(unknown_is_below))
        for name, unknown_is_below in _SCENARIOS.items()
    )
    episodes = _episodes(scenarios, cfg)
    test, start, end = pl.col("_test"), pl.col("_start"), pl.col("_end")
    early_days = pl.min_horizontal(end, pl.lit(last)) - start + 1
    late_days = pl.min_horizontal(end, pl.lit(last)) - pl.max_horizontal(start, pl.lit(early + 1)) + 1

    def longest_early(name: str) -> pl.Expr:
        return early_days.filter((test == name) & (start <= early)).max().fill_null(0).alias(name)

    durations = episodes.group_by("_s", "_scenario").agg(
        longest_early("anc_early"),
        longest_early("anc_profound"),
        longest_early("plt_early"),
        longest_early("plt_early_severe"),
        late_days.filter((test == "plt_late_severe") & (late_days > 0)).max().fill_null(0).alias("plt_late_severe"),
    )
    in_late = pl.col("_day").is_between(early + 1, last)
    late_tests = [f"anc_late_{g}" for g in range(1, 5)] + ["plt_late_1", "plt_late_2"]
    counts = scenarios.group_by("_s", "_scenario").agg(
        (pl.col("_below") & in_late & (test == name)).sum().alias(f"{name}_days") for name in late_tests
    )
    anc_late: pl.Expr = pl.lit(0)
    for g in range(1, 5):  # four grades
        anc_late = pl.when(pl.col(f"anc_late_{g}_days") >= cfg.late_min_measurements).then(g).otherwise(anc_late)
    plt_min = cfg.platelet_late_min_measurements
    plt_late = (
        pl.when(pl.col("plt_late_severe") >= 1)
        .then(_band(pl.col("plt_late_severe"), PLATELET_SEVERE_DAYS_BANDS))
        .when(pl.col("plt_late_2_days") >= plt_min)
        .then(2)
        .when(pl.col("plt_late_1_days") >= plt_min)
        .then(1)
        .otherwise(0)
    )
    zero = {c: 0 for c in ("anc_early", "anc_profound", "plt_early", "plt_early_severe", "plt_late_severe")}
    return (
        counts.join(durations, on=["_s", "_scenario"], how="left")
        .with_columns(pl.col(c).fill_null(v) for c, v in zero.items())
        .select(
            "_s",
            "_scenario",
            pl.max_horizontal(
                _band(pl.col("anc_early"), ANC_EARLY_DAYS_BANDS), _band(pl.col("anc_profound"), ANC_PROFOUND_DAYS_BANDS)
            ).alias("icaht_early_grade"),
            anc_late.alias("icaht_late_grade"),
            pl.max_horizontal(
                _band(pl.col("plt_early"), PLATELET_EARLY_DAYS_BANDS),
                _band(pl.col("plt_early_severe"), PLATELET_SEVERE_DAYS_BANDS),
            ).alias("platelet_icaht_early_grade"),
            plt_late.alias("platelet_icaht_late_grade"),
        )
    )


GRADES: dict[str, tuple[str, str]] = {
    "icaht_early_grade": (ANC, "early"),
    "icaht_late_grade": (ANC, "late"),
    "platelet_icaht_early_grade": (PLATELETS, "early"),
    "platelet_icaht_late_grade": (PLATELETS, "late"),
}


def icaht_grades(labs: pl.DataFrame, subjects: pl.DataFrame, config: IcahtConfig | None = None) -> pl.DataFrame:
    """ICAHT and platelet companion grades per infused subject (rules in the module docstring).

    Args:
        labs: harmonised lab rows (`study_id`, `subject_id`, `analyte`, `value`, `collected_date`, optional
            `censoring`, `value_high`); only `neutrophils` and `platelets` are read, in 10^9/L.
        subjects: accepted subjects (`study_id`, `subject_id`, `day0`); subjects without day 0 get no row.
        config: thresholds, phases, joining and interpolation (defaults when None).

    Returns:
        One row per infused subject, in the order of `subjects`: each of `GRADES` (0-4, null when not assessable)
        with its `<grade>_reason` (`REASONS`; null when the grade is known). Contract
        `schemas.toxicity_events.IcahtGrades`.
    """
    cfg = config or IcahtConfig()
    infused = (
        subjects.select(*KEY, pl.col("day0").alias("_day0"))
        .filter(pl.col("_day0").is_not_null())
        .unique(subset=KEY, keep="first", maintain_order=True)
        .with_row_index("_s")  # one integer per subject: the series below group on it, not on two strings
    )
    daily = _daily(labs, infused, cfg).cache()
    grades = _per_scenario(daily, cfg)
    analyte = pl.col("_test").cast(pl.String).str.starts_with("anc").replace_strict({True: ANC, False: PLATELETS})
    day = pl.col("_day")
    measured = daily.group_by("_s").agg(
        *(
            (
                (analyte == a)
                & (day.is_between(0, cfg.early_last_day) if phase == "early" else day > cfg.early_last_day)
                & (day <= cfg.late_last_day)
            )
            .any()
            .alias(f"_measured_{name}")
            for name, (a, phase) in GRADES.items()
        )
    )
    out = infused.lazy().select("_s", *KEY).join(measured, on="_s", how="left", maintain_order="left")
    for scenario in _SCENARIOS:  # lower and upper
        out = out.join(
            grades.filter(pl.col("_scenario") == scenario).select(
                "_s", *(pl.col(name).alias(f"_{scenario}_{name}") for name in GRADES)
            ),
            on="_s",
            how="left",
            maintain_order="left",
        )
    columns: list[pl.Expr] = []
    for name in GRADES:  # four grades
        lo, hi, seen = pl.col(f"_lo_{name}"), pl.col(f"_hi_{name}"), pl.col(f"_measured_{name}").fill_null(False)
        columns.append(pl.when(seen & (lo == hi)).then(lo).cast(GRADE).alias(name))
        columns.append(
            pl.when(~seen)
            .then(pl.lit("NO_MEASUREMENT"))
            .when(lo != hi)
            .then(pl.lit("INPUT_UNKNOWN"))
            .otherwise(None)
            .alias(f"{name}_reason")
        )
    return out.select(*KEY, *columns).collect()
