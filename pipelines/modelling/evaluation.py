"""Honest evaluation of responder probabilities: metrics with bootstrap intervals, overall and per subgroup.

Reported numbers (point estimates) come from scikit-learn (``roc_auc_score``, ``average_precision_score``,
``brier_score_loss``, ``LogisticRegression`` for the calibration slope, ``roc_curve``) and SciPy (``brentq`` for
the calibration intercept). Their percentile bootstrap intervals come from one vectorised engine
(:func:`immunostrat.modelling.bootstrap.bootstrap_metrics`) that evaluates every resample as integer case
weights, so 1,000 resamples of a few thousand subjects across ~20 subgroups take seconds instead of the minutes
that one scikit-learn or fairlearn call per (resample, subgroup) takes (measured: fairlearn's ``MetricFrame``
bootstrap ≈ 0.4 s per resample for 12 sites). ``tests/test_evaluation.py`` checks the engine against
scikit-learn on explicit resamples and the subgroup point estimates against fairlearn's ``MetricFrame``.

Bootstrap semantics (as fairlearn's): the whole evaluation cohort is resampled with replacement; overall and
per-subgroup metrics are computed on the same resample; subgroup sizes therefore vary between resamples. A
resample in which a metric is undefined (e.g. a subgroup with one class only) is skipped for that metric and
``n_valid`` says how many resamples the interval rests on.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from immunostrat.config.features import GROUP_LEVELS, NOT_ASSESSABLE
from immunostrat.config.run import EvaluationConfig
from immunostrat.modelling import drift
from immunostrat.modelling.bootstrap import bootstrap_metrics, clipped_logit, interval, with_ci
from immunostrat.modelling.scoring import score_strata

if TYPE_CHECKING:
    from immunostrat.modelling.registry import LoadedModel

__all__ = [
    "METRICS",
    "SUBGROUPS",
    "EvaluationConfig",
    "calibration_intercept",
    "calibration_slope",
    "calibration_table",
    "compare_models",
    "evaluate_model",
    "evaluate_predictions",
    "point_metrics",
    "roc_points",
    "subgroup_labels",
]

#: Metrics reported for every evaluation, in report order.
METRICS: tuple[str, ...] = ("auroc", "auprc", "brier", "calibration_intercept", "calibration_slope")

#: Subgroup variables :func:`subgroup_labels` knows how to derive from a strata frame.
SUBGROUPS: tuple[str, ...] = ("sex", "age_band", "site_id", "study_id", "ifn_high")

UNKNOWN = "unknown"


# ------------------------------------------------------------------------------------ point estimates


def _both_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


def calibration_intercept(y: np.ndarray, p: np.ndarray) -> float:
    """Calibration-in-the-large: ``a`` in ``logit P(y=1) = a + logit(p)`` (slope fixed at 1).

    0 means the mean predicted risk matches the observed rate; > 0 means risks are too low. Solved as the root of
    the score equation ``sum(y - expit(a + logit p)) = 0`` with :func:`scipy.optimize.brentq` (scikit-learn's
    logistic regression has no offset term).

    Args:
        y: Binary outcomes.
        p: Predicted probabilities.

    Returns:
        The intercept, or NaN when ``y`` holds one class only.
    """
    y = np.asarray(y, dtype=np.float64)
    if not _both_classes(y):
        return math.nan
    lp = clipped_logit(np.asarray(p, dtype=np.float64))
    return float(brentq(lambda a: float(np.sum(y - expit(a + lp))), -50.0, 50.0, xtol=1e-12))


def calibration_slope(y: np.ndarray, p: np.ndarray) -> float:
    """Calibration slope: ``b`` in ``logit P(y=1) = a + b * logit(p)`` (unpenalised logistic regression).

    1 is ideal; < 1 means predictions are too extreme (overfitting), > 1 too modest.

    Args:
        y: Binary outcomes.
        p: Predicted probabilities.

    Returns:
        The slope, or NaN when ``y`` holds one class only or the fit does not converge (separation).
    """
    y = np.asarray(y, dtype=np.int64)
    if not _both_classes(y):
        return math.nan
    lp = clipped_logit(np.asarray(p, dtype=np.float64))[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            fit = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-10, max_iter=200).fit(lp, y)
        except ConvergenceWarning:
            return math.nan
    return float(fit.coef_[0, 0])


def point_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUROC, AUPRC (average precision), Brier score, calibration intercept and slope.

    Args:
        y: Binary outcomes (0/1).
        p: Predicted probabilities.

    Returns:
        One float per name in :data:`METRICS`; NaN where undefined (one class only, or no subjects).
    """
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    both = _both_classes(y)
    return {
        "auroc": float(roc_auc_score(y, p)) if both else math.nan,
        "auprc": float(average_precision_score(y, p)) if both else math.nan,
        "brier": float(brier_score_loss(y, p, labels=[0, 1])) if y.size else math.nan,
        "calibration_intercept": calibration_intercept(y, p),
        "calibration_slope": calibration_slope(y, p),
    }


