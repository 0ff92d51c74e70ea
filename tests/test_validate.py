"""Tests for immunostrat.stages.validate: every reason code, messages, priorities and row accounting."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pytest

from immunostrat.config.run import HarmoniseConfig
from immunostrat.schemas.inputs import LabCandidate
from immunostrat.stages.harmonise import harmonise_labs
from immunostrat.stages.rules import ROW_RULES, ContractError, Split, _schema, is_repeated, rule_flags
from immunostrat.stages.subjects import subject_rules, validate_outcomes, validate_subjects
from immunostrat.stages.validate import lab_rules, validate_labs

from .fixtures_labs import (
    AS_OF,
    IFN_METHODS,
    lab_row,
    outcome_row,
    raw_labs,
    raw_outcomes,
    raw_subjects,
    reference,
    subject_row,
    validate,
)

QUARANTINE_HEAD = ["source_file", "source_row", "reason_code", "reason_codes", "column", "value", "message"]


@dataclass(frozen=True)
class Case:
    """One rule case: the bad row (data row 3) gets `overrides`."""

    code: str
    overrides: dict[str, Any]
    column: str
    value: str
    expected: str
    rows: tuple[int, ...] = (3,)  # data rows expected in quarantine
    also: tuple[str, ...] = ()  # further codes the bad row fails after `code`


def _case(code: str, overrides: dict[str, Any], column: str, value: str, expected: str, **kw: Any) -> Any:
    return pytest.param(Case(code, overrides, column, value, expected, **kw), id=f"{code}-{value or 'empty'}")


def _bad_row(split: Split, row: int = 3) -> dict[str, Any]:
    return split.quarantine.filter(pl.col("source_row") == row).row(0, named=True)


def _assert_case(split: Split, case: Case, n_rows: int, source_file: str) -> None:
    """Only the case's rows are quarantined, with its code(s) and a message naming file, row, column, value."""
    q = split.quarantine
    assert q.height + split.accepted.height == n_rows
    assert sorted(q["source_row"].to_list()) == list(case.rows)
    assert split.accepted.height == n_rows - len(case.rows)
    if "source_row" in split.accepted.columns:  # typed outcomes carry no provenance
        assert sorted(split.accepted["source_row"].to_list()) == [r for r in range(1, n_rows + 1) if r not in case.rows]
    assert q.columns[: len(QUARANTINE_HEAD)] == QUARANTINE_HEAD
    assert q["reason_code"].to_list() == [case.code] * len(case.rows)
    bad = _bad_row(split)
    assert bad["reason_codes"] == [case.code, *case.also]
    assert (bad["column"], bad["value"]) == (case.column, case.value)
    _assert_message(bad["message"], source_file, 3, column=case.column, value=case.value, expected=case.expected)
    for row in q.iter_rows(named=True):
        assert row["message"].startswith(f"{source_file} row {row['source_row']}, column '{case.column}'")


def _assert_message(message: str, source_file: str, row: int, *, column: str, value: str, expected: str) -> None:
    assert message.startswith(f"{source_file} row {row}, column '{column}': value '{value}' rejected")
    assert f"; expected {expected}" in message


# --------------------------------------------------------------------------------------------------
# Lab rules
# --------------------------------------------------------------------------------------------------

ANTI_DSDNA_UML = {"test": "anti_dsdna", "unit": "U/mL", "result": "250", "ref_low": None}
IFN = {"test": "ifn_score", "unit": "", "result": "3.1", "ref_low": None, "ref_high": None}

