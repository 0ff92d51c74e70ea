"""Tests for immunostrat.modelling.registry: save/load round trip, integrity and trust checks, aliases."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from immunostrat.config.features import DEFAULT_FEATURES, build_feature_frame
from immunostrat.config.run import TrainingConfig
from immunostrat.modelling import registry_write
from immunostrat.modelling.fitting import TrainedModel, train_responder_model
from immunostrat.modelling.markdown import render_card_markdown
from immunostrat.modelling.registry import (
    REGISTRY_ENV,
    TRUSTED_TYPES,
    ModelIntegrityError,
    RegistryError,
    UnknownModelError,
    list_models,
    load_model,
    read_card,
    resolve,
)
from immunostrat.modelling.registry_write import remove_alias, save_model, set_alias
from immunostrat.modelling.scoring import score_strata

CARD_EXTRA: dict[str, Any] = {
    "intended_use": "Demonstration of responder stratification on synthetic data.",
    "limitations": ["trained on synthetic data; not for clinical use"],
    "training_data": {"source": "synthetic", "sha256": {"strata.parquet": "ab" * 32}},
}


class CustomScaler(StandardScaler):
    """A project-foreign type: skops must not trust it and the registry must refuse it."""


def _strata(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    anti = np.exp(rng.normal(0.5, 1.0, n))
    c3 = rng.normal(0.9, 0.2, n)
    z = 1.2 * np.log2(anti) - 4.0 * (c3 - 0.9)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    strata = pl.DataFrame(
        {
            "subject_id": [f"S{i:03d}" for i in range(n)],
            "anti_dsdna_ratio": anti,
            "c3": c3,
            "c4": rng.normal(0.18, 0.05, n),
            "ifn_ratio": np.exp(rng.normal(0.0, 0.8, n)),
            "cd19_b_cells": rng.gamma(2.0, 80.0, n),
            "cd4_cd8_ratio": rng.lognormal(0.4, 0.3, n),
        }
    )
    return strata, y


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    strata, y = _strata(300, seed=2)
    strata = strata.with_columns(
        site_id=pl.format("SITE-{}", pl.int_range(pl.len()) % 6),
        sex=pl.when(pl.int_range(pl.len()) % 9 == 0).then(pl.lit("M")).otherwise(pl.lit("F")),
    )
    return train_responder_model(
        build_feature_frame(strata, DEFAULT_FEATURES),
        y,
        TrainingConfig(profile="small", cv_folds=3, evaluation={"n_bootstrap": 50, "subgroups": ("sex", "site_id")}),
        groups=strata["site_id"],
        strata=strata,
    )


@pytest.fixture
def saved(tmp_path: Path, trained: TrainedModel) -> tuple[Path, str]:
    return tmp_path, save_model(trained, tmp_path, card_extra=CARD_EXTRA, alias="champion")


def _registry(root: Path) -> dict[str, Any]:
    return json.loads((root / "registry.json").read_text())


def _register_file(root: Path, model_id: str, payload: bytes, card_from: str) -> None:
    """Put raw bytes in the registry as ``model_id`` with a correct checksum (simulates a planted file)."""
    (root / model_id).mkdir()
    (root / model_id / "model.skops").write_bytes(payload)
    card = json.loads((root / card_from / "card.json").read_text())
    card["model_id"] = model_id
    (root / model_id / "card.json").write_text(json.dumps(card))
    reg = _registry(root)
    reg["models"][model_id] = {
        **reg["models"][card_from],
        "path": f"{model_id}/model.skops",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "card_sha256": hashlib.sha256((root / model_id / "card.json").read_bytes()).hexdigest(),
    }
    (root / "registry.json").write_text(json.dumps(reg))


def test_trusted_types_cover_project_model(trained: TrainedModel) -> None:
    untrusted = sio.get_untrusted_types(data=sio.dumps(trained.estimator))
    assert untrusted and set(untrusted) <= set(TRUSTED_TYPES)  # the calibrated model needs reviewed extra types
    plain = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    plain.fit(np.random.default_rng(0).normal(size=(40, 2)), np.r_[np.zeros(20), np.ones(20)].astype(int))
    assert set(sio.get_untrusted_types(data=sio.dumps(plain))) <= set(TRUSTED_TYPES)
    assert all(isinstance(t, str) and t.count(".") >= 2 for t in TRUSTED_TYPES)


def test_round_trip(saved: tuple[Path, str], trained: TrainedModel) -> None:
    root, model_id = saved
    assert re.fullmatch(r"responder-lr-\d{8}-[0-9a-f]{8}", model_id)
    for name in ("model.skops", "card.json", "card.md"):
        assert (root / model_id / name).is_file()
    reg = _registry(root)
    assert reg["schema_version"] == 1 and reg["aliases"] == {"champion": model_id}
    entry = reg["models"][model_id]
    assert entry["path"] == f"{model_id}/model.skops"
    assert entry["sha256"] == hashlib.sha256((root / entry["path"]).read_bytes()).hexdigest()
    assert model_id.endswith(entry["sha256"][:8])
    assert entry["features"] == [f.name for f in DEFAULT_FEATURES]

    loaded = load_model("champion", root)
    assert loaded.model_id == model_id and loaded.sha256 == entry["sha256"]
    assert loaded.features == trained.feature_specs
    assert loaded.default_cutoffs == trained.cutoffs
    X = np.random.default_rng(0).normal(size=(20, len(DEFAULT_FEATURES)))
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), trained.estimator.predict_proba(X))

    card = loaded.card
    assert card["card_schema_version"] == 2
    assert card["metrics"]["cv_auroc"] == trained.metrics["cv_auroc"]
    assert card["training_data"]["n_train"] == 300
    assert card["training_data"]["sha256"] == CARD_EXTRA["training_data"]["sha256"]
    assert card["limitations"] == CARD_EXTRA["limitations"]
    assert {"scikit-learn", "skops", "numpy", "scipy", "polars", "python"} <= set(card["package_versions"])
    assert set(card["oof_group_response"]) == {"unlikely", "possible", "likely"}
    assert card["config"] == trained.config.model_dump(mode="json")
    assert TrainingConfig.model_validate(card["config"]) == trained.config
    # Every metric with its interval; the calibration table and ROC under the keys the HTML report reads.
    ev = card["evaluation"]
    for cell in ev["metrics"].values():
        assert cell["ci_low"] <= cell["estimate"] <= cell["ci_high"]
    assert [set(row) >= {"bin", "mean_predicted", "observed", "n"} for row in ev["calibration"]] == [True] * 10
    assert len(ev["roc"]["fpr"]) == len(ev["roc"]["tpr"]) > 2
    assert set(ev["subgroups"]) == {"sex", "site_id"} and ev["cv"]["grouped_by"] == "site_id"
    assert set(card["reference"]["features"]) == {f.name for f in DEFAULT_FEATURES}
    assert card["estimator"]["calibration"]["method"] == "sigmoid"
    assert card["analysis"]["validation"].startswith("1 x 3-fold stratified CV, grouped by site_id")
    assert read_card("champion", root) == card
    md = (root / model_id / "card.md").read_text()
    assert model_id in md and "not for clinical use" in md
    for heading in (
        "## Intended use",
        "## Source of data",
        "## Outcome",
        "## Predictors",
        "## Missing data",
        "## Statistical analysis",
        "## Performance",
        "### Calibration",
        "### Subgroups",
    ):
        assert heading in md, heading
    auroc = ev["metrics"]["auroc"]
    assert f"{auroc['estimate']:.3f} ({auroc['ci_low']:.3f} to {auroc['ci_high']:.3f})" in md

    strata, _ = _strata(10, seed=4)
    scored = score_strata(strata, loaded)
    assert scored["model_id"].unique().to_list() == [model_id]
    assert scored["model_sha256"].unique().to_list() == [entry["sha256"]]


def test_aliases_resolution_and_listing(saved: tuple[Path, str], trained: TrainedModel) -> None:
    root, first = saved
    second = save_model(trained, root, model_id="responder-lr-manual", card_extra=CARD_EXTRA)
    assert _registry(root)["aliases"] == {"champion": first}  # saving never moves aliases by itself
    assert resolve("champion", root) == first and resolve(second, root) == second
    set_alias("challenger", second, root)
    set_alias("champion", second, root)
    assert resolve("champion", root) == second
    listed = {m["model_id"]: m for m in list_models(root)}
    assert listed[second]["aliases"] == ["challenger", "champion"] and listed[first]["aliases"] == []
    with pytest.raises(UnknownModelError, match="unknown model id"):
        set_alias("champion", "nope", root)
    with pytest.raises(RegistryError, match="already exists"):
        save_model(trained, root, model_id=second, card_extra=CARD_EXTRA)
    # Promotion moved champion; the old version stays registered and loadable.
    assert load_model(first, root).model_id == first
    assert remove_alias("challenger", root) == second and "challenger" not in _registry(root)["aliases"]
    with pytest.raises(RegistryError, match="refusing to remove 'champion'"):
        remove_alias("champion", root)
    with pytest.raises(UnknownModelError, match="unknown alias"):
        remove_alias("nope", root)


def test_cards_of_the_first_schema_still_load_and_render(saved: tuple[Path, str], trained: TrainedModel) -> None:
    """Version-1 cards (no evaluation, reference or analysis) stay loadable: models are immutable history."""
    root, model_id = saved
    plain = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    rng = np.random.default_rng(1)
    plain.fit(rng.normal(size=(60, len(DEFAULT_FEATURES))), np.r_[np.zeros(30), np.ones(30)].astype(int))
    card = json.loads((root / model_id / "card.json").read_text())
    v1 = {
        k: card[k]
        for k in (
            "model_id",
            "created_at",
            "model_file",
            "intended_use",
            "limitations",
            "features",
            "training_data",
            "config",
            "metrics",
            "default_cutoffs",
            "oof_group_response",
            "package_versions",
        )
    }
    v1 |= {
        "card_schema_version": 1,
        "estimator": {
            k: card["estimator"][k] for k in ("description", "steps", "standardised_coefficients", "intercept")
        },
    }
    (root / model_id / "card.json").write_text(json.dumps(v1))
    _register_file(root, "old-v1", sio.dumps(plain), model_id)
    old = load_model("old-v1", root)
    assert old.card["card_schema_version"] == 1
    md = render_card_markdown(old.card)
    assert "## Cross-validated performance" in md and "## Performance" not in md


def test_unknown_ref_lists_known(saved: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    root, model_id = saved
    with pytest.raises(UnknownModelError) as err:
        load_model("does-not-exist", root)
    assert "does-not-exist" in str(err.value) and "champion" in str(err.value) and model_id in str(err.value)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(UnknownModelError, match="holds no models"):
        load_model(registry_dir=empty)


def test_env_var_sets_default_registry(saved: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    root, model_id = saved
    monkeypatch.setenv(REGISTRY_ENV, str(root))
    assert load_model().model_id == model_id


def test_checksum_mismatch_refused(saved: tuple[Path, str]) -> None:
    root, model_id = saved
    path = root / model_id / "model.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"sha256 mismatch.*expects [0-9a-f]{64}, file has [0-9a-f]{64}"):
        load_model(model_id, root)


def test_tampered_card_refused(saved: tuple[Path, str]) -> None:
    root, model_id = saved
    card_path = root / model_id / "card.json"
    card = json.loads(card_path.read_text())
    card["default_cutoffs"]["likely_min"] = 0.01
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelIntegrityError, match=r"card\.json: sha256 mismatch"):
        load_model(model_id, root)


class _Tripwire:
    """Unpickling this touches a marker file: proves the registry never unpickles."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_pickle_file_refused(saved: tuple[Path, str], trained: TrainedModel) -> None:
    root, model_id = saved
    marker = root / "unpickled"
    _register_file(root, "pickled", pickle.dumps([trained.estimator, _Tripwire(marker)]), model_id)
    with pytest.raises(ModelIntegrityError, match="not a skops file"):
        load_model("pickled", root)
    assert not marker.exists()


