"""Training as a plain function: the same ingest-to-baseline stages as stratify, plus outcomes and a fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from immunostrat import run as pipeline
from immunostrat.config import TrainParams, load_protocol
from immunostrat.io import read_outcomes
from immunostrat.modeling import DEFAULT_FEATURES, TrainConfig, build_feature_frame, train_responder_model
from immunostrat.registry import save_model
from immunostrat.stages.validate import validate_outcomes

SYNTHETIC_LIMITATIONS = [
    "Trained on the synthetic cohort of `immunostrat synth`: its response mechanism is invented for testing.",
    "Not for clinical use; not validated on real trial data.",
    "Logistic regression on six baseline biomarker features; subjects missing any feature are not scored.",
]


def training_table(params: TrainParams) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Baseline strata joined with valid outcomes, plus the data summary for the model card."""
    cfg = params.config
    inputs = pipeline.read_inputs(params.labs, params.subjects)
    outcomes_table = read_outcomes(params.outcomes)
    prepared = pipeline.prepare(inputs, cfg)
    strata = pipeline.build_strata(prepared, load_protocol(), cfg)
    outcomes = validate_outcomes(outcomes_table.frame)
    joined = strata.join(outcomes.accepted, on=["study_id", "subject_id"], how="inner")
    summary = {
        "inputs": [{"path": t.path, "sha256": t.sha256, "rows": t.rows_read} for t in inputs.labs]
        + [
            {
                "path": inputs.subjects.path,
                "sha256": inputs.subjects.sha256,
                "rows": inputs.subjects.rows_read,
            }
            if inputs.subjects
            else {},
            {"path": outcomes_table.path, "sha256": outcomes_table.sha256, "rows": outcomes_table.rows_read},
        ],
        "lab_counts": {k: prepared.counts[k] for k in ("rows_read", "accepted", "outside_panel", "quarantined")},
        "subjects_with_outcome": joined.height,
        "outcomes_quarantined": outcomes.quarantine.height,
        "endpoints": sorted({str(e) for e in joined["endpoint"].drop_nulls().to_list()}),
        "studies": sorted(set(joined["study_id"].to_list())),
        "as_of": cfg.validation.as_of.isoformat(),
    }
    return joined, summary


def train(params: TrainParams, limitations: list[str] | None = None) -> str:
    """Fit, evaluate (cross-validated) and register a responder model; returns its id."""
    joined, summary = training_table(params)
    features = build_feature_frame(joined, DEFAULT_FEATURES)
    config = TrainConfig(seed=params.seed, cv_folds=params.cv_folds, cv_repeats=params.cv_repeats)
    trained = train_responder_model(features, joined["responded"], config)
    return save_model(
        trained,
        Path(params.registry) if params.registry else None,
        card_extra={
            "intended_use": params.intended_use,
            "limitations": limitations or SYNTHETIC_LIMITATIONS,
            "training_data": summary,
        },
        alias=params.alias,
    )