LAB_CASES = [
    _case("TEST_MISSING", {"test": ""}, "test", "", "a test name or code"),
    _case("STUDY_ID_MISSING", {"study_id": ""}, "study_id", "", "a study identifier"),
    _case("SUBJECT_ID_MISSING", {"subject_id": None}, "subject_id", "", "a subject identifier"),
    _case("RESULT_MISSING", {"result": ""}, "result", "", "a numeric result, optionally censored"),
    _case(
        "RESULT_RANGE_REVERSED",
        {"test": "urine_rbc", "unit": "/HPF", "result": "10-3", "ref_low": None, "ref_high": None},
        "result",
        "10-3",
        "a range low-high with low <= high",
    ),
    _case(
        "RESULT_WORD_UNMAPPED",
        {"test": "urine_rbc", "unit": "/HPF", "result": "few", "ref_low": None, "ref_high": None},
        "result",
        "few",
        "a count for urine_rbc: a number, a range (3-5), <x or >x, or TNTC; words are never guessed",
    ),
    _case("RESULT_NOT_NUMERIC", {"result": "positive"}, "result", "positive", "a number, optionally censored"),
    _case("RESULT_NOT_NUMERIC", {"result": "1,5"}, "result", "1,5", "a number, optionally censored"),
    _case("UNIT_UNKNOWN", {"unit": "mmol/L"}, "unit", "mmol/L", "a unit known for c3: g/L, mg/dL, mg/L"),
    _case(
        "UNIT_NEEDS_UPPER_LIMIT", {**ANTI_DSDNA_UML, "ref_high": None}, "ref_high", "", "a reference upper limit > 0"
    ),
    _case(
        "UNIT_NEEDS_UPPER_LIMIT",
        {**ANTI_DSDNA_UML, "ref_high": "0"},
        "ref_high",
        "0",
        "a reference upper limit > 0",
        also=("REF_HIGH_INVALID", "VALUE_NOT_FINITE"),  # 250 / 0 is infinite
    ),
    _case(
        "IFN_METHOD_UNKNOWN",
        {**IFN, "method": "xyz"},
        "method",
        "xyz",  # shown verbatim, as sent
        "an IFN-signature method with a known cut-off (MEDIAN_FC_21, MEAN_Z)",
    ),
    _case("IFN_METHOD_UNKNOWN", {**IFN, "method": " "}, "method", " ", "an IFN-signature method with a known cut-off"),
    _case("REF_LOW_INVALID", {"ref_low": "low"}, "ref_low", "low", "a plain, finite number >= 0, or empty"),
    _case("REF_LOW_INVALID", {"ref_low": "-1"}, "ref_low", "-1", "a plain, finite number >= 0, or empty"),
    _case("REF_HIGH_INVALID", {"ref_high": "1,8"}, "ref_high", "1,8", "a plain, finite number > 0, or empty"),
    _case("REF_HIGH_INVALID", {"ref_high": "1e999"}, "ref_high", "1e999", "a plain, finite number > 0, or empty"),
    _case("REF_RANGE_INVERTED", {"ref_low": "2", "ref_high": "1"}, "ref_low", "2", "ref_low not above ref_high (1)"),
    _case("LLOQ_INVALID", {"lloq": "<0.5"}, "lloq", "<0.5", "a plain, finite number >= 0 in the row's unit"),
    _case("LLOQ_INVALID", {"lloq": "-0.1"}, "lloq", "-0.1", "a plain, finite number >= 0 in the row's unit"),
    _case("DATE_MISSING", {"collected_at": ""}, "collected_at", "", "an ISO 8601 collection date"),
    _case("DATE_INVALID", {"collected_at": "2025-02-30"}, "collected_at", "2025-02-30", "an ISO 8601 date YYYY-MM-DD"),
    _case("DATE_INVALID", {"collected_at": "2025-03"}, "collected_at", "2025-03", "an ISO 8601 date YYYY-MM-DD"),
    _case(
        "DATE_AFTER_AS_OF",
        {"collected_at": "2025-07-01"},
        "collected_at",
        "2025-07-01",
        "a date on or before the run's as_of date 2025-06-30",
    ),
    _case("VALUE_NOT_FINITE", {"result": "1e400"}, "result", "1e400", "a finite number"),
    _case("VALUE_NOT_FINITE", {"result": "-1e400"}, "result", "-1e400", "a finite number"),
    _case(
        "VALUE_OUT_OF_RANGE",
        {"result": "11"},
        "result",
        "11",
        "a plausible c3 between 0.0 and 10.0 g/L (this row converts to 11.0 g/L)",
    ),
    _case(
        "VALUE_OUT_OF_RANGE",
        {"result": "1100", "unit": "mg/dL", "ref_low": None, "ref_high": None},
        "result",
        "1100",
        "a plausible c3 between 0.0 and 10.0 g/L (this row converts to 11.0 g/L)",
    ),
    _case("VALUE_OUT_OF_RANGE", {"result": "-0.1"}, "result", "-0.1", "a plausible c3 between 0.0 and 10.0 g/L"),
    _case(
        "SUBJECT_NOT_ENROLLED",
        {"subject_id": "P3"},
        "subject_id",
        "P3",
        "a (study_id, subject_id) present in the subjects file",
    ),
    _case(
        "SUBJECT_REFUSED",
        {"subject_id": " P3 "},
        "subject_id",
        " P3 ",  # shown verbatim, as sent
        "a subject accepted from the subjects file, but subject S1/P3 was refused "
        "(subjects.csv row 1: REFERENCE_DATE_INVALID, reference_date '2025-02-30')",
    ),
    _case(
        "DUPLICATE_CONFLICT",
        {"subject_id": "P1", "result": "1.0"},
        "result",
        "1.0",
        "one result per subject, analyte, collection time and method; rows 1, 3 of labs.csv disagree",
        rows=(1, 3),
    ),
    _case(
        "DUPLICATE_CONFLICT",
        {"subject_id": "P1", "result": "<0.9"},
        "result",
        "<0.9",
        "one result per subject, analyte, collection time and method; rows 1, 3 of labs.csv disagree",
        rows=(1, 3),
    ),
    _case(
        "DUPLICATE_ROW",
        {"subject_id": "P1"},
        "result",
        "0.9",
        "no repeated measurements; this repeats labs.csv row 1",
    ),
]


