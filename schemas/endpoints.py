"""Contract for `endpoints.parquet`: one row per subject, endpoint and landmark (issue 12).

Written by `immunostrat.followup.endpoints.endpoints`; docs/endpoints.md explains the rules behind each reason
code. As the other output contracts, every column is described, and the frame is validated eagerly
(`validate_endpoints`).
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from immunostrat.config.endpoints import ENDPOINT_NAMES
from immunostrat.followup.endpoints import NOT_ASSESSABLE_REASONS, NOT_MET_REASONS, REASONS
from immunostrat.schemas.outputs import check_contract

__all__ = [
    "FOLLOW_UP_SCHEMA_VERSION",
    "EndpointRow",
    "sponsor_endpoint_schema",
    "validate_endpoints",
    "validate_sponsor_endpoints",
]

#: Version of the sponsor follow-up snapshot's tables (the endpoint rows and rates); see docs/schema-changelog.md.
FOLLOW_UP_SCHEMA_VERSION = "1.0.0"
#: Columns of endpoints.parquet a sponsor never receives: the subject id (replaced by its pseudonym) and dates.
SPONSOR_WITHHELD: tuple[str, ...] = ("subject_id", "visit_date")

_REASON_LIST = "; ".join(f"`{code}`: {text}" for code, text in REASONS.items())
_WITH_DETAIL = ("INPUT_UNKNOWN", "PENDING")


class EndpointRow(pa.DataFrameModel):
    """One endpoint of one subject at one landmark: met, not met or not assessable, with its reason
    (`endpoints.parquet`)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study.")
    endpoint: str = pa.Field(
        isin=list(ENDPOINT_NAMES),
        description="Endpoint: `doris_remission` (DORIS 2021), `drug_free_doris_remission`, `lldas`, `msri4` "
        "(modified SRI-4), `complete_renal_response` or `perr` (BLISS-LN). Thresholds: the endpoint definition "
        "of `definition_version` (docs/endpoints.md).",
    )
    definition_version: str = pa.Field(
        str_length={"min_value": 1}, description="Version of the endpoint definition the row was derived with."
    )
    landmark: str = pa.Field(
        str_matches=r"^[a-z][a-z0-9_]*$", description="Landmark name from the definition (e.g. `month_6`)."
    )
    target_day: pl.Int32 = pa.Field(
        ge=1, description="The landmark's target day since infusion (day 0 = infusion).", metadata={"unit": "days"}
    )
    visit_date: dt.date = pa.Field(
        nullable=True,
        description="Date of the landmark visit: the visit closest to the target day inside the window (edges "
        "included; a tie goes to the earlier visit), whatever its completeness. Null when there is none.",
    )
    visit_day: pl.Int32 = pa.Field(
        nullable=True,
        ge=1,
        description="Days since infusion of the landmark visit; null when there is none.",
        metadata={"unit": "days"},
    )
    met: bool = pa.Field(
        nullable=True,
        description="Whether the endpoint was met: true only when every condition is known true; false when one "
        "is known false or an intercurrent event came first; null when not assessable (see `reason`).",
    )
    reason: str = pa.Field(isin=list(REASONS), description=f"Why `met` is what it is. {_REASON_LIST}")
    reason_detail: str = pa.Field(
        nullable=True,
        description="For `INPUT_UNKNOWN`, the unknown inputs the result depends on, comma-separated (e.g. `pga, "
        "prednisone_mg_day`; `baseline ...` for the treatment baseline, `previous ...` for the previous visit); "
        "for `PENDING`, `final on YYYY-MM-DD`, the first date the landmark visit can no longer change. Null "
        "otherwise.",
    )

    @pa.dataframe_check(
        name="met_follows_reason",
        error="`met` is set for EVALUATED, false for an intercurrent event, and null for a not-assessable reason",
    )
    @classmethod
    def _met_follows_reason(cls, data: pa.PolarsData) -> pl.LazyFrame:
        reason, met = pl.col("reason"), pl.col("met")
        return data.lazyframe.select(
            pl.when(reason == "EVALUATED")
            .then(met.is_not_null())
            .when(reason.is_in(list(NOT_MET_REASONS)))
            .then(met.eq_missing(False))
            .when(reason.is_in(list(NOT_ASSESSABLE_REASONS)))
            .then(met.is_null())
            .otherwise(False)
        )

    @pa.dataframe_check(
        name="visit_date_and_day_together", error="`visit_date` and `visit_day` are both set or both null"
    )
    @classmethod
    def _visit_date_and_day_together(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("visit_date").is_null() == pl.col("visit_day").is_null())

    @pa.dataframe_check(name="evaluated_at_a_visit", error="an EVALUATED row has its landmark visit")
    @classmethod
    def _evaluated_at_a_visit(cls, data: pa.PolarsData) -> pl.LazyFrame:
        # On visit_day (set exactly with visit_date), so the sponsor table, which has no dates, keeps the check.
        return data.lazyframe.select((pl.col("reason") != "EVALUATED") | pl.col("visit_day").is_not_null())

    @pa.dataframe_check(
        name="detail_where_documented", error="`reason_detail` is set exactly for INPUT_UNKNOWN and PENDING"
    )
    @classmethod
    def _detail_where_documented(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            pl.col("reason").is_in(list(_WITH_DETAIL)) == pl.col("reason_detail").is_not_null()
        )

    class Config:
        title = "endpoints.parquet"
        strict = True
        unique = ("study_id", "subject_id", "endpoint", "landmark")


def validate_endpoints(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate an endpoint table eagerly against `EndpointRow` and return it.

    Raises:
        OutputContractError: names the failing columns and checks, with example values and rows.
    """
    return check_contract("endpoints.parquet", EndpointRow, frame)


def sponsor_endpoint_schema() -> pa.DataFrameSchema:
    """The sponsor's endpoint rows: `EndpointRow` without `subject_id` and `visit_date`, with `subject_pseudonym`.

    Study days (`target_day`, `visit_day`) stay; every other column and check is `EndpointRow`'s, so the two
    contracts cannot drift apart.
    """
    schema = EndpointRow.to_schema().remove_columns(list(SPONSOR_WITHHELD))
    schema = schema.add_columns(
        {
            "subject_pseudonym": pa.Column(
                pl.String,
                checks=pa.Check.str_length(32, 32),
                description="Pseudonym of the subject: HMAC-SHA256 of (study_id, subject_id) under the project key, "
                "the first 32 hex digits; the same pseudonym as in the stratify snapshot under the same key.",
            )
        }
    )
    schema.checks = [c for c in schema.checks if c.name != "visit_date_and_day_together"]
    schema.unique = ["study_id", "subject_pseudonym", "endpoint", "landmark"]
    schema.title = "sponsor endpoints"
    schema.name = "SponsorEndpointRow"
    return schema


def validate_sponsor_endpoints(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate the sponsor endpoint rows eagerly and return them (OutputContractError names what failed)."""
    return check_contract("sponsor endpoints", sponsor_endpoint_schema(), frame)
