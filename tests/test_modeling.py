"""Tests for immunostrat.modelling.model: features, config, training with OOF cut-offs, calibration, contributions,
scoring.

Training uses the small profile (1 CV repeat, 3 inner folds, 200 resamples) to keep the suite fast.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError
from scipy.special import logit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline

from immunostrat.config.features import DEFAULT_FEATURES, LOG2_FLOOR, NOT_ASSESSABLE, FeatureSpec, build_feature_frame
from immunostrat.config.run import TrainConfig, TrainingConfig
from immunostrat.modelling.estimator import linear_logit_parts
from immunostrat.modelling.fitting import TrainedModel, cv_splits, out_of_fold_probability, train_responder_model
from immunostrat.modelling.registry import LoadedModel
from immunostrat.modelling.scoring import FeatureUnavailableError, assign_groups, contributions, score_strata

N = 300
SMALL = TrainingConfig(profile="small")


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
    return train_responder_model(build_feature_frame(strata, DEFAULT_FEATURES), y, SMALL)


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
    assert TrainConfig is TrainingConfig  # the former name still works
    assert TrainingConfig().features == tuple(f.name for f in DEFAULT_FEATURES)
    assert all(f.description for f in TrainingConfig.model_fields.values())
    with pytest.raises(ValidationError):
        TrainingConfig(group_quantiles=(0.7, 0.3))
    with pytest.raises(ValidationError):
        TrainingConfig(C=0)
    with pytest.raises(ValidationError):
        TrainingConfig(features=("c3", "c3"))
    with pytest.raises(ValidationError):
        TrainingConfig(tuning_grid=(1.0, -1.0))
    with pytest.raises(ValidationError):
        TrainingConfig(estimator="random_forest")


def test_profiles_fill_only_unset_fields() -> None:
    full = TrainingConfig()
    assert (full.cv_repeats, full.inner_cv_folds, full.evaluation.n_bootstrap) == (5, 5, 1000)
    small = TrainingConfig(profile="small")
    assert (small.cv_repeats, small.inner_cv_folds, small.evaluation.n_bootstrap) == (1, 3, 200)
    mixed = TrainingConfig.model_validate({"profile": "small", "cv_repeats": 2, "evaluation": {"seed": 4}})
    assert (mixed.cv_repeats, mixed.evaluation.n_bootstrap, mixed.evaluation.seed) == (2, 200, 4)
    # A dumped config re-validates to itself (cards store it; YAML files hold the same keys).
    assert TrainingConfig.model_validate(mixed.model_dump()) == mixed


# ------------------------------------------------------------------------------------------- training


def test_training_summary(trained: TrainedModel) -> None:
    assert trained.n_dropped_missing == 7
    assert trained.n_train == N - 7
    assert trained.class_balance["n_responders"] + trained.class_balance["n_non_responders"] == N - 7
    assert 0.7 < trained.metrics["cv_auroc"] < 1.0
    assert 0.0 < trained.metrics["cv_brier"] < 0.25
    assert trained.oof_probability.shape == (N - 7,)
    for name in ("auroc", "auprc", "brier", "calibration_intercept", "calibration_slope"):
        low, mid, high = (trained.metrics[f"cv_{name}{s}"] for s in ("_ci_low", "", "_ci_high"))
        assert low <= mid <= high, name
    assert trained.evaluation["metrics"]["auroc"]["estimate"] == trained.metrics["cv_auroc"]
    assert trained.fold_ids.shape == (1, N - 7) and set(trained.fold_ids[0]) == set(range(SMALL.cv_folds))
    assert isinstance(trained.estimator, CalibratedClassifierCV) and trained.calibration["method"] == "sigmoid"
    # Drift reference over ALL rows (c4 missing in 7 of N).
    ref = trained.reference["features"]["c4"]
    assert ref["missing_rate"] == pytest.approx(7 / N) and sum(ref["proportions"]) == pytest.approx(1.0)


def test_cutoffs_come_from_oof_predictions(trained: TrainedModel) -> None:
    q = np.quantile(trained.oof_probability, [1 / 3, 2 / 3])
    assert trained.cutoffs == {"possible_min": round(float(q[0]), 2), "likely_min": round(float(q[1]), 2)}
    # The OOF probabilities are genuinely out-of-fold, not the training fit's (same rows, same order).
    strata, _ = synthetic_strata()
    X = build_feature_frame(strata, DEFAULT_FEATURES).slice(7).to_numpy()  # rows 0-6 lacked c4
    fitted = trained.estimator.predict_proba(X)[:, 1]
    assert np.corrcoef(fitted, trained.oof_probability)[0, 1] > 0.9
    assert np.abs(fitted - trained.oof_probability).max() > 0.01


def test_validation_predictions_never_see_their_own_labels(data: tuple[pl.DataFrame, np.ndarray]) -> None:
    """Cut-offs come from OOF probabilities; an OOF probability must not depend on that row's outcome."""
    strata, y = data
    X = build_feature_frame(strata, DEFAULT_FEATURES).to_numpy()
    splits = cv_splits(y, None, 3, 1, seed=0)
    before, folds = out_of_fold_probability(X, y, None, splits, SMALL)
    valid = splits[0][1][1]  # validation rows of fold 1
    flipped = y.copy()
    flipped[valid] = 1 - flipped[valid]
    after, _ = out_of_fold_probability(X, flipped, None, splits, SMALL)
    np.testing.assert_array_equal(after[0, valid], before[0, valid])  # identical: the labels were never used
    others = np.setdiff1d(np.arange(len(y)), valid)
    assert np.abs(after[0, others] - before[0, others]).max() > 0.01  # ...while they do train the other folds
    assert (folds[0, valid] == 1).all()