def test_lab_cases_cover_every_lab_rule() -> None:
    """Every reason code of `lab_rules` has at least one case below."""
    codes = [r.code for r in lab_rules(AS_OF, IFN_METHODS)]
    assert len(codes) == 23
    assert {c.values[0].code for c in LAB_CASES} == set(codes)


@pytest.mark.parametrize("case", LAB_CASES)
def test_lab_rule_quarantines_only_the_bad_row(case: Case) -> None:
    """One bad row among good ones: that row alone is quarantined, with its code and a full message."""
    rows = [
        lab_row(subject_id="P1"),
        lab_row(subject_id="P2", test="C4", result="0.2", ref_low="0.1", ref_high="0.4"),
        lab_row(**{"subject_id": "P3", **case.overrides}),
        lab_row(subject_id="P4", test="cd19_b_cells", result="120", unit="cells/uL", ref_low=None, ref_high=None),
    ]
    enrolment = case.code in {"SUBJECT_NOT_ENROLLED", "SUBJECT_REFUSED"}
    enrolled = [("S1", "P1"), ("S1", "P2"), ("S1", "P4")] if enrolment else None
    # The subjects file refused P3 (a reference date that does not exist), or, for SUBJECT_NOT_ENROLLED, P9.
    refused_id = "P3" if case.code == "SUBJECT_REFUSED" else "P9"
    refused = validate_subjects(raw_subjects([subject_row(subject_id=refused_id, reference_date="2025-02-30")]))
    parts, split = validate(rows, enrolled=enrolled, refused=refused.quarantine)
    assert parts.outside_panel.height == 0
    _assert_case(split, case, len(rows), "labs.csv")


def test_quarantine_keeps_the_original_columns() -> None:
    """The quarantine carries the input columns (result, unit, test) as sent."""
    rows = [lab_row(), lab_row(subject_id="P2", result="pos.", unit="mg/dL", test="Complement_C3")]
    _, split = validate(rows)
    bad = _bad_row(split, 2)
    assert (bad["result"], bad["unit"], bad["test"], bad["source_file"]) == (
        "pos.",
        "mg/dL",
        "Complement_C3",
        "labs.csv",
    )


