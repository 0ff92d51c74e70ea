"""Contracts for `immune_course.parquet` (one row per subject) and the relapse events (issue 13).

Written by `immunostrat.followup.immune_course.immune_course` and `relapse_events`; docs/immune_course.md explains
the rules. Every column is described; `_day` columns count days since infusion (day 0). Validate eagerly with
`validate_immune_course` / `validate_relapse_events`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandera.polars as pa
import polars as pl

from immunostrat.followup.immune_course import (
    B_CELL_STATUSES,
    END_CAUSES,
    FLARE_SEVERITIES,
    LICATS_SOURCES,
    REASONS,
    RELAPSE_KINDS,
)
from immunostrat.schemas.outputs import check_contract

__all__ = ["ImmuneCourse", "RelapseEvent", "validate_immune_course", "validate_relapse_events"]

_REASON_LIST = "; ".join(f"`{code}`: {text}" for code, text in REASONS.items())
_DAYS = {"unit": "days"}


def _day(description: str, ge: int = 1) -> Any:
    return pa.Field(nullable=True, ge=ge, description=description, metadata=_DAYS)


def _reason(what: str) -> Any:
    return pa.Field(
        nullable=True,
        isin=list(REASONS),
        description=f"Why {what} is null (null when it is set). Codes: see `b_cell_reason`.",
    )


class ImmuneCourse(pa.DataFrameModel):
    """The immune course after infusion of one subject (`immune_course.parquet`)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    day0: dt.date = pa.Field(
        nullable=True, description="Day 0: the infusion date, else first exposure; null when not infused."
    )
    course_end_day: pl.Int32 = _day(
        "Day of the earliest of death, discontinuation and re-treatment (may be before day 0); results after it "
        "are not used. Null when none is recorded or the subject is not infused.",
        ge=-100_000,
    )
    course_end_cause: str = pa.Field(
        nullable=True,
        isin=list(END_CAUSES),
        description="What ended the observed course on `course_end_day`: `death`, `retreatment` (a second "
        "infusion or another B-cell-depleting therapy) or `discontinued`; on one date in that order.",
    )
    b_cell_status: str = pa.Field(
        nullable=True,
        isin=list(B_CELL_STATUSES),
        description="`returned`; `aplasia_ongoing` (aplasia shown, no return shown or possible: censored at "
        "`b_cell_censored_day`); `never_aplastic`; `no_measurement`; `not_infused`. Null when undecidable "
        "readings leave aplasia or return open (`b_cell_reason` UNDECIDED).",
    )
    b_cell_aplasia_day: pl.Int32 = _day(
        "First post-infusion day with CD19+ B cells shown below the row's LLOQ, else below `b_cell_aplasia_below` "
        "(default 1 cells/uL); null when not shown."
    )
    b_cell_return_day: pl.Int32 = _day(
        "First of `b_cell_return_consecutive` (default 2) consecutive measurement days after aplasia with B cells "
        "shown at or above the return threshold; null unless `returned`."
    )
    b_cell_censored_day: pl.Int32 = _day(
        "Last B-cell measurement day of a shown aplasia without a shown return: the aplasia is known to last at "
        "least until then (censored); null otherwise."
    )
    b_cell_reason: str = pa.Field(
        nullable=True,
        isin=list(REASONS),
        description=f"Why the B-cell course is not assessable (null when it is). Codes: {_REASON_LIST}",
    )
    car_t_cells_peak: float = pa.Field(
        nullable=True,
        ge=0,
        description="Highest exact post-infusion CAR-T count by flow (`car_t_cells`).",
        metadata={"unit": "cells/uL"},
    )
    car_t_cells_peak_day: pl.Int32 = _day("Day of `car_t_cells_peak` (ties to the earlier day).")
    car_t_cells_reason: str = _reason("`car_t_cells_peak`")
    car_t_copies_peak: float = pa.Field(
        nullable=True,
        ge=0,
        description="Highest exact post-infusion CAR transgene copies by qPCR (`car_t_copies`).",
        metadata={"unit": "copies/ug DNA"},
    )
    car_t_copies_peak_day: pl.Int32 = _day("Day of `car_t_copies_peak` (ties to the earlier day).")
    car_t_copies_reason: str = _reason("`car_t_copies_peak`")
    anti_dsdna_baseline_positive: bool = pa.Field(
        nullable=True,
        description="anti-dsDNA positive at the treatment baseline (any result in the baseline visit's lookback "
        "window positive by the activity table's rule); null when unknown.",
    )
    anti_dsdna_baseline_reason: str = _reason("`anti_dsdna_baseline_positive`")
    anti_dsdna_seroconversion_day: pl.Int32 = _day(
        "First post-infusion day with anti-dsDNA shown negative after a positive treatment baseline."
    )
    anti_dsdna_seroconversion_reason: str = _reason("`anti_dsdna_seroconversion_day`")
    serological_relapse_day: pl.Int32 = _day("First day after seroconversion with anti-dsDNA shown positive again.")
    serological_relapse_reason: str = _reason("`serological_relapse_day`")
    complement_baseline_low: bool = pa.Field(
        nullable=True,
        description="C3 or C4 low (below the row's ref_low, else the configured LLN) at the treatment baseline; "
        "null when unknown.",
    )
    complement_normalization_day: pl.Int32 = _day(
        "First post-infusion date on which the latest C3 and C4 (at most `complement_pair_within_days` apart, "
        "default the same date) are both shown at or above their lower limits, after a low baseline."
    )
    complement_normalization_reason: str = _reason("`complement_normalization_day`")
    igg_nadir: float = pa.Field(
        nullable=True,
        ge=0,
        description="Lowest post-infusion IgG before IVIG (the result with the lowest upper bound; see "
        "`igg_nadir_censoring`).",
        metadata={"unit": "g/L"},
    )
    igg_nadir_censoring: str = pa.Field(
        nullable=True,
        isin=["<", "<="],
        description="`<` or `<=` when the nadir is a censored result (an interval reads as `<=` its top); null "
        "when exact.",
    )
    igg_nadir_day: pl.Int32 = _day("Day of `igg_nadir` (ties to the earlier day).")
    igg_below_lln: bool = pa.Field(
        nullable=True,
        description="Some post-infusion IgG before IVIG shown below its own ref_low; false when every one is "
        "shown not below; null when unknown (a missing limit, a censored result).",
    )
    igg_below_replacement_threshold: bool = pa.Field(
        nullable=True,
        description="Some post-infusion IgG before IVIG shown below `igg_replacement_below` (default 4.0 g/L = "
        "400 mg/dL); false when none can be; null when unknown.",
    )
    igg_reason: str = _reason("`igg_nadir`")
    first_flare_day: pl.Int32 = _day(
        "First post-infusion visit shown to flare: SLEDAI-2K up by at least `flare_rise_at_least` (default 3) "
        "on the comparator (default the previous visit), from the score bounds."
    )
    first_flare_severity: str = pa.Field(
        nullable=True,
        isin=list(FLARE_SEVERITIES),
        description="`severe` when that visit's SLEDAI-2K is above `severe_flare_above` (default 12), else "
        "`mild_moderate`; null without a flare or when the bounds straddle the limit.",
    )
    flare_b_cells_returned: bool = pa.Field(
        nullable=True,
        description="True when B cells had returned on or before the first flare day; false when the flare fell "
        "in a shown aplasia; null otherwise (no flare, never aplastic, undecided, after censoring).",
    )
    flare_reason: str = _reason("`first_flare_day`")
    licats_renal_involvement: bool = pa.Field(
        nullable=True,
        description="Renal involvement at the treatment baseline (the renal endpoints' population rule); null "
        "when unknown or not infused.",
    )
    licats_signal_day: pl.Int32 = _day(
        "First day (1 to `licats_window_days`, default 30, before B-cell return) with creatinine >= 1.5 x the "
        "treatment baseline or UPCR >= 1.5 x the baseline and >= 0.5 g/g (defaults), for subjects with renal "
        "involvement: a LICATS signal for review, not a diagnosis."
    )
    licats_signal_source: str = pa.Field(
        nullable=True,
        isin=list(LICATS_SOURCES),
        description="Which criterion was met on `licats_signal_day`: `creatinine`, `upcr` or both.",
    )
    licats_reason: str = _reason("`licats_signal_day`")

    @pa.dataframe_check(name="status_has_reason", error="a null or unassessable B-cell status has its reason")
    @classmethod
    def _status_has_reason(cls, data: pa.PolarsData) -> pl.LazyFrame:
        unassessable = pl.col("b_cell_status").is_null() | pl.col("b_cell_status").is_in(
            ["no_measurement", "not_infused"]
        )
        return data.lazyframe.select(unassessable == pl.col("b_cell_reason").is_not_null())

    @pa.dataframe_check(name="returned_has_return_day", error="`b_cell_return_day` is set exactly when returned")
    @classmethod
    def _returned_has_return_day(cls, data: pa.PolarsData) -> pl.LazyFrame:
        returned = pl.col("b_cell_status").eq_missing("returned")
        return data.lazyframe.select(returned == pl.col("b_cell_return_day").is_not_null())

    @pa.dataframe_check(name="return_after_aplasia", error="B cells return after aplasia")
    @classmethod
    def _return_after_aplasia(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("b_cell_return_day") > pl.col("b_cell_aplasia_day")).fill_null(True)
            & (pl.col("b_cell_censored_day") >= pl.col("b_cell_aplasia_day")).fill_null(True)
        )

    @pa.dataframe_check(name="day_or_reason", error="each event day is set, or its reason is")
    @classmethod
    def _day_or_reason(cls, data: pa.PolarsData) -> pl.LazyFrame:
        pairs = {
            "car_t_cells_peak": "car_t_cells_reason",
            "car_t_copies_peak": "car_t_copies_reason",
            "anti_dsdna_baseline_positive": "anti_dsdna_baseline_reason",
            "anti_dsdna_seroconversion_day": "anti_dsdna_seroconversion_reason",
            "serological_relapse_day": "serological_relapse_reason",
            "complement_normalization_day": "complement_normalization_reason",
            "igg_nadir": "igg_reason",
            "first_flare_day": "flare_reason",
            "licats_signal_day": "licats_reason",
        }
        return data.lazyframe.select(
            pl.all_horizontal(pl.col(v).is_null() != pl.col(r).is_null() for v, r in pairs.items())
        )

    class Config:
        title = "immune_course.parquet"
        strict = True
        unique = ("study_id", "subject_id")


