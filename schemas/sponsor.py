"""Contract of the sponsor dataset: the pseudonymised strata table that leaves the team (`RUN/sponsor/data/`).

One pandera `DataFrameModel`, built from the strata contract (`immunostrat.schemas.outputs.strata_model`) by a
fixed rule per column, so the two cannot drift apart:

- kept as is (same type, checks, unit and description): clinical fields, baseline values and their censoring,
  derived flags, eligibility, responder score, model id and run id;
- transformed: `subject_id` becomes `subject_pseudonym` (keyed hash), `site_id` becomes `site` (pseudonymised,
  kept or dropped, as configured), `age_years` becomes `age_band`, every calendar date becomes a study day
  counted from the reference date (`A_date` -> `A_day`, `first_exposure_date` -> `first_exposure_day`), and with
  `publish.dates: shift` the reference date is published moved by a keyed per-subject offset;
- withheld: anything else, notably the free-text `anti_dsdna_method`. The table is built by selecting the
  columns of this contract, so a column added to strata later is withheld until it is declared here.

`SPONSOR_SCHEMA_VERSION` follows semantic versioning and changes with any change to the published columns
(major on a breaking change: a column removed or renamed, a type changed, nulls newly allowed, allowed values
extended or a unit changed). `immunostrat.reporting.datadict` refuses to regenerate the dictionary when the columns
changed and the version did not; docs/schema-changelog.md records every version.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import pandera.polars as pa
import polars as pl

from immunostrat.config.features import DEFAULT_FEATURES, NOT_ASSESSABLE, FeatureSpec
from immunostrat.schemas.outputs import (
    _FINITE,
    PANEL,
    OutputContractError,
    _dated_before,
    _is_finite,
    _is_upper,
    _items_in,
    _values_dated,
    build_model,
    check_contract,
    strata_model,
)
from immunostrat.stages.baseline import CORE_ANALYTES

__all__ = [
    "AGE_BAND_PATTERN",
    "DAY_COLUMNS",
    "PARTITION_COLUMN",
    "SPONSOR_SCHEMA_VERSION",
    "SPONSOR_TABLE",
    "WITHHELD",
    "OutputContractError",
    "Sponsor",
    "sponsor_model",
    "validate_sponsor",
]

#: Version of the sponsor dataset contract (semantic versioning; see docs/schema-changelog.md).
SPONSOR_SCHEMA_VERSION = "1.2.0"
#: Name of the table in the data dictionary and in error messages.
SPONSOR_TABLE = "sponsor dataset"
#: Hive partition column: `study_id=<value>` folders; the data files themselves do not hold it.
PARTITION_COLUMN = "study_id"
#: Banded ages look like `<18`, `18-29` or `65+`.
AGE_BAND_PATTERN = r"^(<\d+|\d+-\d+|\d+\+)$"
#: Strata date column -> the sponsor column holding its study day.
DAY_COLUMNS: dict[str, str] = {
    "first_exposure_date": "first_exposure_day",
    **{f"{a}_date": f"{a}_day" for a in PANEL},
}
#: Strata columns that are not published as they are, and what sponsors get instead (rendered in the docs).
WITHHELD: dict[str, str] = {
    "subject_id": "Direct identifier: replaced by `subject_pseudonym` (keyed hash).",
    "site_id": "Replaced by `site`: pseudonymised (default), kept or dropped (`publish.site`).",
    "age_years": "Exact age: replaced by `age_band` (`publish.age_bands`).",
    "reference_date": "Calendar date: every date is published as days from it (`*_day`); with `publish.dates: "
    "shift` it is published moved by a keyed per-subject offset (`reference_date_shifted`).",
    "first_exposure_date": "Calendar date: replaced by `first_exposure_day`.",
    "<analyte>_date": "Calendar dates: replaced by `<analyte>_day`.",
    "anti_dsdna_method": "Free text (assay name as written by the lab).",
}
_DROPPED = {"anti_dsdna_method"}

# --------------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------------

# The column checks are the same as the run outputs' (one definition, in schemas/outputs.py).

#: Custom (non built-in) checks of the strata contract that this module re-creates on kept columns.
_CUSTOM_CHECKS = ("is_finite", "is_upper", "items_in")


def _kept_field(name: str, column: Any) -> tuple[Any, Any]:
    """(polars dtype, pa.Field) equal to a strata column: same nullability, built-in checks, unit, description."""
    kwargs: dict[str, Any] = {
        "nullable": bool(column.nullable),
        "description": column.description,
        "metadata": column.metadata,
    }
    for check in column.checks:
        stats = check.statistics or {}
        if check.name == "isin":
            kwargs["isin"] = list(stats["allowed_values"])
        elif check.name == "in_range":
            kwargs["in_range"] = {k: stats[k] for k in ("min_value", "max_value", "include_min", "include_max")}
        elif check.name == "str_length":
            kwargs["str_length"] = {k: stats[k] for k in ("min_value", "max_value") if stats.get(k) is not None}
        elif check.name == "str_matches":
            kwargs["str_matches"] = stats["pattern"]
        elif check.name == "greater_than_or_equal_to":
            kwargs["ge"] = stats["min_value"]
        elif check.name not in _CUSTOM_CHECKS:
            raise TypeError(
                f"strata column {name!r} has check {check.name!r}, which schemas/sponsor.py does not carry over; "
                "add it to _kept_field so that the sponsor contract keeps it"
            )
    if column.regex:
        kwargs.update(regex=True, alias=name)
    return column.dtype.type, pa.Field(**kwargs)


def _new(dtype: Any, description: str, *, unit: str | None = None, required: bool = True, **checks: Any) -> Any:
    return dtype, pa.Field(
        nullable=True,
        required=required,
        description=description,
        metadata={"unit": unit} if unit else None,
        **checks,
    )


def _transformed(name: str) -> dict[str, Any]:
    """Sponsor column(s) replacing one strata column (empty when withheld, None-free)."""
    if name == "subject_id":
        return {
            "subject_pseudonym": (
                pl.String,
                pa.Field(
                    nullable=False,
                    str_matches=r"^[0-9a-f]{32}$",
                    description="Keyed pseudonym of the subject: the first 32 hex digits of HMAC-SHA256 of "
                    "(study_id, subject_id) under the project key (manifest `privacy.pseudonym.key_id`). The same "
                    "subject keeps it in every run published with the same key; only the key holder can link it "
                    "back.",
                ),
            )
        }
    if name == "site_id":
        return {
            "site": _new(
                pl.String,
                "The subject's site as configured (manifest `privacy.site`): `pseudonymise` (default) gives `site-` "
                "and 10 hex digits of HMAC-SHA256 of (study_id, site_id) under the project key; `keep` gives the "
                "site id as sent; `drop` leaves it null. Null when not sent.",
            )
        }
    if name == "age_years":
        return {
            "age_band": _new(
                pl.String,
                "Age at the reference date in bands set by `publish.age_bands` (manifest `privacy.age_bands`), "
                "e.g. `<18`, `18-29`, `65+`; a band `a-b` holds ages from a up to b inclusive (whole years). Null "
                "when age was not sent.",
                unit="years",
                str_matches=AGE_BAND_PATTERN,
            )
        }
    if name == "reference_date":
        return {
            "reference_date_shifted": _new(
                pl.Date,
                "Present only with `publish.dates: shift`: the reference date moved by a per-subject offset "
                "drawn from the project key, uniform within +/- `publish.max_shift_days` (manifest "
                "`privacy.max_shift_days`). Every `*_day` column counts from the reference date, so shifting it "
                "shifts every date of the subject by the same offset and keeps intervals exact.",
                required=False,
            )
        }
    if name in DAY_COLUMNS:
        day = DAY_COLUMNS[name]
        if name == "first_exposure_date":
            text = (
                "Study day of first exposure (lymphodepletion or infusion): days from the reference date to "
                "`first_exposure_date` (positive = after). Null when not sent."
            )
        else:
            analyte = name.removesuffix("_date")
            text = (
                f"Study day of the baseline `{analyte}`: days from the reference date to its collection date "
                "(0 = the same day, negative = before). Null when there is no baseline value."
            )
        return {day: _new(pl.Int32, text + " Unlike CDISC --DY, day 0 exists.", unit="days")}
    return {}


def _checks(features: Sequence[FeatureSpec], float_columns: list[str]) -> dict[str, Any]:
    value_with_day = _values_dated("_day")
    before_exposure = _dated_before("_day", "first_exposure_day")

    def group_matches(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("responder_group") == NOT_ASSESSABLE) == pl.col("responder_probability").is_null()
        )

    names = [f.name for f in features]
    return {
        "_finite": pa.check(*float_columns, name="is_finite", error=_FINITE)(_is_finite),
        "_upper": pa.check("ifn_method", name="is_upper", error="upper-case")(_is_upper),
        "_missing_known": pa.check(
            "missing_analytes", name="items_in", error="every item one of: " + ", ".join(CORE_ANALYTES)
        )(_items_in(CORE_ANALYTES)),
        "_top_known": pa.check("top_features", name="items_in", error="every item one of: " + ", ".join(names))(
            _items_in(names)
        ),
        "_value_with_day": pa.dataframe_check(
            name="baseline_value_with_day",
            error="each baseline value `A` has its `A_day` (and vice versa); `A_censoring` is null when `A` is",
        )(value_with_day),
        "_before_exposure": pa.dataframe_check(
            name="baseline_before_exposure", error="every baseline day is before `first_exposure_day`"
        )(before_exposure),
        "_group_matches": pa.dataframe_check(
            name="group_matches_probability",
            error="`responder_group` is `not_assessable` exactly when `responder_probability` is null",
        )(group_matches),
    }


class _SponsorConfig:
    title = SPONSOR_TABLE
    strict = True
    unique = ("study_id", "subject_pseudonym")


@cache
def _sponsor_model(features: tuple[FeatureSpec, ...]) -> type[pa.DataFrameModel]:
    strata = strata_model(features).to_schema()
    columns: dict[str, Any] = {}
    for name, column in strata.columns.items():
        replaced = _transformed(name)
        if replaced:
            columns.update(replaced)
        elif name not in _DROPPED:
            columns[name] = _kept_field(name, column)
    doc = "One row per valid subject of a run, pseudonymised for sponsors: no direct identifiers, no "
    doc += "calendar dates, no free text; ages banded (the sponsor dataset, `sponsor/data/study_id=*/`)."
    floats = [n for n, (d, _) in columns.items() if d == pl.Float64]
    checks = _checks(features, floats)
    return build_model(
        "Sponsor", features, module=__name__, doc=doc, config=_SponsorConfig, columns=columns, checks=checks
    )


def sponsor_model(features: Sequence[FeatureSpec] = DEFAULT_FEATURES) -> type[pa.DataFrameModel]:
    """The sponsor contract for a model with these features (one `contrib_<name>` column each); cached."""
    return _sponsor_model(tuple(features))


Sponsor = sponsor_model(DEFAULT_FEATURES)


def validate_sponsor(frame: pl.DataFrame, *, features: Sequence[FeatureSpec] | None = None) -> pl.DataFrame:
    """Validate a sponsor table eagerly, collecting every failure, and return it.

    Args:
        frame: The whole table, `study_id` included (as read back from the hive dataset, in any column order).
        features: The scoring model's features when they are not `DEFAULT_FEATURES`.

    Raises:
        OutputContractError: Names the failing columns and checks, with example values and rows.
        TypeError: `frame` is not an eager polars DataFrame.
    """
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"validate_sponsor needs an eager pl.DataFrame (collect it first), got {type(frame)}")
    return check_contract(SPONSOR_TABLE, sponsor_model(features or DEFAULT_FEATURES), frame)
