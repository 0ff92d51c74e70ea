"""Training the responder model: grouped cross-validation, the nested fitting procedure, cut-offs, the final fit.

The model is deliberately a standardised logistic regression, optionally Platt-calibrated: its logit decomposes
exactly into per-feature contributions (``coef_j * x_std_j``) plus an intercept, which is what the strata output
reports next to each probability (Platt scaling multiplies the logit by a slope and adds an offset, so the
decomposition stays exact; see :class:`~immunostrat.modelling.scoring.LinearLogit`). Validation is repeated
stratified K-fold, grouped by site or study when given, with tuning and calibration nested inside every training
fold. Group cut-offs are chosen on out-of-fold predictions so that the "likely / possible / unlikely" bands reflect
how the model behaves on subjects it has not seen. Stratify-time scoring is :mod:`immunostrat.modelling.scoring`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import GridSearchCV, PredefinedSplit, StratifiedGroupKFold, StratifiedKFold

from immunostrat.config.features import DEFAULT_FEATURES, GROUP_LEVELS, FeatureSpec
from immunostrat.config.run import TrainingConfig
from immunostrat.modelling.drift import reference_profile
from immunostrat.modelling.estimator import (
    ResponderEstimator,
    calibration_info,
    linear_logit_parts,
    make_pipeline,
    pipeline_of,
)
from immunostrat.modelling.evaluation import evaluate_predictions, subgroup_labels
from immunostrat.modelling.scoring import LinearLogit, assign_groups

__all__ = [
    "CrossValidation",
    "FinalFit",
    "TrainedModel",
    "TrainingData",
    "cross_validate",
    "cv_splits",
    "fit_final",
    "fit_procedure",
    "out_of_fold_probability",
    "train_responder_model",
    "trained_model",
    "training_data",
]


@dataclass
class TrainedModel:
    """Output of :func:`train_responder_model`; everything the registry needs to write a model card.

    Attributes:
        estimator: The fitted model: ``Pipeline([scale, clf])``, or that pipeline inside a sigmoid
            ``CalibratedClassifierCV`` (``ensemble=False``), fitted on all complete rows.
        feature_names: Model input columns, in order.
        feature_specs: Specs of those features (units/descriptions for the card).
        config: The training config used.
        metrics: Flat summary for quick reading: ``cv_<metric>`` with ``_ci_low``/``_ci_high``, per-repeat SDs,
            apparent AUROC, fold counts.
        cutoffs: ``{"possible_min": .., "likely_min": ..}`` chosen on the OOF probabilities.
        oof_probability: Out-of-fold responder probability per complete training row (mean over repeats).
        oof_group_response: Per OOF group: ``n``, ``responders``, observed ``response_rate`` (and its interval).
        n_train: Complete rows used to fit.
        n_dropped_missing: Rows dropped because a feature was missing.
        class_balance: ``n_responders``, ``n_non_responders``, ``responder_fraction`` of the complete rows.
        evaluation: Internal validation of the OOF probabilities
            (:func:`immunostrat.modelling.evaluation.evaluate_predictions`).
        reference: Training distribution of each feature, for drift
            (:func:`immunostrat.modelling.drift.reference_profile`).
        fold_ids: Validation fold of every complete row in every repeat, shape (cv_repeats, n_train).
        group_by: Name of the grouping column used for the folds, or None.
        calibration: ``method`` and, for sigmoid, the Platt ``slope`` and ``intercept`` on the logit scale.
        tuning: Chosen C and the inner-CV scores of the final fit when tuning was asked for, else empty.
        duration_seconds: Wall time of the training (CV, final fit, evaluation).
    """

    estimator: ResponderEstimator
    feature_names: tuple[str, ...]
    feature_specs: tuple[FeatureSpec, ...]
    config: TrainingConfig
    metrics: dict[str, float]
    cutoffs: dict[str, float]
    oof_probability: np.ndarray = field(repr=False)
    oof_group_response: dict[str, dict[str, Any]]
    n_train: int
    n_dropped_missing: int
    class_balance: dict[str, float]
    evaluation: dict[str, Any] = field(default_factory=dict, repr=False)
    reference: dict[str, Any] = field(default_factory=dict, repr=False)
    fold_ids: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.int64), repr=False)
    group_by: str | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] = field(default_factory=dict)
    duration_seconds: float = 0.0

    @property
    def linear_logit(self) -> LinearLogit:
        """The estimator's linear logit (coefficients, intercept, scaler, Platt parameters), for the model card."""
        return linear_logit_parts(self.estimator)

    @property
    def pipeline_steps(self) -> list[str]:
        """Fully qualified class of each step of the scaler + logistic pipeline, for the model card."""
        return [f"{type(s).__module__}.{type(s).__qualname__}" for s in pipeline_of(self.estimator).steps]


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


