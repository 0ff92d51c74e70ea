"""FHIR R4 readers: Observations (NDJSON, Bundle, single resource), statuses, Patients, crosswalk."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.config.run import HarmoniseConfig, RunConfig, ValidationConfig
from immunostrat.ingest.inputs import Inputs, read_labs
from immunostrat.ingest.io import InputError, read_input
from immunostrat.ingest.readers import (
    READER_REASONS,
    ReaderOptions,
    add_patient_demographics,
    merge_reader_quarantine,
    read_crosswalk,
    read_fhir_observations,
    read_fhir_patients,
    sniff,
)
from immunostrat.ingest.readers.crosswalk import crosswalk_from_frame
from immunostrat.ingest.reference import load_reference
from immunostrat.pipeline.selection import prepare
from immunostrat.stages.harmonise import harmonise_labs, parse_iso_date

from .fixtures_labs import LAB_COLUMNS

DATA = Path(__file__).parent / "data" / "readers"
HL7 = Path(__file__).resolve().parents[2] / "shared" / "samples" / "fhir-r4-hl7-examples"
CFG = RunConfig(validation=ValidationConfig(as_of=dt.date(2026, 11, 1)))
REF = load_reference()

needs_hl7 = pytest.mark.skipif(
    not (HL7 / "observation-example-f001-glucose.json").is_file(),
    reason=f"HL7 FHIR examples not found at {HL7} (shared/ not beside the repo)",
)


def _options() -> ReaderOptions:
    return ReaderOptions(crosswalk=read_crosswalk(DATA / "crosswalk.csv"))


def test_ndjson_observations_map_onto_the_lab_contract() -> None:
    """Test, result (with comparator), UCUM unit, dates, ranges and subjects; source_row is the line number."""
    table = read_labs(DATA / "fhir_observations.ndjson", None, _options())
    assert table.fmt == "fhir" and table.frame.columns == [*LAB_COLUMNS, "source_file", "source_row"]
    rows = {r["source_row"]: r for r in table.frame.iter_rows(named=True)}
    assert set(rows) == {2, 3, 4, 8, 10, 11}  # line 1 is a Patient, line 7 is blank, 5/6/9 are rejected
    assert (rows[2]["test"], rows[2]["result"], rows[2]["unit"]) == ("4485-9", "0.65", "g/L")
    assert (rows[2]["ref_low"], rows[2]["ref_high"], rows[2]["subject_id"]) == ("0.9", "1.8", "SLE01-001")
    assert (rows[3]["result"], rows[3]["unit"], rows[3]["subject_id"]) == (">800", "[IU]/mL", "SLE01-002")
    assert (rows[4]["unit"], rows[4]["collected_at"], rows[4]["method"]) == (
        "10*9/L",
        "2025-02-28T10:00:00Z",
        "flow cytometry",
    )
    assert rows[10]["test"] == "24467-3"  # the LOINC coding that maps to the panel, not the local code first
    assert (rows[11]["ref_low"], rows[11]["ref_high"]) == (None, None)  # range in g/L beside a mg/dL result
    assert table.notes["reference_range_unit_mismatch"] == 1
    assert set(table.frame["study_id"]) == {"SLE-CART-01"}


def test_withdrawn_and_unmapped_observations_are_quarantined_and_counted() -> None:
    """entered-in-error, cancelled and an unknown Patient leave the frame for the reader's quarantine."""
    table = read_labs(DATA / "fhir_observations.ndjson", None, _options())
    assert table.rejected is not None
    rejected = table.rejected.select("source_row", "reason_code", "column", "value").rows()
    assert rejected == [
        (5, "STATUS_ENTERED_IN_ERROR", "result", "0.2"),
        (6, "STATUS_CANCELLED", "result", ""),
        (9, "SUBJECT_NOT_IN_CROSSWALK", "subject_id", "pat-zzz"),
    ]
    assert "entered-in-error" in table.rejected["message"][0]
    assert table.rows_read == 9 == table.frame.height + table.rejected.height
    assert table.notes["crosswalk"]["unmapped_ids"] == ["pat-zzz"]
    inputs = Inputs(labs=[table], subjects=None)
    prepared = merge_reader_quarantine(inputs, prepare(inputs, CFG))
    f = prepared.counts["per_file"][str(DATA / "fhir_observations.ndjson")]
    assert (f["rows_read"], f["accepted"], f["outside_panel"], f["quarantined"]) == (9, 5, 1, 3)
    assert prepared.counts["quarantined_by_reason"]["STATUS_CANCELLED"] == 1
    assert {c for c in prepared.quarantine["reason_code"]} <= {r.code for r in READER_REASONS}
    # Idempotent: merging twice changes nothing.
    assert merge_reader_quarantine(inputs, prepared) is prepared


