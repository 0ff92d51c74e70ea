"""Response endpoints at landmarks, and the training outcomes derived from them (issue 12).

Pure, vectorised polars. `endpoints` gives one row per subject, endpoint and landmark: met, not met, or not
assessable, always with a reason code (`REASONS`). The rules, in the order they decide a row:

1. `NOT_INFUSED`: the subject has no day 0.
2. `NOT_APPLICABLE`: outside the endpoint's population (msri4: treatment-baseline SLEDAI-2K below the minimum;
   the renal endpoints: no renal involvement at the treatment baseline); `INPUT_UNKNOWN` when membership is
   unknown.
3. Intercurrent events, met false: `TREATMENT_FAILURE` (true at any visit from day 0 to the landmark visit, or
   to the window's end when there is none) and `DISCONTINUED` (withdrawal or death before the landmark visit,
   or on or before the window's end when there is none).
4. `PENDING`: a visit dated after `as_of` could still be the landmark visit (see `_final_date`).
5. `NO_VISIT_IN_WINDOW`: the window has closed without a visit.
6. `EVALUATED` (met true or false) or `INPUT_UNKNOWN` with `reason_detail` naming the unknown inputs.

The landmark visit is the visit closest to the target day inside the window (both edges included), whatever
its completeness; a tie goes to the earlier visit. Day 0 comes from `subjects.day0`, so visit days and window
dates share one origin. Three-valued logic throughout: a condition is true, false or unknown (null), an
endpoint is met only when every condition is known true, and not met as soon as one is known false; unknown
descriptors give SLEDAI bounds, and a censored lab value decides a threshold only when its comparator does.

It is one module: the rules above decide a row in one order, and the conditions of every endpoint feed that one
decision (`_reason`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from immunostrat.config.endpoints import (
    EndpointDefinition,
    IntercurrentEvents,
    RenalPopulation,
    RenalResponseSettings,
    Threshold,
)
from immunostrat.errors import SettingsError
from immunostrat.followup.sledai import ITEM_PREFIX, Descriptor, load_descriptors
from immunostrat.followup.thresholds import compare

__all__ = [
    "NOT_ASSESSABLE_REASONS",
    "NOT_MET_REASONS",
    "REASONS",
    "RENAL_ANALYTES",
    "OutcomeCounts",
    "UnknownEndpointError",
    "derive_outcomes",
    "endpoint_label",
    "endpoints",
    "renal_involvement",
    "renal_values",
    "threshold_met",
]

#: Reason code -> meaning; every endpoint row carries one.
REASONS: dict[str, str] = {
    "EVALUATED": "Assessed at the landmark visit: `met` is true or false.",
    "NOT_INFUSED": "The subject has no day 0 (no infusion date): not assessable.",
    "NOT_APPLICABLE": "Outside the endpoint's population (see docs/endpoints.md): not assessable.",
    "INPUT_UNKNOWN": "An input the result depends on is unknown; `reason_detail` names it: not assessable.",
    "TREATMENT_FAILURE": "Treatment failure (rescue or non-protocol therapy) before the landmark: not met.",
    "DISCONTINUED": "Withdrawal or death before the landmark: not met.",
    "PENDING": "The landmark visit is not final at `as_of` (a later visit could still be chosen): not assessable.",
    "NO_VISIT_IN_WINDOW": "The window has closed without a visit in it: not assessable.",
}
#: Reasons with `met` null (left out of training outcomes and counted).
NOT_ASSESSABLE_REASONS: tuple[str, ...] = (
    "NOT_INFUSED",
    "NOT_APPLICABLE",
    "INPUT_UNKNOWN",
    "PENDING",
    "NO_VISIT_IN_WINDOW",
)
#: Intercurrent events: `met` false without assessing the landmark visit.
NOT_MET_REASONS: tuple[str, ...] = ("TREATMENT_FAILURE", "DISCONTINUED")
#: Lab analytes the renal endpoints read per visit (canonical units: upcr g/g, egfr mL/min/1.73m2).
RENAL_ANALYTES: tuple[str, ...] = ("upcr", "egfr")
CENSORING_SUFFIX = "_censoring"
_KEYS = ["study_id", "subject_id"]
_BASELINE = "baseline_"
_PREVIOUS = "previous_"
_VISIT_COLUMNS = (
    "pga",
    "prednisone_mg_day",
    "antimalarial",
    "hemolytic_anemia",
    "gi_activity",
    "other_investigational_drug",
    "treatment_failure",
    "immunosuppressants",
    *RENAL_ANALYTES,
)
_BASELINE_COLUMNS = ("sledai_2k", "pga", *RENAL_ANALYTES)
_SUBJECT_COLUMNS = ("day0", "discontinued_date", "lupus_nephritis_class")
# Differences of decimal scores (PGA 1.2 - 0.9) are rounded before comparing, so that 0.29999999999999993
# counts as the 0.3 it is.
_DECIMALS = 9


class UnknownEndpointError(SettingsError):
    """An endpoint or landmark name that the endpoint table does not hold (exit 2)."""


# --------------------------------------------------------------------------------------------------
# Three-valued comparisons
# --------------------------------------------------------------------------------------------------


def threshold_met(value: pl.Expr, op: str, threshold: pl.Expr | float, censoring: pl.Expr | None = None) -> pl.Expr:
    """Whether `value <op> threshold` holds: true, false, or null when unknown (`thresholds.compare`).

    A null value or threshold is unknown. A censored value (`censoring` one of <, <=, >, >=; `value` the number
    after it) decides the comparison only when every value it allows gives the same answer ("<0.1" passes
    UPCR < 0.5; ">60" passes eGFR >= 60 but leaves eGFR >= 90 unknown).
    """
    return compare(value, op, threshold, censoring=censoring)


def _met(value: pl.Expr, threshold: Threshold, censoring: pl.Expr | None = None) -> pl.Expr:
    return threshold_met(value, threshold.op, threshold.value, censoring)


# --------------------------------------------------------------------------------------------------
# Conditions: a three-valued value plus the inputs whose unknown value can leave it unknown
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Condition:
    value: pl.Expr
    inputs: tuple[tuple[str, pl.Expr], ...] = field(default=())  # (name for reason_detail, "is unknown")


def _unknown(column: str, censored: bool = False) -> pl.Expr:
    missing = pl.col(column).is_null()
    return missing | pl.col(column + CENSORING_SUFFIX).is_not_null() if censored else missing


def _flag_false(column: str, name: str | None = None) -> _Condition:
    """The Boolean `column` is known false (no hemolytic anemia, no GI activity, ...)."""
    return _Condition(~pl.col(column), ((name or column, pl.col(column).is_null()),))


def _at_most(column: str, limit: pl.Expr | float, name: str | None = None) -> _Condition:
    bound = limit if isinstance(limit, pl.Expr) else pl.lit(limit)
    return _Condition(pl.col(column) <= bound, ((name or column, pl.col(column).is_null()),))


def _threshold(column: str, threshold: Threshold, name: str | None = None, censored: bool = False) -> _Condition:
    censoring = pl.col(column + CENSORING_SUFFIX) if censored else None
    return _Condition(_met(pl.col(column), threshold, censoring), ((name or column, _unknown(column, censored)),))


def _score_at_most(descriptors: Sequence[Descriptor], limit: pl.Expr | int, prefix: str = "") -> _Condition:
    """The weighted sum of `descriptors` is at most `limit`: false when the known present ones already exceed
    it, true when it holds even with every unknown one present, else unknown."""
    bound = limit if isinstance(limit, pl.Expr) else pl.lit(limit)
    columns = [prefix + ITEM_PREFIX + d.item for d in descriptors]
    if not columns:
        return _Condition(pl.lit(0) <= bound)
    lower = pl.sum_horizontal(
        [pl.col(c).fill_null(False).cast(pl.Int64) * d.weight for c, d in zip(columns, descriptors, strict=True)]
    )
    upper = pl.sum_horizontal(
        [pl.col(c).fill_null(True).cast(pl.Int64) * d.weight for c, d in zip(columns, descriptors, strict=True)]
    )
    value = pl.when(lower > bound).then(False).when(upper <= bound).then(True).otherwise(pl.lit(None, pl.Boolean))
    return _Condition(value, tuple((c, pl.col(c).is_null()) for c in columns))


def _none_present(descriptors: Sequence[Descriptor]) -> _Condition:
    """No descriptor of `descriptors` is present (unknown when none is known present but some are unknown)."""
    columns = [ITEM_PREFIX + d.item for d in descriptors]
    if not columns:
        return _Condition(pl.lit(True))
    return _Condition(~pl.any_horizontal(columns), tuple((c, pl.col(c).is_null()) for c in columns))


def _no_new_activity(descriptors: Sequence[Descriptor]) -> _Condition:
    """No descriptor present now that was absent at the previous visit; with no previous visit, the earlier
    state is unknown (so any descriptor present or unknown now leaves this unknown)."""
    if not descriptors:
        return _Condition(pl.lit(True))
    has_previous = pl.col("_has_previous")
    new = [pl.col(ITEM_PREFIX + d.item) & ~pl.col(_PREVIOUS + ITEM_PREFIX + d.item) for d in descriptors]
    inputs: list[tuple[str, pl.Expr]] = [("previous visit", ~has_previous)]
    for d in descriptors:
        now, before = ITEM_PREFIX + d.item, _PREVIOUS + ITEM_PREFIX + d.item
        inputs.append((now, pl.col(now).is_null()))
        inputs.append((f"previous {now}", has_previous & pl.col(before).is_null() & pl.col(now).fill_null(True)))
    return _Condition(~pl.any_horizontal(new), tuple(inputs))


def _all_of(conditions: Sequence[_Condition]) -> pl.Expr:
    return pl.all_horizontal([c.value for c in conditions]) if conditions else pl.lit(True)


def _unknown_inputs(conditions: Sequence[_Condition]) -> pl.Expr:
    """The names of the unknown inputs of the unknown conditions, comma-separated, each once."""
    names: dict[str, list[pl.Expr]] = {}
    for condition in conditions:
        for name, is_unknown in condition.inputs:
            names.setdefault(name, []).append(condition.value.is_null() & is_unknown)
    if not names:
        return pl.lit(None, pl.String)
    parts = [pl.when(pl.any_horizontal(flags)).then(pl.lit(name)) for name, flags in names.items()]
    joined = pl.concat_str(parts, separator=", ", ignore_nulls=True)
    return pl.when(joined != "").then(joined).otherwise(pl.lit("unknown condition"))


# --------------------------------------------------------------------------------------------------
# Per-visit renal lab values
# --------------------------------------------------------------------------------------------------


def renal_values(activity: pl.DataFrame, labs: pl.DataFrame, lookback_days: int) -> pl.DataFrame:
    """`activity` with `upcr`, `upcr_censoring`, `egfr`, `egfr_censoring` from the harmonised labs.

    Each visit gets the latest value of each analyte collected on the visit day or in the `lookback_days` before
    it (none after it); of several on that day, the least favourable (highest UPCR, lowest eGFR), so that a
    same-day repeat never makes a response. A censored value keeps its comparator: the endpoints let it decide
    a threshold only when the comparator does. Columns of those names already in `activity` are replaced; rows
    and their order are kept.

    Args:
        activity: one row per visit (`study_id`, `subject_id`, `visit_date`, ...).
        labs: harmonised lab rows (`study_id`, `subject_id`, `analyte`, `value`, `censoring`, `collected_date`).
        lookback_days: days before the visit that still count (0: the visit day only).
    """
    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    produced = [c for a in RENAL_ANALYTES for c in (a, a + CENSORING_SUFFIX)]
    out = activity.drop(produced, strict=False).with_row_index("_row").sort("visit_date")
    candidates = (
        labs.filter(pl.col("analyte").is_in(list(RENAL_ANALYTES)) & pl.col("value").is_not_null())
        .select(*_KEYS, "analyte", "value", "censoring", "collected_date")
        .with_columns(_worst=pl.when(pl.col("analyte") == "upcr").then(-pl.col("value")).otherwise(pl.col("value")))
        .sort([*_KEYS, "analyte", "collected_date", "_worst"])
        .unique(subset=[*_KEYS, "analyte", "collected_date"], keep="first")
    )
    for analyte in RENAL_ANALYTES:
        latest = (
            candidates.filter(pl.col("analyte") == analyte)
            .select(
                *_KEYS,
                pl.col("collected_date").alias("_collected"),
                pl.col("value").cast(pl.Float64).alias(analyte),
                pl.col("censoring").cast(pl.String).alias(analyte + CENSORING_SUFFIX),
            )
            .sort("_collected")
        )
        out = out.join_asof(
            latest,
            left_on="visit_date",
            right_on="_collected",
            by=_KEYS,
            strategy="backward",
            tolerance=dt.timedelta(days=lookback_days),
            check_sortedness=False,  # both sides are sorted by date above
        ).drop("_collected")
    return out.sort("_row").drop("_row")


# --------------------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------------------


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s): {', '.join(missing)}")


def _with_censoring(frame: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Adds an all-null `<col>_censoring` for each of `columns` that has none (exact values)."""
    absent = [c + CENSORING_SUFFIX for c in columns if c + CENSORING_SUFFIX not in frame.columns]
    return frame.with_columns(pl.lit(None, pl.String).alias(c) for c in absent)


