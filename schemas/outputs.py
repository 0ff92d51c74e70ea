"""Contracts for the tables a run writes: `harmonised.parquet`, `quarantine.parquet`, `strata.parquet`,
`outside_panel.parquet` and (registered here, defined in `immunostrat.schemas.ifn_controls`) `ifn_controls.parquet`.

One pandera `DataFrameModel` per table. Every column carries a description (and a unit in
`metadata={"unit": ...}` where it has one); `immunostrat.reporting.datadict` renders them into docs/output.md, so the
schema is the single source of the data dictionary.

The strata table is wide and depends on reference data: per selection-panel analyte `A` of
`schemas/reference/analytes.csv` (`panel_group` selection) it has `A`, `A_date` and `A_censoring`, and per model
feature `contrib_<name>`. The harmonised table holds every analyte, follow-up ones included.
`strata_model` generates those columns when it builds the class, so there is still one `DataFrameModel` with
every column described. The `criterion_<id>` columns depend on the eligibility protocol: they are declared as
ONE regex column (`^criterion_.+$`, nullable Boolean, at least one required), and the model stays strict, so
any other undeclared column is an error. That keeps the contract closed (a new column must be declared and
documented) while allowing any protocol.

Validate eager DataFrames (`validate_output`): pandera validates a LazyFrame at the schema level only.

It is one module: the tables share the analyte vocabulary, units and check helpers at its top, and
`OUTPUT_SCHEMA_VERSION` versions them together.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Sequence
from functools import cache
from importlib import import_module
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.constants import CHECK_OUTPUT_KEY
from pandera.errors import SchemaErrors

from immunostrat.config.features import DEFAULT_FEATURES, GROUP_LEVELS, NOT_ASSESSABLE, FeatureSpec
from immunostrat.followup.events import EVENT_FIELD_CODES, EVENT_REASON_CODES
from immunostrat.followup.sledai import load_descriptors
from immunostrat.followup.visits import VISIT_FIELD_CODES, VISIT_REASON_CODES
from immunostrat.ingest.readers import READER_REASONS
from immunostrat.ingest.reference import load_reference
from immunostrat.schemas.events import EVENT_OPTIONAL
from immunostrat.schemas.ifn_controls import IfnControlRow
from immunostrat.schemas.inputs import VISIT_FLAGS
from immunostrat.stages.baseline import CORE_ANALYTES
from immunostrat.stages.rules import INPUT_KINDS, QUARANTINE_ORIGINAL_COLUMNS
from immunostrat.stages.subjects import SUBJECT_FIELD_CODES, subject_rules
from immunostrat.stages.validate import lab_rules

__all__ = [
    "ANALYTES",
    "CENSORING",
    "EGFR_SOURCES",
    "LN_CLASSES",
    "OUTPUT_MODELS",
    "OUTPUT_SCHEMA_VERSION",
    "PANEL",
    "REASON_CODES",
    "RESPONDER_GROUPS",
    "SEX_CODES",
    "SLEDAI_SOURCES",
    "HarmonisedLab",
    "IfnControlRow",
    "OutputContractError",
    "OutsidePanelRow",
    "QuarantineRow",
    "Strata",
    "strata_model",
    "validate_output",
]

# --------------------------------------------------------------------------------------------------
# Reference values the checks use
# --------------------------------------------------------------------------------------------------

#: Version of the run-folder tables' contract (harmonised, quarantine and strata parquet; semantic versioning, see
#: docs/schema-changelog.md).
OUTPUT_SCHEMA_VERSION = "2.0.0"

_ANALYTES = load_reference().analytes
#: Every canonical analyte (selection and follow-up), in the order of schemas/reference/analytes.csv.
ANALYTES: tuple[str, ...] = tuple(_ANALYTES["analyte"].to_list())
#: The selection panel (`panel_group` selection): the analytes with baseline columns in the strata table.
PANEL: tuple[str, ...] = tuple(_ANALYTES.filter(pl.col("panel_group") == "selection")["analyte"].to_list())
_UNIT: dict[str, str] = dict(zip(ANALYTES, _ANALYTES["canonical_unit"].to_list(), strict=True))
_MIN: dict[str, float] = dict(zip(ANALYTES, _ANALYTES["plausible_min"].to_list(), strict=True))
_MAX: dict[str, float] = dict(zip(ANALYTES, _ANALYTES["plausible_max"].to_list(), strict=True))
_LABEL: dict[str, str] = {
    a: (d[0].lower() + d[1:] if d[1:2].islower() else d)
    for a, d in zip(ANALYTES, _ANALYTES["description"].to_list(), strict=True)
}
#: Where the strata `egfr` came from.
EGFR_SOURCES: tuple[str, ...] = ("subjects", "labs")
#: Where the selection-baseline `sledai_2k` came from (strata.parquet `sledai_2k_source`).
SLEDAI_SOURCES: tuple[str, ...] = ("subjects", "visits")

CENSORING: tuple[str, ...] = ("<", "<=", ">", ">=")
#: Responder groups, highest first, then the label of subjects the model cannot score.
RESPONDER_GROUPS: tuple[str, ...] = (*reversed(GROUP_LEVELS), NOT_ASSESSABLE)
SEX_CODES: tuple[str, ...] = ("F", "M", "U", "UNDIFFERENTIATED")
LN_CLASSES: tuple[str, ...] = ("NONE", "I", "II", "III", "IV", "V", "VI", "III+V", "IV+V")
_LAB_RULES = lab_rules(dt.date(2000, 1, 1), ())
_SUBJECT_RULES = subject_rules()
#: Every reason code a quarantine row can carry (lab, subject, visit, then events rules, in priority order).
REASON_CODES: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            *(r.code for r in (*_LAB_RULES, *_SUBJECT_RULES)),
            *VISIT_REASON_CODES,
            *EVENT_REASON_CODES,
            *(r.code for r in READER_REASONS),
        ]
    )
)
_LOGIT = "logit (log-odds)"


def _unit_label(analyte: str) -> str:
    return _UNIT[analyte] or "score (scale set by its IFN method)"


# --------------------------------------------------------------------------------------------------
# Reusable column checks (pandera-polars: nulls of nullable columns are not passed to column checks)
# --------------------------------------------------------------------------------------------------

_FINITE = "finite (not NaN, not ±inf)"
_UPPER = "upper-case"


def _is_finite(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).is_finite())


def _is_upper(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key) == pl.col(data.key).str.to_uppercase())


def _items_in(values: Sequence[str]) -> Callable[[Any, pa.PolarsData], pl.LazyFrame]:
    allowed = list(values)

    def check(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).list.eval(pl.element().is_in(allowed)).list.all())

    return check


def _values_dated(suffix: str) -> Callable[[Any, pa.PolarsData], pl.LazyFrame]:
    """Check: each baseline value `A` has its `A<suffix>` (and vice versa); `A_censoring` is null when `A` is."""

    def check(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        ok = [
            (pl.col(a).is_null() == pl.col(f"{a}{suffix}").is_null())
            & (pl.col(a).is_not_null() | pl.col(f"{a}_censoring").is_null())
            for a in PANEL
        ]
        return data.lazyframe.select(pl.all_horizontal(ok))

    return check


def _dated_before(suffix: str, exposure: str) -> Callable[[Any, pa.PolarsData], pl.LazyFrame]:
    """Check: every baseline `A<suffix>` is before the `exposure` column (dates, or study days)."""

    def check(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        ok = [(pl.col(f"{a}{suffix}") < pl.col(exposure)).fill_null(True) for a in PANEL]
        return data.lazyframe.select(pl.all_horizontal(ok))

    return check


def _non_empty_list(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).list.len() > 0)


def _items_text(values: Sequence[str]) -> str:
    return "every item one of: " + ", ".join(values)


# --------------------------------------------------------------------------------------------------
# harmonised.parquet
# --------------------------------------------------------------------------------------------------


class HarmonisedLab(pa.DataFrameModel):
    """One accepted lab measurement of a panel analyte, in the analyte's canonical unit (`harmonised.parquet`)."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier, as sent (trimmed).")
    subject_id: str = pa.Field(
        str_length={"min_value": 1}, description="Subject identifier within the study, as sent (trimmed)."
    )
    site_id: str = pa.Field(nullable=True, description="Site identifier, as sent (trimmed); optional input column.")
    analyte: str = pa.Field(
        isin=list(ANALYTES),
        description="Canonical analyte (schemas/reference/analytes.csv; selection panel and follow-up). A percent "
        "result of a cell count becomes its `_pct` analyte; a kit-specific anti-dsDNA unit becomes "
        "`anti_dsdna_xuln`; a WBC count per high-power field becomes `urine_wbc`.",
    )
    value: float = pa.Field(
        description="Numeric result converted to `unit`, to the precision it was reported with (docs/input.md, "
        "*Precision of converted values*); for a censored result, the number after the comparator; for an "
        "interval (a urine sediment range such as 3-5), its lower bound.",
        metadata={"unit": "the row's `unit`"},
    )
    value_high: float = pa.Field(
        nullable=True,
        description="Upper bound of an interval result: the semi-quantitative urine counts (`urine_rbc`, "
        "`urine_wbc`, `urine_casts`) reported as a range (3-5 gives `value` 3 and `value_high` 5) or as a word "
        "mapped to a range (`harmonise.urine_count_words`). Null for a single number and for every other analyte.",
        metadata={"unit": "the row's `unit`"},
    )
    unit: str = pa.Field(
        isin=sorted(set(_UNIT.values())),
        description="Canonical unit of `analyte` (empty for `ifn_score`, whose scale is set by `method`).",
    )
    censoring: str = pa.Field(
        nullable=True,
        isin=list(CENSORING),
        description="Comparator of a censored result (`<10` gives `<` and value 10); null for an exact result.",
    )
    ref_low: float = pa.Field(
        nullable=True,
        description="The lab's reference lower limit, converted to `unit`; null when not sent.",
        metadata={"unit": "the row's `unit`"},
    )
    ref_high: float = pa.Field(
        nullable=True,
        description="The lab's reference upper limit, converted to `unit` (1.0 for `anti_dsdna_xuln`); null when "
        "not sent.",
        metadata={"unit": "the row's `unit`"},
    )
    lloq: float = pa.Field(
        nullable=True,
        ge=0,
        description="The assay's lower limit of quantification (input `lloq`; SDTM `LBLLOQ` with the standardised "
        "result), converted to `unit` with the value's own factor and rounding (for `anti_dsdna_xuln`, as a multiple "
        "of the lab's upper limit, like the value); null when not sent. A value below it is below any threshold at "
        "or above it.",
        metadata={"unit": "the row's `unit`"},
    )
    method: str = pa.Field(
        nullable=True,
        description="Assay or method, trimmed and upper-cased; for `ifn_score` the IFN-signature method (given, or "
        "`--ifn-default-method`).",
    )
    collected_at: pl.Datetime("us") = pa.Field(  # type: ignore[valid-type]
        description="Collection date-time as written, local time (any UTC offset is read but not applied); "
        "date-only values at midnight."
    )
    collected_date: dt.date = pa.Field(description="Calendar date of `collected_at`; the date the baseline uses.")
    test_reported: str = pa.Field(
        str_length={"min_value": 1}, description="Input `test`, verbatim (analyte, LOINC, CDISC code or alias)."
    )
    result_reported: str = pa.Field(str_length={"min_value": 1}, description="Input `result`, verbatim.")
    unit_reported: str = pa.Field(nullable=True, description="Input `unit`, verbatim.")
    source_file: str = pa.Field(str_length={"min_value": 1}, description="Input file the row came from, as given.")
    source_row: int = pa.Field(ge=1, description="1-based data row in `source_file` (header excluded).")

    _finite = pa.check("value", "value_high", "ref_low", "ref_high", "lloq", name="is_finite", error=_FINITE)(
        _is_finite
    )
    _upper = pa.check("method", name="is_upper", error=_UPPER)(_is_upper)

    @pa.dataframe_check(name="unit_is_canonical", error="`unit` is the canonical unit of `analyte`")
    @classmethod
    def _unit_is_canonical(cls, data: pa.PolarsData) -> pl.LazyFrame:
        expected = pl.col("analyte").replace_strict(_UNIT, default=None, return_dtype=pl.String)
        return data.lazyframe.select(pl.col("unit").eq_missing(expected))

    @pa.dataframe_check(
        name="value_plausible", error="`value` lies in the analyte's plausible range (analytes.csv, inclusive)"
    )
    @classmethod
    def _value_plausible(cls, data: pa.PolarsData) -> pl.LazyFrame:
        low = pl.col("analyte").replace_strict(_MIN, default=None, return_dtype=pl.Float64)
        high = pl.col("analyte").replace_strict(_MAX, default=None, return_dtype=pl.Float64)
        return data.lazyframe.select(pl.col("value").is_between(low, high).fill_null(False))

    @pa.dataframe_check(name="interval_ordered", error="`value_high` is null or not below `value`, and uncensored")
    @classmethod
    def _interval_ordered(cls, data: pa.PolarsData) -> pl.LazyFrame:
        high = pl.col("value_high")
        return data.lazyframe.select(high.is_null() | ((high >= pl.col("value")) & pl.col("censoring").is_null()))

    @pa.dataframe_check(name="ref_range_ordered", error="`ref_low` is not above `ref_high`")
    @classmethod
    def _ref_range_ordered(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("ref_low") <= pl.col("ref_high")).fill_null(True))

    @pa.dataframe_check(name="collected_date_matches", error="`collected_date` is the date of `collected_at`")
    @classmethod
    def _collected_date_matches(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("collected_at").dt.date().eq_missing(pl.col("collected_date")))

    @pa.dataframe_check(name="ifn_score_has_method", error="an `ifn_score` row names its IFN-signature `method`")
    @classmethod
    def _ifn_score_has_method(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("analyte") != "ifn_score") | pl.col("method").is_not_null())

    class Config:
        title = "harmonised.parquet"
        strict = True
        unique = ("source_file", "source_row")


