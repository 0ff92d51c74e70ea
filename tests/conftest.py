"""Shared fixtures: a tiny synthetic cohort, a tiny trained model, and ONE session-scoped Prefect harness.

Most tests call plain stage functions and never touch Prefect. The few flow tests request
`prefect_harness`, which starts one temporary Prefect server for the whole session (15-30 s on 2 cores).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports prefect: no telemetry (no network) and room for a slow server start.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Sponsor snapshots need a pseudonym key. Tests use a fixed, test-only key in a file outside the repository,
# given through the lowest-precedence source, so tests that pass their own key file or variable still win.
if "IMMUNOSTRAT_PSEUDONYM_KEY_FILE" not in os.environ:
    _key_dir = Path(tempfile.mkdtemp(prefix="immunostrat-test-key-"))
    _key_file = _key_dir / "pseudonym.key"
    _key_file.write_text("immunostrat-tests-only-" + "0" * 41 + "\n", encoding="utf-8")
    _key_file.chmod(0o600)
    os.environ["IMMUNOSTRAT_PSEUDONYM_KEY_FILE"] = str(_key_file)

from .support import AS_OF, Cohort


def _write_cohort(out: Path, n: int, seed: int, fmt: str = "parquet") -> Cohort:
    from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

    paths = write_cohort(generate_cohort(SynthConfig(n_subjects=n, seed=seed)), out, fmt=fmt)
    return Cohort(labs=paths["labs"], subjects=paths["subjects"], outcomes=paths["outcomes"])


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """200 synthetic subjects (CSV, as sites send them)."""
    return _write_cohort(tmp_path_factory.mktemp("cohort"), n=200, seed=11, fmt="csv")


@pytest.fixture(scope="session")
def trained_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding one small model (trained on 1,500 synthetic subjects), aliased champion."""
    from immunostrat.config import RunConfig, TrainParams, ValidationConfig
    from immunostrat.modeling import TrainingConfig
    from immunostrat.training import train

    cohort = _write_cohort(tmp_path_factory.mktemp("train"), n=1500, seed=5)
    registry = tmp_path_factory.mktemp("registry")
    train(
        TrainParams(
            labs=[str(cohort.labs)],
            subjects=str(cohort.subjects),
            outcomes=str(cohort.outcomes),
            registry=str(registry),
            alias="champion",
            training=TrainingConfig(profile="small", cv_folds=3),
            config=RunConfig(validation=ValidationConfig(as_of=AS_OF)),
        )
    )
    return registry


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
