"""Tests for immunostrat.modeling: features, training with OOF cut-offs, contributions and scoring."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from scipy.special import logit

from immunostrat.modeling import (
    DEFAULT_FEATURES,
    LOG2_FLOOR,
    NOT_ASSESSABLE,
    FeatureSpec,
    TrainConfig,
    TrainedModel,
    assign_groups,
    build_feature_frame,
    contributions,
    score_strata,
    train_responder_model,
)
from immunostrat.registry import LoadedModel

N = 300


def synthetic_strata(n: int = N, seed: int = 1) -> tuple[pl.DataFrame, np.ndarray]:
    """Strata-like frame with a known logistic signal (high anti-dsDNA/IFN, low C3 -> response)."""
    rng = np.random.default_rng(seed)
    anti = np.exp(rng.normal(0.5, 1.0, n))
    ifn = np.exp(rng.normal(0.0, 0.8, n))
    c3 = rng.normal(0.9, 0.2, n)
    c4 = rng.normal(0.18, 0.05, n)
    cd19 = rng.gamma(2.0, 80.0, n)
    cd4_cd8 = rng.lognormal(0.4, 0.3, n)
    z = 1.2 * np.log2(anti) + 0.8 * np.log2(ifn) - 4.0 * (c3 - 0.9) - 0.3
    responded = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    strata = pl.DataFrame(
        {
            "subject_id": [f"S{i:04d}" for i in range(n)],
            "anti_dsdna_ratio": anti,
            "c3": c3,
            "c4": c4,
            "ifn_ratio": ifn,
            "cd19_b_cells": cd19,
            "cd4_cd8_ratio": cd4_cd8,
        }
    )
    return strata, responded


def as_loaded(trained: TrainedModel, model_id: str = "test-model") -> LoadedModel:
    return LoadedModel(
        model_id=model_id,
        sha256="0" * 64,
        estimator=trained.estimator,
        features=trained.feature_specs,
        card={},
        default_cutoffs=dict(trained.cutoffs),
    )


@pytest.fixture(scope="module")
def data() -> tuple[pl.DataFrame, np.ndarray]:
    return synthetic_strata()


@pytest.fixture(scope="module")
def trained(data: tuple[pl.DataFrame, np.ndarray]) -> TrainedModel:
    strata, y = data
    # Knock out a few features so the complete-case count is exercised.
    strata = strata.with_columns(pl.when(pl.int_range(pl.len()) < 7).then(None).otherwise(pl.col("c4")).alias("c4"))
    return train_responder_model(build_feature_frame(strata, DEFAULT_FEATURES), y, TrainConfig())


# ------------------------------------------------------------------------------------------- features


def test_build_feature_frame_transforms_and_nulls() -> None:
    strata = pl.DataFrame(
        {
            "anti_dsdna_ratio": [4.0, 0.0, None, float("nan")],
            "c3": [0.9, float("inf"), 1.0, 1.1],
            "c4": [0.2, 0.1, 0.3, None],
            "ifn_ratio": [0.5, 2.0, 1.0, 1.0],
            "cd19_b_cells": [99, 0, None, 9],  # integer counts are cast
            "cd4_cd8_ratio": [1.5, 2.0, 0.5, 1.0],
        }
    )
    out = build_feature_frame(strata, DEFAULT_FEATURES)
    assert out.columns == [f.name for f in DEFAULT_FEATURES]
    assert all(dtype == pl.Float64 for dtype in out.dtypes)
    assert out["log2_anti_dsdna_ratio"].to_list() == [2.0, math.log2(LOG2_FLOOR), None, None]
    assert out["c3"].to_list() == [0.9, None, 1.0, 1.1]
    assert out["log2_ifn_ratio"].to_list() == [-1.0, 1.0, 0.0, 0.0]
    assert out["log10_cd19_b_cells"].to_list() == pytest.approx([2.0, 0.0, None, 1.0])
    with pytest.raises(KeyError, match="ifn_ratio"):
        build_feature_frame(strata.drop("ifn_ratio"), DEFAULT_FEATURES)


def test_train_config_validation() -> None:
    assert TrainConfig().features == tuple(f.name for f in DEFAULT_FEATURES)
    assert all(f.description for f in TrainConfig.model_fields.values())
    with pytest.raises(ValidationError):
        TrainConfig(group_quantiles=(0.7, 0.3))
    with pytest.raises(ValidationError):
        TrainConfig(C=0)
    with pytest.raises(ValidationError):
        TrainConfig(features=("c3", "c3"))


# ------------------------------------------------------------------------------------------- training


def test_training_summary(trained: TrainedModel) -> None:
    assert trained.n_dropped_missing == 7
    assert trained.n_train == N - 7
    assert trained.class_balance["n_responders"] + trained.class_balance["n_non_responders"] == N - 7
    assert 0.7 < trained.metrics["cv_auroc"] < 1.0
    assert 0.0 < trained.metrics["cv_brier"] < 0.25
    assert trained.oof_probability.shape == (N - 7,)


def test_cutoffs_come_from_oof_predictions(trained: TrainedModel) -> None:
    q = np.quantile(trained.oof_probability, [1 / 3, 2 / 3])
    assert trained.cutoffs == {"possible_min": round(float(q[0]), 2), "likely_min": round(float(q[1]), 2)}
    # The OOF probabilities are genuinely out-of-fold, not the training fit's (same rows, same order).
    strata, _ = synthetic_strata()
    X = build_feature_frame(strata, DEFAULT_FEATURES).slice(7).to_numpy()  # rows 0-6 lacked c4
    fitted = trained.estimator.predict_proba(X)[:, 1]
    assert np.corrcoef(fitted, trained.oof_probability)[0, 1] > 0.9
    assert np.abs(fitted - trained.oof_probability).max() > 0.01


def test_oof_group_response_rises(trained: TrainedModel) -> None:
    rates = [trained.oof_group_response[g]["response_rate"] for g in ("unlikely", "possible", "likely")]
    assert rates[0] < rates[1] < rates[2]
    assert sum(trained.oof_group_response[g]["n"] for g in trained.oof_group_response) == trained.n_train


def test_repeated_cv_and_label_checks(data: tuple[pl.DataFrame, np.ndarray]) -> None:
    strata, y = data
    feats = build_feature_frame(strata, DEFAULT_FEATURES)
    cfg = TrainConfig(features=("log2_anti_dsdna_ratio", "c3"), cv_folds=3, cv_repeats=2, seed=3)
    model = train_responder_model(feats, pl.Series(y.astype(bool)), cfg)
    assert model.feature_names == ("log2_anti_dsdna_ratio", "c3")
    assert model.metrics["cv_repeats"] == 2.0 and model.metrics["cv_auroc_sd"] >= 0.0
    with pytest.raises(ValueError, match="binary"):
        train_responder_model(feats, np.where(y == 1, 2, 0), cfg)
    with pytest.raises(ValueError, match="null"):
        train_responder_model(feats, pl.Series([None, *y[1:].tolist()]), cfg)
    with pytest.raises(ValueError, match="responders"):
        train_responder_model(feats.head(20), np.r_[np.ones(2), np.zeros(18)], cfg)


# -------------------------------------------------------------------------------------- contributions


def test_contributions_add_up_to_logit(trained: TrainedModel) -> None:
    strata, _ = synthetic_strata(50, seed=9)
    X = build_feature_frame(strata, DEFAULT_FEATURES).to_numpy()
    contrib, intercept = contributions(trained.estimator, X)
    assert contrib.shape == X.shape
    total = contrib.sum(axis=1) + intercept
    np.testing.assert_allclose(total, trained.estimator.decision_function(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(total, logit(trained.estimator.predict_proba(X)[:, 1]), rtol=0, atol=1e-9)


# -------------------------------------------------------------------------------------------- scoring


def test_score_strata_columns_groups_and_not_assessable(trained: TrainedModel) -> None:
    strata, _ = synthetic_strata(80, seed=5)
    strata = strata.with_columns(
        pl.when(pl.col("subject_id") == "S0003").then(None).otherwise(pl.col("ifn_ratio")).alias("ifn_ratio")
    )
    model = as_loaded(trained)
    out = score_strata(strata, model)
    names = [f.name for f in DEFAULT_FEATURES]
    assert out.height == 80
    assert out.schema["responder_probability"] == pl.Float64
    assert out.schema["responder_group"] == pl.String
    assert out.schema["top_features"] == pl.List(pl.String)
    assert all(out.schema[f"contrib_{n}"] == pl.Float64 for n in names)

    missing = out.filter(pl.col("subject_id") == "S0003").row(0, named=True)
    assert missing["responder_group"] == NOT_ASSESSABLE
    assert missing["responder_probability"] is None
    assert missing["top_features"] is None
    assert missing["contrib_c3"] is None and missing["model_id"] == "test-model"

    ok = out.filter(pl.col("responder_group") != NOT_ASSESSABLE)
    assert ok.height == 79
    # Contributions add up to the logit of the reported probability.
    logits = ok.select(pl.sum_horizontal([f"contrib_{n}" for n in names]) + pl.col("contrib_intercept"))
    np.testing.assert_allclose(logits.to_series().to_numpy(), logit(ok["responder_probability"].to_numpy()), atol=1e-9)
    # Groups are monotone in probability and follow the card cut-offs.
    expected = assign_groups(ok["responder_probability"].to_numpy(), trained.cutoffs)
    assert ok["responder_group"].to_list() == expected.tolist()
    ranks = {"unlikely": 0, "possible": 1, "likely": 2}
    ordered = ok.sort("responder_probability")["responder_group"].replace_strict(ranks).to_numpy()
    assert (np.diff(ordered) >= 0).all()
    # top_features: 3 names by |contribution|, largest first.
    row = ok.row(0, named=True)
    by_abs = sorted(names, key=lambda n: (-abs(row[f"contrib_{n}"]), n))
    assert row["top_features"] == by_abs[:3]


def test_score_strata_cutoff_override_and_rescore(trained: TrainedModel) -> None:
    strata, _ = synthetic_strata(30, seed=6)
    model = as_loaded(trained)
    all_likely = score_strata(strata, model, cutoffs={"possible_min": 0.0, "likely_min": 0.0}, top_k=1)
    assert set(all_likely["responder_group"]) == {"likely"}
    assert all_likely["top_features"].list.len().to_list() == [1] * 30
    # Re-scoring replaces earlier score columns instead of duplicating them.
    again = score_strata(all_likely, model)
    assert again.columns == all_likely.columns
    with pytest.raises(ValueError, match="possible_min"):
        score_strata(strata, model, cutoffs={"possible_min": 0.8, "likely_min": 0.2})
    assert score_strata(strata.head(0), model).height == 0


def test_top_features_tie_break_by_name() -> None:
    rng = np.random.default_rng(0)
    specs = tuple(FeatureSpec(n, n, "identity", "u", n) for n in ("zeta", "alpha", "mid"))
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + rng.normal(size=120) > 0).astype(int)
    feats = pl.DataFrame(X, schema=[s.name for s in specs], orient="row")
    cfg = TrainConfig(features=tuple(s.name for s in specs), cv_folds=3)
    trained = train_responder_model(feats, y, cfg, feature_specs=specs)
    # A subject exactly at the training means has zero contribution everywhere: ties go by name.
    mean = trained.estimator.named_steps["scale"].mean_
    strata = pl.DataFrame({s.name: [float(m)] for s, m in zip(specs, mean, strict=True)})
    out = score_strata(strata, as_loaded(trained), top_k=5)
    assert out["top_features"].to_list() == [["alpha", "mid", "zeta"]]