# --------------------------------------------------------------------------------------------------
# outside_panel.parquet
# --------------------------------------------------------------------------------------------------


class OutsidePanelRow(pa.DataFrameModel):
    """One lab row whose test maps to no analyte of the panel: not an error, set aside and counted
    (`outside_panel.parquet`)."""

    source_file: str = pa.Field(str_length={"min_value": 1}, description="Input file the row came from, as given.")
    source_row: int = pa.Field(ge=1, description="1-based data row in `source_file` (header excluded).")
    test: str = pa.Field(
        str_length={"min_value": 1},
        description="Input `test`, as read: a code or name that maps to no analyte (schemas/reference/test_codes.csv "
        "and `harmonise.alias_file`). An expression matrix's healthy controls are here with `IFN_REFERENCE_CONTROL` "
        "(their scores are in `ifn_controls.parquet`). An empty test is not here: it is quarantined `TEST_MISSING`.",
    )

    class Config:
        title = "outside_panel.parquet"
        strict = True
        unique = ("source_file", "source_row")


# --------------------------------------------------------------------------------------------------
# quarantine.parquet
# --------------------------------------------------------------------------------------------------

_ORIGINAL_LAB = {
    "test": "Input `test`.",
    "result": "Input `result`.",
    "unit": "Input `unit`.",
    "collected_at": "Input `collected_at`.",
    "method": "Input `method` after normalisation: trimmed, upper-cased, blank as null, `--ifn-default-method` "
    "filled in for `ifn_score`.",
    "ref_low": "Input `ref_low`.",
    "ref_high": "Input `ref_high`.",
    "lloq": "Input `lloq` (SDTM: `LBLLOQ`).",
}
_ORIGINAL_SUBJECT = {
    "reference_date": "Input `reference_date`.",
    "sex": "Input `sex`.",
    "age_years": "Input `age_years`.",
    "first_exposure_date": "Input `first_exposure_date`.",
    "infusion_date": "Input `infusion_date`.",
    "discontinued_date": "Input `discontinued_date`.",
    "death_date": "Input `death_date`.",
    "retreatment_date": "Input `retreatment_date`.",
    "ivig_start_date": "Input `ivig_start_date`.",
    "sledai_2k": "Input `sledai_2k`.",
    "prior_immunosuppressant_failures": "Input `prior_immunosuppressant_failures`.",
    "lupus_nephritis_class": "Input `lupus_nephritis_class`.",
    "egfr": "Input `egfr`.",
    "active_cns_lupus": "Input `active_cns_lupus`.",
}
_ORIGINAL_VISIT = {
    "visit_date": "Input `visit_date`.",
    "visit": "Input `visit` (the visit label).",
    **{d.item: f"Input `{d.item}` (SLEDAI-2K descriptor)." for d in load_descriptors()},
    "pga": "Input `pga`.",
    "prednisone_mg_day": "Input `prednisone_mg_day`.",
    **{flag: f"Input `{flag}`." for flag in VISIT_FLAGS},
    "immunosuppressants": "Input `immunosuppressants`.",
}
_ORIGINAL_EVENT = {
    "assessed_at": "Input `assessed_at`.",
    **{column: f"Input `{column}`." for column in EVENT_OPTIONAL},
}
_ORIGINAL_SHARED = {
    "study_id": "Input `study_id` (lab rows: trimmed).",
    "subject_id": "Input `subject_id` (lab rows: trimmed).",
    "site_id": "Input `site_id` (lab rows: trimmed).",
}
_ORIGINAL_KIND = (
    ("lab", _ORIGINAL_LAB),
    ("subject", _ORIGINAL_SUBJECT),
    ("visit", _ORIGINAL_VISIT),
    ("event", _ORIGINAL_EVENT),
)