def test_oof_group_response_rises(trained: TrainedModel) -> None:
    rates = [trained.oof_group_response[g]["response_rate"] for g in ("unlikely", "possible", "likely")]
    assert rates[0] < rates[1] < rates[2]
    assert sum(trained.oof_group_response[g]["n"] for g in trained.oof_group_response) == trained.n_train


def test_repeated_cv_and_label_checks(data: tuple[pl.DataFrame, np.ndarray]) -> None:
    strata, y = data
    feats = build_feature_frame(strata, DEFAULT_FEATURES)
    cfg = TrainingConfig(profile="small", features=("log2_anti_dsdna_ratio", "c3"), cv_folds=3, cv_repeats=2, seed=3)
    model = train_responder_model(feats, pl.Series(y.astype(bool)), cfg)
    assert model.feature_names == ("log2_anti_dsdna_ratio", "c3")
    assert model.metrics["cv_repeats"] == 2.0 and model.metrics["cv_auroc_sd"] > 0.0  # repeats differ
    assert model.fold_ids.shape == (2, N) and (model.fold_ids[0] != model.fold_ids[1]).any()
    with pytest.raises(ValueError, match="binary"):
        train_responder_model(feats, np.where(y == 1, 2, 0), cfg)
    with pytest.raises(ValueError, match="null"):
        train_responder_model(feats, pl.Series([None, *y[1:].tolist()]), cfg)
    with pytest.raises(ValueError, match="responders"):
        train_responder_model(feats.head(20), np.r_[np.ones(2), np.zeros(18)], cfg)


# -------------------------------------------------------------------------------------- contributions


def test_tuning_and_l1_are_nested_and_recorded(data: tuple[pl.DataFrame, np.ndarray]) -> None:
    strata, y = data
    feats = build_feature_frame(strata, DEFAULT_FEATURES)
    cfg = TrainingConfig(profile="small", tuning_grid=(0.01, 1.0, 100.0), l1_ratio=0.5, cv_folds=3)
    model = train_responder_model(feats, y, cfg)
    assert model.tuning["C"] in (0.01, 1.0, 100.0) and set(model.tuning["scores"]) == {"0.01", "1.0", "100.0"}
    assert model.tuning["C"] == model.estimator.calibrated_classifiers_[0].estimator.named_steps["clf"].C


@pytest.mark.parametrize("calibration", ["sigmoid", "none"])
def test_contributions_add_up_to_logit(data: tuple[pl.DataFrame, np.ndarray], calibration: str) -> None:
    strata, y = data
    feats = build_feature_frame(strata, DEFAULT_FEATURES)
    model = train_responder_model(feats, y, TrainingConfig(profile="small", calibration=calibration, cv_folds=3))
    est = model.estimator
    assert isinstance(est, CalibratedClassifierCV if calibration == "sigmoid" else Pipeline)
    X = build_feature_frame(synthetic_strata(50, seed=9)[0], DEFAULT_FEATURES).to_numpy()
    contrib, intercept = contributions(est, X)
    assert contrib.shape == X.shape
    total = contrib.sum(axis=1) + intercept
    # Identities on one machine, summed in another order (and through expit/logit): logits of a few units agree
    # to ~1e-13 whatever the BLAS kernel; 1e-9 absolute is far above that and far below a wrong term.
    np.testing.assert_allclose(total, logit(est.predict_proba(X)[:, 1]), rtol=0, atol=1e-9)
    parts = linear_logit_parts(est)
    if calibration == "sigmoid":
        # Platt scaling of a linear logit is linear: slope x (raw logit) + intercept.
        raw = parts.raw_intercept + parts.scaler.transform(X) @ parts.raw_coef
        assert parts.platt_slope is not None and parts.platt_intercept is not None
        np.testing.assert_allclose(total, parts.platt_intercept + parts.platt_slope * raw, atol=1e-9)
    else:
        np.testing.assert_allclose(total, est.decision_function(X), rtol=0, atol=1e-9)
        assert parts.platt_slope is None


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
    # Contributions add up to the logit of the reported probability (to rounding, as above: absolute 1e-9).
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


def test_a_model_whose_features_no_input_supplies_is_refused(trained: TrainedModel) -> None:
    strata, _ = synthetic_strata(20, seed=7)
    model = as_loaded(trained, "needs-c4")
    with pytest.raises(FeatureUnavailableError, match=r"needs-c4.*\['c4'\].*c4 \(from c4\)"):
        score_strata(strata.drop("c4"), model)
    # A column that exists but is null only makes those subjects not assessable.
    out = score_strata(strata.with_columns(pl.lit(None, pl.Float64).alias("c4")), model)
    assert set(out["responder_group"]) == {NOT_ASSESSABLE}


def test_top_features_tie_break_by_name() -> None:
    rng = np.random.default_rng(0)
    specs = tuple(FeatureSpec(n, n, "identity", "u", n) for n in ("zeta", "alpha", "mid"))
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + rng.normal(size=120) > 0).astype(int)
    feats = pl.DataFrame(X, schema=[s.name for s in specs], orient="row")
    cfg = TrainingConfig(profile="small", features=tuple(s.name for s in specs), cv_folds=3)
    trained = train_responder_model(feats, y, cfg, feature_specs=specs)
    # A subject exactly at the training means has zero contribution everywhere: ties go by name.
    mean = linear_logit_parts(trained.estimator).scaler.mean_
    strata = pl.DataFrame({s.name: [float(m)] for s, m in zip(specs, mean, strict=True)})
    out = score_strata(strata, as_loaded(trained), top_k=5)
    assert out["top_features"].to_list() == [["alpha", "mid", "zeta"]]
