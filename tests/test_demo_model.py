"""The shipped demo model: safe to load, honest card, close to the synthetic oracle, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from immunostrat import run as pipeline
from immunostrat.config import RunConfig, StratifyParams, TrainParams, ValidationConfig, load_protocol
from immunostrat.registry import default_registry_dir, load_model
from immunostrat.synth import SynthConfig, generate_cohort, oracle_auroc, write_cohort
from immunostrat.training import train

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


def test_cross_validated_auroc_comes_close_to_the_latent_mechanism(champion) -> None:  # type: ignore[no-untyped-def]
    oracle = oracle_auroc(generate_cohort(SynthConfig(n_subjects=TRAIN_SUBJECTS, seed=TRAIN_SEED)))
    cv_auroc = champion.card["metrics"]["cv_auroc"]
    assert cv_auroc >= oracle - 0.03, f"demo model CV AUROC {cv_auroc:.3f} vs oracle {oracle:.3f}"


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
    prepared = pipeline.prepare(pipeline.read_inputs(params.labs, params.subjects), cfg)
    scored, _ = pipeline.score(pipeline.build_strata(prepared, load_protocol(), cfg), cfg, "test")
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
    model_id = train(
        TrainParams(
            labs=[str(paths["labs"])],
            subjects=str(paths["subjects"]),
            outcomes=str(paths["outcomes"]),
            registry=str(tmp_path / "registry"),
            seed=0,
            config=RunConfig(validation=ValidationConfig(as_of=AS_OF)),
        )
    )
    again = load_model(model_id, tmp_path / "registry")
    ours, theirs = again.estimator.named_steps, champion.estimator.named_steps
    np.testing.assert_allclose(ours["clf"].coef_, theirs["clf"].coef_, rtol=1e-10)
    np.testing.assert_allclose(ours["scale"].mean_, theirs["scale"].mean_, rtol=1e-10)
    assert again.default_cutoffs == champion.default_cutoffs


def test_default_registry_is_the_packaged_models_folder() -> None:
    assert (default_registry_dir() / "registry.json").exists()
