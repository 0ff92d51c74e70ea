"""Stratify-time scoring: a verified registry model's probabilities, groups and exact per-feature contributions.

The model is a standardised logistic regression, optionally Platt-calibrated: its logit decomposes exactly into
per-feature contributions plus an intercept (see :class:`LinearLogit`). Scoring needs only those arrays, its
:class:`CoefficientForm`, which the model card holds (checksummed in the registry), so this module imports no
scikit-learn, scipy or skops: taking a fitted estimator apart is :mod:`immunostrat.modelling.estimator`'s job, and
scoring from a coefficient form belongs here. Training lives in :mod:`immunostrat.modelling.fitting`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl

from immunostrat.config.features import (
    _CUTOFF_KEYS,
    GROUP_LEVELS,
    NOT_ASSESSABLE,
    SCORE_COLUMNS,
    FeatureSpec,
    build_feature_frame,
)

if TYPE_CHECKING:
    from sklearn.preprocessing import StandardScaler

#: The card's ``estimator`` keys that make up the coefficient form (cards of version 1 lack the last two).
CARD_FORM_KEYS = ("standardised_coefficients", "intercept", "feature_means", "feature_scales")
#: Parameters of two coefficient forms of one model agree when they differ by at most this, relative to
#: max(1, |value|). A card is written from the estimator's float64 values with exact (shortest round-trip) JSON
#: floats, so they are equal; the margin only admits a card computed in another operation order (~1e-16 each).
FORM_RTOL = 1e-12


def expit(logit: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-t)), numerically stable: exp of a non-positive number only."""
    t = np.asarray(logit, dtype=np.float64)
    e = np.exp(-np.abs(t))
    return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@dataclass(frozen=True)
class CoefficientForm:
    """The responder model as the arrays scoring needs (what ``card.json``'s ``estimator`` section holds).

    ``logit p = intercept + sum_j coef_j * (x_j - mean_j) / scale_j``: the effective (post-calibration)
    coefficients on the standardised features, the scaler's means and scales, all float64 in feature order.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-feature logit contributions ``coef_j * (x_j - mean_j) / scale_j`` of raw features ``X`` (n x k)."""
        # The same operations as StandardScaler.transform (subtract, then divide), so the values are identical.
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale * self.coef

    def probability(self, contributions: np.ndarray) -> np.ndarray:
        """Responder probability: the logistic of the summed contributions plus the intercept."""
        return expit(contributions.sum(axis=1) + self.intercept)

    def differences(self, other: CoefficientForm) -> list[str]:
        """The parameters (``coef``, ``intercept``, ``mean``, ``scale``) that differ beyond :data:`FORM_RTOL`."""
        out = []
        for name in ("coef", "intercept", "mean", "scale"):
            a, b = np.asarray(getattr(self, name), dtype=np.float64), np.asarray(getattr(other, name), dtype=np.float64)
            if a.shape != b.shape or not np.all(np.abs(a - b) <= FORM_RTOL * np.maximum(1.0, np.abs(b))):
                out.append(name)
        return out

    @classmethod
    def from_card(cls, card: Mapping[str, Any], names: Sequence[str]) -> CoefficientForm | None:
        """The coefficient form a model card holds, in the order of ``names``; None when the card has none.

        Raises:
            ValueError: The card holds the keys but their values are not one finite number per feature (with
                positive scales): a checksummed card that is wrong is refused, never patched.
        """
        section = card.get("estimator") or {}
        if not all(key in section for key in CARD_FORM_KEYS):
            return None
        arrays = {}
        for key in ("standardised_coefficients", "feature_means", "feature_scales"):
            values = section[key]
            if not isinstance(values, Mapping) or sorted(values) != sorted(names):
                raise ValueError(f"card estimator.{key} must give one value per feature {list(names)}")
            arrays[key] = np.array([_finite_number(values[n], f"estimator.{key}.{n}") for n in names])
        if not np.all(arrays["feature_scales"] > 0):
            raise ValueError("card estimator.feature_scales must be positive")
        return cls(
            mean=arrays["feature_means"],
            scale=arrays["feature_scales"],
            coef=arrays["standardised_coefficients"],
            intercept=_finite_number(section["intercept"], "estimator.intercept"),
        )


def _finite_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"card {where} must be a finite number, got {value!r}")
    return float(value)


class ScoringModel(Protocol):
    """What scoring and the drift gate read of a verified model: a registry model scored from its coefficient
    form (``registry.CardModel``) or deserialised (``registry.LoadedModel``)."""

    @property
    def model_id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def features(self) -> tuple[FeatureSpec, ...]: ...
    @property
    def card(self) -> dict[str, Any]: ...
    @property
    def default_cutoffs(self) -> dict[str, float]: ...
    @property
    def coefficient_form(self) -> CoefficientForm: ...