def test_row_failing_several_rules_gets_first_code_and_all_codes() -> None:
    """The primary reason is the first failing rule in priority order; reason_codes lists every failure in order."""
    rows = [
        lab_row(),
        lab_row(subject_id="P2", result="abc", unit="furlongs", ref_low="x", collected_at=""),
        lab_row(subject_id="P3", test="", result=""),
    ]
    _, split = validate(rows)
    first = _bad_row(split, 2)
    assert first["reason_code"] == "RESULT_NOT_NUMERIC"
    assert first["reason_codes"] == ["RESULT_NOT_NUMERIC", "UNIT_UNKNOWN", "REF_LOW_INVALID", "DATE_MISSING"]
    assert (first["column"], first["value"]) == ("result", "abc")
    second = _bad_row(split, 3)
    assert second["reason_codes"] == ["TEST_MISSING", "RESULT_MISSING"]
    assert split.accepted["source_row"].to_list() == [1]


def test_duplicates_are_only_judged_among_otherwise_valid_rows() -> None:
    """A bad copy of a good row is quarantined for its own fault; two bad twins are not duplicates."""
    rows = [
        lab_row(subject_id="P1"),
        lab_row(subject_id="P1", ref_low="x"),
        lab_row(subject_id="P2", result="n/a"),
        lab_row(subject_id="P2", result="n/a"),
    ]
    _, split = validate(rows)
    assert split.accepted["source_row"].to_list() == [1]
    codes = dict(zip(split.quarantine["source_row"], split.quarantine["reason_codes"].to_list(), strict=True))
    assert codes == {2: ["REF_LOW_INVALID"], 3: ["RESULT_NOT_NUMERIC"], 4: ["RESULT_NOT_NUMERIC"]}


def test_same_day_different_method_or_time_is_not_a_duplicate() -> None:
    """Duplicate key = study, subject, analyte, collection time, method (identifiers compared stripped)."""
    rows = [
        lab_row(**IFN, method="MEDIAN_FC_21"),
        lab_row(**IFN, method="MEAN_Z"),
        lab_row(collected_at="2025-01-15T08:00"),
        lab_row(collected_at="2025-01-15T09:00"),
        lab_row(subject_id=" P001 ", collected_at="2025-01-15T09:00"),
    ]
    _, split = validate(rows)
    assert split.accepted["source_row"].to_list() == [1, 2, 3, 4]
    assert split.quarantine.select("source_row", "reason_code").rows() == [(5, "DUPLICATE_ROW")]
    assert "this repeats labs.csv row 4" in split.quarantine["message"][0]


def test_duplicates_across_files_name_the_first_file() -> None:
    """A row repeated in a second file is quarantined there and its message names the first file's row."""
    raw = pl.concat([raw_labs([lab_row(), lab_row(subject_id="P2")], "a.csv"), raw_labs([lab_row()], "b.csv")])
    parts = harmonise_labs(raw, reference(), HarmoniseConfig())
    split = validate_labs(parts.candidates, AS_OF, list(IFN_METHODS))
    assert split.quarantine.select("source_file", "source_row", "reason_code").rows() == [("b.csv", 1, "DUPLICATE_ROW")]
    _assert_message(
        split.quarantine["message"][0],
        "b.csv",
        1,
        column="result",
        value="0.9",
        expected="no repeated measurements; this repeats a.csv row 1",
    )


def test_as_of_is_inclusive_and_offsets_are_not_applied() -> None:
    """A sample taken on as_of (late evening, any offset) is accepted; the next day is not."""
    rows = [
        lab_row(collected_at="2025-06-30T23:59:59+09:00"),
        lab_row(subject_id="P2", collected_at="2025-06-30"),
        lab_row(subject_id="P3", collected_at="2025-07-01T00:00:00-10:00"),
    ]
    _, split = validate(rows)
    assert split.accepted["source_row"].to_list() == [1, 2]
    assert split.quarantine.select("source_row", "reason_code").rows() == [(3, "DATE_AFTER_AS_OF")]


def test_enrolment_matches_stripped_identifiers() -> None:
    """Lab identifiers with stray spaces still match the enrolled subject; a different study does not."""
    rows = [lab_row(study_id=" S1 ", subject_id="P001 "), lab_row(study_id="S2")]
    _, split = validate(rows, enrolled=[("S1", "P001")])
    assert split.accepted["source_row"].to_list() == [1]
    assert split.quarantine.select("source_row", "reason_code").rows() == [(2, "SUBJECT_NOT_ENROLLED")]


