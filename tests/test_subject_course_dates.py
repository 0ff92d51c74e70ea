"""Subjects' `death_date`, `retreatment_date` and `ivig_start_date`: read like `discontinued_date`, field records
when unreadable, and a re-treatment before day 0 dropped (RETREATMENT_BEFORE_DAY0)."""

from __future__ import annotations

import datetime as dt

import pytest

from immunostrat.stages.subjects import SUBJECT_FIELD_CODES, SUBJECT_FOLLOW_UP_COLUMNS, validate_subjects

from .fixtures_labs import raw_subjects, subject_row


def _accepted_and_codes(**overrides: str | None) -> tuple[dict[str, object], list[str]]:
    split = validate_subjects(raw_subjects([subject_row(**overrides)]))
    assert split.accepted.height == 1  # every one of these is a field problem: the subject stays
    return split.accepted.row(0, named=True), split.quarantine["reason_code"].to_list()


def test_dates_are_typed() -> None:
    row, codes = _accepted_and_codes(
        death_date="2025-09-30", retreatment_date="2025-08-01T10:00", ivig_start_date=" 2025-07-15 "
    )
    assert codes == []
    assert (row["death_date"], row["retreatment_date"], row["ivig_start_date"]) == (
        dt.date(2025, 9, 30),
        dt.date(2025, 8, 1),
        dt.date(2025, 7, 15),
    )


def test_empty_dates_are_null_not_errors() -> None:
    row, codes = _accepted_and_codes(death_date="", retreatment_date=None, ivig_start_date="  ")
    assert codes == []
    assert (row["death_date"], row["retreatment_date"], row["ivig_start_date"]) == (None, None, None)


@pytest.mark.parametrize(
    ("column", "text", "code"),
    [
        ("death_date", "2025-02-29", "DEATH_DATE_INVALID"),  # 2025 is not a leap year
        ("retreatment_date", "01/08/2025", "RETREATMENT_DATE_INVALID"),
        ("ivig_start_date", "2025-07", "IVIG_START_DATE_INVALID"),  # partial dates are not read
    ],
)
def test_unreadable_date_is_a_field_record(column: str, text: str, code: str) -> None:
    row, codes = _accepted_and_codes(**{column: text})
    assert codes == [code]
    assert row[column] is None


@pytest.mark.parametrize(
    ("overrides", "kept"),
    [
        # Day 0 is the infusion date 2025-03-05: a re-treatment that day is kept, the day before is not.
        ({"infusion_date": "2025-03-05", "retreatment_date": "2025-03-05"}, True),
        ({"infusion_date": "2025-03-05", "retreatment_date": "2025-03-04"}, False),
        # No infusion date: day 0 is the first exposure 2025-03-01.
        ({"retreatment_date": "2025-03-01"}, True),
        ({"retreatment_date": "2025-02-28"}, False),
        # An infusion before first exposure is dropped: day 0 falls back to first exposure 2025-03-01.
        ({"infusion_date": "2025-02-20", "retreatment_date": "2025-02-25"}, False),
        # Not infused and not exposed: no day 0, nothing to contradict.
        ({"first_exposure_date": None, "retreatment_date": "2024-01-01"}, True),
    ],
)
def test_retreatment_before_day0_is_dropped(overrides: dict[str, str | None], kept: bool) -> None:
    row, codes = _accepted_and_codes(**overrides)
    assert (row["retreatment_date"] is not None) == kept
    assert ("RETREATMENT_BEFORE_DAY0" in codes) == (not kept)


def test_new_codes_are_field_codes_and_the_dates_are_follow_up_columns() -> None:
    assert {"DEATH_DATE_INVALID", "RETREATMENT_DATE_INVALID", "RETREATMENT_BEFORE_DAY0", "IVIG_START_DATE_INVALID"} <= (
        set(SUBJECT_FIELD_CODES)
    )
    assert {"death_date", "retreatment_date", "ivig_start_date"} <= set(SUBJECT_FOLLOW_UP_COLUMNS)