def _check_cutoffs(cutoffs: Mapping[str, float]) -> dict[str, float]:
    missing = [k for k in _CUTOFF_KEYS if k not in cutoffs]
    if missing:
        raise ValueError(f"cutoffs lack {missing}; expected keys {list(_CUTOFF_KEYS)}, got {dict(cutoffs)}")
    possible_min, likely_min = float(cutoffs["possible_min"]), float(cutoffs["likely_min"])
    if not 0.0 <= possible_min <= likely_min <= 1.0:
        raise ValueError(f"cutoffs must satisfy 0 <= possible_min <= likely_min <= 1, got {dict(cutoffs)}")
    return {"possible_min": possible_min, "likely_min": likely_min}


def assign_groups(probability: np.ndarray, cutoffs: Mapping[str, float]) -> np.ndarray:
    """Map probabilities to responder groups.

    ``likely`` if p >= likely_min, ``possible`` if p >= possible_min, else ``unlikely``.

    Args:
        probability: Responder probabilities (finite).
        cutoffs: ``possible_min`` and ``likely_min``.

    Returns:
        Array of group labels (``unlikely``/``possible``/``likely``).
    """
    return np.array(GROUP_LEVELS)[_group_codes(probability, cutoffs)]


def _group_codes(probability: np.ndarray, cutoffs: Mapping[str, float]) -> np.ndarray:
    """Index into GROUP_LEVELS of each probability's responder group (see :func:`assign_groups`)."""
    c = _check_cutoffs(cutoffs)
    p = np.asarray(probability, dtype=float)
    return np.where(p >= c["likely_min"], 2, np.where(p >= c["possible_min"], 1, 0))


@dataclass(frozen=True)
class LinearLogit:
    """The responder model as one linear function on the logit scale.

    ``logit p = intercept + sum_j coef_j * (x_j - mean_j) / scale_j``. For a Platt-calibrated model,
    ``logit p = platt_intercept + platt_slope * (b0 + sum_j w_j * z_j)``, which is again linear: ``coef_j =
    platt_slope * w_j`` and ``intercept = platt_intercept + platt_slope * b0``.

    Attributes:
        scaler: The fitted StandardScaler (gives z_j).
        coef: Effective coefficients on the standardised features (after calibration).
        intercept: Effective intercept (after calibration).
        raw_coef: Coefficients of the logistic regression itself.
        raw_intercept: Its intercept.
        platt_slope: Platt slope (None when not calibrated).
        platt_intercept: Platt intercept (None when not calibrated).
    """

    scaler: StandardScaler
    coef: np.ndarray
    intercept: float
    raw_coef: np.ndarray
    raw_intercept: float
    platt_slope: float | None
    platt_intercept: float | None

    @property
    def form(self) -> CoefficientForm:
        """The coefficient form scoring uses (the scaler's means and scales with the effective coefficients)."""
        return CoefficientForm(
            mean=np.asarray(self.scaler.mean_, dtype=np.float64),
            scale=np.asarray(self.scaler.scale_, dtype=np.float64),
            coef=np.asarray(self.coef, dtype=np.float64),
            intercept=float(self.intercept),
        )


