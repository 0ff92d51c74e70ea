"""Responder modelling: baseline features, a logistic model, cross-validated cut-offs and scoring.

The model is deliberately a standardised logistic regression: its logit decomposes exactly into
per-feature contributions (``coef_j * x_std_j``) plus an intercept, which is what the strata output
reports next to each probability. Group cut-offs are chosen on out-of-fold predictions so that the
"likely / possible / unlikely" bands reflect how the model behaves on subjects it has not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

if TYPE_CHECKING:  # registry imports this module; a runtime import would be circular.
    from immunostrat.registry import LoadedModel

__all__ = [
    "DEFAULT_FEATURES",
    "GROUP_LEVELS",
    "LOG2_FLOOR",
    "NOT_ASSESSABLE",
    "SCORE_COLUMNS",
    "FeatureSpec",
    "TrainConfig",
    "TrainedModel",
    "assign_groups",
    "build_feature_frame",
    "contributions",
    "score_strata",
    "train_responder_model",
]

Transform = Literal["identity", "log2", "log10p1"]

#: Ratios are clipped below at this value before log2, so an undetectable result (ratio 0) maps to a
#: finite, bounded feature (log2(0.01) ≈ -6.64) instead of -inf.
LOG2_FLOOR = 0.01

#: Responder groups, lowest to highest, and the label for subjects the model cannot score.
GROUP_LEVELS: tuple[str, str, str] = ("unlikely", "possible", "likely")
NOT_ASSESSABLE = "not_assessable"

#: Fixed columns added by :func:`score_strata` (``contrib_*`` columns come on top).
SCORE_COLUMNS: tuple[str, ...] = (
    "responder_probability",
    "responder_group",
    "top_features",
    "contrib_intercept",
    "model_id",
    "model_sha256",
)

_CUTOFF_KEYS = ("possible_min", "likely_min")


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature, derived from one strata column.

    Attributes:
        name: Feature name as seen by the model (and in ``contrib_<name>``).
        source: Column of the strata frame it is computed from.
        transform: ``identity``; ``log2`` (log2 of the value clipped below at :data:`LOG2_FLOOR`);
            ``log10p1`` (log10(value + 1), for counts that can be 0).
        unit: Unit of the feature after the transform.
        description: What the feature means, for model cards and docs.
    """

    name: str
    source: str
    transform: Transform
    unit: str
    description: str

    def __post_init__(self) -> None:
        if self.transform not in ("identity", "log2", "log10p1"):
            raise ValueError(f"FeatureSpec {self.name!r}: unknown transform {self.transform!r}")

    def to_dict(self) -> dict[str, str]:
        """Return the spec as a JSON-ready dict (used in model cards)."""
        return {
            "name": self.name,
            "source": self.source,
            "transform": self.transform,
            "unit": self.unit,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Build a spec from :meth:`to_dict` output."""
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            transform=data["transform"],
            unit=str(data["unit"]),
            description=str(data["description"]),
        )


DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "log2_anti_dsdna_ratio",
        "anti_dsdna_ratio",
        "log2",
        "log2(x positivity cut-off)",
        "log2 of baseline anti-dsDNA as a multiple of its positivity cut-off (ratio clipped below at 0.01)",
    ),
    FeatureSpec("c3", "c3", "identity", "g/L", "Baseline complement C3"),
    FeatureSpec("c4", "c4", "identity", "g/L", "Baseline complement C4"),
    FeatureSpec(
        "log2_ifn_ratio",
        "ifn_ratio",
        "log2",
        "log2(x high cut-off)",
        "log2 of the baseline interferon score over its method's high cut-off (ratio clipped below at 0.01)",
    ),
    FeatureSpec(
        "log10_cd19_b_cells",
        "cd19_b_cells",
        "log10p1",
        "log10(cells/uL + 1)",
        "log10 of baseline CD19+ B-cell count + 1",
    ),
    FeatureSpec("cd4_cd8_ratio", "cd4_cd8_ratio", "identity", "ratio", "Baseline CD4+/CD8+ T-cell ratio"),
)

_DEFAULT_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in DEFAULT_FEATURES)


def _feature_expr(spec: FeatureSpec) -> pl.Expr:
    x = pl.col(spec.source).cast(pl.Float64)
    # Non-finite inputs become null before the transform, so NaN/inf never turn into a number.
    x = pl.when(x.is_finite()).then(x).otherwise(None)
    if spec.transform == "log2":
        x = x.clip(lower_bound=LOG2_FLOOR).log(2.0)
    elif spec.transform == "log10p1":
        x = (x + 1.0).log(10.0)
    # ...and again after it (e.g. log10 of a count below -1 is NaN).
    return pl.when(x.is_finite()).then(x).otherwise(None).cast(pl.Float64).alias(spec.name)


def build_feature_frame(strata: pl.DataFrame, features: Sequence[FeatureSpec]) -> pl.DataFrame:
    """Derive the model's feature columns from a strata frame.

    Args:
        strata: One row per subject; must hold every ``spec.source`` column.
        features: Feature specs, in model column order.

    Returns:
        A frame with one Float64 column per feature (named ``spec.name``), same row order as ``strata``;
        null where the source is null or non-finite, or the transform is not finite.

    Raises:
        KeyError: A source column is missing from ``strata``.
        ValueError: Feature names are not unique.
    """
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique, got {names}")
    missing = sorted({f.source for f in features} - set(strata.columns))
    if missing:
        raise KeyError(f"strata frame lacks feature source column(s) {missing}")
    return strata.select([_feature_expr(f) for f in features])


class TrainConfig(BaseModel):
    """Hyper-parameters and evaluation settings of the responder model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[str, ...] = Field(
        default=_DEFAULT_FEATURE_NAMES,
        description="Names of the features the model uses, in column order (default: all DEFAULT_FEATURES).",
    )
    C: float = Field(default=1.0, gt=0, description="Inverse L2 regularisation strength of the logistic regression.")
    cv_folds: int = Field(default=5, ge=2, description="Folds of the stratified cross-validation.")
    cv_repeats: int = Field(
        default=1,
        ge=1,
        description="Repeats of the stratified K-fold (reshuffled each time); OOF probabilities are averaged "
        "over repeats. Keep small in CI.",
    )
    seed: int = Field(default=0, ge=0, description="Random seed of the fold shuffling.")
    group_quantiles: tuple[float, float] = Field(
        default=(1 / 3, 2 / 3),
        description="Quantiles of the out-of-fold probability that become the possible_min and likely_min "
        "cut-offs (rounded to 2 decimals).",
    )

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one feature is required")
        if len(set(value)) != len(value):
            raise ValueError(f"feature names must be unique, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _ordered_quantiles(self) -> TrainConfig:
        low, high = self.group_quantiles
        if not 0.0 < low < high < 1.0:
            raise ValueError(f"group_quantiles must satisfy 0 < low < high < 1, got {self.group_quantiles}")
        return self


@dataclass
class TrainedModel:
    """Output of :func:`train_responder_model`; everything the registry needs to write a model card.

    Attributes:
        estimator: ``Pipeline([scale, clf])`` fitted on all complete rows.
        feature_names: Model input columns, in order.
        feature_specs: Specs of those features (units/descriptions for the card).
        config: The training config used.
        metrics: Cross-validated AUROC/Brier (mean and SD over repeats), apparent AUROC, fold counts.
        cutoffs: ``{"possible_min": .., "likely_min": ..}`` chosen on the OOF probabilities.
        oof_probability: Out-of-fold responder probability per complete training row (mean over repeats).
        oof_group_response: Per OOF group: ``n``, ``responders`` and observed ``response_rate``.
        n_train: Complete rows used to fit.
        n_dropped_missing: Rows dropped because a feature was missing.
        class_balance: ``n_responders``, ``n_non_responders``, ``responder_fraction`` of the complete rows.
    """

    estimator: Pipeline
    feature_names: tuple[str, ...]
    feature_specs: tuple[FeatureSpec, ...]
    config: TrainConfig
    metrics: dict[str, float]
    cutoffs: dict[str, float]
    oof_probability: np.ndarray = field(repr=False)
    oof_group_response: dict[str, dict[str, float]]
    n_train: int
    n_dropped_missing: int
    class_balance: dict[str, float]


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
    c = _check_cutoffs(cutoffs)
    p = np.asarray(probability, dtype=float)
    return np.where(
        p >= c["likely_min"],
        GROUP_LEVELS[2],
        np.where(p >= c["possible_min"], GROUP_LEVELS[1], GROUP_LEVELS[0]),
    )


def _as_binary_labels(responded: pl.Series | np.ndarray, n_rows: int) -> np.ndarray:
    if isinstance(responded, pl.Series):
        if responded.null_count():
            raise ValueError(f"responded holds {responded.null_count()} null(s); drop unknown outcomes first")
        arr = responded.cast(pl.Float64).to_numpy()
    else:
        arr = np.asarray(responded, dtype=float)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"responded must be 1-D with {n_rows} entries, got shape {arr.shape}")
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError("responded must be binary (0/1 or bool) with no missing values")
    return arr.astype(np.int64)


def _make_estimator(config: TrainConfig) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=config.C, max_iter=1000))])


