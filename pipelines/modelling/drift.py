"""Feature drift between a scored cohort and the model's training data: PSI per feature and missingness.

At training time :func:`reference_profile` stores, per model feature, equal-count bins of the training values
(``bin_edges``: the interior cut points), the share of non-missing training values in each bin
(``proportions``) and the share of training subjects missing the feature (``missing_rate``). The model card keeps
it under ``card["reference"]["features"]``. At scoring time :func:`compare` bins the cohort's values with the same
edges and reports the population stability index

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

(``e`` training, ``a`` cohort proportions; both floored at :data:`PSI_FLOOR` so an empty bin stays finite) and
the missingness rates. Conventional reading: < 0.1 stable, 0.1 to 0.25 moderate shift, > 0.25 major shift. Bins
are ``(-inf, e1), [e1, e2), ..., [ek, inf)``; PSI is computed on non-missing values, missingness separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from immunostrat.config.features import build_feature_frame
from immunostrat.errors import DriftError
from immunostrat.modelling.scoring import missing_feature_sources

if TYPE_CHECKING:
    from immunostrat.modelling.scoring import ScoringModel

__all__ = ["PSI_FLOOR", "DriftError", "check", "compare", "psi", "reference_profile", "summary_line"]

#: Proportions are floored at this value in the PSI so an empty bin contributes a large but finite term.
PSI_FLOOR = 1e-4


def _finite(values: pl.Series) -> np.ndarray:
    arr = values.cast(pl.Float64).to_numpy()
    return arr[np.isfinite(arr)]


def _proportions(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(np.float64)
    return counts / counts.sum() if counts.sum() else counts


def reference_profile(features: pl.DataFrame, bins: int = 10) -> dict[str, Any]:
    """Training distribution of every feature column, for later drift checks.

    Args:
        features: Model feature frame of ALL training subjects (missing values as null), one column per feature.
        bins: Number of equal-count bins (fewer when values tie: duplicate edges are merged).

    Returns:
        ``{"n": rows, "bins": bins, "features": {name: {"bin_edges": [...], "proportions": [...],
        "missing_rate": x, "n_non_missing": k}}}``.
    """
    out: dict[str, Any] = {}
    for name in features.columns:
        series = features[name]
        values = _finite(series)
        qs = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]) if values.size else np.array([])
        edges = np.unique(qs)
        out[name] = {
            "bin_edges": [float(e) for e in edges],
            "proportions": [float(p) for p in _proportions(values, edges)] if values.size else [],
            "missing_rate": float(1.0 - values.size / features.height) if features.height else math.nan,
            "n_non_missing": int(values.size),
        }
    return {"n": features.height, "bins": bins, "features": out}


def psi(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, floor: float = PSI_FLOOR
) -> float:
    """Population stability index between two binned distributions (same bins).

    Args:
        expected: Reference proportions (sum 1).
        actual: Observed proportions (sum 1).
        floor: Lower bound applied to both before the log.

    Returns:
        PSI (>= 0; 0 for identical distributions).
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    if e.shape != a.shape:
        raise ValueError(f"expected and actual need the same bins, got {e.shape} and {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def compare(
    strata: pl.DataFrame,
    model: ScoringModel,
    threshold: float = 0.2,
    *,
    missing_threshold: float = 0.1,
) -> dict[str, Any]:
    """Compare a cohort's model features with the model's training reference.

    Args:
        strata: The cohort (one row per subject) holding the model's feature source columns.
        model: The registry model that scores it (its card holds the reference).
        threshold: A feature is flagged when its PSI exceeds this.
        missing_threshold: ... or when its missing rate exceeds the training one by more than this (absolute).

    Returns:
        ``{"reference_model", "threshold", "missing_threshold", "reference_available", "n", "features":
        {name: {"psi", "missing_rate", "reference_missing_rate", "flagged"}}, "flagged": [names]}``. When the card
        has no reference (models trained before drift support), ``reference_available`` is False and nothing is
        flagged.
    """
    result: dict[str, Any] = {
        "reference_model": model.model_id,
        "threshold": threshold,
        "missing_threshold": missing_threshold,
        "reference_available": False,
        "n": strata.height,
        "features": {},
        "flagged": [],
    }
    reference = (model.card.get("reference") or {}).get("features") or {}
    if not reference:
        result["note"] = f"model card of {model.model_id} holds no training reference; drift not assessed"
        return result
    if missing_feature_sources(model, strata.columns):
        result["note"] = "the cohort lacks feature source columns; drift not assessed"
        return result
    result["reference_available"] = True
    feats = build_feature_frame(strata, model.features)
    for name in feats.columns:
        ref = reference.get(name)
        if ref is None:
            continue
        values = _finite(feats[name])
        missing_rate = 1.0 - values.size / feats.height if feats.height else math.nan
        value = psi(ref["proportions"], _proportions(values, ref["bin_edges"])) if values.size else None
        ref_missing = float(ref["missing_rate"])
        flagged = (value is not None and value > threshold) or (
            math.isfinite(missing_rate) and missing_rate - ref_missing > missing_threshold
        )
        result["features"][name] = {
            "psi": value,
            "missing_rate": missing_rate,
            "reference_missing_rate": ref_missing,
            "flagged": bool(flagged),
        }
    result["flagged"] = [n for n, f in result["features"].items() if f["flagged"]]
    return result


def summary_line(result: dict[str, Any]) -> str:
    """One line for a run summary, e.g. ``drift: 2 of 6 features beyond PSI 0.2: c3 (0.41), c4 (0.33)``."""
    if not result.get("reference_available"):
        return f"drift: not assessed ({result.get('note', 'no reference')})"
    feats = result["features"]
    flagged = result["flagged"]
    if not flagged:
        return f"drift: none of {len(feats)} features beyond PSI {result['threshold']:g}"

    def cell(name: str) -> str:
        f = feats[name]
        miss = f"missing {f['missing_rate']:.0%} vs {f['reference_missing_rate']:.0%}"
        return f"{name} (PSI {f['psi']:.2f}, {miss})" if f["psi"] is not None else f"{name} ({miss})"

    return f"drift: {len(flagged)} of {len(feats)} features flagged: " + ", ".join(cell(n) for n in flagged)


def check(result: dict[str, Any], fail_on_drift: bool) -> None:
    """Raise :class:`DriftError` when ``fail_on_drift`` is set and any feature is flagged."""
    if fail_on_drift and result.get("flagged"):
        raise DriftError(
            f"{summary_line(result)}; stopping because scoring.fail_on_drift is set (the model "
            f"{result['reference_model']} was trained on a different population)",
            manifest={"drift": result},
        )
