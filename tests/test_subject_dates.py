"""Subjects' follow-up dates: `infusion_date` (day 0) and `discontinued_date`, with `day0` and `day0_source`.

Hand-written subject rows; every expected value worked out by hand from the rows.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from immunostrat.config.run import RunConfig, load_protocol
from immunostrat.pipeline.selection import baseline_and_eligibility
from immunostrat.stages.harmonise import harmonised_table
from immunostrat.stages.subjects import SUBJECT_FOLLOW_UP_COLUMNS, subject_quarantine_counts, validate_subjects

from .fixtures_labs import lab_row, raw_subjects, reference, subject_row, validate

D = dt.date

# Every subject's first exposure (lymphodepletion) is 2025-03-01 unless the row says otherwise.
ROWS = [
    subject_row(subject_id="P1", infusion_date="2025-03-05"),  # infusion given: day 0 is the infusion
    subject_row(subject_id="P2", infusion_date=""),  # no infusion: day 0 is the first exposure
    subject_row(subject_id="P3", infusion_date=None, first_exposure_date=""),  # neither: not infused, no day 0
    subject_row(subject_id="P4", infusion_date="2025-03-05", first_exposure_date=""),  # infusion alone
    subject_row(subject_id="P5", infusion_date="2025-03-01"),  # same day as the first exposure: fine
    subject_row(subject_id="P6", infusion_date="2025-02-27"),  # before the first exposure: field record
    subject_row(subject_id="P7", infusion_date="2025-02-30"),  # no such day: field record
    subject_row(subject_id="P8", discontinued_date="2025-10-01"),
    subject_row(subject_id="P9", discontinued_date="soon"),  # unreadable: field record
]


def _accepted() -> pl.DataFrame:
    return validate_subjects(raw_subjects(ROWS)).accepted


def test_day0_is_the_infusion_else_the_first_exposure_else_unknown() -> None:
    got = _accepted().select("subject_id", "infusion_date", "day0", "day0_source").rows()
    assert got == [
        ("P1", D(2025, 3, 5), D(2025, 3, 5), "infusion_date"),
        ("P2", None, D(2025, 3, 1), "first_exposure_date"),
        ("P3", None, None, None),
        ("P4", D(2025, 3, 5), D(2025, 3, 5), "infusion_date"),
        ("P5", D(2025, 3, 1), D(2025, 3, 1), "infusion_date"),
        # The bad infusion dates are dropped, so day 0 falls back to the first exposure.
        ("P6", None, D(2025, 3, 1), "first_exposure_date"),
        ("P7", None, D(2025, 3, 1), "first_exposure_date"),
        ("P8", None, D(2025, 3, 1), "first_exposure_date"),
        ("P9", None, D(2025, 3, 1), "first_exposure_date"),
    ]


def test_new_dates_are_typed_dates() -> None:
    accepted = _accepted()
    assert accepted.schema["infusion_date"] == pl.Date
    assert accepted.schema["discontinued_date"] == pl.Date
    assert accepted.schema["day0"] == pl.Date
    assert accepted.schema["day0_source"] == pl.String
    discontinued = dict(accepted.select("subject_id", "discontinued_date").rows())
    assert discontinued["P8"] == D(2025, 10, 1)
    assert discontinued["P9"] is None  # unreadable: unknown, and the subject kept
    assert discontinued["P1"] is None  # empty: still on study


def test_bad_dates_are_field_records_and_every_subject_is_kept() -> None:
    split = validate_subjects(raw_subjects(ROWS))
    assert split.accepted.height == 9
    records = split.quarantine.select("source_row", "reason_code", "column", "value", "input_kind").rows()
    assert records == [
        (6, "INFUSION_BEFORE_FIRST_EXPOSURE", "infusion_date", "2025-02-27", "subjects"),
        (7, "INFUSION_DATE_INVALID", "infusion_date", "2025-02-30", "subjects"),
        (9, "DISCONTINUED_DATE_INVALID", "discontinued_date", "soon", "subjects"),
    ]
    message = split.quarantine["message"][0]
    assert message == (
        "subjects.csv row 6, column 'infusion_date': value '2025-02-27' rejected (INFUSION_BEFORE_FIRST_EXPOSURE); "
        "expected a date on or after first_exposure_date 2025-03-01; the row is kept with infusion_date empty"
    )
    counts = subject_quarantine_counts(split.quarantine)
    assert (counts["quarantined"], counts["fields_quarantined"]) == (0, 3)


def test_an_unreadable_first_exposure_still_refuses_the_subject() -> None:
    """Only the new dates are field records; a bad first exposure keeps refusing (it guards the baseline)."""
    rows = [subject_row(subject_id="P1", first_exposure_date="2025-3-1", infusion_date="2025-03-05")]
    split = validate_subjects(raw_subjects(rows))
    assert split.accepted.height == 0
    assert split.quarantine.select("reason_code", "reason_codes").rows() == [
        ("FIRST_EXPOSURE_DATE_INVALID", ["FIRST_EXPOSURE_DATE_INVALID"])
    ]


def test_rows_differing_only_in_a_new_date_conflict() -> None:
    rows = [
        subject_row(subject_id="P1", infusion_date="2025-03-05"),
        subject_row(subject_id="P1", infusion_date="2025-03-06"),
    ]
    split = validate_subjects(raw_subjects(rows))
    assert split.quarantine["reason_code"].to_list() == ["SUBJECT_CONFLICT", "SUBJECT_CONFLICT"]


def test_strata_do_not_carry_the_follow_up_dates() -> None:
    """The selection half is unchanged: its strata have no day 0 or discontinuation columns."""
    subjects = validate_subjects(raw_subjects([subject_row(subject_id="P001", infusion_date="2025-03-05")])).accepted
    assert set(SUBJECT_FOLLOW_UP_COLUMNS) <= set(subjects.columns)
    _, labs = validate([lab_row()])
    strata, _ = baseline_and_eligibility(
        harmonised_table(labs.accepted), subjects, reference(), RunConfig(), load_protocol(None)
    )
    assert strata.height == 1
    assert not set(SUBJECT_FOLLOW_UP_COLUMNS) & set(strata.columns)
    assert strata["first_exposure_date"].to_list() == [D(2025, 3, 1)]