def train_responder_model(
    features: pl.DataFrame,
    responded: pl.Series | np.ndarray,
    config: TrainConfig | None = None,
    *,
    feature_specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
) -> TrainedModel:
    """Fit the responder model and choose its group cut-offs on out-of-fold predictions.

    Args:
        features: Output of :func:`build_feature_frame`, one row per subject.
        responded: Binary outcome per row of ``features`` (1 = responder), no nulls.
        config: Training settings; defaults to ``TrainConfig()``.
        feature_specs: Specs to look ``config.features`` up in (for units/descriptions).

    Returns:
        The fitted model with CV metrics, OOF probabilities, cut-offs and training-data summary.

    Raises:
        ValueError: Unknown/missing features, bad labels, or too few subjects per class for the folds.
    """
    config = config or TrainConfig()
    spec_by_name = {s.name: s for s in feature_specs}
    unknown = [n for n in config.features if n not in spec_by_name]
    if unknown:
        raise ValueError(f"config.features {unknown} have no FeatureSpec; known: {sorted(spec_by_name)}")
    absent = [n for n in config.features if n not in features.columns]
    if absent:
        raise ValueError(f"feature frame lacks column(s) {absent}")
    names = tuple(config.features)
    y_all = _as_binary_labels(responded, features.height)

    # Complete-case fit: the logistic model cannot take missing inputs, and imputing baseline biomarkers
    # would hide subjects that score_strata reports as not_assessable anyway.
    frame = features.select([pl.col(n).cast(pl.Float64) for n in names])
    frame = frame.select([pl.when(pl.col(n).is_finite()).then(pl.col(n)).alias(n) for n in names])
    complete = frame.select(pl.all_horizontal(pl.all().is_not_null()).alias("ok")).to_series().to_numpy()
    X = frame.filter(pl.Series(complete)).to_numpy().astype(np.float64)
    y = y_all[complete]
    n_dropped = int((~complete).sum())

    n_pos = int(y.sum())
    n_neg = int(y.shape[0] - n_pos)
    if min(n_pos, n_neg) < config.cv_folds:
        raise ValueError(
            f"need at least cv_folds={config.cv_folds} responders and non-responders among complete rows, "
            f"got {n_pos} responders and {n_neg} non-responders "
            f"({n_dropped} rows dropped for missing features)"
        )

    # RepeatedStratifiedKFold yields its splits repeat by repeat; each block of cv_folds splits is a
    # partition, which is what cross_val_predict requires.
    rskf = RepeatedStratifiedKFold(n_splits=config.cv_folds, n_repeats=config.cv_repeats, random_state=config.seed)
    splits = list(rskf.split(X, y))
    oof_by_repeat = np.empty((config.cv_repeats, y.shape[0]))
    for r in range(config.cv_repeats):
        block = splits[r * config.cv_folds : (r + 1) * config.cv_folds]
        proba = cross_val_predict(_make_estimator(config), X, y, cv=block, method="predict_proba")
        oof_by_repeat[r] = proba[:, 1]
    aurocs = np.array([roc_auc_score(y, p) for p in oof_by_repeat])
    briers = np.array([brier_score_loss(y, p) for p in oof_by_repeat])
    oof = oof_by_repeat.mean(axis=0)

    estimator = _make_estimator(config).fit(X, y)
    apparent = float(roc_auc_score(y, estimator.predict_proba(X)[:, 1]))

    # Cut-offs on OOF probabilities: training-fit probabilities are optimistic and would shift the bands.
    q_low, q_high = np.quantile(oof, config.group_quantiles)
    cutoffs = {"possible_min": round(float(q_low), 2), "likely_min": round(float(q_high), 2)}

    groups = assign_groups(oof, cutoffs)
    group_response: dict[str, dict[str, float]] = {}
    for g in GROUP_LEVELS:
        in_g = groups == g
        n_g = int(in_g.sum())
        group_response[g] = {
            "n": n_g,
            "responders": int(y[in_g].sum()),
            "response_rate": float(y[in_g].mean()) if n_g else float("nan"),
        }

    metrics = {
        "cv_auroc": float(aurocs.mean()),
        "cv_auroc_sd": float(aurocs.std(ddof=1)) if aurocs.size > 1 else 0.0,
        "cv_brier": float(briers.mean()),
        "cv_brier_sd": float(briers.std(ddof=1)) if briers.size > 1 else 0.0,
        "apparent_auroc": apparent,
        "cv_folds": float(config.cv_folds),
        "cv_repeats": float(config.cv_repeats),
    }
    return TrainedModel(
        estimator=estimator,
        feature_names=names,
        feature_specs=tuple(spec_by_name[n] for n in names),
        config=config,
        metrics=metrics,
        cutoffs=cutoffs,
        oof_probability=oof,
        oof_group_response=group_response,
        n_train=int(y.shape[0]),
        n_dropped_missing=n_dropped,
        class_balance={
            "n_responders": n_pos,
            "n_non_responders": n_neg,
            "responder_fraction": n_pos / y.shape[0],
        },
    )


