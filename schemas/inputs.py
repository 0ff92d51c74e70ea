"""Contracts for the tables immunostrat validates row by row: lab candidates, subjects, visits and outcomes.

The column declarations here are the data contract (types, descriptions). The row rules, each named by
the reason code a failing row is quarantined with, are evaluated in one plan per table by
`immunostrat.stages.rules` and checked by pandera as one column check beside these columns, so pandera's
failure cases carry the failing rows' indices.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandera.polars as pa
import polars as pl

from immunostrat.followup.sledai import load_descriptors


class LabCandidate(pa.DataFrameModel):
    """A harmonised lab row awaiting validation (output of the harmonise stage)."""

    study_id: str = pa.Field(nullable=True, description="Study identifier as sent.")
    subject_id: str = pa.Field(nullable=True, description="Subject identifier as sent.")
    site_id: str = pa.Field(nullable=True, description="Site identifier as sent (optional).")
    test: str = pa.Field(nullable=True, description="Test as reported: analyte, LOINC, CDISC code or alias.")
    result: str = pa.Field(nullable=True, description="Result as reported, verbatim.")
    unit: str = pa.Field(nullable=True, description="Unit as reported, verbatim.")
    collected_at: str = pa.Field(nullable=True, description="Collection date/time as reported (ISO 8601).")
    method: str = pa.Field(nullable=True, description="Assay or method, upper-cased.")
    ref_low: str = pa.Field(nullable=True, description="Lab reference lower limit as reported.")
    ref_high: str = pa.Field(nullable=True, description="Lab reference upper limit as reported.")
    lloq: str = pa.Field(
        nullable=True, description="The assay's lower limit of quantification as reported, in the row's unit."
    )
    source_file: str = pa.Field(description="Input file the row came from.")
    source_row: int = pa.Field(ge=1, description="1-based data row in the input file (header excluded).")
    analyte_reported: str = pa.Field(nullable=True, description="Panel analyte the reported test maps to.")
    analyte: str = pa.Field(nullable=True, description="Panel analyte after unit conversion (e.g. a % form).")
    censoring: str = pa.Field(nullable=True, description="Censoring comparator (<, <=, >, >=) or null.")
    value_reported: float = pa.Field(nullable=True, description="Numeric result in the reported unit.")
    value: float = pa.Field(nullable=True, description="Numeric result in the canonical unit.")
    ref_low_value: float = pa.Field(nullable=True, description="Reference lower limit, canonical unit.")
    ref_high_value: float = pa.Field(nullable=True, description="Reference upper limit, canonical unit.")
    lloq_value: float = pa.Field(nullable=True, description="Lower limit of quantification, canonical unit.")
    collected_date: dt.date = pa.Field(nullable=True, description="Collection calendar date.")
    collected_at_parsed: pl.Datetime("us") = pa.Field(  # type: ignore[valid-type]
        nullable=True, description="Collection date-time, local time as written."
    )

    class Config:
        strict = False  # helper columns (ranges, unit lists) ride along


class SubjectCandidate(pa.DataFrameModel):
    """A subject row as read, awaiting validation.

    `study_id`, `subject_id` and `reference_date` are required: a bad one refuses the row, as does an unreadable
    `first_exposure_date` or a repeated subject. A bad value in any other field (sex, age, SLEDAI-2K, prior
    failures, nephritis class, eGFR, CNS lupus, infusion, discontinuation, death, re-treatment and IVIG dates) is
    quarantined as that field only: the subject is kept with it empty (`immunostrat.stages.subjects.subject_rules`).
    """

    study_id: str = pa.Field(nullable=True, description="Study identifier.")
    subject_id: str = pa.Field(nullable=True, description="Subject identifier within the study.")
    site_id: str = pa.Field(nullable=True, description="Site identifier (optional).")
    reference_date: str = pa.Field(nullable=True, description="Screening/baseline anchor date (ISO 8601).")
    first_exposure_date: str = pa.Field(
        nullable=True, description="Lymphodepletion or infusion date: nothing on or after it is baseline."
    )
    infusion_date: str = pa.Field(
        nullable=True,
        description="CAR-T infusion date (day 0 of follow-up); when empty, day 0 is `first_exposure_date`. Not "
        "before `first_exposure_date`.",
    )
    discontinued_date: str = pa.Field(
        nullable=True, description="Date the subject left the study (withdrawal or death); empty while on study."
    )
    death_date: str = pa.Field(nullable=True, description="Date of death (ISO 8601); empty when alive or unknown.")
    retreatment_date: str = pa.Field(
        nullable=True,
        description="Date of re-treatment: a second infusion or another B-cell-depleting therapy (ISO 8601); the "
        "immune course is censored there. Not before day 0.",
    )
    ivig_start_date: str = pa.Field(
        nullable=True, description="Start of IVIG replacement (ISO 8601); IgG after it is not used for the nadir."
    )
    sex: str = pa.Field(nullable=True, description="F, M, U or UNDIFFERENTIATED (CDISC SEX).")
    age_years: str = pa.Field(nullable=True, description="Age in years at reference date.")
    sledai_2k: str = pa.Field(nullable=True, description="SLEDAI-2K score, 0-105.")
    prior_immunosuppressant_failures: str = pa.Field(
        nullable=True, description="Number of immunosuppressants or biologics failed."
    )
    lupus_nephritis_class: str = pa.Field(nullable=True, description="ISN/RPS class, e.g. III, IV, IV+V, NONE.")
    egfr: str = pa.Field(nullable=True, description="eGFR in mL/min/1.73 m2.")
    active_cns_lupus: str = pa.Field(nullable=True, description="Active CNS lupus: true or false.")
    source_file: str = pa.Field(description="Input file the row came from.")
    source_row: int = pa.Field(ge=1, description="1-based data row in the input file.")

    class Config:
        strict = False


class OutcomeCandidate(pa.DataFrameModel):
    """An outcome row as read (training only), awaiting validation."""

    study_id: str = pa.Field(nullable=True, description="Study identifier.")
    subject_id: str = pa.Field(nullable=True, description="Subject identifier within the study.")
    responded: str = pa.Field(nullable=True, description="Whether the subject met the endpoint: true/false.")
    endpoint: str = pa.Field(nullable=True, description="Endpoint definition, e.g. DORIS remission at month 6.")
    source_file: str = pa.Field(description="Input file the row came from.")
    source_row: int = pa.Field(ge=1, description="1-based data row in the input file.")

    class Config:
        strict = False


#: Required columns of a visits file (one row per subject and assessment date).
VISIT_REQUIRED: tuple[str, ...] = ("study_id", "subject_id", "visit_date")
#: The built-in SLEDAI-2K descriptor columns, in the order of schemas/reference/sledai_2k.csv.
VISIT_DESCRIPTORS: tuple[str, ...] = tuple(d.item for d in load_descriptors())
#: Yes/no columns of a visits file besides the descriptors.
VISIT_FLAGS: tuple[str, ...] = (
    "antimalarial",
    "hemolytic_anemia",
    "gi_activity",
    "other_investigational_drug",
    "treatment_failure",
)
#: Optional columns of a visits file; a missing one is read as all empty (not assessed).
VISIT_OPTIONAL: tuple[str, ...] = (
    "visit",
    *VISIT_DESCRIPTORS,
    "pga",
    "prednisone_mg_day",
    *VISIT_FLAGS,
    "immunosuppressants",
)

_VISIT_FIELDS: dict[str, str] = {
    "study_id": "Study identifier.",
    "subject_id": "Subject identifier within the study.",
    "visit_date": "Assessment date (ISO 8601); one row per subject and date.",
    "visit": "Visit label as the site names it (e.g. Screening, Month 3); free text.",
    "pga": "Physician global assessment, 0-3.",
    "prednisone_mg_day": "Daily glucocorticoid dose, prednisolone-equivalent mg/day, >= 0.",
    "antimalarial": "On an antimalarial (hydroxychloroquine, ...): yes/no.",
    "hemolytic_anemia": "Hemolytic anemia present: yes/no.",
    "gi_activity": "Gastrointestinal lupus activity present: yes/no.",
    "other_investigational_drug": "On an investigational drug other than the study's CAR-T: yes/no.",
    "treatment_failure": "Rescue or non-protocol therapy started (treatment failure): yes/no.",
    "immunosuppressants": "Number of immunosuppressants ongoing, biologics included: a whole number >= 0.",
}


def _visit_candidate() -> type[pa.DataFrameModel]:
    """`VisitCandidate`: every visits column as read (text), described; descriptor columns not required.

    Built from the descriptor table so the 24 descriptor columns are declared once (in sledai_2k.csv). They are
    not required columns of the frame, so a user's descriptor table with other items still validates.
    """
    descriptors = {d.item: d for d in load_descriptors()}
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": "A visits row as read, awaiting validation (`immunostrat.followup.visits.validate_visits`).\n\n"
        "`study_id`, `subject_id` and `visit_date` are required: a bad one refuses the row, as do a date after "
        "as_of, a subject not in the subjects file and a conflicting or repeated visit. A bad value in any other "
        "field is quarantined as that field only: the visit is kept with it unknown.",
    }
    for column in (*VISIT_REQUIRED, *VISIT_OPTIONAL):
        if column in descriptors:
            d = descriptors[column]
            description = f"SLEDAI-2K descriptor ({d.kind}, weight {d.weight}): {d.description}."
            field = pa.Field(nullable=True, required=False, description=description)
        else:
            field = pa.Field(nullable=True, description=_VISIT_FIELDS[column])
        annotations[column] = str
        namespace[column] = field
    annotations["source_file"] = str
    namespace["source_file"] = pa.Field(description="Input file the row came from.")
    annotations["source_row"] = int
    namespace["source_row"] = pa.Field(ge=1, description="1-based data row in the input file.")
    namespace["__annotations__"] = annotations
    namespace["Config"] = type("Config", (), {"strict": False})
    return type("VisitCandidate", (pa.DataFrameModel,), namespace)


VisitCandidate = _visit_candidate()
