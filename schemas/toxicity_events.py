"""Contracts for the treatment-toxicity tables of issue 13: CRS and ICANS per assessment (`crs_icans.parquet`), the
worst per subject, the disagreements with the site's reported grades, and ICAHT per subject.

Written by `immunostrat.followup.crs_icans` and `immunostrat.followup.icaht`; the rules are in those modules'
docstrings. Validate with `immunostrat.schemas.outputs.check_contract(<table>, <model>, frame)`.
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from immunostrat.followup.crs_icans import CRS_REASONS, ICANS_DOMAINS, ICANS_REASONS, WORST_REASONS
from immunostrat.followup.icaht import REASONS as ICAHT_REASONS

__all__ = ["CrsIcans", "CrsIcansDisagreement", "CrsIcansWorst", "IcahtGrades"]


def _codes(table: dict[str, str]) -> str:
    return "; ".join(f"`{code}`: {text}" for code, text in table.items())


def _code_list(table: dict[str, str]) -> str:
    """A regex for a comma-separated list of the codes of `table`."""
    one = "(" + "|".join(table) + ")"
    return rf"^{one}(, {one})*$"


_ICANS_DRIVER = "(" + "|".join(ICANS_DOMAINS) + ")"
_UNIT = {"unit": "grade"}
_DAYS = {"unit": "days"}


class CrsIcans(pa.DataFrameModel):
    """CRS and ICANS (ASTCT 2019) of one assessment (`crs_icans.parquet`)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    assessed_at: dt.datetime = pa.Field(description="When the assessment was made, as the events file gives it.")
    days_since_infusion: pl.Int32 = pa.Field(
        nullable=True,
        description="Calendar date of `assessed_at` minus day 0, in days; null when the subject has no day 0.",
        metadata=_DAYS,
    )
    crs_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=4,
        description="CRS grade 0-4 (0 = no CRS, not null); null when the known inputs leave it undetermined "
        "(`crs_reason`). Fever >= 38 C not attributed to another cause; after anti-cytokine or antipyretic treatment "
        "fever is no longer required; the worse of hypotension and hypoxia.",
        metadata=_UNIT,
    )
    crs_grade_lower_bound: pl.Int8 = pa.Field(
        ge=0, le=4, description="The lowest CRS grade the known inputs allow.", metadata=_UNIT
    )
    crs_grade_upper_bound: pl.Int8 = pa.Field(
        ge=0, le=4, description="The highest CRS grade the known inputs allow.", metadata=_UNIT
    )
    crs_driver: str = pa.Field(
        nullable=True,
        isin=["none", "fever_only", "hypotension", "hypoxia", "hypotension+hypoxia"],
        description="What decided `crs_grade`: `none` (grade 0), `fever_only` (grade 1), else the domain(s) known "
        "at the grade, `hypotension`, `hypoxia` or `hypotension+hypoxia`. Null with the grade.",
    )
    crs_reason: str = pa.Field(
        nullable=True,
        str_matches=_code_list(CRS_REASONS),
        description=f"Why `crs_grade` is null, comma-separated; null when it is known. {_codes(CRS_REASONS)}",
    )
    icans_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=4,
        description="ICANS grade 0-4, the worst of the ICE score, consciousness, seizure, motor weakness and "
        "cerebral edema domains (0 needs all five known normal); null when undetermined (`icans_reason`).",
        metadata=_UNIT,
    )
    icans_grade_lower_bound: pl.Int8 = pa.Field(
        ge=0, le=4, description="The lowest ICANS grade the known domains allow.", metadata=_UNIT
    )
    icans_grade_upper_bound: pl.Int8 = pa.Field(
        ge=0, le=4, description="The highest ICANS grade the known domains allow.", metadata=_UNIT
    )
    icans_driver: str = pa.Field(
        nullable=True,
        str_matches=rf"^(none|{_ICANS_DRIVER}(\+{_ICANS_DRIVER})*)$",
        description="What decided `icans_grade`: `none` (grade 0), else the domains known at the grade in ASTCT "
        "table order joined by `+` (`ice`, `consciousness`, `seizure`, `motor`, `cerebral_edema`). Null with the "
        "grade.",
    )
    icans_reason: str = pa.Field(
        nullable=True,
        str_matches=_code_list(ICANS_REASONS),
        description=f"Why `icans_grade` is null, comma-separated; null when it is known. {_codes(ICANS_REASONS)}",
    )
    crs_grade_reported: pl.Int8 = pa.Field(
        nullable=True, ge=0, le=5, description="The site's reported CRS grade, as sent.", metadata=_UNIT
    )
    icans_grade_reported: pl.Int8 = pa.Field(
        nullable=True, ge=0, le=5, description="The site's reported ICANS grade, as sent.", metadata=_UNIT
    )
    source_file: str = pa.Field(nullable=True, description="The events file the assessment came from.")
    source_row: pl.Int64 = pa.Field(nullable=True, description="The assessment's row in `source_file`.")

    @pa.dataframe_check(name="bounds_ordered", error="lower bound <= upper bound, for CRS and ICANS")
    @classmethod
    def _bounds_ordered(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("crs_grade_lower_bound") <= pl.col("crs_grade_upper_bound"))
            & (pl.col("icans_grade_lower_bound") <= pl.col("icans_grade_upper_bound"))
        )

    @pa.dataframe_check(
        name="grade_where_bounds_meet", error="a grade is set exactly when its bounds meet, and then equals them"
    )
    @classmethod
    def _grade_where_bounds_meet(cls, data: pa.PolarsData) -> pl.LazyFrame:
        def ok(t: str) -> pl.Expr:
            lo, hi, grade = pl.col(f"{t}_grade_lower_bound"), pl.col(f"{t}_grade_upper_bound"), pl.col(f"{t}_grade")
            return pl.when(lo == hi).then(grade.eq_missing(lo)).otherwise(grade.is_null())

        return data.lazyframe.select(ok("crs") & ok("icans"))

    @pa.dataframe_check(
        name="driver_and_reason_follow_grade", error="driver set and reason null exactly when the grade is known"
    )
    @classmethod
    def _driver_and_reason_follow_grade(cls, data: pa.PolarsData) -> pl.LazyFrame:
        def ok(t: str) -> pl.Expr:
            known = pl.col(f"{t}_grade").is_not_null()
            return (pl.col(f"{t}_driver").is_not_null() == known) & (pl.col(f"{t}_reason").is_null() == known)

        return data.lazyframe.select(ok("crs") & ok("icans"))

    class Config:
        title = "crs_icans.parquet"
        strict = True