# ------------------------------------------------------------------------------------ tables for the report


def calibration_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """Observed vs predicted risk in equal-count bins of the predicted probability.

    Returns:
        ``[{bin, lower, upper, mean_predicted, observed, n}]``, bins numbered from 1 (lowest risk); ``lower`` and
        ``upper`` are the smallest and largest prediction in the bin.
    """
    frame = pl.DataFrame({"y": np.asarray(y, dtype=np.float64), "p": np.asarray(p, dtype=np.float64)})
    if frame.height == 0:
        return []
    # rank-based equal-count bins: ties in p may straddle a bin edge but each bin differs in size by <= 1 + ties.
    binned = frame.with_columns(
        ((pl.col("p").rank("ordinal") - 1) * n_bins // pl.len() + 1).cast(pl.Int64).alias("bin")
    )
    table = (
        binned.group_by("bin")
        .agg(
            pl.col("p").min().alias("lower"),
            pl.col("p").max().alias("upper"),
            pl.col("p").mean().alias("mean_predicted"),
            pl.col("y").mean().alias("observed"),
            pl.len().cast(pl.Int64).alias("n"),
        )
        .sort("bin")
    )
    return table.select("bin", "lower", "upper", "mean_predicted", "observed", "n").to_dicts()


def roc_points(y: np.ndarray, p: np.ndarray, decimals: int = 4) -> dict[str, list[float]]:
    """ROC curve points (``sklearn.metrics.roc_curve`` with intermediate points dropped), rounded."""
    y = np.asarray(y, dtype=np.int64)
    if not _both_classes(y):
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(y, np.asarray(p, dtype=np.float64), drop_intermediate=True)
    return {"fpr": np.round(fpr, decimals).tolist(), "tpr": np.round(tpr, decimals).tolist()}


# ------------------------------------------------------------------------------------ subgroups


def _age_labels(edges: Sequence[float]) -> list[str]:
    fmt = [f"{e:g}" for e in edges]
    inner = [f"{a} to <{b}" for a, b in itertools.pairwise(fmt)]
    return [f"<{fmt[0]}", *inner, f">={fmt[-1]}"]


def subgroup_labels(strata: pl.DataFrame, config: EvaluationConfig | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Subgroup label per subject for each configured subgroup variable (missing values -> ``unknown``).

    Args:
        strata: One row per subject; reads ``sex``, ``age_years``, ``site_id``, ``study_id``, ``ifn_high``.
        config: Which subgroups and age bands (default :class:`EvaluationConfig`).

    Returns:
        ``(labels, skipped)``: a String frame with one column per available subgroup variable, row-aligned with
        ``strata``, and the variables skipped because ``strata`` lacks their source column.
    """
    config = config or EvaluationConfig()
    source = {"sex": "sex", "age_band": "age_years", "site_id": "site_id", "study_id": "study_id"}
    source["ifn_high"] = "ifn_high"
    exprs: list[pl.Expr] = []
    skipped: list[str] = []
    for name in config.subgroups:
        col = source[name]
        if col not in strata.columns:
            skipped.append(name)
            continue
        if name == "age_band":
            labels = _age_labels(config.age_band_edges)
            age = pl.col(col).cast(pl.Float64)
            chain: Any = pl.when(age < config.age_band_edges[0]).then(pl.lit(labels[0]))
            for edge, label in zip(config.age_band_edges[1:], labels[1:-1], strict=True):
                chain = chain.when(age < edge).then(pl.lit(label))
            expr = pl.when(age.is_null()).then(pl.lit(None, pl.String)).otherwise(chain.otherwise(pl.lit(labels[-1])))
        elif name == "ifn_high":
            expr = pl.when(pl.col(col).cast(pl.Boolean)).then(pl.lit("IFN-high")).otherwise(pl.lit("IFN-low"))
            expr = pl.when(pl.col(col).is_null()).then(pl.lit(UNKNOWN)).otherwise(expr)
        else:
            expr = pl.col(col).cast(pl.String)
        exprs.append(expr.fill_null(UNKNOWN).alias(name))
    return (strata.select(exprs) if exprs else pl.DataFrame()), skipped


# ------------------------------------------------------------------------------------ evaluation


def _group_rows(
    y: np.ndarray, groups: np.ndarray, levels: Sequence[str], dist: Mapping[str, np.ndarray] | None, level: float
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for k, g in enumerate(levels):
        in_g = groups == g
        n_g = int(in_g.sum())
        rate = float(y[in_g].mean()) if n_g else math.nan
        ci = interval(None if dist is None else dist.get(f"rate_{k}"), level)
        out[g] = {"n": n_g, "responders": int(y[in_g].sum()), "response_rate": None if not n_g else rate, **ci}
    return out


def evaluate_predictions(
    y: np.ndarray,
    p: np.ndarray,
    *,
    predicted_group: np.ndarray | None = None,
    group_levels: Sequence[str] = (),
    subgroups: pl.DataFrame | None = None,
    config: EvaluationConfig | None = None,
    kind: str = "internal",
) -> dict[str, Any]:
    """Every metric with its bootstrap interval, overall and per subgroup, plus calibration table and ROC.

    Args:
        y: Binary outcomes.
        p: Predicted probabilities (same rows).
        predicted_group: Predicted responder group per row (e.g. ``likely``), for observed rates per group.
        group_levels: Group labels, lowest to highest (e.g. ``GROUP_LEVELS``).
        subgroups: Output of :func:`subgroup_labels` (row-aligned), or None for no subgroup results.
        config: Bootstrap and table settings (default :class:`EvaluationConfig`).
        kind: What the predictions are (e.g. ``internal (out-of-fold)`` or ``external``), written to the report.

    Returns:
        A JSON-ready dict: ``kind``, ``n``, ``n_events``, ``metrics`` ({name: {estimate, ci_low, ci_high,
        n_valid}}), ``group_response``, ``subgroups`` ({variable: {level: {n, n_events, metrics,
        group_response}}}), ``calibration`` ([{bin, lower, upper, mean_predicted, observed, n}]), ``roc``
        ({fpr, tpr}) and ``bootstrap`` (resamples, seed, level, method).
    """
    config = config or EvaluationConfig()
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-D of equal length, got {y.shape} and {p.shape}")
    levels = list(group_levels)
    groups = np.asarray(predicted_group, dtype=object) if predicted_group is not None else None
    subsets, sub_levels = _subgroup_subsets(subgroups, y.shape[0], config)
    dist = _bootstrap_distributions(y, p, subsets, groups=groups, levels=levels, config=config)

    def block(name: str) -> dict[str, Any]:
        return _metric_block(
            y, p, subsets[name], dist=dist.get(name), groups=groups, levels=levels, ci_level=config.ci_level
        )

    report: dict[str, Any] = {"kind": kind, **block("overall")}
    report["subgroups"] = {var: {lev: block(f"{var}={lev}") for lev in levels_} for var, levels_ in sub_levels.items()}
    report["calibration"] = calibration_table(y, p, config.calibration_bins)
    report["roc"] = roc_points(y, p)
    report["bootstrap"] = {
        "n_resamples": config.n_bootstrap,
        "seed": config.seed,
        "ci_level": config.ci_level,
        "method": "percentile; whole cohort resampled, subgroups evaluated on each resample",
    }
    return report


def _subgroup_subsets(
    subgroups: pl.DataFrame | None, n: int, config: EvaluationConfig
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Row masks named ``overall`` and ``<variable>=<level>``, and each subgroup variable's levels in report order."""
    subsets: dict[str, np.ndarray] = {"overall": np.ones(n, dtype=bool)}
    sub_levels: dict[str, list[str]] = {}
    if subgroups is None or not subgroups.width:
        return subsets, sub_levels
    if subgroups.height != n:
        raise ValueError(f"subgroups has {subgroups.height} rows, predictions {n}")
    age_order = {label: i for i, label in enumerate(_age_labels(config.age_band_edges))}
    for var in subgroups.columns:
        values = subgroups[var].to_numpy()
        # Natural order: age bands youngest first, other levels alphabetical, "unknown" last.
        rank = age_order if var == "age_band" else {}
        sub_levels[var] = sorted({str(v) for v in values}, key=lambda v: (v == UNKNOWN, rank.get(v, -1), v))
        for lev in sub_levels[var]:
            subsets[f"{var}={lev}"] = values == lev
    return subsets, sub_levels


def _bootstrap_distributions(
    y: np.ndarray,
    p: np.ndarray,
    subsets: Mapping[str, np.ndarray],
    *,
    groups: np.ndarray | None,
    levels: Sequence[str],
    config: EvaluationConfig,
) -> dict[str, dict[str, np.ndarray]]:
    """Per subset, every metric's bootstrap distribution (and observed rates per predicted group); empty when no
    resamples are asked for or there are no rows."""
    if config.n_bootstrap <= 0 or not y.size:
        return {}
    codes = None
    if groups is not None:
        codes = np.full(groups.shape[0], -1, dtype=np.int64)  # a group outside `levels` counts in no rate
        for code, level in enumerate(levels):
            codes[groups == level] = code
    return bootstrap_metrics(
        y,
        {"m": p},
        subsets=subsets,
        codes=None if codes is None else {"m": codes},
        n_codes=len(levels),
        n_boot=config.n_bootstrap,
        seed=config.seed,
    )["m"]


def _metric_block(
    y: np.ndarray,
    p: np.ndarray,
    mask: np.ndarray,
    *,
    dist: Mapping[str, np.ndarray] | None,
    groups: np.ndarray | None,
    levels: Sequence[str],
    ci_level: float,
) -> dict[str, Any]:
    """One subset's ``n``, ``n_events``, metrics with intervals and, with predicted groups, observed rates."""
    estimates = point_metrics(y[mask], p[mask])
    out: dict[str, Any] = {"n": int(mask.sum()), "n_events": int(y[mask].sum())}
    out["metrics"] = {m: with_ci(estimates[m], None if dist is None else dist.get(m), ci_level) for m in METRICS}
    if groups is not None:
        out["group_response"] = _group_rows(y[mask], groups[mask], levels, dist, ci_level)
    return out


def _labelled(frame: pl.DataFrame) -> np.ndarray:
    if "responded" not in frame.columns:
        raise ValueError("evaluation data needs a 'responded' column (join the outcomes first)")
    responded = frame["responded"]
    if responded.null_count():
        raise ValueError(f"'responded' holds {responded.null_count()} null(s); drop unknown outcomes first")
    return responded.cast(pl.Int64).to_numpy()


def evaluate_model(
    model: LoadedModel,
    labelled: pl.DataFrame,
    config: EvaluationConfig | None = None,
    *,
    cutoffs: Mapping[str, float] | None = None,
    drift_threshold: float | None = 0.2,
) -> dict[str, Any]:
    """External validation: score a labelled cohort with a registry model and evaluate it.

    Args:
        model: A verified registry model.
        labelled: Strata frame joined with outcomes (one row per subject, ``responded`` not null).
        config: Evaluation settings.
        cutoffs: Group cut-offs; default the model card's.
        drift_threshold: PSI threshold for the drift section; None leaves drift out.

    Returns:
        :func:`evaluate_predictions` output plus ``model`` (id, sha256), ``cutoffs``, ``not_assessable`` (subjects
        the model could not score, left out of every metric) and ``drift``.
    """
    config = config or EvaluationConfig()
    y_all = _labelled(labelled)
    scored = score_strata(labelled, model, cutoffs=cutoffs)
    ok = (scored["responder_group"] != NOT_ASSESSABLE).to_numpy()
    labels, skipped = subgroup_labels(labelled, config)
    report = evaluate_predictions(
        y_all[ok],
        scored["responder_probability"].to_numpy()[ok],
        predicted_group=scored["responder_group"].to_numpy()[ok],
        group_levels=GROUP_LEVELS,
        subgroups=labels.filter(pl.Series(ok)) if labels.width else None,
        config=config,
        kind="external",
    )
    report = {
        "model": {"model_id": model.model_id, "sha256": model.sha256},
        "cutoffs": dict(model.default_cutoffs if cutoffs is None else cutoffs),
        "cutoffs_source": "model card" if cutoffs is None else "caller",
        **report,
        "n_subjects": labelled.height,
        "not_assessable": int((~ok).sum()),
        "subgroups_skipped": skipped,
    }
    if drift_threshold is not None:
        report["drift"] = drift.compare(labelled, model, drift_threshold)
    return report


def compare_models(
    models: Sequence[LoadedModel],
    labelled: pl.DataFrame,
    config: EvaluationConfig | None = None,
) -> dict[str, Any]:
    """Evaluate two or more models on the SAME subjects and the SAME bootstrap resamples.

    Only subjects every model can score enter (a model missing a feature value leaves that subject out for all),
    so the metrics are comparable; differences (model i minus the first model) get paired bootstrap intervals.

    Args:
        models: Registry models, the reference first.
        labelled: Strata frame joined with outcomes.
        config: Evaluation settings (subgroups are not compared).

    Returns:
        ``{"n", "n_events", "n_subjects", "not_assessable_by_any", "models": [{model_id, sha256, metrics}],
        "differences": [{model_id, versus, metrics: {name: {estimate, ci_low, ci_high}}}], "bootstrap"}``.
    """
    if len(models) < 2:
        raise ValueError("compare needs at least two models")
    config = config or EvaluationConfig()
    y_all = _labelled(labelled)
    scored = [score_strata(labelled, m) for m in models]
    ok = np.logical_and.reduce([(s["responder_group"] != NOT_ASSESSABLE).to_numpy() for s in scored])
    y = y_all[ok]
    probs = {f"{i}": s["responder_probability"].to_numpy()[ok] for i, s in enumerate(scored)}
    dist = (
        bootstrap_metrics(y, probs, n_boot=config.n_bootstrap, seed=config.seed)
        if config.n_bootstrap > 0 and y.size
        else {}
    )
    points = {k: point_metrics(y, p) for k, p in probs.items()}
    rows = []
    for i, m in enumerate(models):
        d = dist.get(f"{i}", {}).get("overall", {})
        metrics = {k: with_ci(points[f"{i}"][k], d.get(k), config.ci_level) for k in METRICS}
        rows.append({"model_id": m.model_id, "sha256": m.sha256, "metrics": metrics})
    diffs = []
    base = dist.get("0", {}).get("overall", {})
    for i, m in enumerate(models[1:], start=1):
        d = dist.get(f"{i}", {}).get("overall", {})
        metrics = {
            k: with_ci(
                points[f"{i}"][k] - points["0"][k],
                (d[k] - base[k]) if k in d and k in base else None,
                config.ci_level,
            )
            for k in METRICS
        }
        diffs.append({"model_id": m.model_id, "versus": models[0].model_id, "metrics": metrics})
    return {
        "n_subjects": labelled.height,
        "n": int(ok.sum()),
        "n_events": int(y.sum()),
        "not_assessable_by_any": int((~ok).sum()),
        "models": rows,
        "differences": diffs,
        "bootstrap": {"n_resamples": config.n_bootstrap, "seed": config.seed, "ci_level": config.ci_level},
    }
