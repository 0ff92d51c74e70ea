"""A bad optional subject field is quarantined as that field; a refused subject's lab rows say why.

Through the stages as a run composes them (validate subjects, validate labs against them, baseline,
eligibility), on hand-written rows; expected values by hand.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from immunostrat.config.run import BaselineConfig, load_protocol
from immunostrat.stages.baseline import derive_baseline
from immunostrat.stages.eligibility import assess_eligibility
from immunostrat.stages.enrolment import subject_refusals
from immunostrat.stages.harmonise import harmonised_table
from immunostrat.stages.rules import Split
from immunostrat.stages.subjects import SUBJECT_FIELD_CODES, subject_quarantine_counts, validate_subjects

from .fixtures_labs import lab_row, raw_subjects, reference, subject_row, validate


def _labs_of(subject_ids: list[str]) -> list[dict[str, str | None]]:
    """One C3 and one C4 row per subject, in the baseline window of a 2025-02-01 reference date."""
    rows = []
    for sid in subject_ids:
        rows.append(lab_row(subject_id=sid, result="0.7"))
        rows.append(lab_row(subject_id=sid, test="c4", result="0.1", ref_low="0.16", ref_high="0.5"))
    return rows


def _enrolled(split: Split) -> list[tuple[str, str]]:
    return split.accepted.select("study_id", "subject_id").rows()


def test_negative_age_keeps_the_subject_and_its_labs() -> None:
    """Two-digit birth years give a negative age: only the age is dropped, never the subject or its labs."""
    subjects = validate_subjects(
        raw_subjects([subject_row(subject_id="P1"), subject_row(subject_id="P2", age_years="-23")])
    )
    assert subjects.accepted.select("subject_id", "age_years").rows() == [("P1", 34.0), ("P2", None)]
    record = subjects.quarantine.row(0, named=True)
    assert subjects.quarantine.height == 1
    assert (record["source_row"], record["reason_code"], record["column"], record["value"]) == (
        2,
        "AGE_INVALID",
        "age_years",
        "-23",
    )
    assert record["message"] == (
        "subjects.csv row 2, column 'age_years': value '-23' rejected (AGE_INVALID); expected a number of years "
        "between 0 and 120, or empty; the row is kept with age_years empty"
    )
    _, labs = validate(_labs_of(["P1", "P2"]), enrolled=_enrolled(subjects), refused=subjects.quarantine)
    assert labs.quarantine.height == 0
    assert labs.accepted["subject_id"].to_list() == ["P1", "P1", "P2", "P2"]


def test_criteria_that_need_a_dropped_field_are_not_assessable() -> None:
    """P2's age was dropped: its age criterion is null (not assessable), never failed; the rest are assessed."""
    subjects = validate_subjects(
        raw_subjects([subject_row(subject_id="P1"), subject_row(subject_id="P2", age_years="-23", egfr="3000")])
    )
    _, labs = validate(_labs_of(["P1", "P2"]), enrolled=_enrolled(subjects), refused=subjects.quarantine)
    strata = derive_baseline(harmonised_table(labs.accepted), subjects.accepted, reference(), BaselineConfig())
    assessed = assess_eligibility(strata, load_protocol()).sort("subject_id")
    p1, p2 = assessed.iter_rows(named=True)
    assert (p1["criterion_age_18_65"], p1["criterion_egfr_ge_30"]) == (True, True)
    assert (p2["criterion_age_18_65"], p2["criterion_egfr_ge_30"]) == (None, None)
    assert p2["criterion_sledai_2k_ge_8"] is True  # the other fields are still read
    assert {"age_18_65", "egfr_ge_30"} <= set(p2["criteria_not_assessable"])
    assert p2["eligible"] is None  # nothing failed, two criteria unknown


def test_several_bad_fields_give_one_record_each_and_one_accepted_subject() -> None:
    rows = [subject_row(subject_id="P1", sex="X", age_years="-23", egfr="", active_cns_lupus="maybe")]
    split = validate_subjects(raw_subjects(rows))
    assert split.accepted.select("sex", "age_years", "egfr", "active_cns_lupus", "sledai_2k").rows() == [
        (None, None, None, None, 12)
    ]
    assert split.quarantine.select("source_row", "reason_code", "column", "value").rows() == [
        (1, "SEX_INVALID", "sex", "X"),
        (1, "AGE_INVALID", "age_years", "-23"),
        (1, "CNS_FLAG_INVALID", "active_cns_lupus", "maybe"),
    ]
    assert subject_quarantine_counts(split.quarantine) == {
        "quarantined": 0,
        "quarantined_by_reason": {},
        "fields_quarantined": 3,
        "fields_quarantined_by_reason": {"AGE_INVALID": 1, "CNS_FLAG_INVALID": 1, "SEX_INVALID": 1},
    }


def test_a_refused_row_lists_its_bad_fields_but_gets_no_field_records() -> None:
    """A required failure refuses the row; its bad optional fields are among its reasons, not extra records."""
    split = validate_subjects(raw_subjects([subject_row(reference_date="2025-13-01", age_years="-23")]))
    assert split.accepted.height == 0
    assert split.quarantine.select("reason_code", "reason_codes").rows() == [
        ("REFERENCE_DATE_INVALID", ["REFERENCE_DATE_INVALID", "AGE_INVALID"])
    ]


