"""Tests for immunostrat.modelling.drift: training reference, PSI, missingness flags, the run-summary line."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from immunostrat.config.features import FeatureSpec
from immunostrat.modelling import drift
from immunostrat.modelling.registry import LoadedModel

SPECS = (
    FeatureSpec("c3", "c3", "identity", "g/L", "C3"),
    FeatureSpec("log2_ifn_ratio", "ifn_ratio", "log2", "log2(x cut-off)", "IFN"),
)


def cohort(n: int, seed: int, c3_mean: float = 0.9, ifn_log2_mean: float = 1.0, missing: float = 0.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    c3 = np.round(rng.normal(c3_mean, 0.2, n), 2)  # lab rounding: ties, as in real data
    c3 = np.where(rng.random(n) < missing, np.nan, c3)
    return pl.DataFrame({"c3": c3, "ifn_ratio": 2.0 ** rng.normal(ifn_log2_mean, 1.0, n)}).fill_nan(None)


def model_with_reference(reference: dict[str, Any] | None) -> LoadedModel:
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    pipe.fit(np.random.default_rng(0).normal(size=(20, 2)), np.r_[np.zeros(10), np.ones(10)].astype(int))
    card = {"reference": reference} if reference is not None else {}
    return LoadedModel("m-1", "0" * 64, pipe, SPECS, card, {"possible_min": 0.3, "likely_min": 0.6})


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    from immunostrat.config.features import build_feature_frame

    return drift.reference_profile(build_feature_frame(cohort(4000, seed=1, missing=0.05), SPECS), bins=10)


def test_reference_profile(reference: dict[str, Any]) -> None:
    feats = reference["features"]
    c3 = feats["c3"]
    assert reference["n"] == 4000 and c3["missing_rate"] == pytest.approx(0.05, abs=0.01)
    assert len(c3["proportions"]) == len(c3["bin_edges"]) + 1 and sum(c3["proportions"]) == pytest.approx(1.0)
    assert c3["bin_edges"] == sorted(c3["bin_edges"])
    # Equal-count bins: each holds about a tenth (ties in rounded values move a few subjects).
    assert max(feats["log2_ifn_ratio"]["proportions"]) < 0.11


def test_psi_is_zero_for_identical_and_large_for_shifted_distributions(reference: dict[str, Any]) -> None:
    model = model_with_reference(reference)
    same = drift.compare(cohort(4000, seed=2, missing=0.05), model)
    assert same["reference_available"] and same["flagged"] == []
    assert all(f["psi"] < 0.02 for f in same["features"].values())
    shifted = drift.compare(cohort(1000, seed=3, c3_mean=1.15, ifn_log2_mean=-0.5, missing=0.05), model, 0.2)
    assert shifted["flagged"] == ["c3", "log2_ifn_ratio"]
    assert all(f["psi"] > 0.5 for f in shifted["features"].values())
    assert set(shifted) >= {"reference_model", "threshold", "features", "flagged"}
    assert shifted["reference_model"] == "m-1" and shifted["threshold"] == 0.2
    assert drift.psi([0.5, 0.5], [0.5, 0.5]) == 0.0


def test_missingness_is_flagged_separately(reference: dict[str, Any]) -> None:
    out = drift.compare(cohort(2000, seed=4, missing=0.4), model_with_reference(reference))
    c3 = out["features"]["c3"]
    assert c3["psi"] < 0.05 and c3["missing_rate"] == pytest.approx(0.4, abs=0.03)
    assert c3["reference_missing_rate"] == pytest.approx(0.05, abs=0.01)
    assert out["flagged"] == ["c3"]
    assert "c3 (PSI" in drift.summary_line(out) and "missing 40% vs 5%" in drift.summary_line(out)


def test_fail_on_drift_and_missing_reference(reference: dict[str, Any]) -> None:
    shifted = drift.compare(cohort(500, seed=5, c3_mean=1.3), model_with_reference(reference))
    drift.check(shifted, fail_on_drift=False)  # reported, not blocking
    with pytest.raises(drift.DriftError, match="fail_on_drift"):
        drift.check(shifted, fail_on_drift=True)
    old = drift.compare(cohort(50, seed=6), model_with_reference(None))
    assert old["reference_available"] is False and old["flagged"] == [] and "holds no training reference" in old["note"]
    drift.check(old, fail_on_drift=True)
    assert drift.summary_line(old).startswith("drift: not assessed")