def test_accepted_rows_pass_every_rule_and_keep_their_order() -> None:
    """Valid rows of several kinds are all accepted, in input order, with nothing quarantined."""
    rows = [
        lab_row(subject_id="P9"),
        lab_row(test="5130-0", result="<10", unit="IU/mL", ref_low=None, ref_high="30"),
        lab_row(**ANTI_DSDNA_UML, ref_high="100"),
        lab_row(**IFN, method="median_fc_21"),
        lab_row(test="8117-4", result="12.5", unit="%", ref_low=None, ref_high=None),
    ]
    _, split = validate(rows)
    assert split.quarantine.height == 0
    assert split.accepted["source_row"].to_list() == [1, 2, 3, 4, 5]


def test_empty_candidates_give_empty_outputs() -> None:
    """Zero rows in, zero rows out, with the quarantine columns present."""
    _, split = validate([])
    assert (split.accepted.height, split.quarantine.height) == (0, 0)
    assert split.quarantine.columns[: len(QUARANTINE_HEAD)] == QUARANTINE_HEAD


def test_missing_contract_column_is_a_contract_error() -> None:
    """A candidates table without a contract column fails at the schema level, not row by row."""
    parts, _ = validate([lab_row()])
    with pytest.raises(ContractError, match="site_id"):
        validate_labs(parts.candidates.drop("site_id"), AS_OF, list(IFN_METHODS))


def test_accepted_plus_quarantined_equals_panel_rows_on_a_mixed_file() -> None:
    """Accounting on a mix of good, bad, duplicate and outside-panel rows."""
    rows = [
        lab_row(),
        lab_row(),
        lab_row(test="ALB", unit="g/L", result="40"),
        lab_row(subject_id="P2", result="<0.05", unit="mg/dL"),
        lab_row(subject_id="P3", result="NaN"),
        lab_row(subject_id="P4", collected_at="2025-13-01"),
        lab_row(subject_id="P5", test=None),
    ]
    parts, split = validate(rows)
    assert parts.outside_panel["source_row"].to_list() == [3]
    assert split.accepted.height + split.quarantine.height == parts.candidates.height == len(rows) - 1
    assert split.accepted["source_row"].to_list() == [1, 4]
    assert split.quarantine.select("source_row", "reason_code").rows() == [
        (2, "DUPLICATE_ROW"),
        (5, "RESULT_NOT_NUMERIC"),
        (6, "DATE_INVALID"),
        (7, "TEST_MISSING"),
    ]


# --------------------------------------------------------------------------------------------------
# Subject rules
# --------------------------------------------------------------------------------------------------

SUBJECT_CASES = [
    _case("STUDY_ID_MISSING", {"study_id": ""}, "study_id", "", "a study identifier"),
    _case("SUBJECT_ID_MISSING", {"subject_id": None}, "subject_id", "", "a subject identifier"),
    _case(
        "REFERENCE_DATE_INVALID", {"reference_date": "2025-02-30"}, "reference_date", "2025-02-30", "an ISO 8601 date"
    ),
    _case("REFERENCE_DATE_INVALID", {"reference_date": ""}, "reference_date", "", "an ISO 8601 date YYYY-MM-DD"),
    _case(
        "FIRST_EXPOSURE_DATE_INVALID",
        {"first_exposure_date": "03/01/2025"},
        "first_exposure_date",
        "03/01/2025",
        "an ISO 8601 date YYYY-MM-DD or empty",
    ),
    _case(
        "SUBJECT_CONFLICT",
        {"subject_id": "P1", "sex": "M"},
        "subject_id",
        "P1",
        "one row per (study_id, subject_id)",
        rows=(1, 3),
    ),
    _case("SUBJECT_DUPLICATE", {"subject_id": "P1"}, "subject_id", "P1", "one row per (study_id, subject_id)"),
]

