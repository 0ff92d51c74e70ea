"""ICAHT (EHA/EBMT 2023) and platelet companion grades: duration bands at 6/7, 13/14 and 30/31 days, an episode
running past day 30, the 100/uL rule, gap interpolation and episode joining, the late "not transient" rule,
censored results and missing phases. Expected values are worked by hand from follow-up-facts §4."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.config.followup import IcahtConfig
from immunostrat.followup.icaht import icaht_grades
from immunostrat.schemas.outputs import check_contract
from immunostrat.schemas.toxicity_events import IcahtGrades

DAY0 = dt.date(2024, 1, 1)
LAB_SCHEMA = {
    "study_id": pl.String,
    "subject_id": pl.String,
    "analyte": pl.String,
    "value": pl.Float64,
    "censoring": pl.String,
    "collected_date": pl.Date,
}
LOW, PROFOUND, NORMAL = 0.3, 0.05, 3.0


def _rows(analyte: str, days: Iterable[int], value: float, censoring: str | None = None) -> list[tuple]:
    return [(analyte, d, value, censoring) for d in days]


def _labs(*groups: list[tuple], subject: str = "P1") -> pl.DataFrame:
    rows = [
        {
            "study_id": "S",
            "subject_id": subject,
            "analyte": a,
            "value": v,
            "censoring": c,
            "collected_date": DAY0 + dt.timedelta(days=d),
        }
        for group in groups
        for a, d, v, c in group
    ]
    return pl.DataFrame(rows, schema=LAB_SCHEMA)


def _anc(days: Iterable[int], value: float, censoring: str | None = None) -> list[tuple]:
    return _rows("neutrophils", days, value, censoring)


def _plt(days: Iterable[int], value: float) -> list[tuple]:
    return _rows("platelets", days, value)


SUBJECTS = pl.DataFrame({"study_id": ["S"], "subject_id": ["P1"], "day0": [DAY0]})


def _grades(labs: pl.DataFrame, config: IcahtConfig | None = None) -> dict:
    out = icaht_grades(labs, SUBJECTS, config)
    check_contract("icaht", IcahtGrades, out)
    assert out.height == 1
    return out.row(0, named=True)


def _daily_episode(first: int, last: int, value: float = LOW) -> list[tuple]:
    """A daily-measured episode from `first` to `last`, with normal counts the day before and the 3 days after."""
    return (
        _anc([first - 1] if first > 0 else [], NORMAL)
        + _anc(range(first, last + 1), value)
        + _anc(range(last + 1, last + 4), NORMAL)
    )


# --------------------------------------------------------------------------------------------------
# Early ANC grade
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "grade"),
    [(1, 1), (6, 1), (7, 2), (13, 2), (14, 3), (30, 3), (31, 4)],
)
def test_early_grade_by_days_at_or_below_500(days: int, grade: int) -> None:
    row = _grades(_labs(_daily_episode(1, days)))
    assert (row["icaht_early_grade"], row["icaht_early_grade_reason"]) == (grade, None)


def test_never_at_or_below_500_is_grade_0_and_exactly_500_counts() -> None:
    assert _grades(_labs(_anc(range(0, 31), 0.51)))["icaht_early_grade"] == 0
    # 0.5 is "at or below 500/uL": 3 days -> grade 1.
    assert _grades(_labs(_daily_episode(5, 7, value=0.5)))["icaht_early_grade"] == 1


def test_episode_running_past_day_30_counts_to_its_end() -> None:
    # Days 25-60 at or below 500: 36 days, starting in the early phase -> grade 4.
    assert _grades(_labs(_daily_episode(25, 60)))["icaht_early_grade"] == 4


def test_episode_starting_on_day_31_is_not_early() -> None:
    labs = _labs(_anc(range(0, 31), NORMAL), _anc(range(31, 80), LOW))
    assert _grades(labs)["icaht_early_grade"] == 0
    labs = _labs(_anc(range(0, 30), NORMAL), _anc(range(30, 80), LOW))
    assert _grades(labs)["icaht_early_grade"] == 4


def test_duration_capped_at_day_100() -> None:
    # Days 90-130 below, after day 30: nothing early; with a custom early phase reaching day 90, the episode
    # counts days 90-100 = 11 days -> grade 2.
    labs = _labs(_anc(range(0, 90), NORMAL), _anc(range(90, 131), LOW))
    assert _grades(labs, IcahtConfig(early_last_day=90))["icaht_early_grade"] == 2


@pytest.mark.parametrize(("days", "grade"), [(6, 2), (7, 3), (13, 3), (14, 4)])
def test_profound_neutropenia_rule(days: int, grade: int) -> None:
    # 10 days at or below 500 (grade 2 alone), of which the first `days` at or below 100; for 14 days the
    # episode is 14 days long (grade 3 alone), so grade 4 comes from the 100/uL rule.
    length = max(10, days)
    labs = _labs(_anc([0], NORMAL), _anc(range(1, days + 1), PROFOUND), _anc(range(days + 1, length + 1), LOW))
    labs = pl.concat([labs, _labs(_anc(range(length + 1, length + 4), NORMAL))])
    assert _grades(labs)["icaht_early_grade"] == grade


# --------------------------------------------------------------------------------------------------
# Interpolation and joining
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("second", "grade"), [(8, 2), (9, 1)])
def test_gap_interpolation_up_to_7_days(second: int, grade: int) -> None:
    # Below on day 1 and on day `second`, nothing in between: 7 days apart are joined (8 days -> grade 2); 8 days
    # apart are two 1-day episodes (grade 1).
    labs = _labs(_anc([0], NORMAL), _anc([1, second], LOW), _anc(range(second + 1, second + 4), NORMAL))
    assert _grades(labs)["icaht_early_grade"] == grade


def test_no_interpolation_across_a_measurement_above() -> None:
    # Days 1 and 7 below with day 4 above between them: not consecutive measurements, so days 2-6 are not
    # interpolated; 5 days not below (>= 3) keep the two 1-day episodes apart: grade 1.
    labs = _labs(_anc([1, 7], LOW), _anc([4], NORMAL), _anc(range(8, 11), NORMAL))
    assert _grades(labs)["icaht_early_grade"] == 1


@pytest.mark.parametrize(("above_days", "grade"), [(2, 2), (3, 1)])
def test_episodes_joined_unless_3_consecutive_days_above(above_days: int, grade: int) -> None:
    # Below days 1-5, above for `above_days` days, below again for 2 days. Joined: 5 + 2 + 2 = 9 days -> 2.
    # Not joined: the longest episode is 5 days -> 1.
    second = 6 + above_days
    labs = _labs(
        _anc(range(1, 6), LOW),
        _anc(range(6, second), NORMAL),
        _anc(range(second, second + 2), LOW),
        _anc(range(second + 2, second + 5), NORMAL),
    )
    assert _grades(labs)["icaht_early_grade"] == grade


def test_interpolation_and_joining_are_configurable() -> None:
    labs = _labs(_anc([1, 8], LOW), _anc(range(9, 12), NORMAL))
    assert _grades(labs, IcahtConfig(interpolate_gap_days=6))["icaht_early_grade"] == 1
    labs = _labs(_anc(range(1, 6), LOW), _anc(range(6, 9), NORMAL), _anc(range(9, 11), LOW))
    assert _grades(labs, IcahtConfig(join_gap_days=4))["icaht_early_grade"] == 2


def test_daily_minimum_decides() -> None:
    # Two results on day 5: 2.0 and 0.4; the daily minimum is at or below 500.
    labs = _labs(_anc([4, 6, 7, 8], NORMAL), _anc([5], 2.0), _anc([5], 0.4))
    assert _grades(labs)["icaht_early_grade"] == 1


# --------------------------------------------------------------------------------------------------
# Censored results and missing phases
# --------------------------------------------------------------------------------------------------


def test_censored_result_decides_when_its_comparator_does() -> None:
    # "<0.5": below 500 whatever the value -> a 1-day episode.
    labs = _labs(_anc([3], 0.5, "<"), _anc([4, 5, 6], NORMAL))
    assert _grades(labs)["icaht_early_grade"] == 1
    # ">0.5": above 500 -> grade 0.
    labs = _labs(_anc([3], 0.5, ">"), _anc([4, 5, 6], NORMAL))
    assert _grades(labs)["icaht_early_grade"] == 0


def test_censored_result_that_does_not_decide_leaves_the_grade_unknown() -> None:
    # Days 1-6 below (grade 1), day 7 ">0.3" (could be at or below 500 or not): 6 or 7 days -> 1 or 2.
    labs = _labs(_anc(range(1, 7), LOW), _anc([7], 0.3, ">"), _anc(range(8, 11), NORMAL))
    row = _grades(labs)
    assert (row["icaht_early_grade"], row["icaht_early_grade_reason"]) == (None, "INPUT_UNKNOWN")
    # Day 3 ">0.3" inside a 10-day interpolated run makes no difference: known grade 2.
    labs = _labs(_anc([1, 2, 4, 5, 6, 7, 8, 9, 10], LOW), _anc([3], 0.3, ">"), _anc(range(11, 14), NORMAL))
    # Day 3 not below: day 2 and day 4 are joined (1 day between) -> 10 days either way.
    assert _grades(labs)["icaht_early_grade"] == 2


def test_no_measurement_in_a_phase() -> None:
    row = _grades(_labs(_anc(range(1, 4), LOW)))
    assert (row["icaht_late_grade"], row["icaht_late_grade_reason"]) == (None, "NO_MEASUREMENT")
    assert (row["platelet_icaht_early_grade"], row["platelet_icaht_early_grade_reason"]) == (None, "NO_MEASUREMENT")
    labs = _labs(_anc([40, 50], NORMAL))
    row = _grades(labs)
    assert (row["icaht_early_grade"], row["icaht_early_grade_reason"]) == (None, "NO_MEASUREMENT")
    assert row["icaht_late_grade"] == 0


def test_results_before_day_0_and_subjects_without_day0_are_not_used() -> None:
    labs = pl.concat([_labs(_anc([-3, -2, -1], LOW), _anc([0, 1, 2], NORMAL)), _labs(_anc([1], LOW), subject="P2")])
    subjects = pl.DataFrame({"study_id": ["S", "S"], "subject_id": ["P1", "P2"], "day0": [DAY0, None]})
    out = icaht_grades(labs, subjects)
    check_contract("icaht", IcahtGrades, out)
    assert out.select("subject_id", "icaht_early_grade").rows() == [("P1", 0)]


# --------------------------------------------------------------------------------------------------
# Late ANC grade
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "grade"),
    [
        ([2.0, 2.0, 2.0], 0),
        ([1.5, 2.0, 2.0], 0),  # one measurement at or below 1500: transient
        ([1.5, 1.5, 2.0], 1),
        ([1.0, 1.2, 2.0], 1),  # one at or below 1000 only
        ([1.0, 0.9, 2.0], 2),
        ([0.5, 0.4, 1.0], 3),
        ([0.1, 0.05, 0.4], 4),
    ],
)
def test_late_grade_needs_two_measurements(values: list[float], grade: int) -> None:
    labs = _labs(_anc(range(0, 31), NORMAL), *(_anc([day], v) for day, v in zip((40, 55, 70), values, strict=True)))
    assert _grades(labs)["icaht_late_grade"] == grade


def test_late_phase_is_days_31_to_100() -> None:
    labs = _labs(_anc([30, 101, 102], 0.05), _anc([31, 100], NORMAL))
    assert _grades(labs)["icaht_late_grade"] == 0
    labs = _labs(_anc([31, 100], 0.05))
    assert _grades(labs)["icaht_late_grade"] == 4
    assert _grades(labs, IcahtConfig(late_min_measurements=3))["icaht_late_grade"] == 0


# --------------------------------------------------------------------------------------------------
# Platelets
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "value", "grade"),
    [(6, 49.0, 1), (7, 49.0, 2), (3, 50.0, 0), (1, 19.0, 3), (13, 19.0, 3), (14, 19.0, 4), (3, 20.0, 1)],
)
def test_platelet_early_grade(days: int, value: float, grade: int) -> None:
    labs = _labs(_plt([0], 150.0), _plt(range(1, days + 1), value), _plt(range(days + 1, days + 4), 150.0))
    row = _grades(labs)
    assert (row["platelet_icaht_early_grade"], row["platelet_icaht_early_grade_reason"]) == (grade, None)


@pytest.mark.parametrize(
    ("values", "grade"),
    [([150.0], 0), ([100.0], 0), ([99.0], 1), ([49.0], 2), ([50.0], 1), ([19.0], 3)],
)
def test_platelet_late_grade_1_to_3(values: list[float], grade: int) -> None:
    labs = _labs(_plt(range(0, 31), 150.0), _plt([45], values[0]), _plt([60], 150.0))
    assert _grades(labs)["platelet_icaht_late_grade"] == grade


@pytest.mark.parametrize(("days", "grade"), [(13, 3), (14, 4)])
def test_platelet_late_grade_by_days_below_20(days: int, grade: int) -> None:
    labs = _labs(_plt(range(0, 41), 150.0), _plt(range(41, 41 + days), 15.0), _plt(range(41 + days, 45 + days), 150.0))
    assert _grades(labs)["platelet_icaht_late_grade"] == grade


def test_platelet_episode_from_the_early_phase_counts_its_late_days() -> None:
    # Below 20 on days 20-50: late phase days 31-50 = 20 days -> late 4; early episode 31 days -> early 4.
    labs = _labs(_plt(range(0, 20), 150.0), _plt(range(20, 51), 15.0), _plt(range(51, 55), 150.0))
    row = _grades(labs)
    assert (row["platelet_icaht_early_grade"], row["platelet_icaht_late_grade"]) == (4, 4)


# --------------------------------------------------------------------------------------------------
# Property: a known grade does not change when inconclusive censored results are resolved
# --------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    series=st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from([0.05, 0.3, 0.8, 1.2, 3.0]), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_known_grades_hold_for_every_resolution_of_censored_results(series: list[tuple[int, float, bool]]) -> None:
    # A censored result ">v" allows any value above v; resolve it barely above v (v + 0.01) or far above (10).
    def labs(resolve: str | None) -> pl.DataFrame:
        rows: list[tuple] = []
        for day, value, censored in series:
            if not censored:
                rows += _anc([day], value)
            elif resolve is None:
                rows += _anc([day], value, ">")
            else:
                rows += _anc([day], value + 0.01 if resolve == "barely" else 10.0)
        return _labs(rows)

    open_ = _grades(labs(None))
    for resolve in ("barely", "far"):
        resolved = _grades(labs(resolve))
        for name in ("icaht_early_grade", "icaht_late_grade"):
            if open_[name] is not None:
                assert resolved[name] == open_[name]