def test_untrusted_type_refused(saved: tuple[Path, str], trained: TrainedModel) -> None:
    root, model_id = saved
    rogue = Pipeline([("scale", CustomScaler()), ("clf", LogisticRegression())])
    rogue.fit(np.random.default_rng(0).normal(size=(40, 6)), np.r_[np.zeros(20), np.ones(20)].astype(int))
    _register_file(root, "rogue", sio.dumps(rogue), model_id)
    with pytest.raises(ModelIntegrityError, match=r"TRUSTED_TYPES.*CustomScaler"):
        load_model("rogue", root)
    # save_model refuses it up front: a file the registry will not load is never written.
    with pytest.raises(ModelIntegrityError, match="CustomScaler"):
        save_model(dataclasses.replace(trained, estimator=rogue), root, card_extra=CARD_EXTRA)


def test_path_escape_and_card_extra_checks(saved: tuple[Path, str], trained: TrainedModel) -> None:
    root, model_id = saved
    reg = _registry(root)
    reg["models"][model_id]["path"] = "../elsewhere/model.skops"
    (root / "registry.json").write_text(json.dumps(reg))
    with pytest.raises(ModelIntegrityError, match="escapes the registry"):
        load_model(model_id, root)
    with pytest.raises(ValueError, match="limitations"):
        save_model(trained, root, card_extra={"intended_use": "demo"})
    with pytest.raises(RegistryError, match="invalid model id"):
        save_model(trained, root, model_id="../x", card_extra=CARD_EXTRA)


