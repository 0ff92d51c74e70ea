"""The shipped demo model: safe to load, honest card, close to the synthetic oracle, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from immunostrat.config.run import (
    RunConfig,
    StratifyParams,
    TrainingConfig,
    TrainParams,
    ValidationConfig,
    load_protocol,
)
from immunostrat.ingest.inputs import read_inputs
from immunostrat.modelling.estimator import linear_logit_parts
from immunostrat.modelling.evaluation import METRICS
from immunostrat.modelling.registry import default_registry_dir, list_models, load_model
from immunostrat.modelling.scoring import score_strata
from immunostrat.modelling.training import train
from immunostrat.pipeline.selection import build_strata, prepare
from immunostrat.synth import SynthConfig, generate_cohort, oracle_auroc, write_cohort

from .support import AS_OF

# How `make demo-model` trains the shipped model (keep in step with the Makefile).
TRAIN_SUBJECTS, TRAIN_SEED = 4000, 42


@pytest.fixture(scope="module")
def champion():  # type: ignore[no-untyped-def]
    return load_model("champion")


def test_shipped_champion_loads_with_a_verified_checksum_and_an_honest_card(champion) -> None:  # type: ignore[no-untyped-def]
    assert champion.sha256 and len(champion.sha256) == 64
    text = " ".join(str(x) for x in champion.card["limitations"]).lower()
    assert "synthetic" in text and "not for clinical use" in text
    assert 0 < champion.default_cutoffs["possible_min"] < champion.default_cutoffs["likely_min"] < 1
    # The full profile, and every metric with its bootstrap interval.
    card = champion.card
    assert card["config"]["cv_repeats"] == 5 and card["evaluation"]["bootstrap"]["n_resamples"] >= 1000
    for name in METRICS:
        cell = card["evaluation"]["metrics"][name]
        assert cell["ci_low"] < cell["estimate"] < cell["ci_high"], name
    assert card["evaluation"]["cv"]["grouped_by"] == "site_id"
    assert set(card["reference"]["features"]) == set(champion.feature_names)


def test_earlier_versions_stay_registered_and_loadable() -> None:
    for entry in list_models():
        assert load_model(entry["model_id"]).model_id == entry["model_id"]


def test_cross_validated_auroc_comes_close_to_the_latent_mechanism(champion) -> None:  # type: ignore[no-untyped-def]
    oracle = oracle_auroc(generate_cohort(SynthConfig(n_subjects=TRAIN_SUBJECTS, seed=TRAIN_SEED)))
    cv_auroc = champion.card["metrics"]["cv_auroc"]
    assert cv_auroc >= oracle - 0.03, f"demo model CV AUROC {cv_auroc:.3f} vs oracle {oracle:.3f}"
    slope = champion.card["evaluation"]["metrics"]["calibration_slope"]
    assert slope["ci_low"] < 1.0 < slope["ci_high"]


def test_observed_response_rate_rises_across_groups_on_held_out_subjects(tmp_path: Path) -> None:
    cohort = generate_cohort(SynthConfig(n_subjects=3000, seed=2024))
    paths = write_cohort(cohort, tmp_path)
    params = StratifyParams(
        labs=[str(paths["labs"])],
        subjects=str(paths["subjects"]),
        out=str(tmp_path / "runs"),
        config=RunConfig(validation=ValidationConfig(as_of=AS_OF)),
    )
    cfg = params.config
    prepared = prepare(read_inputs(params.labs, params.subjects), cfg)
    scored = score_strata(build_strata(prepared, load_protocol(), cfg), load_model())
    rates = (
        scored.join(cohort.outcomes.select("study_id", "subject_id", "responded"), on=["study_id", "subject_id"])
        .filter(pl.col("responder_group") != "not_assessable")
        .group_by("responder_group")
        .agg(pl.col("responded").mean().alias("rate"), pl.len().alias("n"))
    )
    rate = dict(zip(rates["responder_group"], rates["rate"], strict=True))
    assert rate["unlikely"] < rate["possible"] < rate["likely"], rate


def test_retraining_from_the_same_cohort_and_seed_reproduces_the_model(tmp_path: Path, champion) -> None:  # type: ignore[no-untyped-def]
    paths = write_cohort(generate_cohort(SynthConfig(n_subjects=TRAIN_SUBJECTS, seed=TRAIN_SEED)), tmp_path / "train")
    # The champion's own config; the bootstrap only adds intervals, so it is skipped to keep the test short.
    config = TrainingConfig.model_validate(champion.card["config"])
    config = config.model_copy(update={"evaluation": config.evaluation.model_copy(update={"n_bootstrap": 0})})
    model_id = train(
        TrainParams(
            labs=[str(paths["labs"])],
            subjects=str(paths["subjects"]),
            outcomes=str(paths["outcomes"]),
            registry=str(tmp_path / "registry"),
            config=RunConfig(validation=ValidationConfig(as_of=AS_OF)),
        ),
        training=config,
    )
    again = load_model(model_id, tmp_path / "registry")
    ours, theirs = linear_logit_parts(again.estimator), linear_logit_parts(champion.estimator)
    # The champion was trained on another machine. Same data and seeds give the same model up to floating-point
    # noise, which depends on the BLAS kernel: re-running this training with OPENBLAS_CORETYPE=Prescott, Nehalem
    # or SandyBridge moves coefficients by <= 3e-16 relative, cut-offs and AUROC/AUPRC not at all, the Brier score
    # by <= 2e-12, and the calibration intercept and slope by <= 7e-10 absolute (their solvers stop at a gradient
    # tolerance, so a different last iteration shows). The bounds below sit far above that noise and far below any
    # real change (another seed, cohort, C or feature moves these by 1e-3 or more; cards print 3 decimals).
    # Coefficients are standardised and >= 0.1 in size: relative, with an absolute floor for safety.
    np.testing.assert_allclose(ours.coef, theirs.coef, rtol=1e-7, atol=1e-10)
    # Column means of the same data (numpy's pairwise sums, no BLAS): only SIMD summation order can differ.
    np.testing.assert_allclose(ours.scaler.mean_, theirs.scaler.mean_, rtol=1e-10, atol=1e-12)
    # Quantiles of out-of-fold probabilities rounded to 2 decimals: exact unless a quantile sits within the noise
    # (~1e-12) of a rounding boundary, and then any tolerance below 0.01 would fail anyway.
    assert again.default_cutoffs == champion.default_cutoffs
    for name in METRICS:
        # Relative 1e-6 for metrics of order 1; absolute 1e-8 for the calibration intercept, which is near zero
        # (0.0018: its measured 5e-10 difference is 3e-7 relative, hence the issue-11 failure at rel=1e-9).
        assert again.card["evaluation"]["metrics"][name]["estimate"] == pytest.approx(
            champion.card["evaluation"]["metrics"][name]["estimate"], rel=1e-6, abs=1e-8
        )


def test_default_registry_is_the_packaged_models_folder() -> None:
    assert (default_registry_dir() / "registry.json").exists()
