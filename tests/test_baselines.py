"""The two baselines (issue 12): the selection baseline visit and its merge with the subjects file's SLEDAI-2K, and
the treatment baseline with its renal inputs. Expected values are worked by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from immunostrat.config.followup import FollowUpConfig
from immunostrat.config.run import BaselineConfig
from immunostrat.followup.baselines import (
    merge_selection_sledai,
    selection_baseline_visit,
    treatment_baseline,
    with_selection_sledai,
)
from immunostrat.followup.sledai import load_descriptors
from tests.support import NO_LABS

D = dt.date
REFERENCE = D(2024, 1, 31)
EXPOSURE = D(2024, 3, 1)


def _subjects(*rows: dict[str, Any]) -> pl.DataFrame:
    base = {"study_id": "S", "reference_date": REFERENCE, "first_exposure_date": EXPOSURE, "day0": EXPOSURE}
    return pl.DataFrame(
        [base | {"sledai_2k": None} | r for r in rows],
        schema_overrides={"first_exposure_date": pl.Date, "day0": pl.Date, "sledai_2k": pl.Int64},
    )


def _activity(*rows: dict[str, Any]) -> pl.DataFrame:
    """Activity rows (only the columns the baselines read); scores as given."""
    defaults = {"study_id": "S", "sledai_2k": None, "clinical_sledai_2k": None, "pga": None, "prednisone_mg_day": None}
    return pl.DataFrame(
        [defaults | r for r in rows],
        schema_overrides={
            "sledai_2k": pl.Int64,
            "clinical_sledai_2k": pl.Int64,
            "pga": pl.Float64,
            "prednisone_mg_day": pl.Float64,
        },
    )


# --------------------------------------------------------------------------------------------------
# Selection baseline
# --------------------------------------------------------------------------------------------------

WIDE = BaselineConfig(window_days_before=90, window_days_after=10)


def test_the_visit_closest_to_the_reference_date_is_chosen() -> None:
    visits = _activity(
        {"subject_id": "P1", "visit_date": D(2024, 1, 10), "sledai_2k": 12},  # 21 days before
        {"subject_id": "P1", "visit_date": D(2024, 1, 28), "sledai_2k": 10, "clinical_sledai_2k": 6},  # 3 before
        {"subject_id": "P1", "visit_date": D(2024, 2, 5), "sledai_2k": 8},  # 5 after
    )
    out = selection_baseline_visit(visits, _subjects({"subject_id": "P1"}), WIDE)
    assert out.to_dicts() == [
        {
            "study_id": "S",
            "subject_id": "P1",
            "selection_visit_date": D(2024, 1, 28),
            "sledai_2k": 10,
            "clinical_sledai_2k": 6,
        }
    ]


def test_equal_distance_goes_to_the_earlier_visit() -> None:
    visits = _activity(
        {"subject_id": "P1", "visit_date": D(2024, 2, 5), "sledai_2k": 8},  # 5 after, listed first
        {"subject_id": "P1", "visit_date": D(2024, 1, 26), "sledai_2k": 10},  # 5 before
    )
    out = selection_baseline_visit(visits, _subjects({"subject_id": "P1"}), WIDE)
    assert out["selection_visit_date"].to_list() == [D(2024, 1, 26)]


def test_a_visit_with_unknown_descriptors_is_still_the_closest() -> None:
    """The choice is by date alone: an incomplete closest visit gives a null sledai_2k, not an older total."""
    visits = _activity(
        {"subject_id": "P1", "visit_date": D(2024, 1, 30), "sledai_2k": None, "clinical_sledai_2k": 4},
        {"subject_id": "P1", "visit_date": D(2024, 1, 20), "sledai_2k": 10},
    )
    out = selection_baseline_visit(visits, _subjects({"subject_id": "P1"}), WIDE)
    assert out.select("sledai_2k", "clinical_sledai_2k").row(0) == (None, 4)


@pytest.mark.parametrize(
    ("visit_date", "chosen"),
    [
        (D(2023, 11, 2), True),  # exactly 90 days before
        (D(2023, 11, 1), False),  # 91 days before
        (D(2024, 1, 31), True),  # on the reference date
        (D(2024, 2, 1), False),  # after it, with the default window_days_after = 0
    ],
)
def test_selection_window_edges(visit_date: dt.date, chosen: bool) -> None:
    visits = _activity({"subject_id": "P1", "visit_date": visit_date, "sledai_2k": 6})
    out = selection_baseline_visit(visits, _subjects({"subject_id": "P1"}), BaselineConfig())
    assert out.height == int(chosen)


def test_no_selection_visit_on_or_after_first_exposure() -> None:
    """Exposure on the reference date: a visit that day is after treatment began, not a baseline."""
    subjects = _subjects({"subject_id": "P1", "first_exposure_date": REFERENCE, "day0": REFERENCE})
    visits = _activity(
        {"subject_id": "P1", "visit_date": REFERENCE, "sledai_2k": 2},
        {"subject_id": "P1", "visit_date": D(2024, 1, 20), "sledai_2k": 10},
    )
    assert selection_baseline_visit(visits, subjects, WIDE)["sledai_2k"].to_list() == [10]


def test_a_subject_without_a_visit_in_the_window_has_no_selection_visit() -> None:
    visits = _activity({"subject_id": "P2", "visit_date": D(2024, 1, 30), "sledai_2k": 6})
    out = selection_baseline_visit(visits, _subjects({"subject_id": "P1"}, {"subject_id": "P2"}), WIDE)
    assert out["subject_id"].to_list() == ["P2"]


SELECTION = pl.DataFrame(
    {
        "study_id": ["S", "S", "S"],
        "subject_id": ["P1", "P2", "P4"],
        "selection_visit_date": [D(2024, 1, 30)] * 3,
        "sledai_2k": [8, 6, 10],
        "clinical_sledai_2k": [4, 6, 10],
    }
)
FILE_VALUES = _subjects(
    {"subject_id": "P1", "sledai_2k": 10},  # both, disagreeing
    {"subject_id": "P2", "sledai_2k": None},  # visit fills the gap
    {"subject_id": "P3", "sledai_2k": None},  # neither
    {"subject_id": "P4", "sledai_2k": 10},  # both, agreeing
    {"subject_id": "P5", "sledai_2k": 7},  # file only
)


def test_the_subjects_file_wins_and_the_visit_fills_a_gap() -> None:
    out, counts = merge_selection_sledai(FILE_VALUES, SELECTION)
    assert out["subject_id"].to_list() == ["P1", "P2", "P3", "P4", "P5"]
    assert out["sledai_2k"].to_list() == [10, 6, None, 10, 7]
    assert out["sledai_2k_source"].to_list() == ["subjects", "visits", None, "subjects", "subjects"]
    assert out["clinical_sledai_2k"].to_list() == [4, 6, None, 10, None]
    assert counts == {
        "sledai_2k_from_subjects": 3,
        "sledai_2k_from_visits": 1,
        "sledai_2k_missing": 1,
        "sledai_2k_disagreements": 1,
    }


def test_the_visit_can_be_configured_to_win() -> None:
    out, counts = merge_selection_sledai(FILE_VALUES, SELECTION, FollowUpConfig(selection_sledai_precedence="visits"))
    assert out["sledai_2k"].to_list() == [8, 6, None, 10, 7]
    assert out["sledai_2k_source"].to_list() == ["visits", "visits", None, "visits", "subjects"]
    assert (counts["sledai_2k_from_visits"], counts["sledai_2k_disagreements"]) == (3, 1)


# --------------------------------------------------------------------------------------------------
# Treatment baseline
# --------------------------------------------------------------------------------------------------

LABS_SCHEMA = {
    "study_id": pl.String,
    "subject_id": pl.String,
    "analyte": pl.String,
    "value": pl.Float64,
    "censoring": pl.String,
    "collected_date": pl.Date,
}


def _labs(*rows: tuple[str, str, float, str | None, dt.date]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "study_id": "S",
                **dict(zip(["subject_id", "analyte", "value", "censoring", "collected_date"], r, strict=True)),
            }
            for r in rows
        ],
        schema=LABS_SCHEMA,
    )


def test_the_last_visit_before_first_exposure_with_its_renal_inputs() -> None:
    """Exposure 1 March. Visits 20 Feb, 28 Feb and 1 March (exposure day: not before it): 28 Feb is chosen.
    UPCR on 20 Feb (8 days before it) and 25 Feb: the later; UPCR on 1 March is after the visit; eGFR on
    10 Feb is 18 days before it, outside the 10-day lookback."""
    visits = _activity(
        {"subject_id": "P1", "visit_date": D(2024, 2, 20), "sledai_2k": 14},
        {
            "subject_id": "P1",
            "visit_date": D(2024, 2, 28),
            "sledai_2k": 12,
            "clinical_sledai_2k": 8,
            "pga": 1.5,
            "prednisone_mg_day": 10.0,
            "item_proteinuria": True,
            "item_hematuria": False,
            "item_pyuria": None,
            "item_urinary_casts": False,
        },
        {"subject_id": "P1", "visit_date": D(2024, 3, 1), "sledai_2k": 4},
    )
    labs = _labs(
        ("P1", "upcr", 0.9, None, D(2024, 2, 20)),
        ("P1", "upcr", 0.7, None, D(2024, 2, 25)),
        ("P1", "upcr", 2.0, None, D(2024, 3, 1)),
        ("P1", "egfr", 85.0, None, D(2024, 2, 10)),
        ("P2", "upcr", 3.0, None, D(2024, 2, 27)),
    )
    out = treatment_baseline(visits, _subjects({"subject_id": "P1"}), labs)
    assert out.drop("study_id", "subject_id").to_dicts() == [
        {
            "treatment_baseline_date": D(2024, 2, 28),
            "sledai_2k": 12,
            "clinical_sledai_2k": 8,
            "pga": 1.5,
            "prednisone_mg_day": 10.0,
            "item_urinary_casts": False,
            "item_hematuria": False,
            "item_proteinuria": True,
            "item_pyuria": None,
            "upcr": 0.7,
            "upcr_censoring": None,
            "upcr_date": D(2024, 2, 25),
            "egfr": None,
            "egfr_censoring": None,
            "egfr_date": None,
        }
    ]


@pytest.mark.parametrize(
    ("visit_date", "window", "chosen"),
    [
        (D(2023, 12, 2), 90, True),  # 90 days before 1 March 2024 (a leap year)
        (D(2023, 12, 1), 90, False),  # 91 days before
        (D(2023, 12, 1), 120, True),
        (D(2024, 2, 29), 90, True),  # the day before
        (D(2024, 3, 1), 90, False),  # the exposure day itself
    ],
)
def test_treatment_baseline_window_edges(visit_date: dt.date, window: int, chosen: bool) -> None:
    visits = _activity({"subject_id": "P1", "visit_date": visit_date, "sledai_2k": 6})
    config = FollowUpConfig(treatment_baseline_window_days=window)
    out = treatment_baseline(visits, _subjects({"subject_id": "P1"}), _labs(), config)
    assert out["treatment_baseline_date"].to_list() == [visit_date if chosen else None]


def test_exposure_falls_back_to_day0_and_subjects_without_either_get_nulls() -> None:
    subjects = _subjects(
        {"subject_id": "P1", "first_exposure_date": None, "day0": D(2024, 2, 15)},
        {"subject_id": "P2", "first_exposure_date": None, "day0": None},
        {"subject_id": "P3"},  # no visit at all
    )
    visits = _activity(
        {"subject_id": "P1", "visit_date": D(2024, 2, 10), "sledai_2k": 8},
        {"subject_id": "P1", "visit_date": D(2024, 2, 20), "sledai_2k": 2},  # after day 0
        {"subject_id": "P2", "visit_date": D(2024, 2, 10), "sledai_2k": 8},
    )
    out = treatment_baseline(visits, subjects, _labs())
    assert out["subject_id"].to_list() == ["P1", "P2", "P3"]
    assert out["treatment_baseline_date"].to_list() == [D(2024, 2, 10), None, None]
    assert out["sledai_2k"].to_list() == [8, None, None]


def test_a_censored_renal_value_keeps_its_comparator() -> None:
    visits = _activity({"subject_id": "P1", "visit_date": D(2024, 2, 28)})
    labs = _labs(("P1", "upcr", 0.1, "<", D(2024, 2, 28)), ("P1", "egfr", 90.0, ">", D(2024, 2, 27)))
    row = treatment_baseline(visits, _subjects({"subject_id": "P1"}), labs).row(0, named=True)
    assert (row["upcr"], row["upcr_censoring"], row["egfr"], row["egfr_censoring"]) == (0.1, "<", 90.0, ">")


# --------------------------------------------------------------------------------------------------
# Selection SLEDAI-2K on the subjects (what stratify's strata carry)
# --------------------------------------------------------------------------------------------------


def _reported_visit(subject: str, date: dt.date, present: tuple[str, ...]) -> dict[str, Any]:
    """A visit with every descriptor assessed: `present` true, the others false."""
    return {"study_id": "S", "subject_id": subject, "visit": None, "visit_date": date} | {
        f"item_{d.item}": d.item in present for d in load_descriptors()
    }


def test_subjects_gain_the_selection_visit_score_beside_their_own() -> None:
    """P1: file 10, visit arthritis (4) + low complement (2) = 6, clinical 4: the file wins, clinical from the
    visit. P2: no file score; its pre-exposure visit (rash 2) fills it, while a visit after exposure (score 4)
    is never a selection baseline. P3: nothing at all."""
    subjects = _subjects({"subject_id": "P1", "sledai_2k": 10}, {"subject_id": "P2"}, {"subject_id": "P3"})
    visits = pl.DataFrame(
        [
            _reported_visit("P1", D(2024, 1, 30), ("arthritis", "low_complement")),
            _reported_visit("P2", D(2024, 2, 2), ("rash",)),
            _reported_visit("P2", EXPOSURE, ("arthritis",)),
        ]
    )
    out, counts = with_selection_sledai(subjects, visits, NO_LABS, baseline=WIDE)
    assert out.columns[out.columns.index("sledai_2k") + 1 :][:2] == ["sledai_2k_source", "clinical_sledai_2k"]
    assert out["sledai_2k"].to_list() == [10, 2, None]
    assert out["sledai_2k_source"].to_list() == ["subjects", "visits", None]
    assert out["clinical_sledai_2k"].to_list() == [4, 2, None]
    assert counts["sledai_2k_disagreements"] == 1


def test_without_visits_the_subjects_file_is_the_only_source() -> None:
    out, counts = with_selection_sledai(
        _subjects({"subject_id": "P1", "sledai_2k": 8}, {"subject_id": "P2"}), None, NO_LABS
    )
    assert out["sledai_2k_source"].to_list() == ["subjects", None]
    assert out["clinical_sledai_2k"].to_list() == [None, None]
    assert counts == {
        "sledai_2k_from_subjects": 1,
        "sledai_2k_from_visits": 0,
        "sledai_2k_missing": 1,
        "sledai_2k_disagreements": 0,
    }