# Bad optional fields: the subject is kept with the field empty (tests/test_subject_fields.py).
SUBJECT_FIELD_CASES = [
    _case("SEX_INVALID", {"sex": "X"}, "sex", "X", "F, M, U or UNDIFFERENTIATED"),
    _case("AGE_INVALID", {"age_years": "130"}, "age_years", "130", "a number of years between 0 and 120"),
    _case("AGE_INVALID", {"age_years": "-23"}, "age_years", "-23", "a number of years between 0 and 120"),
    _case("AGE_INVALID", {"age_years": "thirty"}, "age_years", "thirty", "a number of years between 0 and 120"),
    _case("SLEDAI_INVALID", {"sledai_2k": "4.5"}, "sledai_2k", "4.5", "a whole number between 0 and 105"),
    _case("SLEDAI_INVALID", {"sledai_2k": "106"}, "sledai_2k", "106", "a whole number between 0 and 105"),
    _case(
        "PRIOR_FAILURES_INVALID",
        {"prior_immunosuppressant_failures": "-1"},
        "prior_immunosuppressant_failures",
        "-1",
        "a whole number between 0 and 50",
    ),
    _case("EGFR_INVALID", {"egfr": "301"}, "egfr", "301", "a number between 0 and 300"),
    _case("CNS_FLAG_INVALID", {"active_cns_lupus": "maybe"}, "active_cns_lupus", "maybe", "true or false"),
    _case(
        "LN_CLASS_INVALID",
        {"lupus_nephritis_class": "VII"},
        "lupus_nephritis_class",
        "VII",
        "NONE, I, II, III, IV, V, VI, III+V or IV+V",
    ),
    _case("INFUSION_DATE_INVALID", {"infusion_date": "2025-02-30"}, "infusion_date", "2025-02-30", "an ISO 8601"),
    # The default first exposure is 2025-03-01: an infusion the day before contradicts it.
    _case(
        "INFUSION_BEFORE_FIRST_EXPOSURE",
        {"infusion_date": "2025-02-28"},
        "infusion_date",
        "2025-02-28",
        "a date on or after first_exposure_date 2025-03-01",
    ),
    _case(
        "DISCONTINUED_DATE_INVALID",
        {"discontinued_date": "03/05/2025"},
        "discontinued_date",
        "03/05/2025",
        "an ISO 8601",
    ),
    _case("DEATH_DATE_INVALID", {"death_date": "2025-13-01"}, "death_date", "2025-13-01", "an ISO 8601"),
    _case("RETREATMENT_DATE_INVALID", {"retreatment_date": "later"}, "retreatment_date", "later", "an ISO 8601"),
    # Day 0 is the first exposure 2025-03-01 (no infusion date): a re-treatment the day before contradicts it.
    _case(
        "RETREATMENT_BEFORE_DAY0",
        {"retreatment_date": "2025-02-28"},
        "retreatment_date",
        "2025-02-28",
        "a date on or after day 0 2025-03-01",
    ),
    _case("IVIG_START_DATE_INVALID", {"ivig_start_date": "2025-06"}, "ivig_start_date", "2025-06", "an ISO 8601"),
]


def test_subject_cases_cover_every_subject_rule() -> None:
    """Every reason code of `subject_rules` has at least one case below: refusing rules, then field rules."""
    rules = subject_rules()
    assert {c.values[0].code for c in SUBJECT_CASES} == {r.code for r in rules if r.nulls is None}
    assert {c.values[0].code for c in SUBJECT_FIELD_CASES} == {r.code for r in rules if r.nulls is not None}
    assert [r.nulls is None for r in rules] == sorted((r.nulls is None for r in rules), reverse=True)


def _subject_rows(case: Case) -> list[dict[str, str | None]]:
    """Four subjects; the third carries the case's overrides."""
    return [
        subject_row(subject_id="P1"),
        subject_row(subject_id="P2", sex="male", lupus_nephritis_class=None, first_exposure_date=None),
        subject_row(**{"subject_id": "P3", **case.overrides}),
        subject_row(subject_id="P4", age_years="", egfr=""),
    ]


@pytest.mark.parametrize("case", SUBJECT_CASES)
def test_subject_rule_quarantines_only_the_bad_row(case: Case) -> None:
    """One bad subject row among good ones: only it is quarantined, with its code and a full message."""
    rows = _subject_rows(case)
    _assert_case(validate_subjects(raw_subjects(rows)), case, len(rows), "subjects.csv")


