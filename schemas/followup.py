"""Contracts for the follow-up tables: `activity.parquet` (SLEDAI-2K per visit).

The per-descriptor columns come from the SLEDAI descriptor table (`schemas/reference/sledai_2k.csv`, or a user's
table with the same columns): `activity_model` generates `item_<name>` and `item_<name>_source` for each
descriptor and `item_<name>_lab` for the lab-derivable ones, so there is still one `DataFrameModel` with every
column described. Validate with `immunostrat.schemas.outputs.check_contract("activity.parquet", Activity, frame)`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pandera.polars as pa
import polars as pl

from immunostrat.followup.activity import LAB_DERIVABLE, LAB_SUFFIX, SOURCE_SUFFIX, SOURCES, item
from immunostrat.followup.sledai import Descriptor, load_descriptors

__all__ = ["Activity", "activity_model"]

_KIND = {
    "clinical": "clinical descriptor (reported by the site)",
    "laboratory": "laboratory descriptor",
    "serology": "serology descriptor",
}


def _col(dtype: Any, description: str, unit: str | None = None, nullable: bool = True, **checks: Any) -> Any:
    metadata = {"unit": unit} if unit else None
    return dtype, pa.Field(nullable=nullable, description=description, metadata=metadata, **checks)


def _visit_columns(max_score: int, n_items: int) -> dict[str, Any]:
    score = {"min_value": 0, "max_value": max_score}
    return {
        "study_id": _col(pl.String, "Study identifier.", nullable=False, str_length={"min_value": 1}),
        "subject_id": _col(
            pl.String, "Subject identifier within the study.", nullable=False, str_length={"min_value": 1}
        ),
        "visit": _col(pl.String, "Visit label, as sent; null when not sent."),
        "visit_date": _col(pl.Date, "Assessment date of the visit.", nullable=False),
        "days_since_infusion": _col(
            pl.Int32,
            "`visit_date` minus day 0 (the infusion date, else first exposure), in days; negative before day 0, "
            "null when the subject has no day 0.",
            "days",
        ),
        "sledai_2k": _col(
            pl.Int64,
            "SLEDAI-2K: the weighted sum of the present descriptors, only when every descriptor is known; null "
            "otherwise (see `sledai_2k_known`, `sledai_2k_max`).",
            "points",
            in_range=score,
        ),
        "sledai_2k_known": _col(
            pl.Int64,
            "Weighted sum of the descriptors known present: a lower bound of SLEDAI-2K.",
            "points",
            nullable=False,
            in_range=score,
        ),
        "sledai_2k_max": _col(
            pl.Int64,
            "Weighted sum with unknown descriptors counted as present: an upper bound of SLEDAI-2K.",
            "points",
            nullable=False,
            in_range=score,
        ),
        "sledai_items_missing": _col(
            pl.Int64,
            "Number of descriptors that are unknown (`item_<name>` null).",
            "count",
            nullable=False,
            in_range={"min_value": 0, "max_value": n_items},
        ),
        "clinical_sledai_2k": _col(
            pl.Int64,
            "SLEDAI-2K without the two serology descriptors (low complement, increased DNA binding), as DORIS "
            "uses it; null unless every other descriptor is known. A protocol's own exclusions are a separate "
            "score.",
            "points",
            in_range=score,
        ),
    }


def _item_columns(descriptors: tuple[Descriptor, ...]) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for d in descriptors:
        name = item(d.item)
        what = f"{d.item.replace('_', ' ').capitalize()} ({_KIND[d.kind]}, weight {d.weight}: {d.description})"
        derivable = d.item in LAB_DERIVABLE
        columns[name] = _col(
            pl.Boolean,
            f"{what}: true present, false absent, null unknown (not assessed"
            + (", and no lab value decided it)." if derivable else ")."),
        )
        columns[name + SOURCE_SUFFIX] = _col(
            pl.String,
            f"Where `{name}` came from: "
            + (
                "`lab` (lab rows in the lookback window), `reported` (the site's item) or `missing` (unknown); "
                "the disagreement rule and, for thrombocytopenia and leukopenia after first exposure, the "
                "hematology rule decide between lab and reported (run.json parameters)."
                if derivable
                else "`reported` (the site's item) or `missing` (unknown)."
            ),
            nullable=False,
            isin=list(SOURCES) if derivable else ["reported", "missing"],
        )
        if derivable:
            columns[name + LAB_SUFFIX] = _col(
                pl.Boolean,
                f"`{name}` as derived from lab rows dated on the visit day or in the lookback window before it: "
                "null when no lab row decided it. Kept for review whichever value `"
                f"{name}` took.",
            )
    return columns


_CARRIED_COLUMNS = {
    "pga": _col(
        pl.Float64,
        "Physician global assessment (0-3), as reported.",
        "points",
        in_range={"min_value": 0, "max_value": 3},
    ),
    "prednisone_mg_day": _col(pl.Float64, "Glucocorticoid dose, prednisolone-equivalent, as reported.", "mg/day", ge=0),
    "antimalarial": _col(pl.Boolean, "On an antimalarial, as reported."),
    "hemolytic_anemia": _col(pl.Boolean, "Hemolytic anemia present, as reported."),
    "gi_activity": _col(pl.Boolean, "Gastrointestinal lupus activity present, as reported."),
    "other_investigational_drug": _col(
        pl.Boolean, "On an investigational drug other than the study's CAR-T, as reported."
    ),
    "treatment_failure": _col(pl.Boolean, "Rescue or non-protocol therapy started, as reported."),
    "immunosuppressants": _col(
        pl.Int64, "Number of ongoing immunosuppressants (biologics included), as reported.", "count", ge=0
    ),
}
_LINEAGE_COLUMNS = {
    "source_file": (
        pl.String,
        pa.Field(nullable=False, required=False, description="Visits file the visit came from, as given."),
    ),
    "source_row": (
        pl.Int64,
        pa.Field(nullable=False, required=False, ge=1, description="1-based data row of the visit in `source_file`."),
    ),
}


def _checks(descriptors: tuple[Descriptor, ...]) -> dict[str, Any]:
    """Row checks tying the scores to the descriptor columns."""

    def sources_match(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        ok = [
            (pl.col(item(d.item)).is_null() == (pl.col(item(d.item) + SOURCE_SUFFIX) == "missing")) for d in descriptors
        ]
        return data.lazyframe.select(pl.all_horizontal(ok))

    def scores_add_up(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        present = pl.sum_horizontal(
            [pl.col(item(d.item)).fill_null(False).cast(pl.Int64) * d.weight for d in descriptors]
        )
        unknown = pl.sum_horizontal([pl.col(item(d.item)).is_null().cast(pl.Int64) for d in descriptors])
        ceiling = pl.sum_horizontal(
            [pl.col(item(d.item)).fill_null(True).cast(pl.Int64) * d.weight for d in descriptors]
        )
        total = pl.col("sledai_2k").eq_missing(pl.when(unknown == 0).then(present))
        return data.lazyframe.select(
            total
            & (pl.col("sledai_2k_known") == present)
            & (pl.col("sledai_2k_max") == ceiling)
            & (pl.col("sledai_items_missing") == unknown)
        )

    return {
        "_sources_match": pa.dataframe_check(
            name="sources_match_items", error="`item_<name>_source` is `missing` exactly when `item_<name>` is null"
        )(sources_match),
        "_scores_add_up": pa.dataframe_check(
            name="scores_add_up",
            error="`sledai_2k_known`, `sledai_2k_max`, `sledai_items_missing` and `sledai_2k` follow from the "
            "`item_<name>` columns and the descriptor weights",
        )(scores_add_up),
    }


class _ActivityConfig:
    title = "activity.parquet"
    strict = True
    unique = ("study_id", "subject_id", "visit_date")


@cache
def _activity_model(descriptors: tuple[Descriptor, ...], name: str) -> type[pa.DataFrameModel]:
    max_score = sum(d.weight for d in descriptors)
    columns = {
        **_visit_columns(max_score, len(descriptors)),
        **_item_columns(descriptors),
        **_CARRIED_COLUMNS,
        **_LINEAGE_COLUMNS,
    }
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__doc__": "One row per accepted visit: SLEDAI-2K with its bounds, every descriptor with its source, and "
        "the visit's treatment fields (`activity.parquet`).",
        "Config": _ActivityConfig,
        **{column: field for column, (_, field) in columns.items()},
        **_checks(descriptors),
        "__annotations__": {column: dtype for column, (dtype, _) in columns.items()},
    }
    return type(name, (pa.DataFrameModel,), namespace)


def activity_model(descriptors: tuple[Descriptor, ...] | None = None) -> type[pa.DataFrameModel]:
    """The activity contract for a descriptor table (the built-in SLEDAI-2K one when None); cached."""
    if descriptors is None:
        return Activity
    builtin = descriptors == load_descriptors()
    return _activity_model(descriptors, "Activity" if builtin else "ActivityCustomDescriptors")


Activity = _activity_model(load_descriptors(), "Activity")
