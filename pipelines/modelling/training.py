"""Training as a plain function: the same ingest-to-baseline stages as stratify, plus outcomes and a fit.

``labelled_strata`` (strata joined with outcomes) is shared with external validation (``immunostrat evaluate``)
and model comparison, so a model is always evaluated on features derived exactly as it will see them in stratify.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.config.features import DEFAULT_FEATURES, build_feature_frame
from immunostrat.config.run import InputFiles, RunConfig, TrainingConfig, TrainParams
from immunostrat.followup.endpoints import derive_outcomes
from immunostrat.ingest.io import read_outcomes
from immunostrat.modelling.fitting import TrainedModel, cross_validate, fit_final, trained_model, training_data
from immunostrat.modelling.registry_write import save_model
from immunostrat.pipeline import run
from immunostrat.pipeline.engine.execute import LocalRunner, Runner
from immunostrat.pipeline.launch import plan_labelled, plan_training
from immunostrat.pipeline.run import Labelled
from immunostrat.stages.subjects import validate_outcomes

__all__ = [
    "SYNTHETIC_LIMITATIONS",
    "join_outcomes",
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


def join_outcomes(labelled: Labelled, outcomes: str | Path, cfg: RunConfig) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Strata joined with the valid outcomes, plus a data summary (checksums, counts) for cards and reports."""
    outcomes_table = read_outcomes(outcomes)
    checked = validate_outcomes(outcomes_table.frame)
    strata = labelled.strata
    joined = strata.join(checked.accepted, on=["study_id", "subject_id"], how="inner")
    inputs = labelled.inputs
    files = [{"path": t.path, "sha256": t.sha256, "rows": t.rows_read} for t in inputs.labs]
    if inputs.subjects is not None:
        subj = inputs.subjects
        files.append({"path": subj.path, "sha256": subj.sha256, "rows": subj.rows_read})
    files.append({"path": outcomes_table.path, "sha256": outcomes_table.sha256, "rows": outcomes_table.rows_read})
    summary = {
        "inputs": files,
        "lab_counts": {k: labelled.counts[k] for k in ("rows_read", "accepted", "outside_panel", "quarantined")},
        "subjects_in_strata": strata.height,
        "subjects_with_outcome": joined.height,
        "outcomes_quarantined": checked.quarantine.height,
        "endpoints": sorted({str(e) for e in joined["endpoint"].drop_nulls().to_list()}),
        "studies": sorted(set(joined["study_id"].to_list())),
        "sites": joined["site_id"].n_unique() if "site_id" in joined.columns else None,
        "as_of": cfg.validation.as_of.isoformat(),
    }
    return joined, summary


