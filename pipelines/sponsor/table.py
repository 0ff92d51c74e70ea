"""The sponsor table: a run's strata pseudonymised and reduced to what a sponsor may see (age bands, study days,
pseudonymised sites), in the sponsor contract's column order (``immunostrat.schemas.sponsor``)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.config.features import DEFAULT_FEATURES, FeatureSpec
from immunostrat.config.run import PublishConfig
from immunostrat.modelling.registry import resolve_model_file
from immunostrat.schemas.records import RunRecord, as_run_record
from immunostrat.schemas.sponsor import DAY_COLUMNS, sponsor_model, validate_sponsor
from immunostrat.sponsor.pseudonym import PseudonymKey, date_shifts, site_pseudonyms, subject_pseudonyms

__all__ = [
    "age_band_labels",
    "read_strata_for_sponsor",
    "run_features",
    "sponsor_rows",
    "sponsor_table",
    "strata_columns_for_sponsor",
]


def age_band_labels(edges: Sequence[int]) -> list[str]:
    """Band labels for lower edges, e.g. (18, 30, 65) -> ['<18', '18-29', '30-64', '65+']."""
    inner = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    return [f"<{edges[0]}", *inner, f"{edges[-1]}+"]


def _age_band(column: str, edges: Sequence[int]) -> pl.Expr:
    labels = age_band_labels(edges)
    age = pl.col(column).floor()
    expr: Any = pl.when(age < edges[0]).then(pl.lit(labels[0]))
    for hi, label in zip(edges[1:], labels[1:-1], strict=True):
        expr = expr.when(age < hi).then(pl.lit(label))
    return expr.when(age >= edges[-1]).then(pl.lit(labels[-1])).otherwise(pl.lit(None, pl.String))


def run_features(run: RunRecord | Mapping[str, Any]) -> tuple[FeatureSpec, ...]:
    """The scoring model's features of a run (its run.json): the defaults, or the specs from its model card."""
    record = as_run_record(run)
    names = list(record.model.features) if record.model else []
    if not record.model or not names or names == [f.name for f in DEFAULT_FEATURES]:
        return DEFAULT_FEATURES
    try:
        registry = (record.parameters.get("scoring") or {}).get("registry")
        # The checksummed card's features; the model file is not deserialised.
        specs = resolve_model_file(record.model.model_id, registry).features
        if [f.name for f in specs] == names:
            return specs
    except Exception:  # the card only adds descriptions; the names are what the contract needs
        pass
    return tuple(FeatureSpec(n, n, "identity", "see the model card", f"Model feature `{n}`.") for n in names)


def sponsor_table(
    strata: pl.DataFrame,
    key: PseudonymKey,
    cfg: PublishConfig | None = None,
    features: Sequence[FeatureSpec] | None = None,
) -> pl.DataFrame:
    """Pseudonymise a strata table into the sponsor table (validated against the sponsor contract).

    Args:
        strata: A run's `strata.parquet`.
        key: The project's pseudonym key.
        cfg: Privacy settings (site, dates, age bands); defaults when None.
        features: The scoring model's features (default: `DEFAULT_FEATURES`).

    Returns:
        One row per subject, columns in contract order, sorted by study and pseudonym (so the row order tells
        nothing about enrolment order or site).

    Raises:
        OutputContractError: The result does not meet the sponsor contract.
    """
    features = tuple(features or DEFAULT_FEATURES)
    rows = sponsor_rows(strata, key, cfg, features)
    return validate_sponsor(rows.sort("study_id", "subject_pseudonym"), features=features)


def sponsor_rows(
    strata: pl.DataFrame,
    key: PseudonymKey,
    cfg: PublishConfig | None = None,
    features: Sequence[FeatureSpec] | None = None,
) -> pl.DataFrame:
    """The sponsor table's rows for these strata rows, in their order, not yet checked: see `sponsor_table`."""
    cfg = cfg or PublishConfig()
    features = tuple(features or DEFAULT_FEATURES)
    if cfg.site == "pseudonymise":
        site: pl.Series | pl.Expr = site_pseudonyms(key, strata["study_id"], strata["site_id"])
    elif cfg.site == "keep":
        site = pl.col("site_id")
    else:
        site = pl.lit(None, pl.String)
    days = [
        (pl.col(src) - pl.col("reference_date")).dt.total_days().cast(pl.Int32).alias(dst)
        for src, dst in DAY_COLUMNS.items()
        if src in strata.columns
    ]
    frame = strata.with_columns(
        subject_pseudonyms(key, strata["study_id"], strata["subject_id"]),
        site.alias("site"),
        _age_band("age_years", cfg.age_bands).alias("age_band"),
        *days,
    )
    if cfg.dates == "shift":
        shift = date_shifts(key, strata["study_id"], strata["subject_id"], cfg.max_shift_days)
        frame = frame.with_columns(reference_date_shifted=pl.col("reference_date") + pl.duration(days=shift))
    order: list[str] = []
    for name, column in sponsor_model(features).to_schema().columns.items():
        if column.regex:
            order += [c for c in frame.columns if c.startswith("criterion_")]
        elif name in frame.columns:
            order.append(name)
    return frame.select(order)


def strata_columns_for_sponsor(path: Path, features: Sequence[FeatureSpec]) -> list[str]:
    """The columns of a strata file that `sponsor_table` reads (scores and flags, not the analytes' details)."""
    schema = sponsor_model(features).to_schema().columns
    needed = {"study_id", "subject_id", "site_id", "age_years", "reference_date", *DAY_COLUMNS, *schema}
    return [c for c in pl.read_parquet_schema(path) if c in needed or c.startswith("criterion_")]


def read_strata_for_sponsor(path: Path, features: Sequence[FeatureSpec]) -> pl.DataFrame:
    """A strata file's columns that `sponsor_table` reads."""
    return pl.read_parquet(path, columns=strata_columns_for_sponsor(path, features))
