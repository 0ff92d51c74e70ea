"""Contracts for the CTCAE v5 laboratory grades (issue 13): `lab_grades.parquet`, the worst treatment-emergent
grade per subject and term (long), and its wide form (one `ctcae_<term_slug>_worst_grade` column per term, for
`toxicity.parquet`).

Written by `immunostrat.followup.lab_grades` (`grade_labs`, `worst_emergent_grades`, `worst_grades_wide`);
docs/toxicity.md explains the rules behind each reason code. Every column is described; validate eagerly with
`validate_lab_grades`, `validate_worst_grades`, `validate_worst_grades_wide`.
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from immunostrat.followup.lab_grades import REASONS, WORST_REASONS
from immunostrat.schemas.outputs import check_contract

__all__ = [
    "LabGradeRow",
    "WorstEmergentGrade",
    "WorstGradesWide",
    "validate_lab_grades",
    "validate_worst_grades",
    "validate_worst_grades_wide",
]

_REASON_LIST = "; ".join(f"`{code}`: {text}" for code, text in REASONS.items())
_WORST_REASON_LIST = "; ".join(f"`{code}`: {text}" for code, text in WORST_REASONS.items())
_GRADE_RANGE = {"min_value": 0, "max_value": 4}


class LabGradeRow(pa.DataFrameModel):
    """The CTCAE v5 grade of one lab measurement for one term (`lab_grades.parquet`)."""

    source_file: str = pa.Field(str_length={"min_value": 1}, description="Input file the measurement came from.")
    source_row: int = pa.Field(ge=1, description="1-based data row in `source_file` (header excluded).")
    term: str = pa.Field(
        str_length={"min_value": 1},
        description="CTCAE term as the criteria table names it (e.g. `Neutrophil count decreased`, `Anemia`).",
    )
    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    analyte: str = pa.Field(str_length={"min_value": 1}, description="Canonical analyte the term grades.")
    collected_date: dt.date = pa.Field(description="Collection date of the measurement.")
    days_since_infusion: pl.Int32 = pa.Field(
        nullable=True,
        description="`collected_date` minus day 0 (the infusion date, else first exposure), in days; negative "
        "before day 0, null when the subject has no day 0.",
        metadata={"unit": "days"},
    )
    direction: str = pa.Field(
        isin=["low", "high"], description="Whether the term grades low values (`low`) or high values (`high`)."
    )
    grade: pl.Int8 = pa.Field(
        nullable=True,
        in_range=_GRADE_RANGE,
        description="CTCAE grade: 0 when no criterion is met, 1-4 the highest grade met with every higher grade "
        "known not met; null when not gradable (see `reason`).",
    )
    reason: str = pa.Field(isin=list(REASONS), description=f"Why `grade` is what it is. {_REASON_LIST}")
    baseline_grade: pl.Int8 = pa.Field(
        nullable=True,
        in_range=_GRADE_RANGE,
        description="Grade of the subject's treatment-baseline value of the analyte for this term (the last value "
        "on or before first exposure within the baseline window); null without one or when it is not gradable.",
    )

    @pa.dataframe_check(name="grade_follows_reason", error="`grade` is set exactly when `reason` is GRADED")
    @classmethod
    def _grade_follows_reason(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("reason") == "GRADED") == pl.col("grade").is_not_null())

    class Config:
        title = "lab_grades.parquet"
        strict = True
        unique = ("source_file", "source_row", "term")


class WorstEmergentGrade(pa.DataFrameModel):
    """The worst post-infusion treatment-emergent CTCAE grade of one subject for one term."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    term: str = pa.Field(str_length={"min_value": 1}, description="CTCAE term as the criteria table names it.")
    baseline_grade: pl.Int8 = pa.Field(
        nullable=True, in_range=_GRADE_RANGE, description="Grade of the treatment-baseline value; null if unknown."
    )
    worst_grade: pl.Int8 = pa.Field(
        nullable=True,
        in_range=_GRADE_RANGE,
        description="Highest grade among post-infusion measurements (from `emergent_from_day`, default day 1), "
        "emergent or not; null without a gradable one.",
    )
    worst_emergent_grade: pl.Int8 = pa.Field(
        nullable=True,
        in_range=_GRADE_RANGE,
        description="Highest post-infusion grade worse than `baseline_grade` (treatment-emergent); 0 when none is; "
        "null unless `reason` is EVALUATED.",
    )
    worst_emergent_day: pl.Int32 = pa.Field(
        nullable=True,
        description="First day since infusion a measurement reached `worst_emergent_grade`; null when that is 0 "
        "or null.",
        metadata={"unit": "days"},
    )
    post_infusion_measurements: pl.Int32 = pa.Field(
        ge=0, description="Measurements from `emergent_from_day` on (gradable or not)."
    )
    post_infusion_not_gradable: pl.Int32 = pa.Field(
        ge=0, description="Of those, measurements that could not be graded (`grade` null in lab_grades.parquet)."
    )
    reason: str = pa.Field(
        isin=list(WORST_REASONS), description=f"Why `worst_emergent_grade` is what it is. {_WORST_REASON_LIST}"
    )

    @pa.dataframe_check(
        name="worst_follows_reason", error="`worst_emergent_grade` is set exactly when `reason` is EVALUATED"
    )
    @classmethod
    def _worst_follows_reason(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("reason") == "EVALUATED") == pl.col("worst_emergent_grade").is_not_null())

    class Config:
        title = "worst treatment-emergent CTCAE grades"
        strict = True
        unique = ("study_id", "subject_id", "term")


class WorstGradesWide(pa.DataFrameModel):
    """One subject's worst treatment-emergent CTCAE grade per term, one column per term (for toxicity.parquet)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    ctcae_worst_grade: pl.Int8 = pa.Field(
        nullable=True,
        regex=True,
        alias=r"^ctcae_[a-z0-9_]+_worst_grade$",
        in_range=_GRADE_RANGE,
        description="Worst treatment-emergent CTCAE grade of one term (`ctcae_<term_slug>_worst_grade`, e.g. "
        "`ctcae_neutrophil_count_decreased_worst_grade`): `worst_emergent_grade`; null when not known.",
    )

    class Config:
        title = "worst treatment-emergent CTCAE grades, wide"
        strict = True
        unique = ("study_id", "subject_id")


def validate_lab_grades(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate a lab-grade table eagerly against `LabGradeRow` and return it (OutputContractError on failure)."""
    return check_contract("lab_grades.parquet", LabGradeRow, frame)


def validate_worst_grades(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate `worst_emergent_grades`'s table against `WorstEmergentGrade` and return it."""
    return check_contract("worst CTCAE grades", WorstEmergentGrade, frame)


def validate_worst_grades_wide(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate `worst_grades_wide`'s table against `WorstGradesWide` and return it."""
    return check_contract("worst CTCAE grades (wide)", WorstGradesWide, frame)
