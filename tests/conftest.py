"""Shared fixtures: a tiny synthetic cohort, a tiny trained model, and ONE session-scoped Prefect harness.

Most tests call plain stage functions and never touch Prefect. The few flow tests request
`prefect_harness`, which starts one temporary Prefect server for the whole session (15-30 s on 2 cores).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import AS_OF, Cohort  # constants only: imports nothing of the project

# ---------------------------------------------------------------------------------------------------------------
# The test session's environment, decided in this one place at import time (before anything imports prefect, which
# reads its settings once). Tests must not depend on the shell they run in: an ambient pseudonym key, registry,
# data roots, Prefect profile or API URL would change what the code under test does (issue 11). Subprocesses that
# tests start inherit os.environ, so they see the same isolated environment.
# ---------------------------------------------------------------------------------------------------------------

# The project's own variables (IMMUNOSTRAT_PSEUDONYM_KEY, IMMUNOSTRAT_PSEUDONYM_KEY_FILE, IMMUNOSTRAT_DATA_ROOTS,
# IMMUNOSTRAT_MODEL_REGISTRY: read in pipelines/) and any other IMMUNOSTRAT_* variable are dropped, except these
# knobs that only tests read, to reproduce a failure. tests/test_environment.py checks the list against pipelines/.
TEST_KNOBS = ("IMMUNOSTRAT_KILL_SEED", "IMMUNOSTRAT_PROPERTY_EXAMPLES")
for _name in list(os.environ):
    # Every PREFECT_* setting (PREFECT_API_URL, PREFECT_API_KEY, PREFECT_PROFILE, PREFECT_HOME, ...) goes too:
    # flows run against a temporary server or Prefect's ephemeral mode, never the user's server or profiles.
    if _name.startswith("PREFECT_") or (_name.startswith("IMMUNOSTRAT_") and _name not in TEST_KNOBS):
        del os.environ[_name]

_session_dir = Path(tempfile.mkdtemp(prefix="immunostrat-tests-"))
atexit.register(shutil.rmtree, _session_dir, ignore_errors=True)

# A private Prefect home per session (profiles, local storage, the ephemeral server's database) and settings for
# small machines: no telemetry (no network), room for a slow server start.
(_session_dir / "prefect").mkdir()
os.environ["PREFECT_HOME"] = str(_session_dir / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
# The demo key lives under $XDG_CONFIG_HOME: a private config home, so no test reads or creates the user's.
(_session_dir / "config").mkdir()
os.environ["XDG_CONFIG_HOME"] = str(_session_dir / "config")
# Sponsor snapshots need a pseudonym key: a fixed, test-only key in a file outside the repository, given through
# the lowest-precedence source, so that tests passing their own key file or $IMMUNOSTRAT_PSEUDONYM_KEY still win.
(_session_dir / "key").mkdir(mode=0o700)
TEST_KEY_FILE = _session_dir / "key" / "pseudonym.key"
TEST_KEY_FILE.write_text("immunostrat-tests-only-" + "0" * 41 + "\n", encoding="utf-8")
TEST_KEY_FILE.chmod(0o600)
os.environ["IMMUNOSTRAT_PSEUDONYM_KEY_FILE"] = str(TEST_KEY_FILE)


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
    from immunostrat.config.run import RunConfig, TrainingConfig, TrainParams, ValidationConfig
    from immunostrat.modelling.training import train

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


@pytest.fixture(autouse=True)
def _no_prefect_events_connection_left_open() -> Iterator[None]:
    """After each test, close the events connection a Prefect flow run in this process left open.

    Prefect's events worker keeps a websocket to the server open in a background thread, and each of its pings
    (websockets' keepalive every 20 s, Prefect's checkpoints) draws its payload from the global `random`. A ping
    that lands while Hypothesis draws an example changes the global random state under it, and Hypothesis reports
    that as a strategy using `random` (HypothesisDeprecationWarning, an error by pyproject's filterwarnings) in
    whichever property test runs next. A later flow starts a new worker.
    """
    yield
    events = sys.modules.get("prefect.events.worker")  # never imports Prefect for a test that did not
    if events is not None:
        events.EventsWorker.drain_all(timeout=30)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