def _check_descriptor_names(definition: EndpointDefinition, descriptors: Sequence[Descriptor]) -> None:
    known = {d.item for d in descriptors}
    named = {
        "renal_population.renal_descriptors": definition.renal_population.renal_descriptors,
        "lldas.new_activity_ignores": definition.lldas.new_activity_ignores,
    }
    for setting, items in named.items():
        unknown = sorted(set(items) - known)
        if unknown:
            raise SettingsError(
                f"endpoint definition: {setting}: unknown descriptor(s) {', '.join(unknown)}; "
                f"expected some of: {', '.join(sorted(known))}"
            )


def _visits(activity: pl.DataFrame, subjects: pl.DataFrame, as_of: dt.date, items: list[str]) -> pl.DataFrame:
    """Visits up to `as_of` of known subjects, sorted, with `_visit` (an id), `_day` (days since day 0) and
    the previous visit's descriptors (`previous_item_<name>`, `_has_previous`)."""
    order = ["visit_date", "visit"] if "visit" in activity.columns else ["visit_date"]
    visits = (
        activity.filter(pl.col("visit_date") <= as_of)
        .join(subjects.select(*_KEYS, "day0"), on=_KEYS, how="inner")
        .sort([*_KEYS, *order], nulls_last=True)
        .with_row_index("_visit")
    )
    return visits.with_columns(
        _day=(pl.col("visit_date") - pl.col("day0")).dt.total_days().cast(pl.Int32),
        _has_previous=pl.col("visit_date").shift(1).over(_KEYS).is_not_null(),
        **{_PREVIOUS + c: pl.col(c).shift(1).over(_KEYS) for c in items},
    ).drop("day0")