def _original_description(column: str) -> str:
    if column in _ORIGINAL_SHARED:
        return f"{_ORIGINAL_SHARED[column]} Present when any row was quarantined; null when the file lacks it."
    kind, originals = next((k, o) for k, o in _ORIGINAL_KIND if column in o)
    return (
        f"{originals[column]} {kind.capitalize()} rows only (null on other rows); present when a {kind} row was "
        "quarantined."
    )


class _QuarantineBase(pa.DataFrameModel):
    """One rejected input row with every rule it failed, or one bad optional field of an accepted subject, visit or
    event row (a field record); the original input columns follow (`quarantine.parquet`)."""

    source_file: str = pa.Field(str_length={"min_value": 1}, description="Input file the row came from, as given.")
    source_row: int = pa.Field(ge=1, description="1-based data row in `source_file` (header excluded).")
    reason_code: str = pa.Field(
        isin=list(REASON_CODES),
        description="Primary reason: the first failed rule in priority order (see *Reason codes*). A subject "
        f"field code ({', '.join(f'`{c}`' for c in SUBJECT_FIELD_CODES)}) or visit field code "
        f"({', '.join(f'`{c}`' for c in VISIT_FIELD_CODES)}) or events field code "
        f"({', '.join(f'`{c}`' for c in EVENT_FIELD_CODES)}) marks a field record: the row was accepted with that "
        "field empty (unknown), and each bad field has its own record.",
    )
    reason_codes: pl.List(pl.String) = pa.Field(  # type: ignore[valid-type]
        description="Every failed rule, in priority order; the first is `reason_code`."
    )
    column: str = pa.Field(
        isin=list(QUARANTINE_ORIGINAL_COLUMNS), description="Input column the primary reason is about."
    )
    value: str = pa.Field(description="The offending value of `column`, verbatim (empty string when it was empty).")
    message: str = pa.Field(
        str_length={"min_value": 1},
        description="Readable explanation naming file, row, column, value, reason and what was expected.",
    )
    input_kind: str = pa.Field(
        isin=list(INPUT_KINDS),
        description="Which kind of input file the row came from: `labs`, `subjects`, `visits`, `outcomes` or `events`.",
    )

    _codes_known = pa.check("reason_codes", name="items_in", error="every item a reason code (see *Reason codes*)")(
        _items_in(REASON_CODES)
    )
    _codes_present = pa.check("reason_codes", name="non_empty_list", error="at least one item")(_non_empty_list)

    @pa.dataframe_check(name="primary_reason_first", error="`reason_codes` starts with `reason_code`")
    @classmethod
    def _primary_reason_first(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("reason_codes").list.first().eq_missing(pl.col("reason_code")))

    class Config:
        title = "quarantine.parquet"
        strict = True