def test_outside_panel_withdrawn_observation_counts_outside_panel(tmp_path: Path) -> None:
    """A cancelled Observation whose test is not on the panel is counted there, not quarantined."""
    path = tmp_path / "obs.json"
    path.write_text(
        json.dumps(
            {
                "resourceType": "Observation",
                "status": "cancelled",
                "code": {"coding": [{"system": "http://loinc.org", "code": "15074-8"}]},
                "subject": {"reference": "Patient/p1"},
            }
        )
    )
    table = read_fhir_observations(path, REF, study_id="S1")
    assert table.rejected is None and table.frame["test"].to_list() == ["15074-8"]


def test_bundle_references_and_partial_dates() -> None:
    """urn:uuid and absolute (_history) references resolve to Patients; a month-only date stays verbatim."""
    table = read_labs(DATA / "fhir_bundle.json", None, _options())
    assert table.notes["container"] == "bundle" and sniff(DATA / "fhir_bundle.json").kind == "fhir"
    rows = table.frame.select("source_row", "subject_id", "collected_at").rows()
    assert rows == [(2, "SLE01-002", "2025-03-04"), (3, "SLE01-001", "2025-03")]
    assert table.notes["collection_dates"] == {"date": 1, "partial": 1}


def test_fhir_needs_a_study() -> None:
    """FHIR has no study: without --study-id or a crosswalk for FHIR the file is refused, with the fix."""
    with pytest.raises(InputError, match="FHIR carries no study"):
        read_labs(DATA / "fhir_observations.ndjson", "fhir")


def test_study_option_without_crosswalk_keeps_patient_ids() -> None:
    """With a study id and no crosswalk, Patient ids are the subject ids, as sent."""
    table = read_labs(DATA / "fhir_observations.ndjson", "fhir", ReaderOptions(study_id="SLE-CART-01"))
    assert set(table.frame["subject_id"]) == {"pat-a", "pat-b", "pat-zzz"} and table.rejected is not None
    assert set(table.rejected["reason_code"]) == {"STATUS_ENTERED_IN_ERROR", "STATUS_CANCELLED"}


def test_crosswalk_rejects_ambiguous_and_empty_rows(tmp_path: Path) -> None:
    """One source id mapped to two subjects, or an empty value, makes the crosswalk unusable."""
    frame = pl.DataFrame(
        {
            "source": ["FHIR", "fhir"],
            "source_id": ["p1", "Patient/p1"],
            "study_id": ["S", "S"],
            "subject_id": ["A", "B"],
        }
    )
    with pytest.raises(InputError, match="more than one subject"):
        crosswalk_from_frame(frame)
    with pytest.raises(InputError, match="every column must have a value"):
        crosswalk_from_frame(frame.with_columns(subject_id=pl.Series(["A", None])))


def test_patients_fill_sex_and_age_at_the_reference_date(tmp_path: Path) -> None:
    """Patient gender/birthDate fill empty subject fields; the age is at the subject's own reference date."""
    subjects = tmp_path / "subjects.csv"
    subjects.write_text(
        "study_id,subject_id,reference_date,sex,age_years\n"
        "SLE-CART-01,SLE01-001,2025-03-03,,\n"
        "SLE-CART-01,SLE01-002,2025-03-09,,\n"
        "SLE-CART-01,SLE01-003,2025-03-10,M,50\n"
    )
    from immunostrat.ingest.io import SUBJECT_OPTIONAL, SUBJECT_REQUIRED

    table = read_input(subjects, SUBJECT_REQUIRED, SUBJECT_OPTIONAL)
    patients = read_fhir_patients(DATA / "fhir_bundle.json", crosswalk=read_crosswalk(DATA / "crosswalk.csv"))
    filled = add_patient_demographics(table, patients)
    rows = filled.frame.select("subject_id", "sex", "age_years").rows()
    # pat-b born 1995-03-10: one day before the 30th birthday on 2025-03-09. pat-a has a partial birthDate.
    assert rows == [("SLE01-001", "F", None), ("SLE01-002", "F", "29"), ("SLE01-003", "M", "50")]
    assert filled.notes["patients"]["birth_date_partial"] == 1
    assert filled.frame.columns == table.frame.columns