def test_a_repeated_row_with_a_bad_field_keeps_the_first_and_refuses_the_repeat() -> None:
    """The primary reason of a refused row is a refusing rule even when a field rule comes earlier in the file."""
    split = validate_subjects(raw_subjects([subject_row(age_years="-5"), subject_row(age_years="-5")]))
    assert split.accepted.select("source_row", "age_years").rows() == [(1, None)]
    assert split.quarantine.select("source_row", "reason_code", "reason_codes").rows() == [
        (1, "AGE_INVALID", ["AGE_INVALID"]),
        (2, "SUBJECT_DUPLICATE", ["SUBJECT_DUPLICATE", "AGE_INVALID"]),
    ]


def test_every_subject_row_is_counted_once() -> None:
    """rows_read = accepted + quarantined (refused rows); field records are counted apart."""
    rows = [
        subject_row(subject_id="P1"),
        subject_row(subject_id="P2", age_years="-23", sex="?"),
        subject_row(subject_id="P3", reference_date=""),
        subject_row(subject_id="P4", sledai_2k="200"),
        subject_row(subject_id="P4", sledai_2k="200"),
        subject_row(subject_id="", egfr="-1"),
    ]
    split = validate_subjects(raw_subjects(rows))
    counts = subject_quarantine_counts(split.quarantine)
    assert split.accepted["source_row"].to_list() == [1, 2, 4]
    assert counts == {
        "quarantined": 3,
        "quarantined_by_reason": {"REFERENCE_DATE_INVALID": 1, "SUBJECT_DUPLICATE": 1, "SUBJECT_ID_MISSING": 1},
        "fields_quarantined": 3,
        "fields_quarantined_by_reason": {"AGE_INVALID": 1, "SEX_INVALID": 1, "SLEDAI_INVALID": 1},
    }
    assert len(rows) == split.accepted.height + counts["quarantined"]
    assert split.quarantine.filter(pl.col("reason_code").is_in(SUBJECT_FIELD_CODES)).height == 3


def test_lab_rows_of_a_refused_subject_name_its_row_and_reason() -> None:
    """SUBJECT_REFUSED for a subject the subjects file refused; SUBJECT_NOT_ENROLLED for one it lacks."""
    subjects = validate_subjects(
        raw_subjects(
            [
                subject_row(study_id="SLE-01", subject_id="001"),
                subject_row(study_id="SLE-01", subject_id="017", reference_date="17-03-25"),
            ]
        )
    )
    rows = [lab_row(study_id="SLE-01", subject_id=sid) for sid in ("001", "017", "099")]
    _, labs = validate(rows, enrolled=_enrolled(subjects), refused=subjects.quarantine)
    assert labs.accepted["subject_id"].to_list() == ["001"]
    assert labs.quarantine.select("source_row", "reason_code").rows() == [
        (2, "SUBJECT_REFUSED"),
        (3, "SUBJECT_NOT_ENROLLED"),
    ]
    assert labs.quarantine["message"].to_list() == [
        "labs.csv row 2, column 'subject_id': value '017' rejected (SUBJECT_REFUSED); expected a subject accepted "
        "from the subjects file, but subject SLE-01/017 was refused (subjects.csv row 2: REFERENCE_DATE_INVALID, "
        "reference_date '17-03-25')",
        "labs.csv row 3, column 'subject_id': value '099' rejected (SUBJECT_NOT_ENROLLED); expected a (study_id, "
        "subject_id) present in the subjects file",
    ]


def test_a_subject_refused_on_several_rows_names_each() -> None:
    """Two disagreeing rows for one subject (identifiers compared stripped): both are named."""
    subjects = validate_subjects(
        raw_subjects([subject_row(subject_id="P1", sex="F"), subject_row(subject_id=" P1", sex="M")])
    )
    assert subject_refusals(subjects.quarantine).rows() == [
        (
            "S1",
            "P1",
            "subject S1/P1 was refused (subjects.csv row 1: SUBJECT_CONFLICT, subject_id 'P1'; subjects.csv row 2: "
            "SUBJECT_CONFLICT, subject_id ' P1')",
        )
    ]


def test_without_the_subjects_quarantine_a_refused_subject_is_not_enrolled() -> None:
    """`refused` is optional: callers that do not pass it get SUBJECT_NOT_ENROLLED, as before."""
    subjects = validate_subjects(raw_subjects([subject_row(subject_id="P1", reference_date="")]))
    _, labs = validate([lab_row(subject_id="P1")], enrolled=_enrolled(subjects))
    assert labs.quarantine["reason_code"].to_list() == ["SUBJECT_NOT_ENROLLED"]


def test_field_records_are_not_refusals() -> None:
    """A subject kept with a dropped field is enrolled: its labs are accepted, its field record refuses nothing."""
    subjects = validate_subjects(raw_subjects([subject_row(subject_id="P1", lupus_nephritis_class="VII")]))
    assert subject_refusals(subjects.quarantine).height == 0
    assert subjects.accepted["lupus_nephritis_class"].to_list() == [None]
    assert subjects.accepted["reference_date"].to_list() == [dt.date(2025, 2, 1)]
