"""The vectorised percentile bootstrap behind every evaluation interval: each resample is a row of integer case
weights, and every metric (AUROC, average precision, Brier, calibration intercept and slope, observed rates per
predicted group) is computed for a whole batch of resamples at once with numpy.

Evaluating one scikit-learn or fairlearn call per (resample, subgroup) takes minutes for 1,000 resamples of a few
thousand subjects across ~20 subgroups; this takes seconds (see :mod:`immunostrat.modelling.evaluation` for the
semantics, and ``tests/test_evaluation.py`` for the checks against scikit-learn on explicit resamples).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from scipy.special import expit, logit

__all__ = ["bootstrap_metrics", "bootstrap_weights", "clipped_logit", "interval", "with_ci"]

#: Probabilities are clipped to [EPS, 1 - EPS] before the logit (calibration intercept/slope).
_EPS = 1e-12
#: Resample-by-subject cells processed per batch (bounds memory at ~8 bytes x this x a few arrays).
_BATCH_CELLS = 4_000_000
_NEWTON_MAX_ITER = 50
_NEWTON_TOL = 1e-9


def clipped_logit(p: np.ndarray) -> np.ndarray:
    """The logit of probabilities clipped to [1e-12, 1 - 1e-12], so that 0 and 1 stay finite."""
    return np.asarray(logit(np.clip(p, _EPS, 1.0 - _EPS)), dtype=np.float64)


class _Subset:
    """Rows of one (sub)population, sorted by predicted probability, with what the weighted metrics need."""

    def __init__(self, rows: np.ndarray, y: np.ndarray, p: np.ndarray, codes: np.ndarray | None) -> None:
        self.rows = rows
        self.y = y[rows].astype(np.float64)
        self.p = p[rows]
        self.lp = clipped_logit(self.p)
        self.sq_err = (self.y - self.p) ** 2
        # Runs of tied probabilities (rows are sorted by p): ties count one half in the AUROC, as in sklearn.
        self.starts = np.flatnonzero(np.r_[True, self.p[1:] != self.p[:-1]]) if rows.size else np.array([0])
        self.codes = codes[rows] if codes is not None else None


def _newton_offset(W: np.ndarray, y: np.ndarray, lp: np.ndarray) -> np.ndarray:
    """Per row of ``W``: the weighted calibration intercept (offset logit model), NaN if not converged."""
    a = np.zeros(W.shape[0])
    done = np.zeros(W.shape[0], dtype=bool)
    for _ in range(_NEWTON_MAX_ITER):
        act = np.flatnonzero(~done)  # iterate only on resamples that have not converged yet
        if act.size == 0:
            break
        Wa = W if act.size == W.shape[0] else W[act]
        mu = expit(a[act, None] + lp)
        grad = (Wa * (y - mu)).sum(1)
        hess = (Wa * mu * (1.0 - mu)).sum(1)
        step = np.clip(np.divide(grad, hess, out=np.zeros_like(grad), where=hess > 0), -5.0, 5.0)
        a[act] += step
        done[act] = np.abs(step) < _NEWTON_TOL
    return np.where(done, a, np.nan)


def _newton_slope(W: np.ndarray, y: np.ndarray, lp: np.ndarray) -> np.ndarray:
    """Per row of ``W``: the weighted calibration slope (y ~ a + b*lp), NaN if not converged (separation)."""
    n = W.shape[0]
    a, b = np.zeros(n), np.ones(n)
    done = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    lp2 = lp * lp
    for _ in range(_NEWTON_MAX_ITER):
        act = np.flatnonzero(~(done | failed))  # iterate only on resamples still converging
        if act.size == 0:
            break
        Wa = W if act.size == n else W[act]
        mu = expit(a[act, None] + b[act, None] * lp)
        r = Wa * (y - mu)
        v = Wa * mu * (1.0 - mu)
        g0, g1 = r.sum(1), r @ lp
        h00, h01, h11 = v.sum(1), v @ lp, v @ lp2
        det = h00 * h11 - h01 * h01
        ok = det > 1e-12 * np.maximum(h00 * h11, 1e-300)
        safe = np.where(ok, det, 1.0)
        da = np.where(ok, (h11 * g0 - h01 * g1) / safe, 0.0)
        db = np.where(ok, (h00 * g1 - h01 * g0) / safe, 0.0)
        a[act] += da
        b[act] += db
        failed[act] = ~ok | ~np.isfinite(b[act])
        done[act] = ok & (np.maximum(np.abs(da), np.abs(db)) < _NEWTON_TOL)
    return np.where(done & np.isfinite(b), b, np.nan)


def _weighted_metrics(W: np.ndarray, s: _Subset, n_codes: int) -> dict[str, np.ndarray]:
    """Every metric for each row of the case-weight matrix ``W`` (resamples x subset rows)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        total = W.sum(1)
        pos = W @ s.y
        neg = total - pos
        both = (pos > 0) & (neg > 0)
        out: dict[str, np.ndarray] = {"brier": np.where(total > 0, (W @ s.sq_err) / total, np.nan)}
        w_pos = np.add.reduceat(W * s.y, s.starts, axis=1)
        w_neg = np.add.reduceat(W, s.starts, axis=1) - w_pos
        below = np.cumsum(w_neg, axis=1) - w_neg
        out["auroc"] = np.where(both, (w_pos * (below + 0.5 * w_neg)).sum(1) / (pos * neg), np.nan)
        # Average precision as sklearn defines it: sum over thresholds (distinct p, descending) of
        # recall increment x precision at that threshold.
        tp = np.cumsum(w_pos[:, ::-1], axis=1)[:, ::-1]
        fp = np.cumsum(w_neg[:, ::-1], axis=1)[:, ::-1]
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        out["auprc"] = np.where(both, (w_pos * precision).sum(1) / pos, np.nan)
        out["calibration_intercept"] = np.where(both, _newton_offset(W, s.y, s.lp), np.nan)
        out["calibration_slope"] = np.where(both, _newton_slope(W, s.y, s.lp), np.nan)
        if s.codes is not None:
            for k in range(n_codes):
                in_k = (s.codes == k).astype(np.float64)
                n_k = W @ in_k
                out[f"rate_{k}"] = np.where(n_k > 0, (W @ (in_k * s.y)) / n_k, np.nan)
    return out