def _quarantine_model() -> type[pa.DataFrameModel]:
    """`_QuarantineBase` plus one optional String column per original input column."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__module__": __name__, "__doc__": _QuarantineBase.__doc__}
    for column in QUARANTINE_ORIGINAL_COLUMNS:
        annotations[column] = pl.String
        namespace[column] = pa.Field(nullable=True, required=False, description=_original_description(column))
    namespace["__annotations__"] = annotations
    return type("QuarantineRow", (_QuarantineBase,), namespace)


QuarantineRow = _quarantine_model()


# --------------------------------------------------------------------------------------------------
# strata.parquet
# --------------------------------------------------------------------------------------------------


def _col(dtype: Any, description: str, unit: str | None = None, nullable: bool = True, **checks: Any) -> Any:
    metadata = {"unit": unit} if unit else None
    return dtype, pa.Field(nullable=nullable, description=description, metadata=metadata, **checks)


def _subject_columns() -> dict[str, Any]:
    return {
        "study_id": _col(pl.String, "Study identifier.", nullable=False, str_length={"min_value": 1}),
        "subject_id": _col(
            pl.String, "Subject identifier within the study.", nullable=False, str_length={"min_value": 1}
        ),
        "site_id": _col(pl.String, "Site identifier; null when not sent."),
        "sex": _col(pl.String, "Sex, CDISC SEX code (Female/Male/Unknown are normalised).", isin=list(SEX_CODES)),
        "age_years": _col(
            pl.Float64, "Age at the reference date.", "years", in_range={"min_value": 0, "max_value": 120}
        ),
        "reference_date": _col(
            pl.Date,
            "Screening/baseline anchor date: the baseline window is counted from it (run.json `parameters.baseline`).",
            nullable=False,
        ),
        "first_exposure_date": _col(
            pl.Date, "Lymphodepletion or infusion date: no measurement on or after it is baseline; null when not sent."
        ),
        "sledai_2k": _col(
            pl.Int64,
            "Selection-baseline SLEDAI-2K: the subjects file's `sledai_2k`, or the score of the selection baseline "
            "visit (see `sledai_2k_source`; precedence `followup.selection_sledai_precedence`, default the subjects "
            "file). Null when neither gives a score (a visit with an unassessed descriptor gives none).",
            "points",
            in_range={"min_value": 0, "max_value": 105},
        ),
        "sledai_2k_source": _col(
            pl.String,
            "Where `sledai_2k` came from: `subjects` (the subjects file) or `visits` (the selection baseline visit: "
            "the visit closest to `reference_date` in the baseline window, before first exposure); null when "
            "`sledai_2k` is.",
            isin=list(SLEDAI_SOURCES),
        ),
        "clinical_sledai_2k": _col(
            pl.Int64,
            "SLEDAI-2K of the selection baseline visit without the two serology descriptors (low complement, "
            "increased DNA binding); null without visits or when a clinical descriptor was not assessed.",
            "points",
            in_range={"min_value": 0, "max_value": 105},
        ),
        "prior_immunosuppressant_failures": _col(
            pl.Int64,
            "Number of immunosuppressants or biologics failed.",
            "count",
            in_range={"min_value": 0, "max_value": 50},
        ),
        "lupus_nephritis_class": _col(pl.String, "ISN/RPS lupus nephritis class, upper-case.", isin=list(LN_CLASSES)),
        "egfr": _col(
            pl.Float64,
            "Estimated GFR: the subjects file's `egfr`, else the exact baseline lab `egfr` (see `egfr_source`).",
            "mL/min/1.73 m2",
            in_range={"min_value": 0, "max_value": 300},
        ),
        "egfr_source": _col(
            pl.String,
            "Where `egfr` came from: `subjects` (the subjects file, which wins) or `labs` (the uncensored lab `egfr` "
            "chosen by the baseline rule, when the subjects file had none); null when `egfr` is.",
            isin=list(EGFR_SOURCES),
        ),
        "egfr_equation": _col(
            pl.String,
            "The equation of a lab eGFR, from its row's `method` (upper-case, e.g. CKD-EPI 2021); null when not given "
            "or when `egfr` came from the subjects file.",
        ),
        "active_cns_lupus": _col(pl.Boolean, "Active CNS lupus."),
    }


def _analyte_columns() -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for a in PANEL:
        columns[a] = _col(
            pl.Float64,
            f"Baseline {_LABEL[a]}: the measurement in the baseline window closest to `reference_date`, in the "
            f"canonical unit; the number after the comparator when censored (see `{a}_censoring`). Null when none.",
            _unit_label(a),
            in_range={"min_value": _MIN[a], "max_value": _MAX[a]},
        )
        columns[f"{a}_date"] = _col(pl.Date, f"Collection date of the baseline `{a}`; null when none.")
        columns[f"{a}_censoring"] = _col(
            pl.String,
            f"Comparator when the baseline `{a}` was censored (`<` means the true value is below `{a}`); null when "
            "exact or missing.",
            isin=list(CENSORING),
        )
    return columns


def _derived_columns() -> dict[str, Any]:
    return {
        "anti_dsdna_ref_high": _col(
            pl.Float64,
            "The lab's upper limit reported with the baseline `anti_dsdna` (its positivity cut-off).",
            "IU/mL",
        ),
        "anti_dsdna_method": _col(pl.String, "Assay of the baseline `anti_dsdna`, upper-case."),
        "c3_ref_low": _col(pl.Float64, "The lab's lower limit reported with the baseline `c3`.", "g/L"),
        "c4_ref_low": _col(pl.Float64, "The lab's lower limit reported with the baseline `c4`.", "g/L"),
        "ifn_method": _col(pl.String, "IFN-signature method of the baseline `ifn_score` (sets its scale and cut-off)."),
        "anti_dsdna_ratio": _col(
            pl.Float64,
            "Baseline anti-dsDNA as a multiple of its positivity cut-off: `anti_dsdna` over `anti_dsdna_ref_high` "
            "(or the default cut-off when the lab gave none), else `anti_dsdna_xuln`.",
            "x cut-off",
        ),
        "anti_dsdna_positive": _col(
            pl.Boolean,
            "Anti-dsDNA positive: above the lab's upper limit, or at/above the default cut-off without one, or "
            "`anti_dsdna_xuln` above 1. Null when missing or when censoring makes it unknown.",
        ),
        "c3_low": _col(pl.Boolean, "C3 below `c3_ref_low` (or the default lower limit); null when unknown."),
        "c4_low": _col(pl.Boolean, "C4 below `c4_ref_low` (or the default lower limit); null when unknown."),
        "ifn_ratio": _col(pl.Float64, "Baseline `ifn_score` over its method's high cut-off.", "x cut-off"),
        "ifn_high": _col(
            pl.Boolean,
            "IFN score above its method's high cut-off (or at it, for an inclusive method); null when unknown.",
        ),
        "cd4_cd8_ratio": _col(
            pl.Float64,
            "Baseline `cd4_t_cells` / `cd8_t_cells`; null when either is missing or CD8 is 0.",
            "ratio",
            ge=0,
        ),
        "n_baseline_analytes": _col(
            pl.Int32,
            f"How many of the {len(CORE_ANALYTES)} core analytes have a baseline value (anti-dsDNA in either form).",
            "count",
            nullable=False,
            in_range={"min_value": 0, "max_value": len(CORE_ANALYTES)},
        ),
        "missing_analytes": _col(pl.List(pl.String), "Core analytes without a baseline value.", nullable=False),
        "serologically_active": _col(
            pl.Boolean,
            "`anti_dsdna_positive` or `c3_low` or `c4_low` (three-valued: true if any is true, false if all are "
            "false, else null).",
        ),
    }


def _eligibility_columns() -> dict[str, Any]:
    return {
        "criterion": (
            pl.Boolean,
            pa.Field(
                nullable=True,
                regex=True,
                alias=r"^criterion_.+$",
                description="Outcome of one protocol criterion, one column per criterion id (`criterion_<id>`): "
                "true passed, false failed, null not assessable (its input column is missing).",
            ),
        ),
        "criteria_failed": _col(pl.List(pl.String), "Ids of the criteria the subject failed.", nullable=False),
        "criteria_not_assessable": _col(
            pl.List(pl.String), "Ids of the criteria that could not be assessed.", nullable=False
        ),
        "eligible": _col(
            pl.Boolean,
            "False when any criterion failed; null when none failed but some could not be assessed; true when all "
            "passed.",
        ),
    }


def _score_columns(features: Sequence[FeatureSpec]) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "responder_probability": _col(
            pl.Float64,
            "Model probability of response; null when a feature is missing (not assessable).",
            "probability",
            in_range={"min_value": 0, "max_value": 1},
        ),
        "responder_group": _col(
            pl.String,
            "`likely` (probability >= likely_min), `possible` (>= possible_min), `unlikely`, or `not_assessable`; "
            "cut-offs in run.json `model.cutoffs`.",
            nullable=False,
            isin=list(RESPONDER_GROUPS),
        ),
        "top_features": _col(
            pl.List(pl.String),
            "Features with the largest absolute contribution, largest first (ties by name); null when not assessable.",
        ),
    }
    for f in features:
        columns[f"contrib_{f.name}"] = _col(
            pl.Float64,
            f"Contribution of feature `{f.name}` to the logit: coefficient x standardised feature. Feature: "
            f"{f.description} [{f.unit}], from `{f.source}`. Null when not assessable.",
            _LOGIT,
        )
    columns["contrib_intercept"] = _col(
        pl.Float64,
        "Model intercept; with the `contrib_<feature>` columns it sums to the logit of `responder_probability`. "
        "Null when not assessable.",
        _LOGIT,
    )
    columns["model_id"] = _col(pl.String, "Registry id of the model that scored the row.", nullable=False)
    columns["model_sha256"] = _col(
        pl.String, "SHA-256 of the model file.", nullable=False, str_matches=r"^[0-9a-f]{64}$"
    )
    columns["run_id"] = _col(
        pl.String, "Id of the run that wrote the table.", nullable=False, str_length={"min_value": 1}
    )
    return columns


def _lists_ids(column: str, ids: Sequence[str], selected: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """Row check: the list `column` is exactly the ids whose `criterion_<id>` is `selected`, in column order.

    Compared as text (the list joined with a separator no id contains) plus the list length, not as built
    lists: building a list per row and criterion costs ~10x more. Equal lengths and equal joined text imply
    equal lists, since the expected ids hold no separator, so neither can the listed items.
    """
    separator = next((chr(c) for c in range(0x1F, 0, -1) if not any(chr(c) in i for i in ids)), None)
    flags = [selected(pl.col(f"criterion_{i}")) for i in ids]
    if separator is None:  # ids with every control character: compare built lists
        expected = pl.concat_list([pl.when(f).then(pl.lit(i)) for f, i in zip(flags, ids, strict=True)])
        return pl.col(column) == expected.list.drop_nulls()
    listed = pl.concat_str(
        [pl.when(f).then(pl.lit(i)) for f, i in zip(flags, ids, strict=True)], separator=separator, ignore_nulls=True
    )
    count = pl.sum_horizontal([f.fill_null(False) for f in flags])
    return (pl.col(column).list.len() == count) & (pl.col(column).list.join(separator, ignore_nulls=False) == listed)


def _strata_checks(features: Sequence[FeatureSpec]) -> dict[str, Any]:
    """Row-level checks that tie the strata columns together.

    A declarative rule table, kept whole so that the rules read as one list.
    """
    contribs = [f"contrib_{f.name}" for f in features] + ["contrib_intercept"]

    def eligible_matches(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        expected = (
            pl.when(pl.col("criteria_failed").list.len() > 0)
            .then(False)
            .when(pl.col("criteria_not_assessable").list.len() > 0)
            .then(None)
            .otherwise(True)
        )
        return data.lazyframe.select(pl.col("eligible").eq_missing(expected))

    def criteria_match(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        names = data.lazyframe.collect_schema().names()
        ids = [c.removeprefix("criterion_") for c in names if c.startswith("criterion_")]
        if not ids:  # the regex column reports the absence
            return data.lazyframe.select(pl.lit(True).alias("ok"))
        failed = _lists_ids("criteria_failed", ids, lambda c: c == False)  # noqa: E712
        unknown = _lists_ids("criteria_not_assessable", ids, lambda c: c.is_null())
        return data.lazyframe.select((failed & unknown).fill_null(False))

    def group_matches(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("responder_group") == NOT_ASSESSABLE) == pl.col("responder_probability").is_null()
        )

    def contributions_add_up(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        logit = pl.sum_horizontal([pl.col(c) for c in contribs])
        probability = 1.0 / (1.0 + (-logit).exp())
        scored = pl.col("responder_probability").is_not_null()
        complete = pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_finite() for c in contribs])
        empty = pl.all_horizontal([pl.col(c).is_null() for c in contribs])
        adds_up = ((probability - pl.col("responder_probability")).abs() <= 1e-6).fill_null(False)
        return data.lazyframe.select(pl.when(scored).then(complete & adds_up).otherwise(empty))

    value_with_date = _values_dated("_date")
    before_exposure = _dated_before("_date", "first_exposure_date")

    def completeness_adds_up(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        total = pl.col("n_baseline_analytes") + pl.col("missing_analytes").list.len()
        return data.lazyframe.select(total == len(CORE_ANALYTES))

    def sledai_source_matches(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("sledai_2k").is_null() == pl.col("sledai_2k_source").is_null())

    def egfr_source_matches(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
        sourced = pl.col("egfr").is_null() == pl.col("egfr_source").is_null()
        equation = pl.col("egfr_equation").is_null() | (pl.col("egfr_source") == "labs").fill_null(False)
        return data.lazyframe.select(sourced & equation)

    def check(fn: Callable[..., pl.LazyFrame], name: str, error: str) -> Any:
        return pa.dataframe_check(name=name, error=error)(fn)

    return {
        "_eligible_matches": check(
            eligible_matches,
            "eligible_matches_criteria",
            "`eligible` follows `criteria_failed` and `criteria_not_assessable`",
        ),
        "_criteria_match": check(
            criteria_match,
            "criteria_lists_match",
            "`criteria_failed` / `criteria_not_assessable` list the "
            "`criterion_<id>` columns that are false / null, in column order",
        ),
        "_group_matches": check(
            group_matches,
            "group_matches_probability",
            "`responder_group` is `not_assessable` exactly when `responder_probability` is null",
        ),
        "_contributions": check(
            contributions_add_up,
            "contributions_add_up",
            "the `contrib_*` columns are all set and sum to the logit "
            "of `responder_probability` (within 1e-6 in probability), or are all null when not assessable",
        ),
        "_value_with_date": check(
            value_with_date,
            "baseline_value_with_date",
            "each baseline value `A` has its `A_date` (and vice versa); `A_censoring` is null when `A` is",
        ),
        "_before_exposure": check(
            before_exposure, "baseline_before_exposure", "every baseline date is before `first_exposure_date`"
        ),
        "_sledai_source": check(
            sledai_source_matches,
            "sledai_source_matches",
            "`sledai_2k_source` is null exactly when `sledai_2k` is",
        ),
        "_egfr_source": check(
            egfr_source_matches,
            "egfr_source_matches",
            "`egfr_source` is null exactly when `egfr` is; `egfr_equation` only with `egfr_source` labs",
        ),
        "_completeness": check(
            completeness_adds_up,
            "completeness_adds_up",
            f"`n_baseline_analytes` + the length of `missing_analytes` = {len(CORE_ANALYTES)}",
        ),
    }


class _StrataConfig:
    title = "strata.parquet"
    strict = True
    unique = ("study_id", "subject_id")


@cache
def _strata_model(features: tuple[FeatureSpec, ...]) -> type[pa.DataFrameModel]:
    columns = {
        **_subject_columns(),
        **_analyte_columns(),
        **_derived_columns(),
        **_eligibility_columns(),
        **_score_columns(features),
    }
    float_columns = [n for n, (d, _) in columns.items() if d == pl.Float64]
    names = [f.name for f in features]
    checks = {
        "_finite": pa.check(*float_columns, name="is_finite", error=_FINITE)(_is_finite),
        "_upper": pa.check("anti_dsdna_method", "ifn_method", name="is_upper", error=_UPPER)(_is_upper),
        "_missing_known": pa.check("missing_analytes", name="items_in", error=_items_text(CORE_ANALYTES))(
            _items_in(CORE_ANALYTES)
        ),
        "_top_known": pa.check("top_features", name="items_in", error=_items_text(names))(_items_in(names)),
        **_strata_checks(features),
    }
    doc = "One row per valid subject: baseline profile, derived flags, eligibility and responder score "
    doc += "(`strata.parquet`)."
    return build_model(
        "Strata", features, module=__name__, doc=doc, config=_StrataConfig, columns=columns, checks=checks
    )


def build_model(
    base: str,
    features: Sequence[FeatureSpec],
    *,
    module: str,
    doc: str,
    config: type,
    columns: dict[str, tuple[Any, Any]],
    checks: dict[str, Any],
) -> type[pa.DataFrameModel]:
    """A contract class built per model: `columns` maps names to (dtype, Field), `checks` names pandera checks.

    The class is named `base` for the default features and `<base>CustomFeatures` otherwise.
    """
    namespace: dict[str, Any] = {"__module__": module, "__doc__": doc, "Config": config}
    namespace.update({name: field for name, (_, field) in columns.items()})
    namespace.update(checks)
    namespace["__annotations__"] = {name: dtype for name, (dtype, _) in columns.items()}
    is_default = tuple(f.name for f in features) == tuple(f.name for f in DEFAULT_FEATURES)
    return type(base if is_default else f"{base}CustomFeatures", (pa.DataFrameModel,), namespace)


def strata_model(features: Sequence[FeatureSpec] = DEFAULT_FEATURES) -> type[pa.DataFrameModel]:
    """The strata contract for a model with these features (one `contrib_<name>` column each); cached."""
    return _strata_model(tuple(features))


Strata = strata_model(DEFAULT_FEATURES)

#: Output file name -> its contract, in the order docs/output.md lists them.
OUTPUT_MODELS: dict[str, type[pa.DataFrameModel]] = {
    "strata.parquet": Strata,
    "harmonised.parquet": HarmonisedLab,
    "quarantine.parquet": QuarantineRow,
    "outside_panel.parquet": OutsidePanelRow,
    "ifn_controls.parquet": IfnControlRow,
}


#: The monitor run's tables -> (module, contract); imported on use, since those contracts import this module.
FOLLOW_UP_TABLES: dict[str, tuple[str, str]] = {
    "activity.parquet": ("immunostrat.schemas.followup", "Activity"),
    "endpoints.parquet": ("immunostrat.schemas.endpoints", "EndpointRow"),
    "immune_course.parquet": ("immunostrat.schemas.immune_course", "ImmuneCourse"),
    "lab_grades.parquet": ("immunostrat.schemas.lab_grades", "LabGradeRow"),
    "crs_icans.parquet": ("immunostrat.schemas.toxicity_events", "CrsIcans"),
    "toxicity.parquet": ("immunostrat.schemas.toxicity", "Toxicity"),
}


# --------------------------------------------------------------------------------------------------
# Validation entry point
# --------------------------------------------------------------------------------------------------

_STRUCTURAL = {
    "column_in_schema": "unexpected column (the contract is strict)",
    "column_in_dataframe": "missing column",
    "no_regex_column_match": "no column matches",
}


class OutputContractError(ValueError):
    """An output table does not meet its contract.

    Attributes:
        table: output file name, e.g. `strata.parquet`.
        model: name of the DataFrameModel.
        columns: columns that failed (missing, unexpected, wrong type or a failed check).
        checks: row-level (dataframe) checks that failed.
        failure_cases: pandera's failure cases (polars DataFrame).
    """

    def __init__(
        self, table: str, *, model: str, columns: list[str], checks: list[str], failure_cases: pl.DataFrame, text: str
    ) -> None:
        self.table = table
        self.model = model
        self.columns = columns
        self.checks = checks
        self.failure_cases = failure_cases
        super().__init__(text)


def _short(text: str, width: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _contract_error(
    table: str, model: type[pa.DataFrameModel] | pa.DataFrameSchema, cases: pl.DataFrame, limit: int = 3
) -> OutputContractError:
    """Turn pandera failure cases into one readable error naming table, columns and checks."""
    schema_name = (model if isinstance(model, pa.DataFrameSchema) else model.to_schema()).name
    cases = cases.with_columns(pl.col("failure_case").cast(pl.String))
    # A missing column or a wrong type makes other checks on it fail with a polars error: report the cause only.
    consequence = pl.col("index").is_null() & pl.col("failure_case").str.contains(r"^\w+(Error|Exception)\(")
    if cases.filter(~consequence).height:
        cases = cases.filter(~consequence)
    lines: list[str] = []
    columns: list[str] = []
    checks: list[str] = []
    grouped = cases.group_by("column", "check", maintain_order=True).agg("failure_case", "index")
    for row in grouped.iter_rows(named=True):
        check = str(row["check"])
        rows = [i for i in row["index"] if i is not None]
        values = list(dict.fromkeys(_short(v, 40) for v in row["failure_case"] if v is not None))
        examples = ", ".join(repr(v) for v in values[:limit])
        where = f"{len(rows)} row(s), 0-based {', '.join(map(str, rows[:limit]))}{', ...' if len(rows) > limit else ''}"
        if check in _STRUCTURAL:
            columns.extend(values)
            lines.append(f"  - {_STRUCTURAL[check]}: {', '.join(map(repr, values))}")
        elif row["column"] in (schema_name, None):
            checks.append(check)
            lines.append(f"  - row check failed: {_short(check, 160)} ({where})")
        else:
            columns.append(row["column"])
            detail = f"{where}; e.g. {examples}" if rows else f"got {examples}"
            lines.append(f"  - column '{row['column']}': {_short(check)} failed ({detail})")
    columns = list(dict.fromkeys(columns))
    checks = list(dict.fromkeys(checks))
    summary = [f"failing columns: {', '.join(columns)}"] if columns else []
    summary += [f"{len(checks)} row check(s) failed"] if checks else []
    name = f"schema {schema_name}" if isinstance(model, pa.DataFrameSchema) else model.__name__
    where = name if isinstance(model, pa.DataFrameSchema) else f"{model.__module__}.{model.__name__}"
    text = f"{table} does not meet its output contract ({where}); {'; '.join(summary)}\n" + "\n".join(lines)
    return OutputContractError(table, model=name, columns=columns, checks=checks, failure_cases=cases, text=text)


_FLOATS = (pl.Float32, pl.Float64)
#: Key types whose order and hash agree with pandera's duplicate test (floats do not: -0.0, NaN).
_KEY_TYPES = (pl.String, pl.Boolean, pl.Date, pl.Datetime, pl.datatypes.IntegerType)


def _verdict(check: pa.Check, frame: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """One row, one Boolean: whether `check` holds on every row, with pandera's own check expression and NA rule."""
    builtin = getattr(check._check_fn, "__name__", None)
    if builtin is not None and check.is_builtin_check(builtin):  # as `Check.__call__`: bind the polars version
        check._check_fn = check.get_builtin_check_fn(builtin)
    out = check.get_backend(frame)(check).apply(PolarsData(frame, key))
    if isinstance(out, bool):
        return pl.LazyFrame({"ok": [out]})
    result = pl.col(CHECK_OUTPUT_KEY)
    result = result | result.is_null() if check.ignore_na else result.fill_null(False)
    return out.select(result.all().alias("ok"))