def labelled_strata(
    labs: Sequence[str | Path] | InputFiles,
    subjects: str | Path | None,
    outcomes: str | Path,
    cfg: RunConfig,
    protocol: str | None = None,
    *,
    runner: Runner | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Baseline strata joined with valid outcomes, plus a data summary (checksums, counts) for cards and reports.

    Args:
        labs: Lab-result files, or the whole input parameters (`InputFiles`: other formats, expression, patients).
        subjects: Subjects file (ignored when `labs` is an `InputFiles`).
        outcomes: Outcomes file (study_id, subject_id, responded, endpoint).
        cfg: Harmonisation, validation and baseline options (as in stratify).
        protocol: Eligibility protocol file (default: the built-in one).
        runner: How the `LABELLED` steps run (Prefect tasks in the train flow; in this process by default).

    Returns:
        ``(joined, summary)``: one row per subject with a valid outcome; summary holds input paths, SHA-256 and
        row counts, lab row accounting, subjects with outcome, quarantined outcomes, endpoints, studies, as_of.
    """
    files = (
        labs if isinstance(labs, InputFiles) else InputFiles(labs=[str(p) for p in labs], subjects=str(subjects or ""))
    )
    runner = runner or LocalRunner()
    labelled = run.labelled_steps(plan_labelled(files, cfg, protocol, outcomes=str(outcomes)), runner)
    joined: tuple[pl.DataFrame, dict[str, Any]] = runner.call("label", join_outcomes, labelled, outcomes, cfg, io=True)
    return joined


def _input_files(labelled: Labelled) -> list[dict[str, Any]]:
    inputs = labelled.inputs
    tables = [*inputs.labs, inputs.subjects, getattr(inputs, "visits", None)]
    return [{"path": t.path, "sha256": t.sha256, "rows": t.rows_read} for t in tables if t is not None]


def join_endpoint_outcomes(
    labelled: Labelled, endpoint: str, landmark: str, cfg: RunConfig
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Strata joined with outcomes derived from an endpoint at a landmark; who was left out, and why, for the card."""
    assert labelled.endpoints is not None and labelled.protocol is not None
    outcomes, left_out = derive_outcomes(labelled.endpoints, endpoint, landmark)
    strata = labelled.strata
    joined = strata.join(outcomes, on=["study_id", "subject_id"], how="inner")
    definition = labelled.protocol.endpoints
    summary = {
        "inputs": _input_files(labelled),
        "lab_counts": {k: labelled.counts[k] for k in ("rows_read", "accepted", "outside_panel", "quarantined")},
        "subjects_in_strata": strata.height,
        "subjects_with_outcome": joined.height,
        "outcomes_derived": {
            "endpoint": endpoint,
            "landmark": landmark,
            "protocol": {"protocol_id": labelled.protocol.protocol_id, "version": labelled.protocol.version},
            "definition_version": definition.version,
            "definition": definition.describe(endpoint, landmark),
            "counts": left_out.as_dict(),
        },
        "endpoints": sorted({str(e) for e in joined["endpoint"].drop_nulls().to_list()}),
        "studies": sorted(set(joined["study_id"].to_list())),
        "sites": joined["site_id"].n_unique() if "site_id" in joined.columns else None,
        "as_of": cfg.validation.as_of.isoformat(),
    }
    return joined, summary


def training_table(params: TrainParams, runner: Runner | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Baseline strata joined with valid outcomes (from a file, or derived from an endpoint of the visits), plus
    the data summary for the model card."""
    if params.endpoint is None:
        assert params.outcomes is not None
        return labelled_strata(params, None, params.outcomes, params.config, params.protocol, runner=runner)
    runner = runner or LocalRunner()
    labelled = run.labelled_steps(plan_training(params), runner)
    assert params.landmark is not None
    joined: tuple[pl.DataFrame, dict[str, Any]] = runner.call(
        "label", join_endpoint_outcomes, labelled, params.endpoint, params.landmark, params.config
    )
    return joined


def resolve_training_config(params: TrainParams, training: TrainingConfig | None = None) -> TrainingConfig:
    """The training config of a run: ``training``, else ``params.training`` if TrainParams carries one, else the
    full default; then any of ``seed``/``cv_folds``/``cv_repeats`` set explicitly on ``params`` override it."""
    base = training or getattr(params, "training", None) or TrainingConfig()
    overrides = {k: getattr(params, k) for k in _PARAM_OVERRIDES if k in params.model_fields_set}
    if not overrides:
        return base
    return TrainingConfig.model_validate({**base.model_dump(), **overrides})


def train_model(
    joined: pl.DataFrame, config: TrainingConfig, runner: Runner | None = None
) -> tuple[TrainedModel, dict[str, Any]]:
    """Fit on a labelled strata frame; returns the :class:`~immunostrat.modelling.fitting.TrainedModel` and fit notes.

    Cross-validation and the final fit are steps of their own (`cross-validate`, `fit`: Prefect tasks in the
    train flow); the model is the one :func:`~immunostrat.modelling.fitting.train_responder_model` gives.
    """
    runner = runner or LocalRunner()
    started = time.perf_counter()
    features = build_feature_frame(joined, DEFAULT_FEATURES)
    groups = None
    notes: dict[str, Any] = {"group_by": None}
    if config.group_by is not None:
        if config.group_by in joined.columns:
            groups = joined[config.group_by]
            notes["group_by"] = config.group_by
        else:
            notes["group_by_note"] = f"column {config.group_by!r} absent: folds are not grouped"
    data = training_data(features, joined["responded"], config, groups=groups, strata=joined)
    cv = runner.call("cross-validate", cross_validate, data, config)
    fit = runner.call("fit", fit_final, data, config)
    return trained_model(data, cv, fit, config, time.perf_counter() - started), notes


def register(
    trained: TrainedModel, params: TrainParams, summary: dict[str, Any], limitations: list[str] | None = None
) -> str:
    """Save the model, its card and checksums in the registry (and point the alias at it); returns its id."""
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


def train(
    params: TrainParams,
    limitations: list[str] | None = None,
    training: TrainingConfig | None = None,
    *,
    runner: Runner | None = None,
) -> str:
    """Fit, validate (repeated grouped CV, bootstrap intervals), and register a responder model; returns its id.

    Args:
        params: Input files, registry, alias, intended use, run config (and, once it carries one, ``training``).
        limitations: Card limitations (default: the synthetic-data ones).
        training: Training config; overrides ``params.training`` (see :func:`resolve_training_config`).
        runner: How the steps run: Prefect tasks in the train flow, in this process by default.
    """
    runner = runner or LocalRunner()
    config = resolve_training_config(params, training)
    joined, summary = training_table(params, runner)
    trained, notes = train_model(joined, config, runner)
    return str(runner.call("register", register, trained, params, {**summary, **notes}, limitations, io=True))