def bootstrap_weights(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Case-weight matrices (resample x subject counts) in batches; the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    batch = max(1, min(n_boot, _BATCH_CELLS // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(batch, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def bootstrap_metrics(
    y: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    *,
    subsets: Mapping[str, np.ndarray] | None = None,
    codes: Mapping[str, np.ndarray] | None = None,
    n_codes: int = 0,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Bootstrap distributions of every metric, for several models and subsets on the SAME resamples.

    Args:
        y: Binary outcomes, length n.
        probabilities: Model name -> predicted probabilities (length n). Several models share every resample,
            so differences between them are paired.
        subsets: Subset name -> boolean mask or row indices (default: ``{"overall": all rows}``).
        codes: Model name -> predicted group code per subject (0..n_codes-1), for observed rates per group
            (``rate_<code>``); omit for none.
        n_codes: Number of group codes.
        n_boot: Number of resamples.
        seed: Resampling seed.

    Returns:
        ``{model: {subset: {metric: array of n_boot values (NaN where undefined)}}}``.
    """
    y = np.asarray(y, dtype=np.int64)
    n = y.shape[0]
    subsets = subsets if subsets is not None else {"overall": np.ones(n, dtype=bool)}
    prepared: dict[str, dict[str, _Subset]] = {}
    for model, given in probabilities.items():
        p = np.asarray(given, dtype=np.float64)
        if p.shape != (n,):
            raise ValueError(f"probabilities[{model!r}] must have shape ({n},), got {p.shape}")
        order = np.argsort(p, kind="stable")
        model_codes = None if codes is None else np.asarray(codes[model])
        prepared[model] = {}
        for name, sel in subsets.items():
            mask = np.zeros(n, dtype=bool)
            mask[np.asarray(sel)] = True
            rows = order[mask[order]]  # subset rows, ascending p
            prepared[model][name] = _Subset(rows, y, p, model_codes)
    chunks: dict[str, dict[str, dict[str, list[np.ndarray]]]] = {
        m: {s: {} for s in subs} for m, subs in prepared.items()
    }
    for W in bootstrap_weights(n, n_boot, seed):
        for model, subs in prepared.items():
            for name, s in subs.items():
                for metric, values in _weighted_metrics(W[:, s.rows], s, n_codes).items():
                    chunks[model][name].setdefault(metric, []).append(values)
    return {
        m: {s: {k: np.concatenate(v) for k, v in metrics.items()} for s, metrics in subs.items()}
        for m, subs in chunks.items()
    }


def interval(values: np.ndarray | None, level: float) -> dict[str, float | int | None]:
    if values is None or values.size == 0:
        return {"ci_low": None, "ci_high": None, "n_valid": 0}
    ok = values[np.isfinite(values)]
    if ok.size < max(10, values.size // 2):  # too few defined resamples for a meaningful interval
        return {"ci_low": None, "ci_high": None, "n_valid": int(ok.size)}
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return {"ci_low": float(lo), "ci_high": float(hi), "n_valid": int(ok.size)}


def with_ci(estimate: float, dist: np.ndarray | None, level: float) -> dict[str, Any]:
    return {"estimate": None if not math.isfinite(estimate) else float(estimate), **interval(dist, level)}
