"""Contracts for the tables immunostrat validates row by row: lab candidates and subjects.

The column declarations here are the data contract (types, descriptions). The row rules, each named by
the reason code a failing row is quarantined with, are attached as pandera dataframe checks by
`immunostrat.stages.validate`, so every rule is really run by pandera and its failures carry row indices.
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl


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
    source_file: str = pa.Field(description="Input file the row came from.")
    source_row: int = pa.Field(ge=1, description="1-based data row in the input file (header excluded).")
    analyte_reported: str = pa.Field(nullable=True, description="Panel analyte the reported test maps to.")
    analyte: str = pa.Field(nullable=True, description="Panel analyte after unit conversion (e.g. a % form).")
    censoring: str = pa.Field(nullable=True, description="Censoring comparator (<, <=, >, >=) or null.")
    value_reported: float = pa.Field(nullable=True, description="Numeric result in the reported unit.")
    value: float = pa.Field(nullable=True, description="Numeric result in the canonical unit.")
    ref_low_value: float = pa.Field(nullable=True, description="Reference lower limit, canonical unit.")
    ref_high_value: float = pa.Field(nullable=True, description="Reference upper limit, canonical unit.")
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
    failures, nephritis class, eGFR, CNS lupus) is quarantined as that field only: the subject is kept with it
    empty (`immunostrat.stages.validate.subject_rules`).
    """

    study_id: str = pa.Field(nullable=True, description="Study identifier.")
    subject_id: str = pa.Field(nullable=True, description="Subject identifier within the study.")
    site_id: str = pa.Field(nullable=True, description="Site identifier (optional).")
    reference_date: str = pa.Field(nullable=True, description="Screening/baseline anchor date (ISO 8601).")
    first_exposure_date: str = pa.Field(
        nullable=True, description="Lymphodepletion or infusion date: nothing on or after it is baseline."
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
