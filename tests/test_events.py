"""The events file (CRS/ICANS assessments): reading, row rules, field records, times, duplicates and accounting.

Hand-written rows; every expected value is worked out by hand from the rows and the documented limits
(EventsConfig defaults: temperature 25-45 degrees C, systolic 30-300 mmHg, 0-10 vasopressors, 0-100 L/min; ICE 0-10,
grades 0-5 by their scales).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunostrat.config.followup import EventsConfig
from immunostrat.followup.events import (
    EVENT_FIELD_CODES,
    EVENT_REASON_CODES,
    event_counts,
    read_events,
    validate_events,
)
from immunostrat.ingest.io import InputError
from immunostrat.schemas.events import EVENT_OPTIONAL, EVENT_REQUIRED, Event
from immunostrat.schemas.outputs import REASON_CODES, validate_output
from immunostrat.stages.rules import Split
from immunostrat.stages.subjects import validate_subjects

from .fixtures_labs import raw_subjects, subject_row

AS_OF = dt.date(2025, 12, 31)
COLUMNS = [*EVENT_REQUIRED, *EVENT_OPTIONAL]
Row = dict[str, str | None]
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "60"))


def event_row(**overrides: str | None) -> Row:
    """A valid assessment of S1/P001 on 2025-03-05 at 08:00: fever 38.6, no hypotension, room air, ICE 10."""
    row: Row = {
        "study_id": "S1",
        "subject_id": "P001",
        "assessed_at": "2025-03-05T08:00",
        "temperature_c": "38.6",
        "fever_other_cause": "no",
        "anticytokine_or_antipyretic": "no",
        "systolic_bp": "112",
        "hypotension": "no",
        "vasopressors": "0",
        "vasopressin": "no",
        "oxygen_device": "none",
        "oxygen_flow_l_min": "0",
        "ice_score": "10",
        "consciousness": "awake",
        "icans_seizure": "none",
        "motor_weakness": "no",
        "cerebral_edema": "none",
        "crs_grade_reported": "1",
        "icans_grade_reported": "0",
    }
    row.update(overrides)
    return row


def raw_events(rows: Sequence[Row], columns: Sequence[str] = COLUMNS, source_file: str = "events.csv") -> pl.DataFrame:
    """Rows as `read_events` returns them: the columns as text, then source_file and source_row."""
    frame = pl.DataFrame({c: [r.get(c) for r in rows] for c in columns}, schema=dict.fromkeys(columns, pl.String))
    return frame.with_columns(
        pl.lit(source_file, pl.String).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )


def subjects(*ids: str) -> pl.DataFrame:
    return validate_subjects(raw_subjects([subject_row(subject_id=i) for i in ids])).accepted


def run(rows: Sequence[Row], *, enrolled: Sequence[str] | None = ("P001", "P002"), **kw: object) -> Split:
    return validate_events(
        raw_events(rows),
        subjects(*enrolled) if enrolled is not None else None,
        kw.pop("as_of", AS_OF),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[str | None]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def test_read_fills_missing_optional_columns_with_unknown(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "events.csv",
        ["study_id", "subject_id", "assessed_at", "ice_score"],
        [["S1", "P001", "2025-03-05", "8"]],
    )
    table = read_events(path)
    assert table.frame.columns == [*COLUMNS, "source_file", "source_row"]
    row = table.frame.row(0, named=True)
    assert (row["ice_score"], row["temperature_c"], row["source_row"]) == ("8", None, 1)


def test_read_refuses_an_unknown_column_with_did_you_mean(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "events.csv", [*EVENT_REQUIRED, "temperatur_c"], [["S1", "P001", "2025-03-05", "38"]])
    with pytest.raises(InputError) as caught:
        read_events(path)
    message = str(caught.value)
    assert "unknown events column 'temperatur_c' (did you mean 'temperature_c'?)" in message
    assert "\n" not in message
    assert caught.value.column == "temperatur_c"


def test_read_refuses_a_missing_required_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "events.csv", ["study_id", "subject_id"], [["S1", "P001"]])
    with pytest.raises(InputError, match="missing required column"):
        read_events(path)


def test_read_parquet_with_typed_columns(tmp_path: Path) -> None:
    """A Parquet file with numeric and Boolean columns reads as text, like a CSV."""
    path = tmp_path / "events.parquet"
    pl.DataFrame(
        {
            "study_id": ["S1"],
            "subject_id": ["P001"],
            "assessed_at": ["2025-03-05"],
            "ice_score": [7],
            "vasopressin": [True],
        }
    ).write_parquet(path)
    split = validate_events(read_events(path).frame, subjects("P001"), AS_OF)
    row = split.accepted.row(0, named=True)
    assert (row["ice_score"], row["vasopressin"]) == (7, True)


# --------------------------------------------------------------------------------------------------
# Accepted rows, times
# --------------------------------------------------------------------------------------------------


def test_accepted_event_is_typed_and_meets_the_contract() -> None:
    split = run(
        [event_row(hypotension="Y", vasopressin="1", oxygen_device=" BiPAP ", consciousness="AWAKENS_TO_VOICE")]
    )
    assert split.quarantine.height == 0
    Event.validate(split.accepted)
    row = split.accepted.row(0, named=True)
    assert (row["study_id"], row["subject_id"]) == ("S1", "P001")
    assert (row["temperature_c"], row["systolic_bp"], row["vasopressors"]) == (38.6, 112.0, 0)
    assert (row["hypotension"], row["vasopressin"], row["fever_other_cause"]) == (True, True, False)
    assert (row["oxygen_device"], row["consciousness"]) == ("bipap", "awakens_to_voice")
    assert (row["ice_score"], row["crs_grade_reported"], row["icans_grade_reported"]) == (10, 1, 0)


def test_empty_cells_are_not_assessed() -> None:
    split = run([{"study_id": "S1", "subject_id": "P001", "assessed_at": "2025-03-05"}])
    assert split.quarantine.height == 0
    row = split.accepted.row(0, named=True)
    assert all(row[c] is None for c in EVENT_OPTIONAL)
    # Grade 0 is a value, not a missing one.
    zero = run([event_row(crs_grade_reported="0")]).accepted.row(0, named=True)
    assert zero["crs_grade_reported"] == 0


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2025-03-05", dt.datetime(2025, 3, 5)),  # a date alone is midnight
        ("2025-03-05T23:30", dt.datetime(2025, 3, 5, 23, 30)),
        ("2025-03-05 23:30:15", dt.datetime(2025, 3, 5, 23, 30, 15)),
        # The offset is read, not applied: local time as written (as lab collected_at), so the date stays the 5th.
        ("2025-03-05T23:30+05:00", dt.datetime(2025, 3, 5, 23, 30)),
        ("2025-03-05T23:30Z", dt.datetime(2025, 3, 5, 23, 30)),
    ],
)
def test_assessed_at_is_read_like_lab_dates(text: str, at: dt.datetime) -> None:
    row = run([event_row(assessed_at=text)]).accepted.row(0, named=True)
    assert (row["assessed_at"], row["assessed_date"]) == (at, at.date())


# --------------------------------------------------------------------------------------------------
# Refusing rules
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "overrides", "column", "value"),
    [
        ("STUDY_ID_MISSING", {"study_id": " "}, "study_id", " "),
        ("SUBJECT_ID_MISSING", {"subject_id": None}, "subject_id", ""),
        ("EVENT_TIME_INVALID", {"assessed_at": None}, "assessed_at", ""),
        ("EVENT_TIME_INVALID", {"assessed_at": "2025-03"}, "assessed_at", "2025-03"),
        ("EVENT_TIME_INVALID", {"assessed_at": "2025-02-30"}, "assessed_at", "2025-02-30"),
        ("EVENT_TIME_INVALID", {"assessed_at": "2025-03-05T25:00"}, "assessed_at", "2025-03-05T25:00"),
        ("EVENT_TIME_INVALID", {"assessed_at": "05/03/2025"}, "assessed_at", "05/03/2025"),
        ("SUBJECT_NOT_ENROLLED", {"subject_id": "P404"}, "subject_id", "P404"),
    ],
)
def test_refusing_rule(code: str, overrides: Row, column: str, value: str) -> None:
    split = run([event_row(assessed_at="2025-03-04"), event_row(**overrides)])
    assert split.accepted["source_row"].to_list() == [1]
    bad = split.quarantine.row(0, named=True)
    assert split.quarantine.height == 1
    assert (bad["reason_code"], bad["column"], bad["value"], bad["input_kind"]) == (code, column, value, "events")
    assert bad["message"].startswith(f"events.csv row 2, column '{column}': value '{value}' rejected ({code})")


def test_assessment_on_as_of_is_accepted_the_day_after_is_not() -> None:
    rows = [event_row(assessed_at="2025-12-31T23:59"), event_row(assessed_at="2026-01-01T00:00")]
    split = run(rows)
    assert split.accepted["source_row"].to_list() == [1]
    assert split.quarantine["reason_code"].to_list() == ["EVENT_AFTER_AS_OF"]


def test_event_of_a_refused_subject_says_why() -> None:
    refused = validate_subjects(raw_subjects([subject_row(subject_id="P003", reference_date="2025-02-30")]))
    split = run([event_row(subject_id="P003")], refused=refused.quarantine)
    bad = split.quarantine.row(0, named=True)
    assert bad["reason_code"] == "SUBJECT_REFUSED"
    assert "subject S1/P003 was refused (subjects.csv row 1: REFERENCE_DATE_INVALID" in bad["message"]


def test_without_subjects_no_enrolment_rule() -> None:
    split = run([event_row(subject_id="P404")], enrolled=None)
    assert (split.accepted.height, split.quarantine.height) == (1, 0)


def test_exact_duplicate_keeps_the_first() -> None:
    """The same assessment twice, written differently (`yes`/`1`, a date-only time at midnight): one is kept."""
    rows = [
        event_row(assessed_at="2025-03-05", hypotension="yes"),
        event_row(subject_id="P002"),
        event_row(assessed_at="2025-03-05T00:00", hypotension="1"),
    ]
    split = run(rows)
    assert split.accepted["source_row"].to_list() == [1, 2]
    bad = split.quarantine.row(0, named=True)
    assert (bad["source_row"], bad["reason_code"]) == (3, "EVENT_DUPLICATE")
    assert "this repeats row 1" in bad["message"]


def test_conflicting_duplicates_are_all_refused() -> None:
    rows = [event_row(), event_row(ice_score="9"), event_row(assessed_at="2025-03-05T09:00", ice_score="9")]
    split = run(rows)
    assert split.accepted["source_row"].to_list() == [3]
    assert split.quarantine["reason_code"].to_list() == ["EVENT_DUPLICATE_CONFLICT"] * 2
    assert "rows 1, 2 disagree" in split.quarantine["message"][0]


def test_two_unreadable_cells_conflict_when_their_text_differs() -> None:
    split = run([event_row(ice_score="ten"), event_row(ice_score="10?")])
    assert split.quarantine["reason_code"].to_list() == ["EVENT_DUPLICATE_CONFLICT"] * 2


# --------------------------------------------------------------------------------------------------
# Field records
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "column", "good", "bad"),
    [
        ("TEMPERATURE_INVALID", "temperature_c", "25", "24.9"),
        ("TEMPERATURE_INVALID", "temperature_c", "45", "45.1"),
        ("TEMPERATURE_INVALID", "temperature_c", "38.0", "101.3"),  # Fahrenheit is not guessed
        ("TEMPERATURE_INVALID", "temperature_c", "39", "38,5"),
        ("SYSTOLIC_BP_INVALID", "systolic_bp", "30", "29"),
        ("SYSTOLIC_BP_INVALID", "systolic_bp", "300", "301"),
        ("VASOPRESSORS_INVALID", "vasopressors", "10", "11"),
        ("VASOPRESSORS_INVALID", "vasopressors", "0", "-1"),
        ("VASOPRESSORS_INVALID", "vasopressors", "2.0", "1.5"),
        ("OXYGEN_FLOW_INVALID", "oxygen_flow_l_min", "100", "100.5"),
        ("OXYGEN_FLOW_INVALID", "oxygen_flow_l_min", "0", "-0.5"),
        ("ICE_SCORE_INVALID", "ice_score", "0", "-1"),
        ("ICE_SCORE_INVALID", "ice_score", "10", "11"),
        ("ICE_SCORE_INVALID", "ice_score", "7", "7.5"),
        ("CRS_GRADE_REPORTED_INVALID", "crs_grade_reported", "5", "6"),
        ("CRS_GRADE_REPORTED_INVALID", "crs_grade_reported", "0", "grade 1"),
        ("ICANS_GRADE_REPORTED_INVALID", "icans_grade_reported", "5", "-1"),
        ("FEVER_OTHER_CAUSE_INVALID", "fever_other_cause", "TRUE", "maybe"),
        ("ANTICYTOKINE_INVALID", "anticytokine_or_antipyretic", "y", "tocilizumab"),
        ("HYPOTENSION_INVALID", "hypotension", "N", "2"),
        ("VASOPRESSIN_INVALID", "vasopressin", "0", "unknown"),
        ("MOTOR_WEAKNESS_INVALID", "motor_weakness", "Yes", "left"),
        ("OXYGEN_DEVICE_INVALID", "oxygen_device", " High_Flow_Nasal_Cannula", "nasal cannula"),
        ("OXYGEN_DEVICE_INVALID", "oxygen_device", "mechanical_ventilation", "HFNC"),
        ("CONSCIOUSNESS_INVALID", "consciousness", "unarousable", "drowsy"),
        ("ICANS_SEIZURE_INVALID", "icans_seizure", "rapidly_resolving", "yes"),
        ("CEREBRAL_EDEMA_INVALID", "cerebral_edema", "diffuse", "global"),
    ],
)
def test_bad_field_is_a_field_record_and_its_limit_is_accepted(code: str, column: str, good: str, bad: str) -> None:
    split = run([event_row(**{column: good}), event_row(subject_id="P002", **{column: bad})])
    assert split.accepted["source_row"].to_list() == [1, 2]  # both kept
    assert split.accepted[column][0] is not None
    assert split.accepted[column][1] is None
    record = split.quarantine.row(0, named=True)
    assert split.quarantine.height == 1
    assert (record["source_row"], record["reason_code"], record["column"], record["value"]) == (2, code, column, bad)
    assert record["message"].endswith(f"; the row is kept with {column} empty")


def test_config_limits_are_used() -> None:
    config = EventsConfig(temperature_c_max=42.0, max_vasopressors=3)
    split = run([event_row(temperature_c="42.5", vasopressors="4")], config=config)
    assert split.quarantine["reason_code"].to_list() == ["TEMPERATURE_INVALID", "VASOPRESSORS_INVALID"]


def test_one_record_per_bad_field_and_codes_once_on_a_refused_row() -> None:
    split = run([event_row(ice_score="x", cerebral_edema="x"), event_row(subject_id="P404", ice_score="x")])
    assert split.accepted["source_row"].to_list() == [1]
    assert split.quarantine.select("source_row", "reason_code").rows() == [
        (1, "ICE_SCORE_INVALID"),
        (1, "CEREBRAL_EDEMA_INVALID"),
        (2, "SUBJECT_NOT_ENROLLED"),
    ]
    assert split.quarantine["reason_codes"][2].to_list() == ["SUBJECT_NOT_ENROLLED", "ICE_SCORE_INVALID"]


# --------------------------------------------------------------------------------------------------
# Codes, contract, accounting
# --------------------------------------------------------------------------------------------------


def test_event_codes_are_in_the_quarantine_contract() -> None:
    assert set(EVENT_REASON_CODES) <= set(REASON_CODES)
    assert len(EVENT_FIELD_CODES) == len(EVENT_OPTIONAL)  # one field code per optional column
    refusing = [c for c in EVENT_REASON_CODES if c not in EVENT_FIELD_CODES]
    assert refusing == [
        "STUDY_ID_MISSING",
        "SUBJECT_ID_MISSING",
        "EVENT_TIME_INVALID",
        "EVENT_AFTER_AS_OF",
        "SUBJECT_NOT_ENROLLED",
        "SUBJECT_REFUSED",
        "EVENT_DUPLICATE_CONFLICT",
        "EVENT_DUPLICATE",
    ]


def test_counts_add_up_and_the_quarantine_meets_the_contract() -> None:
    rows = [
        event_row(),  # accepted
        event_row(),  # EVENT_DUPLICATE
        event_row(assessed_at="2025-03-06", ice_score="12", oxygen_device="tent"),  # accepted, two field records
        event_row(assessed_at="2026-02-01"),  # EVENT_AFTER_AS_OF
    ]
    split = run(rows)
    assert event_counts(len(rows), split) == {
        "rows_read": 4,
        "accepted": 2,
        "quarantined": 2,
        "quarantined_by_reason": {"EVENT_AFTER_AS_OF": 1, "EVENT_DUPLICATE": 1},
        "fields_quarantined": 2,
        "fields_quarantined_by_reason": {"ICE_SCORE_INVALID": 1, "OXYGEN_DEVICE_INVALID": 1},
    }
    assert validate_output("quarantine", split.quarantine).height == 4
    assert split.quarantine.filter(pl.col("source_row") == 3)["oxygen_device"].to_list() == ["tent", "tent"]


def test_empty_file_gives_empty_tables() -> None:
    split = run([])
    assert (split.accepted.height, split.quarantine.height) == (0, 0)
    Event.validate(split.accepted)


# --------------------------------------------------------------------------------------------------
# Property: malformed files never crash and never lose a row
# --------------------------------------------------------------------------------------------------

_CELL = st.one_of(
    st.none(),
    st.sampled_from(
        ["", " ", "yes", "N", "1", "0", "5", "10", "38.5", "-1", "1e400", "NaN", "none", "BIPAP", "awake", "diffuse"]
    ),
    st.sampled_from(["2025-03-05", "2025-03-05T08:00", "2025-03-05T08:00+02:00", "2026-01-01", "2025-02-30", "2025"]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
)


@st.composite
def malformed_events(draw: st.DrawFn) -> tuple[list[str], list[list[str | None]]]:
    columns = [c for c in COLUMNS if c in EVENT_REQUIRED or draw(st.booleans())]
    rows = [[draw(_CELL) for _ in columns] for _ in range(draw(st.integers(0, 8)))]
    rows += draw(st.lists(st.sampled_from(rows), max_size=3)) if rows else []  # repeats make duplicate sets
    return columns, rows


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=malformed_events(), enrolled=st.sampled_from([None, ("P001",), ("yes", "1")]))
def test_malformed_events_never_crash_and_never_lose_a_row(
    tmp_path: Path, data: tuple[list[str], list[list[str | None]]], enrolled: tuple[str, ...] | None
) -> None:
    columns, rows = data
    path = _write_csv(tmp_path / "events.csv", columns, rows)
    try:
        table = read_events(path)
    except InputError:
        return  # an unusable file is refused whole, with a message (never a crash)
    split = validate_events(table.frame, subjects(*enrolled) if enrolled is not None else None, AS_OF)
    counts = event_counts(table.rows_read, split)
    assert counts["rows_read"] == counts["accepted"] + counts["quarantined"] == len(rows)
    field = split.quarantine["reason_code"].is_in(EVENT_FIELD_CODES)
    refused_rows = split.quarantine.filter(~field)["source_row"].to_list()
    accepted_rows = split.accepted["source_row"].to_list()
    assert sorted(refused_rows + accepted_rows) == list(range(1, len(rows) + 1))  # each row in exactly one place
    assert set(split.quarantine.filter(field)["source_row"].to_list()) <= set(accepted_rows)
    Event.validate(split.accepted)
    assert validate_output("quarantine", split.quarantine).height == split.quarantine.height


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_or_read_never_crash(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(b"study_id,subject_id,assessed_at\n" + content)
    try:
        table = read_events(path)
    except InputError:
        return
    split = validate_events(table.frame, None, AS_OF)
    assert split.accepted.height + event_counts(table.rows_read, split)["quarantined"] == table.rows_read