@pytest.mark.parametrize("case", SUBJECT_FIELD_CASES)
def test_bad_optional_subject_field_is_quarantined_as_that_field(case: Case) -> None:
    """The subject stays, with that field null; one field record names its row, column, value and reason."""
    rows = _subject_rows(case)
    split = validate_subjects(raw_subjects(rows))
    assert split.accepted["source_row"].to_list() == [1, 2, 3, 4]
    kept = split.accepted.row(2, named=True)
    assert kept[case.column] is None
    assert (kept["subject_id"], kept["reference_date"]) == ("P3", dt.date(2025, 2, 1))
    assert split.quarantine.columns[: len(QUARANTINE_HEAD)] == QUARANTINE_HEAD
    assert split.quarantine.height == 1
    bad = _bad_row(split)
    assert (bad["reason_code"], bad["reason_codes"]) == (case.code, [case.code])
    assert (bad["column"], bad["value"], bad[case.column]) == (case.column, case.value, case.value)
    _assert_message(bad["message"], "subjects.csv", 3, column=case.column, value=case.value, expected=case.expected)
    assert bad["message"].endswith(f"; the row is kept with {case.column} empty")


def test_subject_fields_are_typed() -> None:
    """Accepted subjects carry typed, normalised fields."""
    rows = [
        subject_row(
            study_id=" S1 ",
            subject_id=" P1",
            site_id="  ",
            sex="female",
            age_years="34.5",
            sledai_2k="12",
            active_cns_lupus="Yes",
            lupus_nephritis_class="iv+v",
            egfr="",
        ),
        subject_row(subject_id="P2", sex="UNDIFFERENTIATED", active_cns_lupus="0", first_exposure_date=None),
    ]
    split = validate_subjects(raw_subjects(rows))
    assert split.quarantine.height == 0
    first, second = split.accepted.iter_rows(named=True)
    assert (first["study_id"], first["subject_id"], first["site_id"]) == ("S1", "P1", None)
    assert (first["sex"], first["age_years"], first["sledai_2k"]) == ("F", 34.5, 12)
    assert (first["active_cns_lupus"], first["lupus_nephritis_class"], first["egfr"]) == (True, "IV+V", None)
    assert first["reference_date"] == dt.date(2025, 2, 1)
    assert (second["sex"], second["active_cns_lupus"], second["first_exposure_date"]) == (
        "UNDIFFERENTIATED",
        False,
        None,
    )


def test_subject_repeat_with_stray_spaces_is_a_duplicate() -> None:
    """ " P1 " and "P1" are the same subject once stripped: the repeat is quarantined, not accepted twice."""
    rows = [subject_row(subject_id="P1"), subject_row(subject_id=" P1 ", study_id="S1 ")]
    split = validate_subjects(raw_subjects(rows))
    assert split.accepted.select("subject_id", "source_row").rows() == [("P1", 1)]
    assert split.quarantine.select("source_row", "reason_code").rows() == [(2, "SUBJECT_DUPLICATE")]


def test_subject_conflict_after_stripping_quarantines_both_rows() -> None:
    """Two rows for one stripped key with different values: neither is trusted."""
    rows = [subject_row(subject_id="P1", age_years="34"), subject_row(subject_id="P1 ", age_years="43")]
    split = validate_subjects(raw_subjects(rows))
    assert split.accepted.height == 0
    assert split.quarantine["reason_code"].to_list() == ["SUBJECT_CONFLICT", "SUBJECT_CONFLICT"]


# --------------------------------------------------------------------------------------------------
# Outcome rules
# --------------------------------------------------------------------------------------------------

OUTCOME_CASES = [
    _case("STUDY_ID_MISSING", {"study_id": "  "}, "study_id", "  ", "a study identifier"),
    _case("SUBJECT_ID_MISSING", {"subject_id": None}, "subject_id", "", "a subject identifier"),
    _case("RESPONDED_INVALID", {"responded": "maybe"}, "responded", "maybe", "true or false (yes/no, y/n, 1/0)"),
    _case("RESPONDED_INVALID", {"responded": None}, "responded", "", "true or false"),
    _case(
        "OUTCOME_DUPLICATE",
        {"subject_id": "P1"},
        "subject_id",
        "P1",
        "one outcome row per (study_id, subject_id)",
        rows=(1, 3),
    ),
]