def _as_groups(groups: pl.Series | np.ndarray | Sequence[Any] | None, n_rows: int) -> np.ndarray | None:
    if groups is None:
        return None
    series = groups if isinstance(groups, pl.Series) else pl.Series("group", list(np.asarray(groups, dtype=object)))
    if series.len() != n_rows:
        raise ValueError(f"groups must have {n_rows} entries, got {series.len()}")
    # A missing site/study is one group of its own: never guess which real group it belongs to.
    return series.cast(pl.String).fill_null("<missing>").to_numpy()


def _derived_seed(*keys: int) -> int:
    """A reproducible 31-bit seed from a tuple of integers (config seed, repeat, fold, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] & 0x7FFFFFFF)


def _random_order_group_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Fold id per row: groups taken in random order, each put in the fold that keeps outcomes most balanced.

    This is scikit-learn's StratifiedGroupKFold criterion (mean over classes of the SD across folds of each
    fold's share of the class; ties go to the smaller fold) without its sort by class spread. That sort makes
    StratifiedGroupKFold deterministic whenever groups differ in class spread (its ``shuffle`` only reorders ties),
    so repeats of it are identical; a random order gives each repeat its own partition.
    """
    rng = np.random.default_rng(seed)
    _, g_idx = np.unique(groups, return_inverse=True)
    _, y_idx = np.unique(y, return_inverse=True)
    counts = np.zeros((g_idx.max() + 1, y_idx.max() + 1))
    np.add.at(counts, (g_idx, y_idx), 1.0)
    totals = counts.sum(axis=0)
    for _ in range(100):  # a random order can, rarely, leave a fold empty: draw another
        fold_counts = np.zeros((n_splits, counts.shape[1]))
        fold_of_group = np.empty(counts.shape[0], dtype=np.int64)
        for g in rng.permutation(counts.shape[0]):
            trial = np.broadcast_to(fold_counts, (n_splits, *fold_counts.shape)).copy()
            trial[np.arange(n_splits), np.arange(n_splits)] += counts[g]
            spread = np.std(trial / totals, axis=1).mean(axis=1)
            best = np.flatnonzero(np.isclose(spread, spread.min(), rtol=0, atol=1e-12))
            f = int(best[np.argmin(fold_counts[best].sum(axis=1))])
            fold_counts[f] += counts[g]
            fold_of_group[g] = f
        if (fold_counts.sum(axis=1) > 0).all():
            return fold_of_group[g_idx]
    raise ValueError(f"could not spread {counts.shape[0]} groups over {n_splits} non-empty folds")