def contributions(estimator: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact per-subject logit attributions of the (calibrated) standardised logistic model.

    ``contribution_j = coef_j * (x_j - mean_j) / scale_j`` with the effective (post-calibration) coefficients of
    :func:`~immunostrat.modelling.estimator.linear_logit_parts`; summed over features plus the intercept this
    equals the logit of ``estimator.predict_proba(X)[:, 1]``.

    Args:
        estimator: Fitted responder estimator (see :func:`~immunostrat.modelling.estimator.linear_logit_parts`).
        X: Raw (unscaled) feature matrix, shape (n_subjects, n_features), no missing values.

    Returns:
        ``(contrib, intercept)``: contrib has shape (n_subjects, n_features).

    Raises:
        TypeError: The estimator is not a supported linear logit model.
    """
    # scikit-learn is imported only to take a fitted estimator apart; scoring from the coefficients needs none.
    from immunostrat.modelling.estimator import linear_logit_parts

    form = linear_logit_parts(estimator).form
    return form.contributions(X), form.intercept


class FeatureUnavailableError(ValueError):
    """The model needs a strata column that no input can supply, so it cannot score this data at all."""


def missing_feature_sources(model: ScoringModel, columns: Sequence[str]) -> list[str]:
    """Strata columns the model's features are computed from that are absent from ``columns`` (sorted)."""
    return sorted({f.source for f in model.features} - set(columns))


def check_model_inputs(model: ScoringModel, columns: Sequence[str]) -> None:
    """Refuse a model whose features the strata schema cannot supply at all.

    A column that exists but is null for a subject is fine (that subject is ``not_assessable``); a column that
    does not exist means no input file can ever produce the feature, so every subject would be unscorable.

    Raises:
        FeatureUnavailableError: With the model id, the missing columns and the features that need them.
    """
    missing = missing_feature_sources(model, columns)
    if missing:
        needs = sorted(f"{f.name} (from {f.source})" for f in model.features if f.source in missing)
        raise FeatureUnavailableError(
            f"model {model.model_id!r} cannot score this data: it needs strata column(s) {missing} for feature(s) "
            f"{needs}, and no input produces them. Choose a model whose features this pipeline derives "
            "(`immunostrat models list`), or retrain."
        )


def _drop_previous_scores(strata: pl.DataFrame) -> pl.DataFrame:
    # Re-scoring replaces every earlier score column, so contributions of two models never mix.
    stale = [c for c in strata.columns if c in SCORE_COLUMNS or c.startswith("contrib_")]
    return strata.drop(stale)


def score_strata(
    strata: pl.DataFrame,
    model: ScoringModel,
    cutoffs: Mapping[str, float] | None = None,
    top_k: int = 3,
) -> pl.DataFrame:
    """Score every subject of the strata frame with a registry model.

    Args:
        strata: One row per subject holding the model's feature source columns.
        model: A verified registry model (``immunostrat.modelling.handle.ModelHandle.for_scoring()``, or
            :func:`immunostrat.modelling.registry.load_model`): scored from its coefficient form.
        cutoffs: ``possible_min``/``likely_min``; None uses the model card's defaults.
        top_k: Number of features listed in ``top_features`` (largest absolute contribution first).

    Returns:
        ``strata`` (earlier score columns dropped) plus ``responder_probability`` (Float64, null when not
        assessable), ``responder_group`` (``likely``/``possible``/``unlikely``/``not_assessable``),
        ``contrib_<feature>`` and ``contrib_intercept`` (Float64; sum = logit of the probability),
        ``top_features`` (List[String], null when not assessable), ``model_id`` and ``model_sha256``.

    Raises:
        FeatureUnavailableError: A feature source column is missing from ``strata`` (no subject could be scored).
        ValueError: Invalid cut-offs or ``top_k``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    check_model_inputs(model, strata.columns)
    cut = _check_cutoffs(model.default_cutoffs if cutoffs is None else cutoffs)
    specs = tuple(model.features)
    names = [s.name for s in specs]
    base = _drop_previous_scores(strata)
    feats = build_feature_frame(base, specs)
    complete = feats.select(pl.all_horizontal(pl.all().is_not_null())).to_series().to_numpy()
    n, k = base.height, len(names)

    proba = np.full(n, np.nan)
    contrib = np.full((n, k), np.nan)
    intercept = np.full(n, np.nan)
    if complete.any():
        X = feats.filter(pl.Series(complete)).to_numpy().astype(np.float64)
        form = model.coefficient_form
        c = form.contributions(X)
        contrib[complete] = c
        intercept[complete] = form.intercept
        proba[complete] = form.probability(c)

    # Top features: order columns by name, then a stable sort on -|contribution| breaks ties by name.
    by_name = np.argsort(np.array(names))
    n_top = min(top_k, k)
    order = np.argsort(-np.abs(contrib[:, by_name]), axis=1, kind="stable")[:, :n_top]
    # Names are gathered by index in polars: converting a numpy string array to a Series is far slower.
    top_series = pl.Series(np.array(names)[by_name]).gather(order.ravel()).reshape((n, n_top)).cast(pl.List(pl.String))

    group_labels = pl.Series([*GROUP_LEVELS, NOT_ASSESSABLE])
    group = np.where(complete, _group_codes(np.nan_to_num(proba, nan=0.0), cut), len(GROUP_LEVELS))

    def _float(values: np.ndarray, name: str) -> pl.Series:
        return pl.Series(name, values, dtype=pl.Float64).fill_nan(None)

    return base.with_columns(
        _float(proba, "responder_probability"),
        group_labels.gather(group).alias("responder_group"),
        pl.when(pl.Series(complete, dtype=pl.Boolean)).then(top_series).alias("top_features"),
        *[_float(contrib[:, j], f"contrib_{name}") for j, name in enumerate(names)],
        _float(intercept, "contrib_intercept"),
        pl.lit(model.model_id, dtype=pl.String).alias("model_id"),
        pl.lit(model.sha256, dtype=pl.String).alias("model_sha256"),
    )
