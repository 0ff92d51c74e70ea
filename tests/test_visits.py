"""The visits file: reading, row rules, field records, encodings, duplicates and accounting.

Hand-written visit rows; every expected value is worked out by hand from the rows (the SLEDAI-2K weights are
those of schemas/reference/sledai_2k.csv: seizure 8, arthritis 4, rash 2, fever 1, ...).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunostrat.config.run import VisitsConfig
from immunostrat.followup.sledai import ITEM_PREFIX, load_descriptors, sledai_scores
from immunostrat.followup.visits import (
    VISIT_FIELD_CODES,
    VISIT_REASON_CODES,
    read_visits,
    validate_visits,
    visit_columns,
    visit_counts,
)
from immunostrat.ingest.io import InputError
from immunostrat.schemas.outputs import REASON_CODES, validate_output
from immunostrat.stages.rules import Split
from immunostrat.stages.subjects import validate_outcomes, validate_subjects

from .fixtures_labs import lab_row, outcome_row, raw_outcomes, raw_subjects, subject_row, validate

D = dt.date
AS_OF = D(2025, 12, 31)
DESCRIPTORS = load_descriptors()
ITEMS = [d.item for d in DESCRIPTORS]
REQUIRED, OPTIONAL = visit_columns(DESCRIPTORS)
COLUMNS = [*REQUIRED, *OPTIONAL]
Row = dict[str, str | None]


def visit_row(**overrides: str | None) -> Row:
    """A valid visit of subject S1/P001 on 2025-06-01: no descriptor present, PGA 0.5, 5 mg/day."""
    row: Row = {
        "study_id": "S1",
        "subject_id": "P001",
        "visit_date": "2025-06-01",
        "visit": "Month 3",
        **dict.fromkeys(ITEMS, "no"),
        "pga": "0.5",
        "prednisone_mg_day": "5",
        "antimalarial": "yes",
        "hemolytic_anemia": "no",
        "gi_activity": "no",
        "other_investigational_drug": "no",
        "treatment_failure": "no",
        "immunosuppressants": "1",
    }
    row.update(overrides)
    return row


def raw_visits(rows: Sequence[Row], columns: Sequence[str] = COLUMNS) -> pl.DataFrame:
    """Rows as `read_visits` returns them: text columns, then source_file and source_row (1-based)."""
    frame = pl.DataFrame({c: [r.get(c) for r in rows] for c in columns}, schema=dict.fromkeys(columns, pl.String))
    return frame.with_columns(
        pl.lit("visits.csv", pl.String).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )


def subjects(*ids: str) -> pl.DataFrame:
    return pl.DataFrame({"study_id": ["S1"] * len(ids), "subject_id": list(ids)})


def check(
    rows: Sequence[Row],
    enrolled: pl.DataFrame | None = None,
    config: VisitsConfig | None = None,
    refused: pl.DataFrame | None = None,
) -> Split:
    return validate_visits(raw_visits(rows), enrolled, AS_OF, config or VisitsConfig(), DESCRIPTORS, refused=refused)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def test_read_fills_missing_optional_columns_with_unknown(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    path.write_text(" Study_ID,subject_id,visit_date,Rash\nS1,P001,2025-06-01,yes\nS1,P001,2025-07-01,\n")
    table = read_visits(path)
    assert table.frame.columns == [*COLUMNS, "source_file", "source_row"]
    assert table.frame["rash"].to_list() == ["yes", None]
    assert table.frame["fever"].to_list() == [None, None]
    assert table.frame["source_row"].to_list() == [1, 2]
    accepted = validate_visits(table.frame, None, AS_OF, VisitsConfig(), DESCRIPTORS).accepted
    assert accepted["item_rash"].to_list() == [True, None]  # an empty cell is not assessed, never absent
    assert accepted["item_fever"].to_list() == [None, None]  # so is a missing column
    assert accepted["pga"].to_list() == [None, None]


def test_read_refuses_an_unknown_column_naming_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    path.write_text("study_id,subject_id,visit_date,arthritus\nS1,P001,2025-06-01,yes\n")
    with pytest.raises(InputError) as caught:
        read_visits(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: unknown visits column 'arthritus' (did you mean 'arthritis'?)")
    assert caught.value.column == "arthritus"


def test_read_refuses_a_missing_required_column(tmp_path: Path) -> None:
    path = tmp_path / "visits.csv"
    path.write_text("study_id,subject_id,rash\nS1,P001,yes\n")
    with pytest.raises(InputError, match="missing required column"):
        read_visits(path)


def test_read_parquet_with_typed_columns(tmp_path: Path) -> None:
    """Parquet booleans, numbers and dates become text and are read like CSV text."""
    path = tmp_path / "visits.parquet"
    pl.DataFrame(
        {
            "study_id": ["S1"],
            "subject_id": ["P001"],
            "visit_date": [D(2025, 6, 1)],
            "arthritis": [True],
            "fever": [False],
            "pga": [1.5],
            "immunosuppressants": [2],
        }
    ).write_parquet(path)
    table = read_visits(path)
    split = validate_visits(table.frame, None, AS_OF, VisitsConfig(), DESCRIPTORS)
    row = split.accepted.row(0, named=True)
    assert (row["visit_date"], row["item_arthritis"], row["item_fever"]) == (D(2025, 6, 1), True, False)
    assert (row["pga"], row["immunosuppressants"]) == (1.5, 2)
    assert split.quarantine.height == 0


# --------------------------------------------------------------------------------------------------
# Accepted visits are typed
# --------------------------------------------------------------------------------------------------


def test_accepted_visit_is_typed() -> None:
    split = check([visit_row(study_id=" S1 ", visit="  ", arthritis="Y", rash="TRUE", fever="1", seizure="")])
    assert split.quarantine.height == 0
    row = split.accepted.row(0, named=True)
    assert (row["study_id"], row["subject_id"], row["visit"], row["visit_date"]) == ("S1", "P001", None, D(2025, 6, 1))
    assert (row["item_arthritis"], row["item_rash"], row["item_fever"], row["item_seizure"]) == (True, True, True, None)
    assert row["item_pleurisy"] is False
    assert (row["pga"], row["prednisone_mg_day"], row["immunosuppressants"]) == (0.5, 5.0, 1)
    assert (row["antimalarial"], row["treatment_failure"]) == (True, False)
    schema = split.accepted.schema
    assert [schema[ITEM_PREFIX + i] for i in ITEMS] == [pl.Boolean] * 24
    assert (schema["visit_date"], schema["pga"], schema["immunosuppressants"]) == (pl.Date, pl.Float64, pl.Int64)
    assert split.accepted.columns[-2:] == ["source_file", "source_row"]


def test_yes_no_words_in_any_case() -> None:
    words = ["true", "FALSE", "1", "0", "Yes", "no", "y", "N"]
    rows = [visit_row(visit_date=f"2025-06-0{i + 1}", antimalarial=w) for i, w in enumerate(words)]
    assert check(rows).accepted["antimalarial"].to_list() == [True, False, True, False, True, False, True, False]


# --------------------------------------------------------------------------------------------------
# Refusing rules (one bad row among good ones)
# --------------------------------------------------------------------------------------------------

REFUSALS = [
    ("STUDY_ID_MISSING", {"study_id": " "}, "study_id", " ", "a study identifier"),
    ("SUBJECT_ID_MISSING", {"subject_id": None}, "subject_id", "", "a subject identifier"),
    ("VISIT_DATE_INVALID", {"visit_date": None}, "visit_date", "", "an ISO 8601 date"),
    ("VISIT_DATE_INVALID", {"visit_date": "2025-02-30"}, "visit_date", "2025-02-30", "an ISO 8601 date"),
    ("VISIT_DATE_INVALID", {"visit_date": "01/06/2025"}, "visit_date", "01/06/2025", "an ISO 8601 date"),
    ("VISIT_AFTER_AS_OF", {"visit_date": "2026-01-01"}, "visit_date", "2026-01-01", "on or before the run's as_of"),
    ("SUBJECT_NOT_ENROLLED", {"subject_id": "P404"}, "subject_id", "P404", "present in the subjects file"),
]


@pytest.mark.parametrize(("code", "overrides", "column", "value", "expected"), REFUSALS)
def test_refusing_rule(code: str, overrides: Row, column: str, value: str, expected: str) -> None:
    rows = [
        visit_row(visit_date="2025-05-01"),
        visit_row(**{"visit_date": "2025-06-01", **overrides}),
        visit_row(visit_date="2025-07-01"),
    ]
    split = check(rows, subjects("P001"))
    assert split.accepted["source_row"].to_list() == [1, 3]
    bad = split.quarantine.row(0, named=True)
    assert split.quarantine.height == 1
    assert (bad["source_row"], bad["reason_code"], bad["column"], bad["value"]) == (2, code, column, value)
    assert bad["input_kind"] == "visits"
    assert bad["message"].startswith(f"visits.csv row 2, column '{column}': value '{value}' rejected ({code})")
    assert expected in bad["message"]


def test_visit_on_as_of_is_accepted_the_day_after_is_not() -> None:
    split = check([visit_row(visit_date="2025-12-31"), visit_row(visit_date="2025-12-31T23:59")], None)
    # The second is the same visit date (a date-time counts as its date) and says the same: a repeat.
    assert split.accepted["visit_date"].to_list() == [D(2025, 12, 31)]
    assert split.quarantine["reason_code"].to_list() == ["VISIT_DUPLICATE"]


def test_visit_of_a_refused_subject_says_why() -> None:
    refused = validate_subjects(raw_subjects([subject_row(subject_id="P001", reference_date="2025-13-01")]))
    split = check([visit_row()], subjects("P002"), refused=refused.quarantine)
    bad = split.quarantine.row(0, named=True)
    assert bad["reason_code"] == "SUBJECT_REFUSED"
    assert "subject S1/P001 was refused (subjects.csv row 1: REFERENCE_DATE_INVALID" in bad["message"]


def test_without_subjects_no_enrolment_rule() -> None:
    assert check([visit_row(subject_id="P404")], None).accepted.height == 1


# --------------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------------


def test_exact_duplicate_keeps_the_first() -> None:
    """Values compare as read: `yes`/`1`, `0.5`/`0.50` and surrounding spaces agree."""
    rows = [
        visit_row(arthritis="yes", pga="0.5"),
        visit_row(arthritis="1", pga="0.50", subject_id=" P001"),
        visit_row(visit_date="2025-07-01"),
    ]
    split = check(rows, subjects("P001"))
    assert split.accepted["source_row"].to_list() == [1, 3]
    bad = split.quarantine.row(0, named=True)
    assert (bad["source_row"], bad["reason_code"]) == (2, "VISIT_DUPLICATE")
    assert bad["message"].endswith("this repeats row 1")


def test_conflicting_duplicates_are_all_refused() -> None:
    """Two agree, one differs (rash): all three of the set go; the other date stays."""
    rows = [
        visit_row(),
        visit_row(visit_date="2025-07-01"),
        visit_row(),
        visit_row(rash="yes"),
    ]
    split = check(rows)
    assert split.accepted["source_row"].to_list() == [2]
    assert split.quarantine.select("source_row", "reason_code").rows() == [
        (1, "VISIT_DUPLICATE_CONFLICT"),
        (3, "VISIT_DUPLICATE_CONFLICT"),
        (4, "VISIT_DUPLICATE_CONFLICT"),
    ]
    assert split.quarantine["message"][0].endswith("rows 1, 3, 4 disagree")


def test_different_labels_on_one_date_conflict() -> None:
    split = check([visit_row(visit="Month 3"), visit_row(visit="Unscheduled")])
    assert split.quarantine["reason_code"].to_list() == ["VISIT_DUPLICATE_CONFLICT"] * 2


def test_two_unreadable_cells_conflict_when_their_text_differs() -> None:
    same = check([visit_row(pga="high"), visit_row(pga="high")])
    assert same.quarantine.filter(pl.col("reason_code") == "VISIT_DUPLICATE")["source_row"].to_list() == [2]
    differ = check([visit_row(pga="high"), visit_row(pga="low")])
    assert differ.quarantine["reason_code"].to_list() == ["VISIT_DUPLICATE_CONFLICT"] * 2


def test_rows_of_other_subjects_or_dates_are_not_duplicates() -> None:
    rows = [visit_row(), visit_row(subject_id="P002"), visit_row(study_id="S2"), visit_row(visit_date="2025-06-02")]
    assert check(rows).accepted.height == 4


# --------------------------------------------------------------------------------------------------
# Field records: the visit is kept with the field unknown
# --------------------------------------------------------------------------------------------------

FIELDS = [
    ("DESCRIPTOR_INVALID", "rash", "maybe", "item_rash", "true or false"),
    ("DESCRIPTOR_INVALID", "leukopenia", "2", "item_leukopenia", "true or false"),
    ("PGA_INVALID", "pga", "3.5", "pga", "a number from 0 to 3"),
    ("PGA_INVALID", "pga", "-0.1", "pga", "a number from 0 to 3"),
    ("PGA_INVALID", "pga", "mild", "pga", "a number from 0 to 3"),
    ("PREDNISONE_INVALID", "prednisone_mg_day", "-5", "prednisone_mg_day", "from 0 to 1500"),
    ("PREDNISONE_INVALID", "prednisone_mg_day", "1501", "prednisone_mg_day", "from 0 to 1500"),
    ("PREDNISONE_INVALID", "prednisone_mg_day", "5 mg", "prednisone_mg_day", "from 0 to 1500"),
    ("FLAG_INVALID", "treatment_failure", "rescue", "treatment_failure", "true or false"),
    ("FLAG_INVALID", "gi_activity", "T", "gi_activity", "true or false"),
    ("IMMUNOSUPPRESSANTS_INVALID", "immunosuppressants", "1.5", "immunosuppressants", "a whole number from 0 to 10"),
    ("IMMUNOSUPPRESSANTS_INVALID", "immunosuppressants", "11", "immunosuppressants", "a whole number from 0 to 10"),
]


@pytest.mark.parametrize(("code", "column", "value", "typed", "expected"), FIELDS)
def test_bad_field_is_a_field_record(code: str, column: str, value: str, typed: str, expected: str) -> None:
    split = check([visit_row(visit_date="2025-05-01"), visit_row(**{column: value})])
    assert split.accepted["source_row"].to_list() == [1, 2]
    assert split.accepted[typed][1] is None  # unknown, never guessed
    assert split.accepted[typed][0] is not None
    record = split.quarantine.row(0, named=True)
    assert split.quarantine.height == 1
    assert (record["source_row"], record["reason_code"], record["reason_codes"]) == (2, code, [code])
    assert (record["column"], record["value"], record[column]) == (column, value, value)
    assert record["message"] == (
        f"visits.csv row 2, column '{column}': value '{value}' rejected ({code}); expected "
        f"{record['message'].split('; expected ', 1)[1]}"
    )
    assert expected in record["message"]
    assert record["message"].endswith(f"; the row is kept with {column} empty")


def test_one_record_per_bad_field_and_codes_once_on_a_refused_row() -> None:
    split = check(
        [
            visit_row(rash="?", fever="??", pga="9"),
            visit_row(visit_date="2026-02-01", rash="?", fever="??"),
        ]
    )
    assert split.accepted["source_row"].to_list() == [1]
    assert (split.accepted["item_rash"][0], split.accepted["item_fever"][0], split.accepted["pga"][0]) == (
        None,
        None,
        None,
    )
    rows = split.quarantine.select("source_row", "reason_code", "column", "reason_codes").rows()
    # In file order; a refused row lists each failed code once and gets no field records of its own.
    assert rows == [
        (1, "DESCRIPTOR_INVALID", "rash", ["DESCRIPTOR_INVALID"]),
        (1, "DESCRIPTOR_INVALID", "fever", ["DESCRIPTOR_INVALID"]),
        (1, "PGA_INVALID", "pga", ["PGA_INVALID"]),
        (2, "VISIT_AFTER_AS_OF", "visit_date", ["VISIT_AFTER_AS_OF", "DESCRIPTOR_INVALID"]),
    ]
    counts = visit_counts(2, split)
    assert counts == {
        "rows_read": 2,
        "accepted": 1,
        "quarantined": 1,
        "quarantined_by_reason": {"VISIT_AFTER_AS_OF": 1},
        "fields_quarantined": 3,
        "fields_quarantined_by_reason": {"DESCRIPTOR_INVALID": 2, "PGA_INVALID": 1},
    }


def test_a_value_that_looks_like_a_message_is_shown_verbatim() -> None:
    value = "x rejected (DESCRIPTOR_INVALID:rash); expected y"
    record = check([visit_row(rash=value)]).quarantine.row(0, named=True)
    assert record["message"].startswith(
        f"visits.csv row 1, column 'rash': value '{value}' rejected (DESCRIPTOR_INVALID)"
    )


def test_config_limits_are_used() -> None:
    config = VisitsConfig(max_prednisone_mg_day=100, max_immunosuppressants=3)
    split = check([visit_row(prednisone_mg_day="120", immunosuppressants="3")], config=config)
    assert split.quarantine["reason_code"].to_list() == ["PREDNISONE_INVALID"]
    assert split.accepted.select("prednisone_mg_day", "immunosuppressants").row(0) == (None, 3)


# --------------------------------------------------------------------------------------------------
# Descriptor encodings
# --------------------------------------------------------------------------------------------------


def test_weight_cohort_scores_the_sum_of_the_given_weights() -> None:
    """Descriptors given as SLEDAI weights and no labs: SLEDAI-2K is the sum of the weights given."""
    weights = {d.item: d.weight for d in DESCRIPTORS}
    zero: Row = dict.fromkeys(ITEMS, "0")
    rows = [
        visit_row(**{**zero, "seizure": "8", "arthritis": "4", "rash": "2", "fever": "1"}),  # 8 + 4 + 2 + 1 = 15
        visit_row(  # 4 + 2 + 1 = 7
            **{**zero, "proteinuria": "4.0", "low_complement": "2", "leukopenia": "1"}, visit_date="2025-07-01"
        ),
        visit_row(**zero, visit_date="2025-08-01"),  # 0
        visit_row(**{i: str(weights[i]) for i in ITEMS}, visit_date="2025-09-01"),  # every descriptor: 105
    ]
    split = check(rows, config=VisitsConfig(descriptor_encoding="weight"))
    assert split.quarantine.height == 0
    scores = sledai_scores(split.accepted, DESCRIPTORS)
    assert scores["sledai_2k"].to_list() == [15, 7, 0, 105]
    assert split.accepted["item_arthritis"].to_list() == [True, False, False, True]


def test_weight_encoding_never_guesses() -> None:
    """`1` is present only for a weight-1 descriptor; `yes` is not a weight; empty stays unknown."""
    rows = [visit_row(**{**dict.fromkeys(ITEMS, "0"), "arthritis": "1", "fever": "1", "rash": "yes", "seizure": ""})]
    split = check(rows, config=VisitsConfig(descriptor_encoding="weight"))
    row = split.accepted.row(0, named=True)
    assert (row["item_arthritis"], row["item_fever"], row["item_rash"], row["item_seizure"]) == (None, True, None, None)
    records = split.quarantine.select("column", "value", "reason_code").rows()
    assert records == [("arthritis", "1", "DESCRIPTOR_INVALID"), ("rash", "yes", "DESCRIPTOR_INVALID")]
    assert "expected 0 or 4 (the descriptor's SLEDAI-2K weight" in split.quarantine["message"][0]
    # The yes/no fields are not descriptors: they keep their words in either encoding.
    assert row["antimalarial"] is True


def test_boolean_encoding_refuses_a_weight() -> None:
    split = check([visit_row(arthritis="4")])
    assert split.accepted["item_arthritis"].to_list() == [None]
    assert split.quarantine.select("column", "reason_code").rows() == [("arthritis", "DESCRIPTOR_INVALID")]


# --------------------------------------------------------------------------------------------------
# Contract and the quarantine table's input_kind
# --------------------------------------------------------------------------------------------------


def test_visit_reason_codes_are_in_the_quarantine_contract() -> None:
    assert set(VISIT_REASON_CODES) <= set(REASON_CODES)
    assert set(VISIT_FIELD_CODES) == {
        "DESCRIPTOR_INVALID",
        "PGA_INVALID",
        "PREDNISONE_INVALID",
        "FLAG_INVALID",
        "IMMUNOSUPPRESSANTS_INVALID",
    }


def test_every_quarantine_names_its_input_kind_and_meets_the_contract() -> None:
    visits = check([visit_row(pga="7"), visit_row(subject_id="P404")], subjects("P001")).quarantine
    subject_q = validate_subjects(raw_subjects([subject_row(sex="X")])).quarantine
    _, labs = validate([lab_row(result="abc")])
    outcomes = validate_outcomes(raw_outcomes([outcome_row(responded="maybe")])).quarantine
    assert visits["input_kind"].to_list() == ["visits", "visits"]
    assert subject_q["input_kind"].to_list() == ["subjects"]
    assert labs.quarantine["input_kind"].to_list() == ["labs"]
    assert outcomes["input_kind"].to_list() == ["outcomes"]
    together = pl.concat([labs.quarantine, subject_q, visits], how="diagonal_relaxed")
    assert validate_output("quarantine", together).height == 4


# --------------------------------------------------------------------------------------------------
# Property: malformed visits frames never crash and never lose a row
# --------------------------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("IMMUNOSTRAT_PROPERTY_EXAMPLES", "40"))
cell = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "yes", "no", "1", "0", "4", "8", "2025-06-01", "2025-13-01", "0.5", "1e400", "NaN"]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
)


@st.composite
def malformed_visits(draw: st.DrawFn) -> pl.DataFrame:
    columns = [c for c in COLUMNS if draw(st.booleans()) or c in ("study_id", "subject_id")]
    n = draw(st.integers(0, 8))
    rows = [{c: draw(cell) for c in columns} for _ in range(n)]
    # Repeat some rows so duplicate sets occur.
    rows += draw(st.lists(st.sampled_from(rows), max_size=3)) if rows else []
    return raw_visits(rows, columns)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=malformed_visits(),
    encoding=st.sampled_from(["boolean", "weight"]),
    enrolled=st.sampled_from([None, ("P001",), ("yes", "1")]),
)
def test_malformed_visits_never_crash_and_never_lose_a_row(
    raw: pl.DataFrame, encoding: str, enrolled: tuple[str, ...] | None
) -> None:
    config = VisitsConfig(descriptor_encoding=encoding)
    subject_frame = subjects(*enrolled) if enrolled is not None else None
    split = validate_visits(raw, subject_frame, AS_OF, config, DESCRIPTORS)
    counts = visit_counts(raw.height, split)
    assert counts["rows_read"] == counts["accepted"] + counts["quarantined"]
    field = split.quarantine["reason_code"].is_in(VISIT_FIELD_CODES)
    refused_rows = split.quarantine.filter(~field)["source_row"].to_list()
    accepted_rows = split.accepted["source_row"].to_list()
    assert sorted(refused_rows + accepted_rows) == raw["source_row"].to_list()  # each row in exactly one place
    assert set(split.quarantine.filter(field)["source_row"].to_list()) <= set(accepted_rows)
    assert validate_output("quarantine", split.quarantine).height == split.quarantine.height
