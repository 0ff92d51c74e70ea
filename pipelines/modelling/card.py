"""The model card as written to ``card.json``: TRIPOD-ordered sections (data, outcome, predictors, analysis,
performance with intervals, calibration table, ROC, drift reference, intended use, package versions) built from a
trained model. Its readable view is :func:`immunostrat.modelling.markdown.render_card_markdown`."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from immunostrat.modelling.registry import MODEL_FILE

if TYPE_CHECKING:
    from immunostrat.modelling.fitting import TrainedModel

__all__ = ["CARD_SCHEMA_VERSION", "build_card"]

CARD_SCHEMA_VERSION = 2


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("immunostrat", "scikit-learn", "skops", "numpy", "scipy", "polars", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _estimator_section(trained: TrainedModel) -> dict[str, Any]:
    parts = trained.linear_logit
    names = trained.feature_names
    calibrated = parts.platt_slope is not None
    cfg = trained.config
    penalty = "L2" if cfg.l1_ratio == 0 else ("L1" if cfg.l1_ratio == 1 else f"elastic net (l1_ratio={cfg.l1_ratio})")
    C = trained.tuning.get("C", cfg.C)
    description = f"StandardScaler + {penalty} logistic regression (C={C:g})"
    if calibrated:
        description += ", Platt-calibrated (sigmoid) on inner out-of-fold decision values"
    steps = trained.pipeline_steps
    if calibrated:
        steps = ["sklearn.calibration.CalibratedClassifierCV(method='sigmoid', ensemble=False)", *steps]
    return {
        "description": description + "; logit = intercept + sum of coef_j * standardised feature_j",
        "steps": steps,
        "standardised_coefficients": {n: float(c) for n, c in zip(names, parts.coef, strict=True)},
        "intercept": parts.intercept,
        "feature_means": {n: float(m) for n, m in zip(names, parts.scaler.mean_, strict=True)},
        "feature_scales": {n: float(s) for n, s in zip(names, parts.scaler.scale_, strict=True)},
        "uncalibrated": {
            "standardised_coefficients": {n: float(c) for n, c in zip(names, parts.raw_coef, strict=True)},
            "intercept": parts.raw_intercept,
        },
        "calibration": dict(trained.calibration),
        "C": C,
    }


def build_card(
    trained: TrainedModel, model_id: str, created_at: str, sha256: str, card_extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The card of a trained model saved as ``model_id`` (``card_extra``: what the trainer adds, see
    :func:`immunostrat.modelling.registry_write.save_model`)."""
    extra = dict(card_extra)
    summary = dict(extra.pop("training_data", {}) or {})
    training_data = {
        "n_train": trained.n_train,
        "n_dropped_missing": trained.n_dropped_missing,
        "class_balance": dict(trained.class_balance),
        **summary,
    }
    limitations = extra.pop("limitations")
    cfg = trained.config
    ev = trained.evaluation
    reference = trained.reference or {}
    analysis = {
        "model_type": "logistic regression on standardised baseline features (linear logit: exact contributions)",
        "missing_data": f"{cfg.missing}: subjects missing any feature are left out of fitting and not scored",
        "validation": (
            f"{cfg.cv_repeats} x {cfg.cv_folds}-fold stratified CV"
            + (
                f", grouped by {trained.group_by} (no {trained.group_by} in both training and validation)"
                if trained.group_by
                else ", ungrouped (subjects are the unit)"
            )
            + "; tuning and calibration repeated inside every training fold (nested)"
        ),
        "calibration": (
            f"Platt scaling (sigmoid) on {cfg.inner_cv_folds}-fold inner out-of-fold decision values"
            if cfg.calibration == "sigmoid"
            else "none (logistic regression probabilities)"
        ),
        "tuning": (
            f"C over {list(cfg.tuning_grid)} by {cfg.inner_cv_folds}-fold inner CV ({cfg.tuning_scoring}); "
            f"final C = {trained.tuning.get('C')}"
            if cfg.tuning_grid
            else f"none (C = {cfg.C:g})"
        ),
        "cutoffs": f"quantiles {list(cfg.group_quantiles)} of the out-of-fold probabilities (validation data only)",
        "intervals": f"percentile bootstrap, {cfg.evaluation.n_bootstrap} resamples of the out-of-fold predictions",
        "duration_seconds": round(trained.duration_seconds, 2),
    }
    return {
        "card_schema_version": CARD_SCHEMA_VERSION,
        "model_id": model_id,
        "title": "Probability of response to CD19 CAR-T therapy in refractory SLE from baseline lab biomarkers",
        "created_at": created_at,
        "model_file": {"path": MODEL_FILE, "sha256": sha256, "format": "skops"},
        "intended_use": extra.pop("intended_use"),
        "limitations": [limitations] if isinstance(limitations, str) else list(limitations),
        "outcome": {
            "column": "responded",
            "definition": "binary response at the trial endpoint (1 = responder)",
            "endpoints": summary.get("endpoints", []),
        },
        "training_data": training_data,
        "features": [s.to_dict() for s in trained.feature_specs],
        "missing_data": {
            "strategy": cfg.missing,
            "n_dropped_missing": trained.n_dropped_missing,
            "missing_rate_by_feature": {k: v.get("missing_rate") for k, v in (reference.get("features") or {}).items()},
        },
        "analysis": analysis,
        "estimator": _estimator_section(trained),
        "config": cfg.model_dump(mode="json"),
        "metrics": dict(trained.metrics),
        "evaluation": ev,
        "default_cutoffs": dict(trained.cutoffs),
        "oof_group_response": trained.oof_group_response,
        "reference": reference,
        "package_versions": _package_versions(),
        **({"extra": extra} if extra else {}),
    }