@pytest.mark.parametrize("case", OUTCOME_CASES)
def test_outcome_rule_quarantines_only_the_bad_row(case: Case) -> None:
    """One bad outcome row among good ones: only it (both, for a duplicate) is quarantined."""
    rows = [
        outcome_row(subject_id="P1"),
        outcome_row(subject_id="P2", responded="no"),
        outcome_row(**{"subject_id": "P3", **case.overrides}),
        outcome_row(subject_id="P4", responded="Y"),
    ]
    _assert_case(validate_outcomes(raw_outcomes(rows)), case, len(rows), "outcomes.csv")


def test_outcomes_are_typed() -> None:
    """responded becomes a boolean; identifiers are stripped."""
    rows = [outcome_row(subject_id=" P1 ", responded="YES"), outcome_row(subject_id="P2", responded="f")]
    split = validate_outcomes(raw_outcomes(rows))
    assert split.accepted.select("subject_id", "responded").rows() == [("P1", True), ("P2", False)]


def test_outcome_duplicate_with_stray_spaces() -> None:
    """ "P1" and "P1 " are one subject: two outcome rows for it are both quarantined."""
    rows = [outcome_row(subject_id="P1", responded="yes"), outcome_row(subject_id="P1 ", responded="no")]
    split = validate_outcomes(raw_outcomes(rows))
    assert split.accepted.height == 0
    assert split.quarantine["reason_code"].to_list() == ["OUTCOME_DUPLICATE", "OUTCOME_DUPLICATE"]


# --------------------------------------------------------------------------------------------------
# Rule engine
# --------------------------------------------------------------------------------------------------


def test_pandera_checks_every_rule_in_one_check() -> None:
    """pandera validates the contract's columns plus one row-rules column, whose single check names every rule."""
    rules = lab_rules(AS_OF, IFN_METHODS)
    schema = _schema(LabCandidate, rules)
    [check] = schema.columns[ROW_RULES].checks
    assert check.name == "row_rules"
    assert check.error is not None and all(rule.code in check.error for rule in rules)
    assert set(LabCandidate.to_schema().columns) <= set(schema.columns)


def test_rule_flags_match_each_rule_evaluated_alone() -> None:
    """The one-query evaluation of all rules gives what each rule gives on its own."""
    rows = [lab_row(), lab_row(subject_id="P2", result="abc", unit="furlongs", ref_low="x", collected_at="")]
    parts, _ = validate(rows)
    frame = parts.candidates.with_columns(_enrolled=pl.lit(True), _refused=pl.lit(False))
    rules = [r for r in lab_rules(AS_OF, IFN_METHODS) if not r.code.startswith("DUPLICATE_")]
    flags = rule_flags(frame, rules)
    for rule in rules:
        assert flags[rule.code].to_list() == frame.select(rule.passes)[:, 0].to_list(), rule.code


@pytest.mark.parametrize("seed", range(5))
def test_repeated_is_is_duplicated(seed: int) -> None:
    """The sort-based duplicate test agrees with polars' hash-based one."""
    values = pl.Series(np.random.default_rng(seed).integers(0, 50, 200), dtype=pl.UInt64)
    assert is_repeated(values).to_list() == values.is_duplicated().to_list()


def test_enrolment_when_a_subjects_rows_are_not_together() -> None:
    """Runs of identifiers are a shortcut only: interleaved subjects and missing identifiers still resolve."""
    rows = [
        lab_row(subject_id="P1"),
        lab_row(subject_id="P2", test="c4", result="0.2"),
        lab_row(subject_id="P1", test="c4", result="0.2"),
        lab_row(subject_id="P3"),
        lab_row(subject_id="P3", test="c4", result="0.2"),
        lab_row(subject_id="P2"),
    ]
    _, split = validate(rows, enrolled=[("S1", "P1"), ("S1", "P2")])
    assert split.accepted["source_row"].to_list() == [1, 2, 3, 6]
    assert split.quarantine.select("source_row", "reason_code").rows() == [
        (4, "SUBJECT_NOT_ENROLLED"),
        (5, "SUBJECT_NOT_ENROLLED"),
    ]
