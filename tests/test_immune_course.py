"""The immune course per subject (issue 13): B cells, CAR-T, anti-dsDNA, complement, IgG, flares, LICATS, and the
relapse events. Every expected value is worked by hand from the rules in the module docstring; day N means
day 0 + N days."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from immunostrat.config.followup import ImmuneCourseConfig
from immunostrat.followup.immune_course import REASONS, immune_course, relapse_events
from immunostrat.schemas.immune_course import validate_immune_course, validate_relapse_events

DAY0 = dt.date(2024, 3, 1)
RENAL_ITEMS = ("item_urinary_casts", "item_hematuria", "item_proteinuria", "item_pyuria")


def d(n: int) -> dt.date:
    """The date of day `n` since infusion."""
    return DAY0 + dt.timedelta(days=n)


def lab(analyte: str, day: int, value: float, censoring: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"analyte": analyte, "collected_date": d(day), "value": value, "censoring": censoring, **extra}


def labs_frame(*rows: dict[str, Any], subject: str = "P1") -> pl.DataFrame:
    """Harmonised lab rows of one subject; `lloq`, `ref_low`, `ref_high` only when some row gives them."""
    base = {"study_id": "S", "subject_id": subject, "value_high": None}
    keys = {k for r in rows for k in r}
    optional = {k: None for k in ("lloq", "ref_low", "ref_high") if k in keys}
    return pl.DataFrame(
        [base | optional | r for r in rows],
        schema_overrides={
            "value": pl.Float64,
            "value_high": pl.Float64,
            "censoring": pl.String,
            **{k: pl.Float64 for k in optional},
        },
    )


def no_labs() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "study_id": pl.String,
            "subject_id": pl.String,
            "analyte": pl.String,
            "collected_date": pl.Date,
            "value": pl.Float64,
            "value_high": pl.Float64,
            "censoring": pl.String,
        }
    )


def subjects_frame(**columns: Any) -> pl.DataFrame:
    """One infused subject P1 (no optional dates unless given)."""
    return pl.DataFrame(
        {"study_id": ["S"], "subject_id": ["P1"], "day0": [DAY0], **{k: [v] for k, v in columns.items()}},
        schema_overrides={k: pl.Date for k in columns if k.endswith("_date")},
    )


def activity_frame(*visits: tuple[int, int, int], subject: str = "P1") -> pl.DataFrame:
    """Visits as (day, sledai_2k_known, sledai_2k_max)."""
    return pl.DataFrame(
        {
            "study_id": ["S"] * len(visits),
            "subject_id": [subject] * len(visits),
            "visit_date": [d(v[0]) for v in visits],
            "sledai_2k_known": [v[1] for v in visits],
            "sledai_2k_max": [v[2] for v in visits],
        },
        schema={
            "study_id": pl.String,
            "subject_id": pl.String,
            "visit_date": pl.Date,
            "sledai_2k_known": pl.Int64,
            "sledai_2k_max": pl.Int64,
        },
    )


def baseline_frame(
    visit_day: int | None = -3, upcr: float | None = None, proteinuria: bool | None = None
) -> pl.DataFrame:
    """The treatment baseline of P1: its visit day and renal inputs."""
    return pl.DataFrame(
        {
            "study_id": ["S"],
            "subject_id": ["P1"],
            "treatment_baseline_date": [d(visit_day) if visit_day is not None else None],
            "upcr": [upcr],
            "upcr_censoring": [None],
            **{c: [proteinuria if c == "item_proteinuria" else None] for c in RENAL_ITEMS},
        },
        schema_overrides={
            "treatment_baseline_date": pl.Date,
            "upcr": pl.Float64,
            "upcr_censoring": pl.String,
            **{c: pl.Boolean for c in RENAL_ITEMS},
        },
    )


def course(
    labs: pl.DataFrame | None = None,
    subjects: pl.DataFrame | None = None,
    activity: pl.DataFrame | None = None,
    baseline: pl.DataFrame | None = None,
    config: ImmuneCourseConfig | None = None,
) -> dict[str, Any]:
    """The validated course row of P1."""
    out = immune_course(
        labs if labs is not None else no_labs(),
        subjects if subjects is not None else subjects_frame(),
        activity if activity is not None else activity_frame(),
        baseline if baseline is not None else baseline_frame(),
        config,
    )
    validate_immune_course(out)
    return out.row(0, named=True)


def pick(row: dict[str, Any], *columns: str) -> tuple[Any, ...]:
    return tuple(row[c] for c in columns)


B = ("b_cell_status", "b_cell_aplasia_day", "b_cell_return_day", "b_cell_censored_day", "b_cell_reason")


# --------------------------------------------------------------------------------------------------
# B-cell aplasia and return
# --------------------------------------------------------------------------------------------------


def test_a_single_high_value_between_lows_is_not_a_return() -> None:
    # Default thresholds 1 cells/uL; day 60 (5) is followed by a low (0.3): the first two-day run is 100, 110.
    labs = labs_frame(*(lab("cd19_b_cells", n, v) for n, v in [(7, 0.2), (60, 5), (70, 0.3), (100, 3), (110, 6)]))
    assert pick(course(labs), *B) == ("returned", 7, 100, None, None)


def test_aplasia_is_censored_at_the_last_measurement_and_a_trailing_high_value_is_not_a_return() -> None:
    labs = labs_frame(*(lab("cd19_b_cells", n, v) for n, v in [(7, 0.2), (28, 0.1), (90, 4)]))
    assert pick(course(labs), *B) == ("aplasia_ongoing", 7, None, 90, None)


def test_three_consecutive_values_when_configured() -> None:
    labs = labs_frame(*(lab("cd19_b_cells", n, v) for n, v in [(7, 0.2), (90, 4), (100, 5), (110, 0.5)]))
    assert pick(course(labs, config=ImmuneCourseConfig(b_cell_return_consecutive=3)), *B) == (
        "aplasia_ongoing",
        7,
        None,
        110,
        None,
    )
    assert pick(course(labs, config=ImmuneCourseConfig(b_cell_return_consecutive=1)), *B)[:3] == ("returned", 7, 90)


def test_aplasia_threshold_edges_without_lloq() -> None:
    # Exactly 1.0 is not below 1.0; 0.99 is. Return at or above 1.0: 1.0 counts.
    at = labs_frame(lab("cd19_b_cells", 7, 1.0), lab("cd19_b_cells", 14, 1.0))
    assert pick(course(at), *B) == ("never_aplastic", None, None, None, None)
    just_below = labs_frame(*(lab("cd19_b_cells", n, v) for n, v in [(7, 0.99), (100, 1.0), (107, 1.0)]))
    assert pick(course(just_below), *B) == ("returned", 7, 100, None, None)


def test_the_rows_lloq_replaces_the_configured_threshold() -> None:
    # LLOQ 0.441: 0.5 is not below it (though below the default 1.0); 0.4 is.
    labs = labs_frame(lab("cd19_b_cells", 7, 0.5, lloq=0.441), lab("cd19_b_cells", 14, 0.4, lloq=0.441))
    assert pick(course(labs), *B)[:2] == ("aplasia_ongoing", 14)


def test_a_censored_result_is_below_any_threshold_at_or_above_its_limit() -> None:
    # "<1" is below 1.0 (the default); "<0.441" with LLOQ 0.441 is below it.
    assert pick(course(labs_frame(lab("cd19_b_cells", 7, 1.0, "<"))), *B)[:2] == ("aplasia_ongoing", 7)
    lloq = labs_frame(lab("cd19_b_cells", 9, 0.441, "<", lloq=0.441))
    assert pick(course(lloq), *B)[:2] == ("aplasia_ongoing", 9)


def test_a_censored_result_above_the_threshold_decides_nothing() -> None:
    # "<20" against 1 cells/uL: could be either; no aplasia shown, none excluded.
    row = course(labs_frame(lab("cd19_b_cells", 7, 20.0, "<")))
    assert pick(row, *B) == (None, None, None, None, "UNDECIDED")


def test_an_undecidable_run_after_aplasia_leaves_the_return_open() -> None:
    # Return threshold 10: "<20" twice could be a return; the aplasia stays censored at day 120.
    labs = labs_frame(*(lab("cd19_b_cells", n, v, c) for n, v, c in [(7, 0.2, None), (110, 20, "<"), (120, 20, "<")]))
    row = course(labs, config=ImmuneCourseConfig(b_cell_return_at_least=10))
    assert pick(row, *B) == (None, 7, None, 120, "UNDECIDED")


def test_measurements_after_retreatment_are_ignored_and_the_aplasia_is_censored() -> None:
    values = [(7, 0.2), (60, 0.3), (95, 0.4), (100, 8), (110, 9)]
    labs = labs_frame(*(lab("cd19_b_cells", n, v) for n, v in values))
    row = course(labs, subjects_frame(retreatment_date=d(95)))
    # Day 95 (the re-treatment day, pre-dose) is kept; 100 and 110 are not: no return.
    assert pick(row, *B) == ("aplasia_ongoing", 7, None, 95, None)
    assert pick(row, "course_end_day", "course_end_cause") == (95, "retreatment")


def test_death_and_discontinuation_end_the_course_at_the_earlier_date() -> None:
    labs = labs_frame(*(lab("cd19_b_cells", n, v) for n, v in [(7, 0.2), (60, 0.3), (100, 8), (110, 9)]))
    row = course(labs, subjects_frame(death_date=d(90), discontinued_date=d(120)))
    assert pick(row, *B) == ("aplasia_ongoing", 7, None, 60, None)
    assert pick(row, "course_end_day", "course_end_cause") == (90, "death")


def test_pre_infusion_and_day_0_values_are_not_post_infusion() -> None:
    labs = labs_frame(lab("cd19_b_cells", -5, 0.1), lab("cd19_b_cells", 0, 0.1))
    assert pick(course(labs), *B) == ("no_measurement", None, None, None, "NO_MEASUREMENT")


def test_a_subject_without_day0_is_not_infused_in_every_group() -> None:
    subjects = pl.DataFrame(
        {"study_id": ["S"], "subject_id": ["P1"], "day0": [None]}, schema_overrides={"day0": pl.Date}
    )
    row = course(labs_frame(lab("cd19_b_cells", 7, 0.1)), subjects)
    assert row["b_cell_status"] == "not_infused"
    reasons = {k: v for k, v in row.items() if k.endswith("_reason")}
    assert set(reasons.values()) == {"NOT_INFUSED"}
    assert len(reasons) == 10


# --------------------------------------------------------------------------------------------------
# CAR-T expansion
# --------------------------------------------------------------------------------------------------

CELLS = ("car_t_cells_peak", "car_t_cells_peak_day", "car_t_cells_reason")


def test_the_peak_ties_to_the_earlier_day_and_ignores_day_0() -> None:
    labs = labs_frame(
        lab("car_t_cells", 0, 99.0),
        lab("car_t_cells", 7, 40.0),
        lab("car_t_cells", 14, 40.0),
        lab("car_t_cells", 21, 12.0),
    )
    assert pick(course(labs), *CELLS) == (40.0, 7, None)


def test_qpcr_peak_is_kept_apart_from_flow() -> None:
    labs = labs_frame(lab("car_t_cells", 7, 40.0), lab("car_t_copies", 10, 5000.0), lab("car_t_copies", 14, 9000.0))
    row = course(labs)
    assert pick(row, "car_t_copies_peak", "car_t_copies_peak_day", "car_t_copies_reason") == (9000.0, 14, None)
    assert row["car_t_cells_peak"] == 40.0


def test_a_greater_than_result_at_the_maximum_leaves_the_peak_unknown() -> None:
    at_max = labs_frame(lab("car_t_cells", 7, 40.0), lab("car_t_cells", 14, 40.0, ">"))
    assert pick(course(at_max), *CELLS) == (None, None, "PEAK_CENSORED")
    below_max = labs_frame(lab("car_t_cells", 7, 40.0), lab("car_t_cells", 14, 39.0, ">"))
    assert pick(course(below_max), *CELLS) == (40.0, 7, None)


def test_only_below_limit_results_are_not_detected() -> None:
    assert pick(course(labs_frame(lab("car_t_cells", 7, 1.0, "<"))), *CELLS) == (None, None, "NOT_DETECTED")
    assert pick(course(), *CELLS) == (None, None, "NO_MEASUREMENT")


# --------------------------------------------------------------------------------------------------
# anti-dsDNA
# --------------------------------------------------------------------------------------------------

DSDNA = (
    "anti_dsdna_baseline_positive",
    "anti_dsdna_baseline_reason",
    "anti_dsdna_seroconversion_day",
    "anti_dsdna_seroconversion_reason",
    "serological_relapse_day",
    "serological_relapse_reason",
)


def test_seroconversion_and_serological_relapse() -> None:
    # Baseline visit day -3; dsDNA day -5 (2 days before it) 120 > ref_high 30: positive. Day 30: 30 is not above
    # 30 (negative); day 200: 31 is (relapse).
    labs = labs_frame(
        *(
            lab("anti_dsdna", n, v, ref_high=30.0)
            for n, v in [(-5, 120.0), (14, 80.0), (30, 30.0), (90, 10.0), (200, 31.0)]
        )
    )
    assert pick(course(labs), *DSDNA) == (True, None, 30, None, 200, None)


def test_without_ref_high_the_default_cutoff_is_inclusive() -> None:
    # No ref_high: positive at or above 30 IU/mL (BaselineConfig default): 30 positive at baseline, 29.9 negative.
    labs = labs_frame(lab("anti_dsdna", -3, 30.0), lab("anti_dsdna", 21, 29.9))
    assert pick(course(labs), *DSDNA)[:4] == (True, None, 21, None)


def test_a_negative_baseline_has_no_seroconversion() -> None:
    labs = labs_frame(lab("anti_dsdna", -3, 10.0), lab("anti_dsdna", 21, 5.0))
    assert pick(course(labs), *DSDNA) == (False, None, None, "BASELINE_NEGATIVE", None, "NOT_SEROCONVERTED")


def test_the_baseline_window_is_the_visit_day_and_the_lookback_before_it() -> None:
    # Visit day -3, lookback 10 days: day -13 counts, day -14 does not; a result after the visit does not.
    inside = labs_frame(lab("anti_dsdna", -13, 100.0))
    assert pick(course(inside), *DSDNA)[:2] == (True, None)
    outside = labs_frame(lab("anti_dsdna", -14, 100.0), lab("anti_dsdna", -1, 100.0))
    assert pick(course(outside), *DSDNA)[:4] == (None, "NO_BASELINE_VALUE", None, "NO_BASELINE_VALUE")
    no_visit = course(inside, baseline=baseline_frame(visit_day=None))
    assert pick(no_visit, *DSDNA)[:2] == (None, "NO_TREATMENT_BASELINE")


def test_seroconversion_not_observed_or_undecided() -> None:
    still_positive = labs_frame(lab("anti_dsdna", -3, 100.0), lab("anti_dsdna", 30, 90.0))
    assert pick(course(still_positive), *DSDNA)[2:4] == (None, "NOT_OBSERVED")
    # ">20" against 30: could be either.
    undecided = labs_frame(lab("anti_dsdna", -3, 100.0), lab("anti_dsdna", 30, 20.0, ">"))
    assert pick(course(undecided), *DSDNA)[2:4] == (None, "UNDECIDED")
    none_after = labs_frame(lab("anti_dsdna", -3, 100.0))
    assert pick(course(none_after), *DSDNA)[2:4] == (None, "NO_MEASUREMENT")


# --------------------------------------------------------------------------------------------------
# Complement
# --------------------------------------------------------------------------------------------------

COMPLEMENT = ("complement_baseline_low", "complement_normalization_day", "complement_normalization_reason")


def c3c4(*rows: tuple[str, int, float]) -> list[dict[str, Any]]:
    lln = {"c3": 0.9, "c4": 0.1}
    return [lab(a, n, v, ref_low=lln[a]) for a, n, v in rows]


def test_normalization_needs_c3_and_c4_on_one_date() -> None:
    # Baseline C3 0.5 < 0.9: low. Day 30: C3 at its limit (0.9, not low) but C4 0.09 < 0.1; day 60 both normal.
    labs = labs_frame(
        *c3c4(("c3", -3, 0.5), ("c4", -3, 0.2), ("c3", 30, 0.9), ("c4", 30, 0.09), ("c3", 60, 1.0), ("c4", 60, 0.1))
    )
    assert pick(course(labs), *COMPLEMENT) == (True, 60, None)


def test_the_pairing_window() -> None:
    # C3 normal on day 30, C4 normal on day 31: not the same date (undecided: C4 unknown on day 30); with a one-day
    # window they pair on day 31.
    labs = labs_frame(*c3c4(("c3", -3, 0.5), ("c4", -3, 0.05), ("c3", 30, 1.0), ("c4", 31, 0.2)))
    assert pick(course(labs), *COMPLEMENT) == (True, None, "UNDECIDED")
    paired = course(labs, config=ImmuneCourseConfig(complement_pair_within_days=1))
    assert pick(paired, *COMPLEMENT) == (True, 31, None)


def test_normal_baseline_complement_and_a_low_that_persists() -> None:
    normal = labs_frame(*c3c4(("c3", -3, 1.0), ("c4", -3, 0.2), ("c3", 30, 1.0), ("c4", 30, 0.2)))
    assert pick(course(normal), *COMPLEMENT) == (False, None, "BASELINE_NORMAL")
    persisting = labs_frame(*c3c4(("c3", -3, 0.5), ("c4", -3, 0.2), ("c3", 30, 0.6), ("c4", 30, 0.2)))
    assert pick(course(persisting), *COMPLEMENT) == (True, None, "NOT_OBSERVED")


def test_without_ref_low_the_configured_lln_decides() -> None:
    # BaselineConfig: C3 LLN 0.9, C4 LLN 0.16. Baseline C4 0.15 is low; day 30 both exactly at the LLN: normal.
    labs = labs_frame(lab("c3", -3, 1.0), lab("c4", -3, 0.15), lab("c3", 30, 0.9), lab("c4", 30, 0.16))
    assert pick(course(labs), *COMPLEMENT) == (True, 30, None)


# --------------------------------------------------------------------------------------------------
# IgG
# --------------------------------------------------------------------------------------------------

IGG = (
    "igg_nadir",
    "igg_nadir_censoring",
    "igg_nadir_day",
    "igg_below_lln",
    "igg_below_replacement_threshold",
    "igg_reason",
)


def test_the_nadir_before_ivig_and_the_ivig_cut_off() -> None:
    # IVIG from day 60: the day-60 result (pre-dose) counts, day 61 (2.0) does not.
    labs = labs_frame(*(lab("igg", n, v, ref_low=7.0) for n, v in [(-3, 9.0), (30, 6.0), (60, 4.0), (61, 2.0)]))
    row = course(labs, subjects_frame(ivig_start_date=d(60)))
    # 4.0 is below the LLN 7.0 but not below the replacement threshold 4.0 (strict).
    assert pick(row, *IGG) == (4.0, None, 60, True, False, None)


def test_just_below_the_replacement_threshold_and_a_censored_nadir() -> None:
    assert pick(course(labs_frame(lab("igg", 30, 3.99))), *IGG) == (3.99, None, 30, None, True, None)
    # "<2" is at most 2: the nadir, below 4; the lab gave no limit, so below-LLN is unknown.
    censored = labs_frame(lab("igg", 30, 5.0), lab("igg", 60, 2.0, "<"))
    assert pick(course(censored), *IGG) == (2.0, "<", 60, None, True, None)


def test_a_nadir_that_cannot_be_below_the_thresholds() -> None:
    labs = labs_frame(lab("igg", 30, 8.0, ref_low=7.0), lab("igg", 60, 7.0, ref_low=7.0))
    assert pick(course(labs), *IGG) == (7.0, None, 60, False, False, None)


def test_igg_only_after_ivig() -> None:
    row = course(labs_frame(lab("igg", 30, 3.0)), subjects_frame(ivig_start_date=d(20)))
    assert pick(row, *IGG) == (None, None, None, None, None, "NO_MEASUREMENT_BEFORE_IVIG")


# --------------------------------------------------------------------------------------------------
# Flares
# --------------------------------------------------------------------------------------------------

FLARE = ("first_flare_day", "first_flare_severity", "flare_b_cells_returned", "flare_reason")


def test_a_rise_of_three_over_the_previous_visit_is_a_flare() -> None:
    # Day -3: 4 (comparator only); day 30: 6 (+2, no); day 60: 9 (+3 over 6: flare, 9 <= 12 mild/moderate).
    activity = activity_frame((-3, 4, 4), (30, 6, 6), (60, 9, 9))
    assert pick(course(activity=activity), *FLARE) == (60, "mild_moderate", None, None)


def test_severe_above_twelve() -> None:
    assert pick(course(activity=activity_frame((-3, 4, 4), (30, 13, 13))), *FLARE)[:2] == (30, "severe")
    assert pick(course(activity=activity_frame((-3, 4, 4), (30, 12, 12))), *FLARE)[:2] == (30, "mild_moderate")
    # Known 10, at most 14: a flare (10 - 4 >= 3) whose severity is open.
    assert pick(course(activity=activity_frame((-3, 4, 4), (30, 10, 14))), *FLARE)[:2] == (30, None)


def test_unknown_descriptors_leave_a_flare_open() -> None:
    # Known 4, at most 8 against 4: a rise of 0 to 4: undecided; no other visit.
    assert pick(course(activity=activity_frame((-3, 4, 4), (30, 4, 8))), *FLARE) == (None, None, None, "UNDECIDED")
    # At most 6 against a known 4: a rise of at most 2: excluded.
    assert pick(course(activity=activity_frame((-3, 4, 4), (30, 4, 6))), *FLARE) == (None, None, None, "NOT_OBSERVED")


def test_a_pre_infusion_rise_is_not_a_flare_and_the_first_visit_without_comparator_is_open() -> None:
    assert pick(course(activity=activity_frame((-30, 0, 0), (-3, 8, 8))), *FLARE)[3] == "NO_MEASUREMENT"
    assert pick(course(activity=activity_frame((30, 8, 8))), *FLARE)[3] == "UNDECIDED"


def test_the_treatment_baseline_comparator() -> None:
    # Baseline visit day -3: 10. Day 30: 2; day 60: 6 (+4 over the previous visit, but -4 against the baseline).
    activity = activity_frame((-3, 10, 10), (30, 2, 2), (60, 6, 6))
    assert pick(course(activity=activity), *FLARE)[0] == 60
    against_baseline = ImmuneCourseConfig(flare_comparator="treatment_baseline")
    assert pick(course(activity=activity, config=against_baseline), *FLARE)[::3] == (None, "NOT_OBSERVED")
    later = activity_frame((-3, 10, 10), (30, 2, 2), (60, 13, 13))
    assert pick(course(activity=later, config=against_baseline), *FLARE)[:2] == (60, "severe")


def test_whether_b_cells_had_returned_before_the_flare() -> None:
    b_cells = labs_frame(*(lab("cd19_b_cells", n, v) for n, v in [(7, 0.1), (100, 5), (110, 6)]))
    after_return = activity_frame((-3, 2, 2), (110, 6, 6))
    assert pick(course(b_cells, activity=after_return), *FLARE)[:3] == (110, "mild_moderate", True)
    during_aplasia = activity_frame((-3, 2, 2), (60, 6, 6))
    assert pick(course(b_cells, activity=during_aplasia), *FLARE)[:3] == (60, "mild_moderate", False)
    # Aplasia censored at day 50, flare on day 60: unknown.
    censored = labs_frame(lab("cd19_b_cells", 7, 0.1), lab("cd19_b_cells", 50, 0.1))
    assert pick(course(censored, activity=during_aplasia), *FLARE)[2] is None


def test_visits_after_the_end_of_the_course_are_ignored() -> None:
    activity = activity_frame((-3, 2, 2), (60, 8, 8))
    assert pick(course(subjects=subjects_frame(retreatment_date=d(59)), activity=activity), *FLARE)[3] == (
        "NO_MEASUREMENT"
    )


# --------------------------------------------------------------------------------------------------
# LICATS renal signal
# --------------------------------------------------------------------------------------------------

LICATS = ("licats_renal_involvement", "licats_signal_day", "licats_signal_source", "licats_reason")
RENAL = baseline_frame(upcr=1.0, proteinuria=True)


def test_creatinine_at_one_and_a_half_times_baseline() -> None:
    # Baseline creatinine 80 (day -4, in the visit's window); 120 = 1.5 x 80 on day 10: a signal; 119 on day 8 not.
    labs = labs_frame(lab("creatinine", -4, 80.0), lab("creatinine", 8, 119.0), lab("creatinine", 10, 120.0))
    assert pick(course(labs, baseline=RENAL), *LICATS) == (True, 10, "creatinine", None)


def test_upcr_rise_and_its_floor() -> None:
    # Baseline UPCR 1.0: 1.49 on day 5 is not 1.5 x; 1.5 on day 6 is.
    labs = labs_frame(lab("upcr", 5, 1.49), lab("upcr", 6, 1.5))
    assert pick(course(labs, baseline=RENAL), *LICATS) == (True, 6, "upcr", None)
    # Baseline 0.2 (renal by the proteinuria item): 0.4 is twice it but below the 0.5 g/g floor; 0.5 is not.
    low = baseline_frame(upcr=0.2, proteinuria=True)
    assert pick(course(labs_frame(lab("upcr", 5, 0.4)), baseline=low), *LICATS)[1:] == (None, None, "NOT_OBSERVED")
    assert pick(course(labs_frame(lab("upcr", 5, 0.5)), baseline=low), *LICATS)[1:] == (5, "upcr", None)


def test_the_window_ends_at_day_30_and_at_b_cell_return() -> None:
    labs = labs_frame(lab("creatinine", -4, 80.0), lab("creatinine", 31, 200.0))
    assert pick(course(labs, baseline=RENAL), *LICATS)[1:] == (None, None, "NO_MEASUREMENT")
    day30 = labs_frame(lab("creatinine", -4, 80.0), lab("creatinine", 30, 200.0))
    assert pick(course(day30, baseline=RENAL), *LICATS)[1] == 30
    # B cells back on day 20 (two values at or above 1): a rise on day 20 is no longer during aplasia, day 19 is.
    b_cells = [lab("cd19_b_cells", n, v) for n, v in [(7, 0.1), (20, 3.0), (25, 4.0)]]
    returned = labs_frame(*b_cells, lab("creatinine", -4, 80.0), lab("creatinine", 20, 200.0))
    assert pick(course(returned, baseline=RENAL), *LICATS)[1:] == (None, None, "NO_MEASUREMENT")
    before = labs_frame(*b_cells, lab("creatinine", -4, 80.0), lab("creatinine", 19, 200.0))
    assert pick(course(before, baseline=RENAL), *LICATS)[1] == 19


def test_licats_applies_only_with_renal_involvement() -> None:
    labs = labs_frame(lab("creatinine", -4, 80.0), lab("creatinine", 10, 200.0))
    not_renal = baseline_frame(upcr=0.1, proteinuria=False).with_columns(pl.col(RENAL_ITEMS).fill_null(False))
    assert pick(course(labs, subjects_frame(lupus_nephritis_class="II"), baseline=not_renal), *LICATS) == (
        False,
        None,
        None,
        "NOT_RENAL",
    )
    # The class and three renal items unknown, UPCR 0.1 and proteinuria absent: renal involvement unknown.
    unknown = baseline_frame(upcr=0.1, proteinuria=False)
    assert pick(course(labs, baseline=unknown), *LICATS) == (None, None, None, "RENAL_UNKNOWN")
    # A class IV biopsy makes it renal whatever the baseline visit says.
    biopsy = course(labs, subjects_frame(lupus_nephritis_class="IV"), baseline=not_renal)
    assert pick(biopsy, *LICATS) == (True, 10, "creatinine", None)


def test_a_missing_baseline_creatinine_leaves_the_creatinine_criterion_open() -> None:
    labs = labs_frame(lab("creatinine", 10, 200.0), lab("upcr", 10, 1.0))
    assert pick(course(labs, baseline=RENAL), *LICATS)[1:] == (None, None, "UNDECIDED")
    no_baseline = baseline_frame(upcr=None, proteinuria=True)
    assert pick(course(labs, baseline=no_baseline), *LICATS)[1:] == (None, None, "NO_BASELINE_VALUE")


# --------------------------------------------------------------------------------------------------
# Relapse events, contract and reasons
# --------------------------------------------------------------------------------------------------


def test_relapse_events_list_serological_relapses_and_every_flare_visit() -> None:
    labs = labs_frame(*(lab("anti_dsdna", n, v) for n, v in [(-3, 100.0), (30, 10.0), (120, 50.0)]))
    activity = activity_frame((-3, 4, 4), (60, 8, 8), (90, 2, 2), (150, 14, 14))
    out = immune_course(labs, subjects_frame(), activity, baseline_frame(), None)
    events = validate_relapse_events(relapse_events(out, activity))
    assert events.select("kind", "day", "severity").rows() == [
        ("flare", 60, "mild_moderate"),
        ("serological_relapse", 120, None),
        ("flare", 150, "severe"),
    ]


def test_one_row_per_subject_in_subjects_order_with_optional_columns_absent() -> None:
    subjects = pl.DataFrame(
        {"study_id": ["S", "S", "S"], "subject_id": ["P3", "P1", "P2"], "day0": [DAY0, DAY0, None]},
        schema_overrides={"day0": pl.Date},
    )
    labs = pl.concat([labs_frame(lab("cd19_b_cells", 7, 0.1)), labs_frame(lab("cd19_b_cells", 7, 50.0), subject="P3")])
    out = validate_immune_course(immune_course(labs, subjects, activity_frame(), baseline_frame(), None))
    assert out.select("subject_id", "b_cell_status").rows() == [
        ("P3", "never_aplastic"),
        ("P1", "aplasia_ongoing"),
        ("P2", "not_infused"),
    ]


def test_every_reason_code_is_documented() -> None:
    assert all(text.endswith(".") for text in REASONS.values())
    with pytest.raises(ValueError, match="treatment_baseline"):
        relapse_events(
            immune_course(no_labs(), subjects_frame(), activity_frame((30, 1, 1)), baseline_frame(), None),
            activity_frame((30, 1, 1)),
            ImmuneCourseConfig(flare_comparator="treatment_baseline"),
        )