@needs_hl7
def test_hl7_examples() -> None:
    """The HL7 glucose example maps fully (outside the panel); the eGFR example has only components."""
    glucose = read_fhir_observations(HL7 / "observation-example-f001-glucose.json", REF, study_id="HL7")
    row = glucose.frame.row(0, named=True)
    assert (row["test"], row["result"], row["unit"], row["ref_low"], row["ref_high"]) == (
        "15074-8",
        "6.3",
        "mmol/L",
        "3.1",
        "6.2",
    )
    assert (row["subject_id"], row["collected_at"], row["source_row"]) == ("f001", "2013-04-02T09:30:10+01:00", 1)
    egfr = read_fhir_observations(HL7 / "observation-example-f205-egfr.json", REF, study_id="HL7")
    assert egfr.frame["result"].to_list() == [None] and egfr.notes["with_components"] == 1
    assert egfr.notes["panel_codes_only_in_components"] == []
    parts = harmonise_labs(pl.concat([glucose.frame, egfr.frame]), REF, HarmoniseConfig())
    assert parts.outside_panel.height == 2 and parts.candidates.height == 0


# --------------------------------------------------------------------------------------------------
# Property: value / comparator / unit / date variants
# --------------------------------------------------------------------------------------------------

_DATES = {
    "2025-03-04": "date",
    "2025-03-04T08:15:00+01:00": "datetime",
    "2025-03-04T08:15:00Z": "datetime",
    "2025-03": "partial",
    "2025": "partial",
}


@settings(max_examples=40, deadline=None)
@given(
    value=st.decimals(min_value=Decimal("0"), max_value=Decimal("1e6"), places=3, allow_nan=False),
    comparator=st.sampled_from([None, "<", "<=", ">", ">="]),
    ucum=st.booleans(),
    date=st.sampled_from(sorted(_DATES)),
    period=st.booleans(),
)
def test_observation_variants(value: Decimal, comparator: str | None, ucum: bool, date: str, period: bool) -> None:
    """Whatever the variant, the row says what the resource said, and harmonise reads the same number."""
    text = str(value)
    quantity: dict[str, object] = {"unit": "mg/dl display", "code": "mg/dL"}
    if ucum:
        quantity["system"] = "http://unitsofmeasure.org"
    if comparator:
        quantity["comparator"] = comparator
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4485-9"}]},
        "subject": {"reference": "Patient/p1"},
        ("effectivePeriod" if period else "effectiveDateTime"): {"start": date} if period else date,
    }
    # The value is written as a JSON number with exactly the digits of `text`.
    line = json.dumps(resource)[:-1] + ', "valueQuantity": ' + json.dumps(quantity)[:-1] + f', "value": {text}}}}}'
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "obs.ndjson"
        path.write_text(line + "\n" + json.dumps({"resourceType": "Patient", "id": "p1"}) + "\n")
        table = read_fhir_observations(path, REF, study_id="S1")
    row = table.frame.row(0, named=True)
    assert row["result"] == (comparator or "") + text
    assert row["unit"] == ("mg/dL" if ucum else "mg/dl display")
    assert row["collected_at"] == date
    candidates = harmonise_labs(table.frame, REF, HarmoniseConfig()).candidates
    assert candidates["value_reported"][0] == float(text)
    assert candidates["censoring"][0] == comparator
    parsed = table.frame.select(parse_iso_date("collected_at")[0]).item()
    assert (parsed is None) == (_DATES[date] == "partial")
