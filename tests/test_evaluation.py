"""Tests for immunostrat.modelling.evaluation: metrics, the bootstrap engine, intervals, subgroups, tables,
comparison."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from immunostrat.modelling.bootstrap import bootstrap_metrics, bootstrap_weights
from immunostrat.modelling.evaluation import (
    METRICS,
    EvaluationConfig,
    calibration_intercept,
    calibration_slope,
    calibration_table,
    evaluate_predictions,
    point_metrics,
    roc_points,
    subgroup_labels,
)

GROUPS = ("unlikely", "possible", "likely")


def logistic_data(n: int, seed: int, beta: float = 1.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x ~ N(0, 1), true p = expit(-0.3 + beta x), y ~ Bernoulli(p)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p = expit(-0.3 + beta * x)
    return x, p, (rng.random(n) < p).astype(np.int64)


def test_engine_equals_sklearn_on_explicit_resamples() -> None:
    rng = np.random.default_rng(3)
    n = 400
    p = np.round(rng.uniform(0.02, 0.98, n), 2)  # rounded: many ties, which AUROC/AP must handle like sklearn
    y = (rng.random(n) < p).astype(np.int64)
    codes = np.digitize(p, [0.4, 0.7])
    dist = bootstrap_metrics(y, {"m": p}, codes={"m": codes}, n_codes=3, n_boot=6, seed=11)["m"]["overall"]
    weights = np.vstack(list(bootstrap_weights(n, 6, 11)))
    for b in range(6):
        idx = np.repeat(np.arange(n), weights[b].astype(int))
        expected = point_metrics(y[idx], p[idx])
        for name in METRICS:
            # Two solvers of the same quantity (the engine's vectorised Newton on weighted rows vs brentq /
            # sklearn's newton-cholesky on repeated rows) agree to ~4e-10 on the calibration slope, whatever the
            # BLAS kernel; 1e-6 relative (absolute 1e-8 near zero) is well above that and far below a real error.
            assert dist[name][b] == pytest.approx(expected[name], rel=1e-6, abs=1e-8), name
        for k in range(3):
            # Ratios of integer counts (exact in floating point): only the division rounds.
            assert dist[f"rate_{k}"][b] == pytest.approx(y[idx][codes[idx] == k].mean(), abs=1e-12)


def test_point_metrics_undefined_for_one_class() -> None:
    out = point_metrics(np.ones(20, dtype=int), np.linspace(0.1, 0.9, 20))
    assert math.isnan(out["auroc"]) and math.isnan(out["calibration_slope"])
    assert out["brier"] == pytest.approx(np.mean((1 - np.linspace(0.1, 0.9, 20)) ** 2))


def test_calibration_of_true_probabilities_and_of_overconfident_ones() -> None:
    _, p, y = logistic_data(20_000, seed=1)
    assert calibration_slope(y, p) == pytest.approx(1.0, abs=0.06)
    assert calibration_intercept(y, p) == pytest.approx(0.0, abs=0.05)
    # Doubling the logit makes predictions too extreme: the slope halves.
    assert calibration_slope(y, expit(2 * logit(p))) == pytest.approx(0.5, abs=0.04)
    # Shifting the logit down makes risks too low: the intercept compensates.
    assert calibration_intercept(y, expit(logit(p) - 0.5)) == pytest.approx(0.5, abs=0.05)


def test_well_specified_model_is_calibrated_on_new_data() -> None:
    x, _, y = logistic_data(3_000, seed=2)
    fit = LogisticRegression(C=1e6).fit(x[:, None], y)
    x_new, _, y_new = logistic_data(20_000, seed=3)
    p_new = fit.predict_proba(x_new[:, None])[:, 1]
    assert calibration_slope(y_new, p_new) == pytest.approx(1.0, abs=0.08)
    assert calibration_intercept(y_new, p_new) == pytest.approx(0.0, abs=0.06)


def test_bootstrap_intervals_cover_the_known_signal_and_shrink_with_n() -> None:
    # Population AUROC of this mechanism, from a very large sample.
    _, p_big, y_big = logistic_data(200_000, seed=9)
    truth = roc_auc_score(y_big, p_big)
    widths = []
    for n in (500, 5_000):
        _, p, y = logistic_data(n, seed=4)
        ev = evaluate_predictions(y, p, config=EvaluationConfig(n_bootstrap=400, seed=0, subgroups=()))
        auroc = ev["metrics"]["auroc"]
        assert auroc["ci_low"] < auroc["estimate"] < auroc["ci_high"]
        assert auroc["ci_low"] < truth < auroc["ci_high"]
        slope = ev["metrics"]["calibration_slope"]
        assert slope["ci_low"] < 1.0 < slope["ci_high"]
        assert auroc["n_valid"] == 400
        widths.append(auroc["ci_high"] - auroc["ci_low"])
    assert widths[1] < widths[0] / 2  # ~sqrt(10) narrower


def test_same_seed_same_intervals() -> None:
    _, p, y = logistic_data(600, seed=5)
    cfg = EvaluationConfig(n_bootstrap=100, seed=7)
    assert evaluate_predictions(y, p, config=cfg) == evaluate_predictions(y, p, config=cfg)


def _subgroup_frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M", ""], n, p=[0.8, 0.18, 0.02])
    ifn = rng.choice([1, 0, -1], n, p=[0.7, 0.25, 0.05])
    return pl.DataFrame(
        {
            "sex": [s or None for s in sex.tolist()],
            "age_years": rng.integers(16, 75, n).astype(float),
            "site_id": rng.choice(["SITE-101", "SITE-102", "SITE-201"], n),
            "ifn_high": [None if v < 0 else bool(v) for v in ifn.tolist()],
        }
    )


def test_subgroup_labels() -> None:
    strata = pl.DataFrame(
        {"sex": ["F", None], "age_years": [29.0, 60.0], "site_id": ["A", "B"], "ifn_high": [True, None]}
    )
    labels, skipped = subgroup_labels(strata, EvaluationConfig(subgroups=("sex", "age_band", "ifn_high", "study_id")))
    assert skipped == ["study_id"]
    assert labels.to_dicts() == [
        {"sex": "F", "age_band": "<30", "ifn_high": "IFN-high"},
        {"sex": "unknown", "age_band": ">=60", "ifn_high": "unknown"},
    ]


def test_evaluate_predictions_report_layout_and_subgroups() -> None:
    n = 1_500
    _, p, y = logistic_data(n, seed=6)
    groups = np.array(GROUPS)[np.digitize(p, [0.35, 0.65])]
    labels, _ = subgroup_labels(_subgroup_frame(n, 6))
    ev = evaluate_predictions(
        y, p, predicted_group=groups, group_levels=GROUPS, subgroups=labels, config=EvaluationConfig(n_bootstrap=50)
    )
    assert set(ev["metrics"]) == set(METRICS)
    assert all(set(cell) == {"estimate", "ci_low", "ci_high", "n_valid"} for cell in ev["metrics"].values())
    rates = [ev["group_response"][g]["response_rate"] for g in GROUPS]
    assert rates == sorted(rates)
    assert sum(ev["group_response"][g]["n"] for g in GROUPS) == n
    # The layout another engineer's HTML report reads.
    assert all(set(row) >= {"bin", "mean_predicted", "observed", "n"} for row in ev["calibration"])
    assert sum(row["n"] for row in ev["calibration"]) == n and len(ev["calibration"]) == 10
    assert set(ev["roc"]) == {"fpr", "tpr"} and ev["roc"]["fpr"][0] == 0.0 and ev["roc"]["tpr"][-1] == 1.0
    assert set(ev["subgroups"]) == {"sex", "age_band", "site_id", "ifn_high"}
    sexes = ev["subgroups"]["sex"]
    assert set(sexes) == {"F", "M", "unknown"} and sum(v["n"] for v in sexes.values()) == n
    # Subgroup point estimates are the metric on that subgroup's rows.
    is_m = labels["sex"].to_numpy() == "M"
    assert sexes["M"]["metrics"]["auroc"]["estimate"] == pytest.approx(point_metrics(y[is_m], p[is_m])["auroc"])


def test_subgroup_point_estimates_match_fairlearn_metricframe() -> None:
    fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
    n = 800
    _, p, y = logistic_data(n, seed=8)
    labels, _ = subgroup_labels(_subgroup_frame(n, 8), EvaluationConfig(subgroups=("site_id",)))
    ev = evaluate_predictions(y, p, subgroups=labels, config=EvaluationConfig(n_bootstrap=0, subgroups=("site_id",)))

    def metric(name: str) -> Any:
        return lambda yt, yp: point_metrics(np.asarray(yt), np.asarray(yp))[name]

    frame = fairlearn_metrics.MetricFrame(
        metrics={m: metric(m) for m in METRICS},
        y_true=y,
        y_pred=p,
        sensitive_features=labels["site_id"].to_list(),
    )
    for site, row in frame.by_group.iterrows():
        for m in METRICS:
            # The same metric recomputed from the same rows: only summation order can differ between machines.
            assert ev["subgroups"]["site_id"][site]["metrics"][m]["estimate"] == pytest.approx(
                row[m], rel=1e-6, abs=1e-9
            )


def test_undefined_resamples_are_skipped_and_counted() -> None:
    # A 6-subject subgroup: many resamples hold one class only; the interval says how many resamples it rests on.
    y = np.r_[np.ones(3, dtype=int), np.zeros(3, dtype=int), (np.arange(200) % 2)]
    p = np.r_[np.full(3, 0.6), np.full(3, 0.4), np.linspace(0.05, 0.95, 200)]
    dist = bootstrap_metrics(y, {"m": p}, subsets={"tiny": np.arange(6)}, n_boot=300, seed=1)["m"]["tiny"]
    defined = np.isfinite(dist["auroc"])
    assert 0 < defined.sum() < 300
    assert (dist["auroc"][defined] == 1.0).all()


def test_tables_on_edge_cases() -> None:
    assert calibration_table(np.array([], dtype=int), np.array([])) == []
    assert roc_points(np.zeros(5, dtype=int), np.linspace(0, 1, 5)) == {"fpr": [], "tpr": []}
    table = calibration_table(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.7, 0.2]), n_bins=2)
    assert table == [
        {"bin": 1, "lower": 0.1, "upper": 0.2, "mean_predicted": pytest.approx(0.15), "observed": 0.0, "n": 2},
        {"bin": 2, "lower": 0.7, "upper": 0.8, "mean_predicted": pytest.approx(0.75), "observed": 1.0, "n": 2},
    ]