# ---------------------------------------------------------------------------------------- concurrent writes

# Changes one alias per call, many times, from a separate process (argv: registry, model id, alias prefix, count,
# a file to create once imported, a file to wait for before starting).
ALIAS_WRITER = """
import sys, time
from pathlib import Path
from immunostrat.modelling.registry_write import set_alias
root, model_id, prefix, count, ready, go = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.002)
for i in range(int(count)):
    set_alias(f"{prefix}-{i}", model_id, root)
"""


def test_concurrent_alias_changes_from_processes_keep_every_update(saved: tuple[Path, str], tmp_path: Path) -> None:
    """Two processes promoting at the same moment: each read-modify-write of registry.json waits for the other."""
    root, model_id = saved
    go, count = tmp_path / "go", 25
    ready = [tmp_path / f"ready-{n}" for n in range(2)]
    args = [sys.executable, "-c", ALIAS_WRITER, str(root), model_id]
    procs = [subprocess.Popen([*args, f"p{n}", str(count), str(r), str(go)]) for n, r in enumerate(ready)]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "a writer exited before it started"
        time.sleep(0.01)
    go.touch()  # both start writing at the same moment
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert set(_registry(root)["aliases"]) == {"champion"} | {f"p{n}-{i}" for n in range(2) for i in range(count)}


