"""Training end to end: grouped folds, a complete card, reproducibility, external validation with drift, and the
``evaluate`` / ``models`` commands (parsed by immunostrat.cli.models, so they work before cli.py wires them in)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from immunostrat.cli import models as cli_models
from immunostrat.config.run import RunConfig, ScoringConfig, TrainingConfig, TrainParams, ValidationConfig
from immunostrat.modelling.fitting import cv_splits
from immunostrat.modelling.registry import load_model, resolve
from immunostrat.modelling.training import labelled_strata, resolve_training_config, train, train_model
from immunostrat.pipeline import launch
from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

from .support import AS_OF, Cohort

SMALL = TrainingConfig(profile="small")
CFG = RunConfig(validation=ValidationConfig(as_of=AS_OF))


def _cohort(root: Path, **synth: object) -> Cohort:
    paths = write_cohort(generate_cohort(SynthConfig.model_validate(synth)), root)
    return Cohort(labs=paths["labs"], subjects=paths["subjects"], outcomes=paths["outcomes"])


def _params(c: Cohort, registry: Path, **kw: object) -> TrainParams:
    return TrainParams(
        labs=[str(c.labs)], subjects=str(c.subjects), outcomes=str(c.outcomes), registry=str(registry), config=CFG, **kw
    )


@pytest.fixture(scope="module")
def train_cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    return _cohort(tmp_path_factory.mktemp("train"), n_subjects=900, seed=5)


@pytest.fixture(scope="module")
def shifted_cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """Another study population: mostly IFN-low (80 % IFN-high in training), so the IFN feature drifts."""
    return _cohort(tmp_path_factory.mktemp("external"), n_subjects=700, seed=6, ifn_high_fraction=0.25)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, train_cohort: Cohort) -> tuple[Path, str, str]:
    """A registry with two versions: a small-profile champion and an uncalibrated three-feature challenger."""
    root = tmp_path_factory.mktemp("registry")
    first = train(_params(train_cohort, root, alias="champion"), training=SMALL)
    few = TrainingConfig(profile="small", features=("log2_anti_dsdna_ratio", "c3", "log2_ifn_ratio"))
    second = train(_params(train_cohort, root), training=few.model_copy(update={"calibration": "none"}))
    return root, first, second


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="immunostrat")
    cli_models.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return cli_models.COMMANDS[args.command](args)


# ------------------------------------------------------------------------------------------- folds


def test_folds_never_share_a_subject_or_a_site_between_training_and_validation() -> None:
    rng = np.random.default_rng(0)
    n = 1200
    site = rng.choice([f"SITE-{i}" for i in range(14)], n, p=np.r_[np.full(7, 0.1), np.full(7, 0.3 / 7)])
    subject = np.array([f"{s}-{i:05d}" for i, s in enumerate(site)])
    y = (rng.random(n) < np.where(np.char.endswith(site.astype(str), "3"), 0.3, 0.65)).astype(np.int64)
    for groups in (site, None):
        repeats = cv_splits(y, groups, n_splits=5, n_repeats=3, seed=1)
        for repeat in repeats:
            covered = np.concatenate([valid for _, valid in repeat])
            assert np.array_equal(np.sort(covered), np.arange(n))  # each repeat partitions the subjects
            for train_idx, valid in repeat:
                assert not set(subject[train_idx]) & set(subject[valid])
                if groups is not None:
                    assert not set(site[train_idx]) & set(site[valid])
                assert abs(y[valid].mean() - y.mean()) < 0.12  # stratified (as far as whole sites allow)
        assert not all(np.array_equal(repeats[0][k][1], repeats[1][k][1]) for k in range(5))  # repeats differ
    with pytest.raises(ValueError, match="at least cv_folds=5 groups, the data has 3"):
        cv_splits(y, np.array(["a", "b", "c"] * (n // 3)), 5)


def test_trained_folds_keep_each_site_in_one_validation_fold(train_cohort: Cohort) -> None:
    joined, _ = labelled_strata([train_cohort.labs], train_cohort.subjects, train_cohort.outcomes, CFG)
    trained, notes = train_model(joined, TrainingConfig(profile="small", cv_repeats=2, evaluation={"n_bootstrap": 0}))
    assert notes["group_by"] == "site_id" and trained.group_by == "site_id"
    features = trained.feature_names
    complete = joined.select(pl.all_horizontal(pl.col(f.source).is_not_null() for f in trained.feature_specs))
    assert len(features) == 6 and complete.to_series().sum() == trained.n_train
    sites = joined.filter(complete.to_series())["site_id"].to_numpy()
    for r in range(2):
        per_site = (
            pl.DataFrame({"site": sites, "fold": trained.fold_ids[r]}).group_by("site").agg(pl.col("fold").n_unique())
        )
        assert per_site["fold"].max() == 1


# ------------------------------------------------------------------------------------------- training


def test_train_config_resolution_from_params(train_cohort: Cohort, tmp_path: Path) -> None:
    assert resolve_training_config(_params(train_cohort, tmp_path)) == TrainingConfig()  # full default
    assert resolve_training_config(_params(train_cohort, tmp_path), SMALL) == SMALL
    if "training" in TrainParams.model_fields:  # once TrainParams carries the config
        given = _params(train_cohort, tmp_path, training=SMALL)
        assert resolve_training_config(given) == SMALL
    if "cv_repeats" in TrainParams.model_fields:  # while TrainParams still has its own CV fields
        explicit = resolve_training_config(_params(train_cohort, tmp_path, cv_repeats=2, seed=9), SMALL)
        assert (explicit.cv_repeats, explicit.seed, explicit.evaluation.n_bootstrap) == (2, 9, 200)


def test_training_twice_with_the_same_seed_gives_the_same_model(
    registry: tuple[Path, str, str], train_cohort: Cohort, tmp_path: Path
) -> None:
    root, first, _ = registry
    again = train(_params(train_cohort, tmp_path / "again"), training=SMALL)
    a, b = load_model(first, root), load_model(again, tmp_path / "again")
    for key in ("metrics", "evaluation", "default_cutoffs", "reference", "estimator", "config"):
        assert a.card[key] == b.card[key], key
    joined, _ = labelled_strata([train_cohort.labs], train_cohort.subjects, train_cohort.outcomes, CFG)
    from immunostrat.modelling.scoring import score_strata

    pa, pb = (score_strata(joined, m)["responder_probability"] for m in (a, b))
    assert pa.equals(pb)


def test_card_of_a_trained_model(registry: tuple[Path, str, str]) -> None:
    root, first, _ = registry
    card = load_model(first, root).card
    data = card["training_data"]
    assert [Path(i["path"]).name for i in data["inputs"]] == ["labs.parquet", "subjects.parquet", "outcomes.parquet"]
    assert all(len(i["sha256"]) == 64 and i["rows"] > 0 for i in data["inputs"])
    assert data["subjects_with_outcome"] == 900 and data["group_by"] == "site_id"
    assert card["outcome"]["endpoints"] == ["DORIS remission at month 6"]
    assert {f["unit"] for f in card["features"]} >= {"g/L", "ratio"}
    assert set(card["evaluation"]["subgroups"]) == {"sex", "age_band", "site_id", "ifn_high"}
    assert card["evaluation"]["bootstrap"]["n_resamples"] == 200
    assert card["analysis"]["duration_seconds"] > 0


# ------------------------------------------------------------------------------------------- commands


def _eval_args(c: Cohort, root: Path) -> list[str]:
    return [
        "--labs", str(c.labs), "--subjects", str(c.subjects), "--outcomes", str(c.outcomes),
        "--registry", str(root), "--as-of", AS_OF.isoformat(), "--n-bootstrap", "100",
    ]  # fmt: skip


def test_evaluate_on_a_shifted_external_cohort(
    registry: tuple[Path, str, str], shifted_cohort: Cohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, first, _ = registry
    report_path = tmp_path / "external.json"
    assert (
        run(["evaluate", "--model", "champion", *_eval_args(shifted_cohort, root), "--report", str(report_path)]) == 0
    )
    out = capsys.readouterr().out
    assert f"model {first}" in out and "auroc" in out and "drift: " in out and "log2_ifn_ratio" in out
    report = json.loads(report_path.read_text())
    assert report["kind"] == "external" and report["model"]["model_id"] == first
    assert report["n"] + report["not_assessable"] == report["n_subjects"] == 700
    auroc = report["metrics"]["auroc"]
    assert 0.6 < auroc["estimate"] < 0.95 and auroc["ci_low"] < auroc["estimate"] < auroc["ci_high"]
    assert "log2_ifn_ratio" in report["drift"]["flagged"]
    assert report["drift"]["features"]["log2_ifn_ratio"]["psi"] > 0.2
    assert report["data"]["inputs"][0]["sha256"]
    md = tmp_path / "external.md"
    assert run(["evaluate", *_eval_args(shifted_cohort, root), "--report", str(md)]) == 0
    text = md.read_text()
    assert "# External validation of" in text and "## Drift against the training reference" in text


def test_models_list_show_promote_compare_unalias(
    registry: tuple[Path, str, str], train_cohort: Cohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, first, second = registry
    assert run(["models", "list", "--registry", str(root)]) == 0
    listing = capsys.readouterr().out
    assert first in listing and second in listing and "aliases: champion" in listing and "AUROC 0." in listing
    assert run(["models", "show", "champion", "--registry", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == first
    assert run(["models", "show", second, "--registry", str(root)]) == 0
    assert "## Statistical analysis" in capsys.readouterr().out

    # Promote: stratify's default model changes; the old version stays loadable.
    assert run(["models", "promote", second, "--alias", "champion", "--registry", str(root)]) == 0
    assert capsys.readouterr().out.strip() == f"champion -> {second} (was {first})"
    assert resolve("champion", root) == second and load_model(first, root).model_id == first
    model = launch.resolve_model(CFG.model_copy(update={"scoring": ScoringConfig(registry=root)}), load=False)
    assert model.model_id == second

    report_path = tmp_path / "compare.md"
    assert (
        run(["models", "compare", first, "champion", *_eval_args(train_cohort, root), "--report", str(report_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "scored by every model" in out and first in out and second in out and "difference" in out
    assert "| AUROC |" in report_path.read_text()

    assert run(["models", "promote", first, "--alias", "challenger", "--registry", str(root)]) == 0
    assert run(["models", "unalias", "challenger", "--registry", str(root)]) == 0
    assert "stays registered" in capsys.readouterr().out