class CrsIcansWorst(pa.DataFrameModel):
    """The worst CRS and ICANS grade of one subject, with onset (columns of `toxicity.parquet`)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    crs_max_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=5,
        description="Worst CRS grade on or after day 0 (0-4), or 5 when death followed an ongoing grade >= 3 event "
        "within the configured window; null when undetermined (`crs_max_grade_reason`).",
        metadata=_UNIT,
    )
    crs_max_grade_lower_bound: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=5,
        description="The worst CRS grade known at least; null without assessments on or after day 0.",
        metadata=_UNIT,
    )
    crs_onset_day: pl.Int32 = pa.Field(
        nullable=True,
        ge=0,
        description="Days since infusion of the first assessment known to be CRS grade >= 1; null when none is, or "
        "when an assessment on an earlier day could be.",
        metadata=_DAYS,
    )
    crs_max_grade_reason: str = pa.Field(
        nullable=True,
        isin=list(WORST_REASONS),
        description=f"Why `crs_max_grade` is null; null when it is known. {_codes(WORST_REASONS)}",
    )
    icans_max_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=5,
        description="Worst ICANS grade on or after day 0 (0-4), or 5 as for CRS; null when undetermined.",
        metadata=_UNIT,
    )
    icans_max_grade_lower_bound: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=5,
        description="The worst ICANS grade known at least; null without assessments on or after day 0.",
        metadata=_UNIT,
    )
    icans_onset_day: pl.Int32 = pa.Field(
        nullable=True,
        ge=0,
        description="Days since infusion of the first assessment known to be ICANS grade >= 1; null when none is, "
        "or when an assessment on an earlier day could be.",
        metadata=_DAYS,
    )
    icans_max_grade_reason: str = pa.Field(
        nullable=True,
        isin=list(WORST_REASONS),
        description=f"Why `icans_max_grade` is null; null when it is known. {_codes(WORST_REASONS)}",
    )

    @pa.dataframe_check(name="reason_exactly_when_unknown", error="a reason is set exactly when the maximum is null")
    @classmethod
    def _reason_exactly_when_unknown(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("crs_max_grade").is_null() == pl.col("crs_max_grade_reason").is_not_null())
            & (pl.col("icans_max_grade").is_null() == pl.col("icans_max_grade_reason").is_not_null())
        )

    class Config:
        title = "crs_icans_worst"
        strict = True
        unique = ("study_id", "subject_id")


class CrsIcansDisagreement(pa.DataFrameModel):
    """An assessment whose reported CRS or ICANS grade the derived grade rules out."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    assessed_at: dt.datetime = pa.Field(description="When the assessment was made.")
    days_since_infusion: pl.Int32 = pa.Field(
        nullable=True, description="Days since infusion of the assessment.", metadata=_DAYS
    )
    toxicity: str = pa.Field(isin=["crs", "icans"], description="Which grade disagrees: `crs` or `icans`.")
    derived_grade: pl.Int8 = pa.Field(
        nullable=True, ge=0, le=4, description="The derived grade; null when undetermined.", metadata=_UNIT
    )
    derived_lower_bound: pl.Int8 = pa.Field(ge=0, le=4, description="Lowest derived grade.", metadata=_UNIT)
    derived_upper_bound: pl.Int8 = pa.Field(ge=0, le=4, description="Highest derived grade.", metadata=_UNIT)
    reported_grade: pl.Int8 = pa.Field(
        ge=0,
        le=5,
        description="The site's reported grade: outside the derived bounds (a certain disagreement).",
        metadata=_UNIT,
    )
    source_file: str = pa.Field(nullable=True, description="The events file the assessment came from.")
    source_row: pl.Int64 = pa.Field(nullable=True, description="The assessment's row in `source_file`.")

    class Config:
        title = "crs_icans_disagreements"
        strict = True