def _unique_rows(frame: pl.DataFrame, keys: Sequence[str]) -> bool:
    """Whether no two rows share `keys`; False also means "not proven" (then pandera decides).

    Cheap proofs instead of pandera's full duplicate marking: rows strictly increasing in key order (one
    linear pass; outputs are usually written sorted by their key), else all distinct 64-bit row hashes.
    """
    if frame.height < 2:
        return True
    if not all(isinstance(frame.schema[k], _KEY_TYPES) for k in keys):
        return False
    increasing = pl.lit(False)
    for key in reversed(keys):  # lexicographic: a greater first key, or an equal one and the rest greater
        now, before = pl.col(key), pl.col(key).shift()
        increasing = (now > before) | ((now == before) & increasing)
    if frame.select(increasing.slice(1).fill_null(False).all()).item():
        return True
    return bool(frame.select(keys).hash_rows().n_unique() == frame.height)


def _conforms(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> bool:
    """Whether `frame` certainly meets `schema` (see `_decide`); False on any error, for pandera to report."""
    try:
        return _decide(schema, frame)
    except Exception:  # e.g. a check that cannot run on this frame: pandera names it
        return False


def _unsupported(schema: pa.DataFrameSchema) -> bool:
    """Schema options `_decide` does not implement (none of the contracts uses them): pandera handles those."""
    columns = schema.columns.values()
    return bool(
        schema.coerce
        or schema.ordered
        or schema.strict not in (True, False)
        or schema.add_missing_columns
        or schema.drop_invalid_rows
        or schema.dtype is not None
        or schema.parsers
        or schema.on_missing_columns is not None
        or any(c.coerce or c.unique or c.default is not None or c.parsers or c.drop_invalid_rows for c in columns)
    )


def _column_verdicts(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> tuple[list[pl.LazyFrame], set[str]] | None:
    """Verdicts of every column's null and value checks, and the columns covered; None when the column set
    (missing, or unexpected under `strict`) or a dtype already fails."""
    lazy, dtypes = frame.lazy(), frame.schema  # `frame.schema` builds a new Schema per call
    explicit = {name for name, column in schema.columns.items() if not column.regex}
    covered: set[str] = set()
    verdicts: list[pl.LazyFrame] = []
    for name, column in schema.columns.items():
        if column.regex:
            keys = lazy.select(pl.col(column.selector)).collect_schema().names()
            if set(keys) & explicit or (column.required and not keys):
                return None
        elif name in dtypes or not column.required:
            keys = [name] if name in dtypes else []
        else:
            return None
        for key in keys:
            covered.add(key)
            dtype = dtypes[key]
            if column.dtype is not None and column.dtype.check(dtype, PolarsData(lazy.select(key), key)) is not True:
                return None
            if not column.nullable:  # pandera counts NaN as null in a float column
                present = pl.col(key).is_not_null() & (pl.col(key).is_not_nan() if dtype in _FLOATS else True)
                verdicts.append(lazy.select(present.all().alias("ok")))
            verdicts += [_verdict(check, lazy, key) for check in column.checks]
    if schema.strict and set(frame.columns) - covered:
        return None
    return verdicts, covered


def _decide(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> bool:
    """Whether `frame` meets `schema`, decided in one parallel pass over the data, without copying or casting it.

    Makes the same decision as `schema.validate` (column set, dtypes from the schema, nulls, every column and
    row check with pandera's own expressions, uniqueness), but runs every check as one-row verdicts in one
    `collect_all`, where pandera scans, collects and extracts failure cases once per check. False means "not
    proven" and the caller then runs pandera for the detailed report, so a schema option not handled here just
    answers False.
    """
    columns = None if _unsupported(schema) else _column_verdicts(schema, frame)
    if columns is None:
        return False
    verdicts, covered = columns
    verdicts += [_verdict(check, frame.lazy(), "*") for check in schema.checks]
    if not all(v.item() for v in pl.collect_all(verdicts)):
        return False
    unique = schema.unique or []
    key_sets = [unique] if all(isinstance(k, str) for k in unique) else unique
    return all(set(keys) <= covered and _unique_rows(frame, list(keys)) for keys in key_sets if keys)


def validate_output(name: str, frame: pl.DataFrame, *, features: Sequence[FeatureSpec] | None = None) -> pl.DataFrame:
    """Validate an output table eagerly, collecting every failure (`lazy=True`), and return it.

    Args:
        name: `strata`, `harmonised`, `quarantine`, `outside_panel`, `ifn_controls` or a monitor table (a
            `.parquet` suffix is accepted).
        frame: the table as an eager DataFrame (pandera checks a LazyFrame at the schema level only).
        features: for `strata`, the scoring model's features when they are not `DEFAULT_FEATURES`.

    Raises:
        OutputContractError: names the table, the failing columns and checks, with example values and rows.
        TypeError: `frame` is not an eager polars DataFrame.
        KeyError: unknown table name.
    """
    table = name if name.endswith(".parquet") else f"{name}.parquet"
    if table in FOLLOW_UP_TABLES:
        module, model_name = FOLLOW_UP_TABLES[table]
        return check_contract(table, getattr(import_module(module), model_name), frame)
    if table not in OUTPUT_MODELS:
        raise KeyError(f"unknown output table {name!r}; expected one of: {', '.join(OUTPUT_MODELS)}")
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"validate_output({name!r}) needs an eager pl.DataFrame (collect it first), got {type(frame)}")
    model = strata_model(features) if table == "strata.parquet" and features is not None else OUTPUT_MODELS[table]
    return check_contract(table, model, frame)


def check_contract(
    table: str, model: type[pa.DataFrameModel] | pa.DataFrameSchema, frame: pl.DataFrame
) -> pl.DataFrame:
    """Validate an eager frame against an output contract (a model or a schema built from one);
    `OutputContractError` names `table` on failure.

    The one-pass decision (`_conforms`) settles the usual, valid case; pandera runs only to find and report
    the failures.
    """
    schema = model if isinstance(model, pa.DataFrameSchema) else model.to_schema()
    if schema.unique and not set(schema.unique) <= set(frame.columns):
        # pandera's uniqueness check crashes (polars ShapeError) when a key column is missing; the missing
        # column is reported by the column checks anyway.
        schema = copy.copy(schema)
        schema.unique = None
    if _conforms(schema, frame):
        return frame
    try:
        return schema.validate(frame, lazy=True)
    except SchemaErrors as errors:
        raise _contract_error(table, model, errors.failure_cases) from errors
    except pl.exceptions.PolarsError as error:  # a check that could not run at all: still name the table
        cases = pl.DataFrame(
            {"failure_case": [str(error)], "column": [None], "check": [type(error).__name__], "index": [None]},
            schema={"failure_case": pl.String, "column": pl.String, "check": pl.String, "index": pl.Int32},
        )
        raise _contract_error(table, model, cases) from error
