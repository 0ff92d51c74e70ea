"""Training as a plain function: the same ingest-to-baseline stages as stratify, plus outcomes and a fit.

``labelled_strata`` (strata joined with outcomes) is shared with external validation (``immunostrat evaluate``)
and model comparison, so a model is always evaluated on features derived exactly as it will see them in stratify.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat import run as pipeline
from immunostrat.config import Protocol, RunConfig, TrainParams, load_protocol
from immunostrat.io import read_outcomes
from immunostrat.modeling import (
    DEFAULT_FEATURES,
    TrainedModel,
    TrainingConfig,
    build_feature_frame,
    train_responder_model,
)
from immunostrat.registry import save_model
from immunostrat.stages.validate import validate_outcomes

__all__ = [
    "SYNTHETIC_LIMITATIONS",
    "labelled_strata",
    "resolve_training_config",
    "train",
    "train_model",
    "training_table",
]

SYNTHETIC_LIMITATIONS = [
    "Trained on the synthetic cohort of `immunostrat synth`: its response mechanism is invented for testing.",
    "Not for clinical use; not validated on real trial data.",
    "Logistic regression on six baseline biomarker features; subjects missing any feature are not scored.",
]

#: TrainParams fields that, when set explicitly, override the same TrainingConfig fields.
_PARAM_OVERRIDES = ("seed", "cv_folds", "cv_repeats")


def labelled_strata(
    labs: Sequence[str | Path],
    subjects: str | Path,
    outcomes: str | Path,
    cfg: RunConfig,
    protocol: Protocol | None = None,
    *,
    input_options: dict[str, Any] | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Baseline strata joined with valid outcomes, plus a data summary (checksums, counts) for cards and reports.

    Args:
        labs: Lab-result files.
        subjects: Subjects file.
        outcomes: Outcomes file (study_id, subject_id, responded, endpoint).
        cfg: Harmonisation, validation and baseline options (as in stratify).
        protocol: Eligibility protocol (default: the built-in one).
        input_options: `read_inputs` options for other formats (see `immunostrat.run.input_options`).

    Returns:
        ``(joined, summary)``: one row per subject with a valid outcome; summary holds input paths, SHA-256 and
        row counts, lab row accounting, subjects with outcome, quarantined outcomes, endpoints, studies, as_of.
    """
    inputs = pipeline.read_inputs(labs, subjects, **(input_options or {}))
    outcomes_table = read_outcomes(outcomes)
    prepared = pipeline.prepare(inputs, cfg)
    strata = pipeline.build_strata(prepared, protocol or load_protocol(), cfg)
    checked = validate_outcomes(outcomes_table.frame)
    joined = strata.join(checked.accepted, on=["study_id", "subject_id"], how="inner")
    files = [{"path": t.path, "sha256": t.sha256, "rows": t.rows_read} for t in inputs.labs]
    if inputs.subjects is not None:
        subj = inputs.subjects
        files.append({"path": subj.path, "sha256": subj.sha256, "rows": subj.rows_read})
    files.append({"path": outcomes_table.path, "sha256": outcomes_table.sha256, "rows": outcomes_table.rows_read})
    summary = {
        "inputs": files,
        "lab_counts": {k: prepared.counts[k] for k in ("rows_read", "accepted", "outside_panel", "quarantined")},
        "subjects_in_strata": strata.height,
        "subjects_with_outcome": joined.height,
        "outcomes_quarantined": checked.quarantine.height,
        "endpoints": sorted({str(e) for e in joined["endpoint"].drop_nulls().to_list()}),
        "studies": sorted(set(joined["study_id"].to_list())),
        "sites": joined["site_id"].n_unique() if "site_id" in joined.columns else None,
        "as_of": cfg.validation.as_of.isoformat(),
    }
    return joined, summary


def training_table(params: TrainParams) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Baseline strata joined with valid outcomes, plus the data summary for the model card."""
    return labelled_strata(
        params.labs, params.subjects, params.outcomes, params.config, input_options=pipeline.input_options(params)
    )


def resolve_training_config(params: TrainParams, training: TrainingConfig | None = None) -> TrainingConfig:
    """The training config of a run: ``training``, else ``params.training`` if TrainParams carries one, else the
    full default; then any of ``seed``/``cv_folds``/``cv_repeats`` set explicitly on ``params`` override it."""
    base = training or getattr(params, "training", None) or TrainingConfig()
    overrides = {k: getattr(params, k) for k in _PARAM_OVERRIDES if k in params.model_fields_set}
    if not overrides:
        return base
    return TrainingConfig.model_validate({**base.model_dump(), **overrides})


def train_model(joined: pl.DataFrame, config: TrainingConfig) -> tuple[TrainedModel, dict[str, Any]]:
    """Fit on a labelled strata frame; returns the :class:`~immunostrat.modeling.TrainedModel` and fit notes."""
    features = build_feature_frame(joined, DEFAULT_FEATURES)
    groups = None
    notes: dict[str, Any] = {"group_by": None}
    if config.group_by is not None:
        if config.group_by in joined.columns:
            groups = joined[config.group_by]
            notes["group_by"] = config.group_by
        else:
            notes["group_by_note"] = f"column {config.group_by!r} absent: folds are not grouped"
    trained = train_responder_model(features, joined["responded"], config, groups=groups, strata=joined)
    return trained, notes


def train(params: TrainParams, limitations: list[str] | None = None, training: TrainingConfig | None = None) -> str:
    """Fit, validate (repeated grouped CV, bootstrap intervals), and register a responder model; returns its id.

    Args:
        params: Input files, registry, alias, intended use, run config (and, once it carries one, ``training``).
        limitations: Card limitations (default: the synthetic-data ones).
        training: Training config; overrides ``params.training`` (see :func:`resolve_training_config`).
    """
    config = resolve_training_config(params, training)
    joined, summary = training_table(params)
    trained, notes = train_model(joined, config)
    return save_model(
        trained,
        Path(params.registry) if params.registry else None,
        card_extra={
            "intended_use": params.intended_use,
            "limitations": limitations or SYNTHETIC_LIMITATIONS,
            "training_data": {**summary, **notes},
        },
        alias=params.alias,
    )