class IcahtGrades(pa.DataFrameModel):
    """ICAHT (EHA/EBMT 2023) and platelet companion grades of one infused subject (columns of `toxicity.parquet`)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    icaht_early_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=4,
        description="Early ICAHT (episodes starting on days 0-30, counted to their end, capped at day 100): ANC <= "
        "500/uL for 1-6 days 1, 7-13 days 2, 14-30 days 3, >= 31 days 4; ANC <= 100/uL for 7-13 days 3, >= 14 "
        "days 4. Null when not assessable.",
        metadata=_UNIT,
    )
    icaht_early_grade_reason: str = pa.Field(
        nullable=True, isin=list(ICAHT_REASONS), description=f"Why null. {_codes(ICAHT_REASONS)}"
    )
    icaht_late_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=4,
        description="Late ICAHT (days 31-100): ANC <= 1500, 1000, 500, 100/uL on at least the configured number of "
        "days (default 2) give grades 1-4. Null when not assessable.",
        metadata=_UNIT,
    )
    icaht_late_grade_reason: str = pa.Field(
        nullable=True, isin=list(ICAHT_REASONS), description=f"Why null. {_codes(ICAHT_REASONS)}"
    )
    platelet_icaht_early_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=4,
        description="Early platelet grade: platelets < 50 x10^9/L for 1-6 days 1, >= 7 days 2; < 20 for 1-13 days "
        "3, >= 14 days 4. Null when not assessable.",
        metadata=_UNIT,
    )
    platelet_icaht_early_grade_reason: str = pa.Field(
        nullable=True, isin=list(ICAHT_REASONS), description=f"Why null. {_codes(ICAHT_REASONS)}"
    )
    platelet_icaht_late_grade: pl.Int8 = pa.Field(
        nullable=True,
        ge=0,
        le=4,
        description="Late platelet grade (days 31-100): any < 100 x10^9/L 1, < 50 2, < 20 for 1-13 days 3, >= 14 "
        "days 4. Null when not assessable.",
        metadata=_UNIT,
    )
    platelet_icaht_late_grade_reason: str = pa.Field(
        nullable=True, isin=list(ICAHT_REASONS), description=f"Why null. {_codes(ICAHT_REASONS)}"
    )

    @pa.dataframe_check(name="reason_exactly_when_null", error="a reason is set exactly when its grade is null")
    @classmethod
    def _reason_exactly_when_null(cls, data: pa.PolarsData) -> pl.LazyFrame:
        names = ("icaht_early_grade", "icaht_late_grade", "platelet_icaht_early_grade", "platelet_icaht_late_grade")
        return data.lazyframe.select(
            pl.all_horizontal(pl.col(n).is_null() == pl.col(f"{n}_reason").is_not_null() for n in names)
        )

    class Config:
        title = "icaht"
        strict = True
        unique = ("study_id", "subject_id")