class RelapseEvent(pa.DataFrameModel):
    """One relapse event of one subject: a serological relapse or a flare visit (`relapse_events`)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    kind: str = pa.Field(
        isin=list(RELAPSE_KINDS),
        description="`serological_relapse` (anti-dsDNA positive again after seroconversion) or `flare` (a "
        "post-infusion visit shown to flare).",
    )
    day: pl.Int32 = pa.Field(ge=1, description="Day of the event since infusion.", metadata=_DAYS)
    severity: str = pa.Field(
        nullable=True,
        isin=list(FLARE_SEVERITIES),
        description="Flares: `mild_moderate` or `severe` (null when the score bounds straddle the limit); null "
        "for serological relapses.",
    )

    class Config:
        title = "relapse_events"
        strict = True
        unique = ("study_id", "subject_id", "kind", "day")


def validate_immune_course(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate an immune-course table eagerly against `ImmuneCourse` and return it.

    Raises:
        OutputContractError: names the failing columns and checks, with example values and rows.
    """
    return check_contract("immune_course.parquet", ImmuneCourse, frame)


def validate_relapse_events(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate relapse events eagerly against `RelapseEvent` and return them.

    Raises:
        OutputContractError: names the failing columns and checks, with example values and rows.
    """
    return check_contract("relapse_events", RelapseEvent, frame)
