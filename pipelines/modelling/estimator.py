"""The scikit-learn estimator a registry model holds: how training builds it, and how it decomposes into a
:class:`~immunostrat.modelling.scoring.LinearLogit`.

This is the one modelling module that imports scikit-learn at module level. Training imports it directly; the
registry and scoring import it only once a fitted estimator exists (skops has then imported scikit-learn), so
listing models or scoring from a coefficient form never pays for it.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from immunostrat.config.run import TrainingConfig
from immunostrat.modelling.scoring import LinearLogit

__all__ = ["ResponderEstimator", "calibration_info", "linear_logit_parts", "make_pipeline", "pipeline_of"]

#: What the registry stores: the scaler + logistic pipeline, or that pipeline Platt-calibrated.
ResponderEstimator: TypeAlias = Pipeline | CalibratedClassifierCV


def make_pipeline(config: TrainingConfig, C: float, random_state: int) -> Pipeline:
    """The unfitted ``Pipeline([scale, clf])``: a StandardScaler and a logistic regression with inverse penalty C."""
    # newton-cholesky: exact Newton steps, fast and deterministic for many subjects and few features (L2 only).
    solver = "newton-cholesky" if config.l1_ratio == 0.0 else "saga"
    clf = LogisticRegression(C=C, l1_ratio=config.l1_ratio, solver=solver, max_iter=5000, random_state=random_state)
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def _pipeline_parts(pipe: Any) -> tuple[StandardScaler, LogisticRegression]:
    steps = getattr(pipe, "named_steps", {})
    scaler, clf = steps.get("scale"), steps.get("clf")
    if not (isinstance(pipe, Pipeline) and isinstance(scaler, StandardScaler) and isinstance(clf, LogisticRegression)):
        raise TypeError("expected Pipeline([('scale', StandardScaler), ('clf', LogisticRegression)])")
    if clf.coef_.shape[0] != 1:
        raise TypeError("only binary logistic models are supported")
    return scaler, clf


def linear_logit_parts(estimator: Any) -> LinearLogit:
    """Decompose a responder estimator into its linear logit (see :class:`LinearLogit`).

    Args:
        estimator: A fitted scaler + logistic pipeline, or that pipeline in a sigmoid ``CalibratedClassifierCV``
            with ``ensemble=False`` (one calibrated classifier).

    Raises:
        TypeError: Any other estimator (its logit would not decompose exactly).
    """
    if isinstance(estimator, CalibratedClassifierCV):
        fitted = getattr(estimator, "calibrated_classifiers_", [])
        if estimator.method != "sigmoid" or len(fitted) != 1 or len(fitted[0].calibrators) != 1:
            raise TypeError("only a sigmoid CalibratedClassifierCV with ensemble=False keeps the logit linear")
        scaler, clf = _pipeline_parts(fitted[0].estimator)
        platt = fitted[0].calibrators[0]
        # sklearn's sigmoid calibrator returns expit(-(a * d + b)), so logit p = -a * d - b.
        slope, offset = -float(platt.a_), -float(platt.b_)
        raw_coef, raw_b0 = clf.coef_[0].astype(np.float64), float(clf.intercept_[0])
        return LinearLogit(scaler, slope * raw_coef, offset + slope * raw_b0, raw_coef, raw_b0, slope, offset)
    scaler, clf = _pipeline_parts(estimator)
    raw_coef, raw_b0 = clf.coef_[0].astype(np.float64), float(clf.intercept_[0])
    return LinearLogit(scaler, raw_coef, raw_b0, raw_coef, raw_b0, None, None)


def pipeline_of(estimator: Any) -> Any:
    """The scaler + logistic pipeline inside a responder estimator (itself when it is not calibrated)."""
    fitted = getattr(estimator, "calibrated_classifiers_", None)
    return fitted[0].estimator if fitted else estimator


def calibration_info(estimator: Any) -> dict[str, Any]:
    """``method`` and, for a Platt-calibrated estimator, its ``slope`` and ``intercept`` on the logit scale."""
    parts = linear_logit_parts(estimator)
    if parts.platt_slope is None:
        return {"method": "none"}
    return {"method": "sigmoid", "slope": parts.platt_slope, "intercept": parts.platt_intercept}