def cv_splits(
    y: np.ndarray,
    groups: np.ndarray | None,
    n_splits: int,
    n_repeats: int = 1,
    seed: int = 0,
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Repeated stratified K-fold splits, grouped when ``groups`` is given (no group in both train and validation).

    Ungrouped: ``StratifiedKFold(shuffle=True)`` with a new seed per repeat. Grouped: the first repeat is
    scikit-learn's ``StratifiedGroupKFold``; later repeats assign groups in a random order with the same balance
    criterion (see :func:`_random_order_group_folds`), because StratifiedGroupKFold itself gives the same
    partition for every seed when groups differ in class spread.

    Args:
        y: Binary outcome per row (stratification target).
        groups: Group label per row (e.g. site), or None to treat every row (subject) as its own group.
        n_splits: Folds per repeat.
        n_repeats: Repeats, each with its own partition.
        seed: Seed; repeat ``r`` uses a seed derived from (seed, r), so a longer run keeps the first repeats.

    Returns:
        One list of ``(train_idx, validation_idx)`` per repeat; each repeat's validation sets partition the rows.

    Raises:
        ValueError: Fewer groups than folds.
    """
    X0 = np.zeros((len(y), 1))
    out: list[list[tuple[np.ndarray, np.ndarray]]] = []
    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise ValueError(
                f"grouped CV needs at least cv_folds={n_splits} groups, the data has {n_groups}; lower cv_folds, "
                "group by another column (group_by), or set group_by to None"
            )
    rows = np.arange(len(y))
    for r in range(n_repeats):
        rs = _derived_seed(seed, r)
        if groups is None:
            out.append(list(StratifiedKFold(n_splits, shuffle=True, random_state=rs).split(X0, y)))
        elif r == 0:
            out.append(list(StratifiedGroupKFold(n_splits, shuffle=True, random_state=rs).split(X0, y, groups)))
        else:
            fold = _random_order_group_folds(y, groups, n_splits, rs)
            out.append([(rows[fold != k], rows[fold == k]) for k in range(n_splits)])
    return out


def _inner_fold_ids(y: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int) -> np.ndarray:
    """Fold id per row for the inner (calibration/tuning) CV, grouped like the outer CV."""
    n_min = int(min(y.sum(), y.shape[0] - y.sum()))
    k = min(n_folds, n_min, len(np.unique(groups)) if groups is not None else n_folds)
    if k < 2:
        raise ValueError(
            f"too few subjects or groups for the inner CV (calibration/tuning): {n_min} in the smaller class, "
            f"{len(np.unique(groups)) if groups is not None else 'no'} groups; use calibration='none' and no "
            "tuning_grid, or more data"
        )
    (split,) = cv_splits(y, groups, k, 1, seed)
    ids = np.empty(y.shape[0], dtype=np.int64)
    for fold, (_, test) in enumerate(split):
        ids[test] = fold
    return ids


def fit_procedure(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray | None, config: TrainingConfig, seed: int
) -> tuple[ResponderEstimator, dict[str, Any]]:
    """The whole fitting procedure on one data set: optional tuning of C, fit, optional Platt calibration.

    The outer CV applies exactly this to every training fold, so the validation metrics cover tuning and
    calibration too (nested); the final model is this procedure applied to all complete rows.

    Args:
        X: Feature matrix (complete rows).
        y: Binary outcome.
        groups: Group per row for the inner CV, or None.
        config: Training settings.
        seed: Seed of the inner CV shuffles.

    Returns:
        ``(estimator, info)`` where info holds the tuned C and its inner-CV scores when tuning was asked for.
    """
    info: dict[str, Any] = {}
    C = config.C
    if config.tuning_grid:
        ids = _inner_fold_ids(y, groups, config.inner_cv_folds, _derived_seed(seed, 1))
        search = GridSearchCV(
            make_pipeline(config, C, _derived_seed(config.seed)),
            {"clf__C": list(config.tuning_grid)},
            cv=PredefinedSplit(ids),
            scoring=config.tuning_scoring,
            refit=False,
        ).fit(X, y)
        C = float(search.best_params_["clf__C"])
        scores = search.cv_results_["mean_test_score"]
        info = {
            "C": C,
            "scoring": config.tuning_scoring,
            "scores": dict(zip(map(str, config.tuning_grid), scores, strict=False)),
        }
    pipe = make_pipeline(config, C, _derived_seed(config.seed))
    if config.calibration == "none":
        return pipe.fit(X, y), info
    ids = _inner_fold_ids(y, groups, config.inner_cv_folds, _derived_seed(seed, 2))
    # ensemble=False: one Platt sigmoid fitted on the inner out-of-fold decision values, then the pipeline
    # refitted on all rows. The inner folds are grouped like the outer ones (PredefinedSplit of fold ids).
    calibrated = CalibratedClassifierCV(pipe, method="sigmoid", cv=PredefinedSplit(ids), ensemble=False)
    return calibrated.fit(X, y), info


def out_of_fold_probability(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    splits: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    config: TrainingConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Validation (out-of-fold) probabilities: each row is predicted by a model that never saw it (or its group).

    Args:
        X: Feature matrix.
        y: Binary outcome.
        groups: Group per row (passed on to the inner CV), or None.
        splits: Output of :func:`cv_splits`.
        config: Training settings.

    Returns:
        ``(probability, fold_ids)``, both of shape (n_repeats, n_rows).
    """
    n = y.shape[0]
    proba = np.full((len(splits), n), np.nan)
    fold_ids = np.full((len(splits), n), -1, dtype=np.int64)
    for r, repeat in enumerate(splits):
        for k, (train, valid) in enumerate(repeat):
            if len(np.unique(y[train])) < 2:
                raise ValueError(f"CV repeat {r} fold {k}: the training part holds one outcome class only")
            est, _ = fit_procedure(
                X[train], y[train], None if groups is None else groups[train], config, _derived_seed(config.seed, r, k)
            )
            proba[r, valid] = est.predict_proba(X[valid])[:, 1]
            fold_ids[r, valid] = k
    if np.isnan(proba).any():
        raise ValueError("CV splits do not cover every row in every repeat")
    return proba, fold_ids


@dataclass(frozen=True)
class TrainingData:
    """The complete-case rows a model is fitted and validated on (see :func:`training_data`)."""

    names: tuple[str, ...]
    specs: tuple[FeatureSpec, ...]
    frame: pl.DataFrame  # every row's features (Float64, non-finite as null): the drift reference
    X: np.ndarray
    y: np.ndarray
    g: np.ndarray | None
    complete: np.ndarray
    group_by: str | None
    strata: pl.DataFrame | None  # complete rows only, for subgroup results


@dataclass(frozen=True)
class CrossValidation:
    """Internal validation by repeated (grouped) CV: out-of-fold probabilities, cut-offs chosen on them, metrics."""

    oof: np.ndarray
    fold_ids: Any
    aurocs: np.ndarray
    briers: np.ndarray
    cutoffs: dict[str, float]
    evaluation: dict[str, Any]


@dataclass(frozen=True)
class FinalFit:
    """The estimator fitted on every complete row (tuning and calibration as in each CV fold)."""

    estimator: Any
    tuning: dict[str, Any]
    apparent_auroc: float


def training_data(
    features: pl.DataFrame,
    responded: pl.Series | np.ndarray,
    config: TrainingConfig,
    *,
    feature_specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
    groups: pl.Series | np.ndarray | Sequence[Any] | None = None,
    strata: pl.DataFrame | None = None,
) -> TrainingData:
    """Check features and labels and keep the complete rows.

    Raises:
        ValueError: Unknown/missing features, bad labels, too few subjects per class for the folds.
    """
    spec_by_name = {s.name: s for s in feature_specs}
    unknown = [n for n in config.features if n not in spec_by_name]
    if unknown:
        raise ValueError(f"config.features {unknown} have no FeatureSpec; known: {sorted(spec_by_name)}")
    absent = [n for n in config.features if n not in features.columns]
    if absent:
        raise ValueError(f"feature frame lacks column(s) {absent}")
    names = tuple(config.features)
    y_all = _as_binary_labels(responded, features.height)
    groups_all = _as_groups(groups, features.height)
    if strata is not None and strata.height != features.height:
        raise ValueError(f"strata has {strata.height} rows, features {features.height}")

    # Complete-case fit: the logistic model cannot take missing inputs, and imputing baseline biomarkers
    # would hide subjects that score_strata reports as not_assessable anyway.
    frame = features.select([pl.col(n).cast(pl.Float64) for n in names])
    frame = frame.select([pl.when(pl.col(n).is_finite()).then(pl.col(n)).alias(n) for n in names])
    complete = frame.select(pl.all_horizontal(pl.all().is_not_null()).alias("ok")).to_series().to_numpy()
    y = y_all[complete]
    n_pos = int(y.sum())
    n_neg = int(y.shape[0] - n_pos)
    if min(n_pos, n_neg) < config.cv_folds:
        raise ValueError(
            f"need at least cv_folds={config.cv_folds} responders and non-responders among complete rows, "
            f"got {n_pos} responders and {n_neg} non-responders "
            f"({int((~complete).sum())} rows dropped for missing features)"
        )
    g = None if groups_all is None else groups_all[complete]
    return TrainingData(
        names=names,
        specs=tuple(spec_by_name[n] for n in names),
        frame=frame,
        X=frame.filter(pl.Series(complete)).to_numpy().astype(np.float64),
        y=y,
        g=g,
        complete=complete,
        group_by=_group_name(groups) if g is not None else None,
        strata=strata.filter(pl.Series(complete)) if strata is not None else None,
    )


def cross_validate(data: TrainingData, config: TrainingConfig) -> CrossValidation:
    """Repeated stratified (grouped) K-fold with tuning and calibration inside every training fold; the
    out-of-fold probabilities (mean over repeats) give the metrics with bootstrap intervals and the cut-offs."""
    y, g = data.y, data.g
    splits = cv_splits(y, g, config.cv_folds, config.cv_repeats, config.seed)
    oof_by_repeat, fold_ids = out_of_fold_probability(data.X, y, g, splits, config)
    aurocs = np.array([roc_auc_score(y, p) for p in oof_by_repeat])
    briers = np.array([brier_score_loss(y, p) for p in oof_by_repeat])
    oof = oof_by_repeat.mean(axis=0)

    # Cut-offs on OOF probabilities: training-fit probabilities are optimistic and would shift the bands.
    q_low, q_high = np.quantile(oof, config.group_quantiles)
    cutoffs = {"possible_min": round(float(q_low), 2), "likely_min": round(float(q_high), 2)}
    labels = subgroup_labels(data.strata, config.evaluation)[0] if data.strata is not None else None
    evaluation = evaluate_predictions(
        y,
        oof,
        predicted_group=assign_groups(oof, cutoffs),
        group_levels=GROUP_LEVELS,
        subgroups=labels,
        config=config.evaluation,
        kind=f"internal: out-of-fold, {config.cv_repeats}x{config.cv_folds}-fold "
        + (f"CV grouped by {data.group_by}" if g is not None else "stratified CV"),
    )
    evaluation["cv"] = {
        "folds": config.cv_folds,
        "repeats": config.cv_repeats,
        "grouped_by": data.group_by,
        "n_groups": len(np.unique(g)) if g is not None else None,
        "per_repeat_auroc": aurocs.tolist(),
        "per_repeat_brier": briers.tolist(),
    }
    return CrossValidation(oof, fold_ids, aurocs, briers, cutoffs, evaluation)


def fit_final(data: TrainingData, config: TrainingConfig) -> FinalFit:
    """The model: :func:`fit_procedure` on every complete row."""
    estimator, tuning = fit_procedure(data.X, data.y, data.g, config, _derived_seed(config.seed, 1_000_003))
    apparent = float(roc_auc_score(data.y, estimator.predict_proba(data.X)[:, 1]))
    return FinalFit(estimator, tuning, apparent)


def trained_model(
    data: TrainingData, cv: CrossValidation, fit: FinalFit, config: TrainingConfig, duration_seconds: float = 0.0
) -> TrainedModel:
    """Everything the registry writes into a model card, from the data, its validation and the final fit."""
    metrics: dict[str, float] = {}
    for name in ("auroc", "auprc", "brier", "calibration_intercept", "calibration_slope"):
        cell = cv.evaluation["metrics"][name]
        metrics[f"cv_{name}"] = math.nan if cell["estimate"] is None else cell["estimate"]
        metrics[f"cv_{name}_ci_low"] = math.nan if cell["ci_low"] is None else cell["ci_low"]
        metrics[f"cv_{name}_ci_high"] = math.nan if cell["ci_high"] is None else cell["ci_high"]
    metrics |= {
        "cv_auroc_sd": float(cv.aurocs.std(ddof=1)) if cv.aurocs.size > 1 else 0.0,
        "cv_brier_sd": float(cv.briers.std(ddof=1)) if cv.briers.size > 1 else 0.0,
        "apparent_auroc": fit.apparent_auroc,
        "cv_folds": float(config.cv_folds),
        "cv_repeats": float(config.cv_repeats),
        "n_bootstrap": float(config.evaluation.n_bootstrap),
    }
    n_pos = int(data.y.sum())
    return TrainedModel(
        estimator=fit.estimator,
        feature_names=data.names,
        feature_specs=data.specs,
        config=config,
        metrics=metrics,
        cutoffs=cv.cutoffs,
        oof_probability=cv.oof,
        oof_group_response=cv.evaluation["group_response"],
        n_train=int(data.y.shape[0]),
        n_dropped_missing=int((~data.complete).sum()),
        class_balance={
            "n_responders": n_pos,
            "n_non_responders": int(data.y.shape[0] - n_pos),
            "responder_fraction": n_pos / data.y.shape[0],
        },
        evaluation=cv.evaluation,
        reference=reference_profile(data.frame, config.drift_bins),
        fold_ids=cv.fold_ids,
        group_by=data.group_by,
        calibration=calibration_info(fit.estimator),
        tuning=fit.tuning,
        duration_seconds=duration_seconds,
    )


def train_responder_model(
    features: pl.DataFrame,
    responded: pl.Series | np.ndarray,
    config: TrainingConfig | None = None,
    *,
    feature_specs: Sequence[FeatureSpec] = DEFAULT_FEATURES,
    groups: pl.Series | np.ndarray | Sequence[Any] | None = None,
    strata: pl.DataFrame | None = None,
) -> TrainedModel:
    """Fit the responder model, validate it by repeated (grouped) CV, and choose its cut-offs on OOF data.

    The named steps, in order: :func:`training_data` (complete rows), :func:`cross_validate`, :func:`fit_final`
    and :func:`trained_model` (the train flow runs the middle two as tasks of their own).

    Args:
        features: Output of :func:`~immunostrat.config.features.build_feature_frame`, one row per subject.
        responded: Binary outcome per row of ``features`` (1 = responder), no nulls.
        config: Training settings; defaults to ``TrainingConfig()`` (the full profile).
        feature_specs: Specs to look ``config.features`` up in (for units/descriptions).
        groups: Group per row (e.g. the ``site_id`` column) for grouped CV; None = ungrouped.
        strata: Row-aligned strata frame for subgroup results (sex, age, site, IFN); None = overall only.

    Raises:
        ValueError: Unknown/missing features, bad labels, too few subjects per class or groups for the folds.
    """
    started = time.perf_counter()
    config = config or TrainingConfig()
    data = training_data(features, responded, config, feature_specs=feature_specs, groups=groups, strata=strata)
    cv = cross_validate(data, config)
    fit = fit_final(data, config)
    return trained_model(data, cv, fit, config, time.perf_counter() - started)


def _group_name(groups: Any) -> str:
    return str(groups.name) if isinstance(groups, pl.Series) else "groups"