def test_concurrent_saves_and_alias_changes_from_threads_keep_every_update(
    saved: tuple[Path, str], trained: TrainedModel
) -> None:
    """Two trainings saving and a promote at the same time (threads: flock also excludes one process's threads)."""
    root, first = saved
    start = threading.Barrier(4)

    def save(name: str) -> None:
        start.wait()
        save_model(trained, root, model_id=name, card_extra=CARD_EXTRA, alias=f"{name}-alias")

    def promote(prefix: str) -> None:
        start.wait()
        for i in range(20):
            set_alias(f"{prefix}-{i}", first, root)
        remove_alias(f"{prefix}-0", root)

    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [
            pool.submit(save, "m-one"),
            pool.submit(save, "m-two"),
            pool.submit(promote, "a"),
            pool.submit(promote, "b"),
        ]
        for job in jobs:
            job.result(timeout=120)
    reg = _registry(root)
    assert set(reg["models"]) == {first, "m-one", "m-two"}
    assert reg["aliases"] == {
        "champion": first,
        "m-one-alias": "m-one",
        "m-two-alias": "m-two",
        **{f"{p}-{i}": first for p in "ab" for i in range(1, 20)},
    }
    assert load_model("m-two-alias", root).model_id == "m-two"


def test_a_held_lock_makes_writers_wait_and_names_its_holder(saved: tuple[Path, str]) -> None:
    root, model_id = saved
    with ThreadPoolExecutor(max_workers=1) as pool:
        with registry_write._registry_lock(root):
            holder = json.loads((root / registry_write.LOCK_FILE).read_text())
            assert holder["pid"] == os.getpid()
            held = rf"pid {os.getpid()} on host .* not released its lock within 0.2 s"
            with pytest.raises(RegistryError, match=held), registry_write._registry_lock(root, timeout=0.2):
                pass  # pragma: no cover - never reached
            # A writer that starts now waits for the lock, and succeeds once it is released.
            waiting = pool.submit(set_alias, "late", model_id, root)
            time.sleep(0.3)
            assert not waiting.done()
        waiting.result(timeout=30)
    assert _registry(root)["aliases"]["late"] == model_id
    assert (root / registry_write.LOCK_FILE).read_text() == ""  # released: no holder recorded


def test_the_lock_file_is_never_a_model(saved: tuple[Path, str], trained: TrainedModel, tmp_path: Path) -> None:
    root, model_id = saved
    second = save_model(trained, root, model_id="responder-lr-second", card_extra=CARD_EXTRA)
    set_alias("challenger", second, root)
    remove_alias("challenger", root)
    assert (root / registry_write.LOCK_FILE).is_file()  # created once and kept (deleting it would break the exclusion)
    assert [m["model_id"] for m in list_models(root)] == [model_id, second]
    with pytest.raises(UnknownModelError):
        resolve(registry_write.LOCK_FILE, root)
    with pytest.raises(RegistryError, match="invalid"):
        set_alias(registry_write.LOCK_FILE, model_id, root)
    # Aliases are never set on a registry folder that does not exist (and no lock file is created for one).
    with pytest.raises(RegistryError, match="does not exist"):
        set_alias("champion", model_id, tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