def _grid(subjects: pl.DataFrame, definition: EndpointDefinition) -> pl.DataFrame:
    """One row per subject and landmark, with the landmark's target and window dates."""
    landmarks = pl.DataFrame(
        {
            "landmark": list(definition.landmarks),
            "target_day": [lm.target_day for lm in definition.landmarks.values()],
            "_half_width": [lm.half_width_days for lm in definition.landmarks.values()],
        },
        schema={"landmark": pl.String, "target_day": pl.Int32, "_half_width": pl.Int32},
    )
    return (
        subjects.select(*_KEYS, *_SUBJECT_COLUMNS)
        .join(landmarks, how="cross")
        .with_columns(
            _target_date=pl.col("day0") + pl.duration(days=pl.col("target_day")),
            _window_end=pl.col("day0") + pl.duration(days=pl.col("target_day") + pl.col("_half_width")),
        )
    )


def _landmark_visits(grid: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    """`grid` with the landmark visit's `_visit` and `_distance` (null when no visit in the window): closest to
    the target day, ties to the earlier visit."""
    chosen = (
        grid.select(*_KEYS, "landmark", "target_day", "_half_width")
        .join(visits.select(*_KEYS, "_visit", "_day"), on=_KEYS, how="inner")
        .with_columns(_distance=(pl.col("_day") - pl.col("target_day")).abs())
        .filter(pl.col("_distance") <= pl.col("_half_width"))
        .sort([*_KEYS, "landmark", "_distance", "_day", "_visit"])
        .unique(subset=[*_KEYS, "landmark"], keep="first")
        .select(*_KEYS, "landmark", "_visit", "_distance")
    )
    return grid.join(chosen, on=[*_KEYS, "landmark"], how="left")


def _treatment_failure_status(frame: pl.DataFrame, visits: pl.DataFrame) -> pl.DataFrame:
    """`_treatment_failure`: true at any visit from day 0 to the reference date (the landmark visit, else the
    window's end), unknown when unknown at such a visit and true at none, else false."""
    status = (
        frame.select(*_KEYS, "landmark", "_reference_date")
        .join(
            visits.filter(pl.col("_day") >= 0).select(*_KEYS, "visit_date", "treatment_failure"),
            on=_KEYS,
            how="inner",
        )
        .filter(pl.col("visit_date") <= pl.col("_reference_date"))
        .group_by([*_KEYS, "landmark"])
        .agg(_treatment_failure=pl.col("treatment_failure").any(ignore_nulls=False), _checked=pl.len())
    )
    # No visit from day 0 to the reference date: nothing recorded, so no treatment failure.
    return (
        frame.join(status, on=[*_KEYS, "landmark"], how="left")
        .with_columns(
            pl.when(pl.col("_checked").is_null())
            .then(pl.lit(False))
            .otherwise(pl.col("_treatment_failure"))
            .alias("_treatment_failure")
        )
        .drop("_checked")
    )


def _steroid_status(
    frame: pl.DataFrame, visits: pl.DataFrame, name: str, settings: RenalResponseSettings
) -> pl.DataFrame:
    """`_steroids_<name>`: the dose passes at the landmark visit and at every visit from the start day to it."""
    column = f"_steroids_{name}"
    threshold = settings.prednisone_mg_day
    if threshold is None:
        return frame.with_columns(pl.lit(True).alias(column))
    status = (
        frame.filter(pl.col("_visit").is_not_null())
        .select(*_KEYS, "landmark", "_visit", pl.col("_day").alias("_landmark_day"))
        .join(visits.select(*_KEYS, pl.col("_visit").alias("_other"), "_day", "prednisone_mg_day"), on=_KEYS)
        .filter(
            ((pl.col("_day") >= settings.prednisone_from_day) | (pl.col("_other") == pl.col("_visit")))
            & (pl.col("_day") <= pl.col("_landmark_day"))
        )
        .group_by([*_KEYS, "landmark"])
        .agg(_met(pl.col("prednisone_mg_day"), threshold).all(ignore_nulls=False).alias(column))
    )
    return frame.join(status, on=[*_KEYS, "landmark"], how="left")


def _landmark_frame(
    activity: pl.DataFrame,
    treatment_baseline: pl.DataFrame,
    subjects: pl.DataFrame,
    definition: EndpointDefinition,
    *,
    as_of: dt.date,
    descriptors: Sequence[Descriptor],
) -> pl.DataFrame:
    """One row per subject and landmark with the landmark visit's values, the previous visit's descriptors,
    the treatment baseline (`baseline_*`), the subject's dates and the intercurrent-event and steroid status."""
    items = [ITEM_PREFIX + d.item for d in descriptors]
    visits = _visits(_with_censoring(activity, RENAL_ANALYTES), subjects, as_of, items)
    frame = _landmark_visits(_grid(subjects, definition), visits)
    visit_columns = ["visit_date", "_day", "_has_previous", *items, *(_PREVIOUS + c for c in items)]
    visit_columns += [*_VISIT_COLUMNS, *(a + CENSORING_SUFFIX for a in RENAL_ANALYTES)]
    frame = frame.join(visits.select("_visit", *visit_columns), on="_visit", how="left")
    renal_items = [ITEM_PREFIX + i for i in definition.renal_population.renal_descriptors]
    baseline = _with_censoring(treatment_baseline, RENAL_ANALYTES).select(
        *_KEYS,
        *(pl.col(c).alias(_BASELINE + c) for c in (*_BASELINE_COLUMNS, *renal_items)),
        *(pl.col(a + CENSORING_SUFFIX).alias(_BASELINE + a + CENSORING_SUFFIX) for a in RENAL_ANALYTES),
    )
    frame = frame.join(baseline, on=_KEYS, how="left").with_columns(
        _reference_date=pl.coalesce("visit_date", "_window_end"),
        _final_date=_final_date(),
    )
    frame = _treatment_failure_status(frame, visits)
    for name in ("complete_renal_response", "perr"):
        if name in definition.endpoints:
            frame = _steroid_status(frame, visits, name, getattr(definition, name))
    return frame


def _final_date() -> pl.Expr:
    """The first date on which no later visit can replace the landmark visit.

    A visit dated after `as_of` replaces the current one (at distance d from the target) only when strictly
    closer (ties go to the earlier, existing visit), so the choice is final once `as_of` reaches
    target + d - 1; with no visit (d = half-width + 1) that is the window's last day.
    """
    distance = pl.coalesce("_distance", pl.col("_half_width") + 1)
    return pl.col("_target_date") + pl.duration(days=distance - 1)


def _population(name: str, definition: EndpointDefinition) -> _Condition | None:
    """Who the endpoint applies to (None: every infused subject)."""
    if name == "msri4":
        baseline = pl.col(f"{_BASELINE}sledai_2k")
        return _Condition(
            baseline >= definition.msri4.baseline_sledai_2k_min, (("baseline sledai_2k", baseline.is_null()),)
        )
    if name in ("complete_renal_response", "perr"):
        population = definition.renal_population
        parts: list[pl.Expr] = []
        inputs: list[tuple[str, pl.Expr]] = []
        if population.lupus_nephritis_classes:
            parts.append(pl.col("lupus_nephritis_class").is_in(list(population.lupus_nephritis_classes)))
            inputs.append(("lupus_nephritis_class", pl.col("lupus_nephritis_class").is_null()))
        for item in population.renal_descriptors:
            column = _BASELINE + ITEM_PREFIX + item
            parts.append(pl.col(column))
            inputs.append((f"baseline {ITEM_PREFIX}{item}", pl.col(column).is_null()))
        if population.upcr is not None:
            parts.append(_met(pl.col(f"{_BASELINE}upcr"), population.upcr, pl.col(f"{_BASELINE}upcr_censoring")))
            inputs.append(("baseline upcr", _unknown(f"{_BASELINE}upcr", censored=True)))
        return _Condition(pl.any_horizontal(parts) if parts else pl.lit(False), tuple(inputs))
    return None


def renal_involvement(population: RenalPopulation) -> pl.Expr:
    """Three-valued renal involvement at the treatment baseline, the renal endpoints' population rule, over the
    columns `lupus_nephritis_class`, `baseline_item_<name>`, `baseline_upcr` and `baseline_upcr_censoring`."""
    condition = _population("perr", EndpointDefinition(version="renal_population", renal_population=population))
    assert condition is not None  # the renal endpoints always have a population
    return condition.value


def _conditions(name: str, definition: EndpointDefinition, descriptors: Sequence[Descriptor]) -> list[_Condition]:
    """The conditions of endpoint `name` at the landmark visit, all of which must hold."""
    clinical = [d for d in descriptors if d.kind != "serology"]
    doris = definition.doris_remission
    if name in ("doris_remission", "drug_free_doris_remission"):
        conditions = [
            _score_at_most(clinical, doris.clinical_sledai_2k_max),
            _threshold("pga", doris.pga),
            _threshold("prednisone_mg_day", doris.prednisone_mg_day),
        ]
        if name == "drug_free_doris_remission":
            drug_free = definition.drug_free_doris_remission
            conditions += [
                _threshold("prednisone_mg_day", drug_free.prednisone_mg_day),
                _at_most("immunosuppressants", drug_free.immunosuppressants_max),
            ]
            if not drug_free.antimalarials_allowed:
                conditions.append(_flag_false("antimalarial"))
        return conditions
    if name == "lldas":
        lldas = definition.lldas
        conditions = [
            _score_at_most(descriptors, lldas.sledai_2k_max),
            _none_present([d for d in descriptors if d.major_organ]),
            _flag_false("hemolytic_anemia"),
            _flag_false("gi_activity"),
            _no_new_activity([d for d in descriptors if d.item not in lldas.new_activity_ignores]),
            _threshold("pga", lldas.pga),
            _threshold("prednisone_mg_day", lldas.prednisone_mg_day),
        ]
        if not lldas.other_investigational_drug_allowed:
            conditions.append(_flag_false("other_investigational_drug"))
        return conditions
    if name == "msri4":
        msri4 = definition.msri4
        worsening = (pl.col("pga") - pl.col(f"{_BASELINE}pga")).round(_DECIMALS)
        return [
            _score_at_most(descriptors, pl.col(f"{_BASELINE}sledai_2k") - msri4.sledai_2k_reduction_min),
            _Condition(
                worsening < msri4.pga_worsening_max,
                (("pga", pl.col("pga").is_null()), ("baseline pga", pl.col(f"{_BASELINE}pga").is_null())),
            ),
        ]
    if name in ("complete_renal_response", "perr"):
        renal: RenalResponseSettings = getattr(definition, name)
        baseline_egfr = pl.when(pl.col(f"{_BASELINE}egfr_censoring").is_null()).then(pl.col(f"{_BASELINE}egfr"))
        relative = (baseline_egfr * (1 - renal.egfr_decline_max_percent / 100)).round(_DECIMALS)
        censoring = pl.col("egfr" + CENSORING_SUFFIX)
        egfr = threshold_met(pl.col("egfr"), "ge", renal.egfr_min, censoring) | threshold_met(
            pl.col("egfr"), "ge", relative, censoring
        )
        steroids = f"_steroids_{name}"
        return [
            _threshold("upcr", renal.upcr, censored=True),
            _Condition(
                egfr,
                (("egfr", _unknown("egfr", censored=True)), ("baseline egfr", _unknown(f"{_BASELINE}egfr", True))),
            ),
            _Condition(
                pl.col(steroids),
                ((f"prednisone_mg_day from day {renal.prednisone_from_day}", pl.col(steroids).is_null()),),
            ),
        ]
    raise ValueError(f"unknown endpoint {name!r}")


def _reason(events: IntercurrentEvents, *, today: pl.Expr, applies: pl.Expr, evaluated: pl.Expr) -> pl.Expr:
    """Why a row is what it is, in the order of the rules (module docstring): not infused, not applicable,
    population unknown, an intercurrent event, pending, no visit in the window, inputs unknown, or evaluated."""
    discontinued = pl.col("discontinued_date") <= today
    before_landmark = (
        pl.when(pl.col("_visit").is_null())
        .then(pl.col("discontinued_date") <= pl.col("_window_end"))
        .otherwise(pl.col("discontinued_date") < pl.col("visit_date"))
    )
    failed = pl.col("_treatment_failure").fill_null(False) if events.treatment_failure == "not_met" else pl.lit(False)
    withdrawn = (discontinued & before_landmark).fill_null(False) if events.discontinued == "not_met" else pl.lit(False)
    pending = ~discontinued.fill_null(False) & (today < pl.col("_final_date"))
    return (
        pl.when(pl.col("day0").is_null())
        .then(pl.lit("NOT_INFUSED"))
        .when(~applies)
        .then(pl.lit("NOT_APPLICABLE"))
        .when(applies.is_null())
        .then(pl.lit("INPUT_UNKNOWN"))
        .when(failed)
        .then(pl.lit("TREATMENT_FAILURE"))
        .when(withdrawn)
        .then(pl.lit("DISCONTINUED"))
        .when(pending)
        .then(pl.lit("PENDING"))
        .when(pl.col("_visit").is_null())
        .then(pl.lit("NO_VISIT_IN_WINDOW"))
        .when(evaluated.is_null())
        .then(pl.lit("INPUT_UNKNOWN"))
        .otherwise(pl.lit("EVALUATED"))
    )


def _endpoint_rows(
    frame: pl.DataFrame,
    name: str,
    definition: EndpointDefinition,
    descriptors: Sequence[Descriptor],
    as_of: dt.date,
) -> pl.DataFrame:
    """The rows of endpoint `name` (see the module docstring for the order of the rules)."""
    events = definition.intercurrent_events
    today = pl.lit(as_of)
    conditions = _conditions(name, definition, descriptors)
    if events.treatment_failure == "not_met":
        conditions.append(
            _Condition(~pl.col("_treatment_failure"), (("treatment_failure", pl.col("_treatment_failure").is_null()),))
        )
    population = _population(name, definition)
    # Each condition becomes a column once: the verdict and the detail both read it, and polars plans a large
    # expression repeated inside another slowly.
    frame = frame.with_columns(
        *(c.value.alias(f"_condition_{i}") for i, c in enumerate(conditions)),
        (population.value if population is not None else pl.lit(True)).alias("_applies"),
    )
    conditions = [_Condition(pl.col(f"_condition_{i}"), c.inputs) for i, c in enumerate(conditions)]
    if population is not None:
        population = _Condition(pl.col("_applies"), population.inputs)
    frame = frame.with_columns(_all_of(conditions).alias("_evaluated"))
    evaluated, applies = pl.col("_evaluated"), pl.col("_applies")
    reason = _reason(events, today=today, applies=applies, evaluated=evaluated)
    population_unknown = _unknown_inputs([population]) if population is not None else pl.lit(None, pl.String)
    detail = (
        pl.when(pl.col("reason") == "INPUT_UNKNOWN")
        .then(pl.when(applies.is_null()).then(population_unknown).otherwise(_unknown_inputs(conditions)))
        .when(pl.col("reason") == "PENDING")
        .then(pl.lit("final on ") + pl.col("_final_date").dt.to_string("%Y-%m-%d"))
    )
    met = (
        pl.when(pl.col("reason") == "EVALUATED")
        .then(evaluated)
        .when(pl.col("reason").is_in(list(NOT_MET_REASONS)))
        .then(False)
        .otherwise(pl.lit(None, pl.Boolean))
    )
    return (
        frame.with_columns(reason.alias("reason"))
        .with_columns(met.alias("met"), detail.alias("reason_detail"))
        .select(
            *_KEYS,
            pl.lit(name).alias("endpoint"),
            pl.lit(definition.version).alias("definition_version"),
            "landmark",
            "target_day",
            pl.when(pl.col("_visit").is_not_null()).then(pl.col("visit_date")).alias("visit_date"),
            pl.col("_day").alias("visit_day"),
            "met",
            "reason",
            "reason_detail",
        )
    )


def endpoints(
    activity: pl.DataFrame,
    treatment_baseline: pl.DataFrame,
    subjects: pl.DataFrame,
    definition: EndpointDefinition,
    as_of: dt.date,
    *,
    descriptors: Sequence[Descriptor] | None = None,
) -> pl.DataFrame:
    """One row per subject (of `subjects`), endpoint (of `definition.endpoints`) and landmark.

    Args:
        activity: one row per visit: `study_id`, `subject_id`, `visit_date`, optional `visit`, `item_<name>` per
            descriptor (Boolean, null = unknown), `pga`, `prednisone_mg_day`, `antimalarial`, `hemolytic_anemia`,
            `gi_activity`, `other_investigational_drug`, `treatment_failure`, `immunosuppressants`, `upcr`,
            `egfr` (optional `upcr_censoring`, `egfr_censoring`: see `renal_values`). Visits after `as_of` are
            ignored.
        treatment_baseline: one row per subject: `sledai_2k`, `pga`, `upcr`, `egfr` (optional censoring
            columns) and `item_<name>` of the renal population's descriptors; a subject without a row has an
            unknown baseline.
        subjects: `study_id`, `subject_id`, `day0` (null: not infused), `discontinued_date` (withdrawal or
            death), `lupus_nephritis_class`.
        definition: the endpoint definition.
        as_of: the data cut-off date.
        descriptors: the SLEDAI-2K descriptor table (default: the built-in one).

    Returns:
        `study_id`, `subject_id`, `endpoint`, `definition_version`, `landmark`, `target_day`, `visit_date` and
        `visit_day` (days since infusion) of the landmark visit (null when none), `met` (null: not
        assessable), `reason` (a code of `REASONS`), `reason_detail` (for INPUT_UNKNOWN the unknown inputs; for
        PENDING the date the landmark becomes final); sorted by subject, endpoint (definition order), target day.

    Raises:
        SettingsError: the definition names a descriptor the descriptor table does not have.
        ValueError: an input lacks a column.
    """
    descriptors = tuple(descriptors) if descriptors is not None else load_descriptors()
    _check_descriptor_names(definition, descriptors)
    items = [ITEM_PREFIX + d.item for d in descriptors]
    _require(activity, [*_KEYS, "visit_date", *items, *_VISIT_COLUMNS], "activity")
    renal_items = [ITEM_PREFIX + i for i in definition.renal_population.renal_descriptors]
    _require(treatment_baseline, [*_KEYS, *_BASELINE_COLUMNS, *renal_items], "treatment_baseline")
    _require(subjects, [*_KEYS, *_SUBJECT_COLUMNS], "subjects")
    frame = _landmark_frame(activity, treatment_baseline, subjects, definition, as_of=as_of, descriptors=descriptors)
    order = {name: rank for rank, name in enumerate(definition.endpoints)}
    rows = pl.concat([_endpoint_rows(frame, name, definition, descriptors, as_of) for name in definition.endpoints])
    return (
        rows.with_columns(pl.col("endpoint").replace_strict(order, return_dtype=pl.Int32).alias("_order"))
        .sort([*_KEYS, "_order", "target_day", "landmark"])
        .drop("_order")
    )


# --------------------------------------------------------------------------------------------------
# Training outcomes
# --------------------------------------------------------------------------------------------------


def endpoint_label(endpoint: str, landmark: str, version: str) -> str:
    """The outcome label of an endpoint at a landmark: `drug_free_doris_remission@month_6 v1.0.0`."""
    return f"{endpoint}@{landmark} v{version}"


@dataclass(frozen=True)
class OutcomeCounts:
    """What `derive_outcomes` kept and left out, for the model card."""

    endpoint: str  # the label
    definition_version: str
    responded: int
    not_responded: int
    left_out: dict[str, int]  # not-assessable reason -> subjects (every such reason, zeros included)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the model card)."""
        return {
            "endpoint": self.endpoint,
            "definition_version": self.definition_version,
            "responded": self.responded,
            "not_responded": self.not_responded,
            "left_out": dict(self.left_out),
        }


def derive_outcomes(endpoints: pl.DataFrame, endpoint: str, landmark: str) -> tuple[pl.DataFrame, OutcomeCounts]:
    """Training outcomes from the endpoint table: one row per subject whose endpoint was met or not met.

    Returns `(outcomes, counts)`: outcomes with `study_id`, `subject_id`, `responded` (Boolean) and `endpoint`
    (the label, `endpoint_label`), the columns of an outcomes file; rows with `met` null (PENDING,
    NOT_APPLICABLE and the other not-assessable reasons) are left out and counted by reason.

    Raises:
        UnknownEndpointError: `endpoint` or `landmark` is not in the table (the message lists the known ones),
            or the table mixes definition versions.
    """
    known_endpoints = endpoints["endpoint"].unique(maintain_order=True).to_list()
    known_landmarks = endpoints["landmark"].unique(maintain_order=True).to_list()
    if endpoint not in known_endpoints:
        raise UnknownEndpointError(
            f"unknown endpoint {endpoint!r}; the endpoint table holds: {', '.join(known_endpoints) or '(none)'}"
        )
    if landmark not in known_landmarks:
        raise UnknownEndpointError(
            f"unknown landmark {landmark!r}; the endpoint table holds: {', '.join(known_landmarks) or '(none)'}"
        )
    rows = endpoints.filter((pl.col("endpoint") == endpoint) & (pl.col("landmark") == landmark))
    versions = rows["definition_version"].unique().sort().to_list()
    if len(versions) != 1:
        raise UnknownEndpointError(
            f"the endpoint table mixes definition versions {versions} for {endpoint}@{landmark}; derive each apart"
        )
    label = endpoint_label(endpoint, landmark, versions[0])
    outcomes = rows.filter(pl.col("met").is_not_null()).select(
        *_KEYS, pl.col("met").alias("responded"), pl.lit(label).alias("endpoint")
    )
    left_out = dict.fromkeys(NOT_ASSESSABLE_REASONS, 0)
    tally = rows.filter(pl.col("met").is_null()).group_by("reason").len()
    left_out.update(dict(zip(tally["reason"].to_list(), tally["len"].to_list(), strict=True)))
    responded = int(outcomes["responded"].sum())
    counts = OutcomeCounts(
        endpoint=label,
        definition_version=versions[0],
        responded=responded,
        not_responded=outcomes.height - responded,
        left_out=left_out,
    )
    return outcomes, counts