def contributions(estimator: Pipeline, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact per-subject logit attributions of the standardised logistic model.

    ``contribution_j = coef_j * (x_j - mean_j) / scale_j``; summed over features plus the intercept this
    equals ``estimator.decision_function(X)``, the logit of ``predict_proba(X)[:, 1]``.

    Args:
        estimator: Fitted ``Pipeline([("scale", StandardScaler), ("clf", LogisticRegression)])``.
        X: Raw (unscaled) feature matrix, shape (n_subjects, n_features), no missing values.

    Returns:
        ``(contrib, intercept)``: contrib has shape (n_subjects, n_features).

    Raises:
        TypeError: The estimator is not the expected binary scaler + logistic pipeline.
    """
    scaler = estimator.named_steps.get("scale")
    clf = estimator.named_steps.get("clf")
    if not isinstance(scaler, StandardScaler) or not isinstance(clf, LogisticRegression):
        raise TypeError("contributions() needs Pipeline([('scale', StandardScaler), ('clf', LogisticRegression)])")
    if clf.coef_.shape[0] != 1:
        raise TypeError("contributions() supports binary logistic models only")
    x_std = scaler.transform(np.asarray(X, dtype=np.float64))
    return x_std * clf.coef_[0], float(clf.intercept_[0])


def _drop_previous_scores(strata: pl.DataFrame) -> pl.DataFrame:
    # Re-scoring replaces every earlier score column, so contributions of two models never mix.
    stale = [c for c in strata.columns if c in SCORE_COLUMNS or c.startswith("contrib_")]
    return strata.drop(stale)


def score_strata(
    strata: pl.DataFrame,
    model: LoadedModel,
    cutoffs: Mapping[str, float] | None = None,
    top_k: int = 3,
) -> pl.DataFrame:
    """Score every subject of the strata frame with a registry model.

    Args:
        strata: One row per subject holding the model's feature source columns.
        model: Model loaded from the registry (:func:`immunostrat.registry.load_model`).
        cutoffs: ``possible_min``/``likely_min``; None uses the model card's defaults.
        top_k: Number of features listed in ``top_features`` (largest absolute contribution first).

    Returns:
        ``strata`` (earlier score columns dropped) plus ``responder_probability`` (Float64, null when not
        assessable), ``responder_group`` (``likely``/``possible``/``unlikely``/``not_assessable``),
        ``contrib_<feature>`` and ``contrib_intercept`` (Float64; sum = logit of the probability),
        ``top_features`` (List[String], null when not assessable), ``model_id`` and ``model_sha256``.

    Raises:
        KeyError: A feature source column is missing.
        ValueError: Invalid cut-offs or ``top_k``.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
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
        proba[complete] = model.estimator.predict_proba(X)[:, 1]
        c, b = contributions(model.estimator, X)
        contrib[complete] = c
        intercept[complete] = b

    # Top features: order columns by name, then a stable sort on -|contribution| breaks ties by name.
    by_name = np.argsort(np.array(names))
    order = np.argsort(-np.abs(contrib[:, by_name]), axis=1, kind="stable")[:, : min(top_k, k)]
    top = np.array(names)[by_name][order]

    group = np.where(complete, assign_groups(np.nan_to_num(proba, nan=0.0), cut), NOT_ASSESSABLE)

    def _float(values: np.ndarray, name: str) -> pl.Series:
        return pl.Series(name, values, dtype=pl.Float64).fill_nan(None)

    top_series = pl.Series("top_features", top).cast(pl.List(pl.String))
    return base.with_columns(
        _float(proba, "responder_probability"),
        pl.Series("responder_group", group).cast(pl.String),
        pl.when(pl.Series(complete, dtype=pl.Boolean)).then(top_series).alias("top_features"),
        *[_float(contrib[:, j], f"contrib_{name}") for j, name in enumerate(names)],
        _float(intercept, "contrib_intercept"),
        pl.lit(model.model_id, dtype=pl.String).alias("model_id"),
        pl.lit(model.sha256, dtype=pl.String).alias("model_sha256"),
    )
