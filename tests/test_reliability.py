"""Reliability: one run per output folder, idempotent re-runs, transient I/O errors retried, clear failures.

Kill tests (SIGKILL mid-run) live in test_kill.py. Tests marked ``xfail(strict=True, reason="needs wiring: ...")``
need a call to a safety helper in a module owned elsewhere (see docs/reliability.md, "Wiring").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from immunostrat.config.run import RunConfig, ScoringConfig, StratifyParams, ValidationConfig
from immunostrat.ingest.atomic import LOCK_NAME, RunLockedError, is_hidden_leftover, run_lock
from immunostrat.ingest.io import InputError

from .support import AS_OF

# --------------------------------------------------------------------------------------------------
# The output-folder lock
# --------------------------------------------------------------------------------------------------


def test_run_lock_records_its_holder_and_refuses_a_second_holder(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with run_lock(out, run_id="20261101T000000Z-abcdef") as lock:
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["run_id"] == "20261101T000000Z-abcdef" and holder["started_at"]
        assert lock.holder == holder
        # flock is per open file: even this process cannot take the lock twice.
        with pytest.raises(RunLockedError) as err, run_lock(out):
            pass
    message = str(err.value)
    assert str(out) in message and f"pid {os.getpid()}" in message and socket.gethostname() in message
    assert "20261101T000000Z-abcdef" in message and "another --out" in message
    assert err.value.holder["pid"] == os.getpid()
    # Released: the file stays (deleting lock files breaks flock) but says nobody holds it.
    assert (out / LOCK_NAME).read_text() == ""
    with run_lock(out):
        pass


HOLD_LOCK = """
import sys, time
from pathlib import Path
from immunostrat.ingest.atomic import run_lock
with run_lock(sys.argv[1], run_id="held-by-child"):
    Path(sys.argv[2]).touch()
    time.sleep(120)
"""


def _wait_for(path: Path, proc: subprocess.Popen[Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited with {proc.returncode} before {path.name}: {proc.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"child never reached {path.name}")
        time.sleep(0.02)


def test_run_lock_between_processes_and_after_sigkill(tmp_path: Path) -> None:
    """Another process is refused at once, naming the holder; a SIGKILLed holder leaves no stale lock."""
    out, ready = tmp_path / "runs", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(ready)], start_new_session=True)
    try:
        _wait_for(ready, child)
        started = time.monotonic()
        with pytest.raises(RunLockedError, match=rf"pid {child.pid} on host .*run held-by-child"), run_lock(out):
            pass
        assert time.monotonic() - started < 1.0  # fails fast, never waits
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    with run_lock(out) as lock:  # the kernel released the dead holder's lock
        assert lock.holder["pid"] == os.getpid()


def test_remove_stale_staging_only_under_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "20261101T000000Z-aaaaaa").mkdir(parents=True)
    (out / "20261101T000000Z-aaaaaa" / "run.json").write_text("{}")
    (out / ".20261101T000001Z-bbbbbb.partial").mkdir()
    (out / ".20261101T000001Z-bbbbbb.partial" / ".tmp-strata.parquet-x1").write_bytes(b"PAR1")
    old_tmp = out / ".tmp-sponsor-manifest.json-abc"
    old_tmp.write_text("{")
    os.utime(old_tmp, (time.time() - 7200, time.time() - 7200))
    (out / ".tmp-sponsor-manifest.json-new").write_text("{")  # young: a publish may be writing it now
    (out / ".sponsor-manifest.lock").write_text("")
    (out / "notes.partial").mkdir()  # not hidden: never ours to remove
    (out / ".sponsor.partial-abc123").mkdir()  # not a run's staging folder
    with run_lock(out) as lock:
        removed = lock.remove_stale_staging()
    assert sorted(p.name for p in removed) == [".20261101T000001Z-bbbbbb.partial", ".tmp-sponsor-manifest.json-abc"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".immunostrat.lock",
        ".sponsor-manifest.lock",
        ".sponsor.partial-abc123",
        ".tmp-sponsor-manifest.json-new",
        "20261101T000000Z-aaaaaa",
        "notes.partial",
    ]
    with pytest.raises(RuntimeError, match="released"):
        lock.remove_stale_staging()
    assert is_hidden_leftover(".20261101T000001Z-bbbbbb.partial") and is_hidden_leftover(".tmp-run-1")
    assert not is_hidden_leftover("20261101T000000Z-aaaaaa")


# --------------------------------------------------------------------------------------------------
# Idempotence
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 synthetic subjects as CSV (as sites send them)."""
    from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

    paths = write_cohort(generate_cohort(SynthConfig(n_subjects=20, seed=21)), tmp_path_factory.mktemp("c"), fmt="csv")
    return {"labs": Path(paths["labs"]), "subjects": Path(paths["subjects"])}


def _params(cohort: dict[str, Path], out: Path, registry: Path, **validation: Any) -> StratifyParams:
    return StratifyParams(
        labs=[str(cohort["labs"])],
        subjects=str(cohort["subjects"]),
        out=str(out),
        config=RunConfig(
            validation=ValidationConfig(as_of=AS_OF, **validation), scoring=ScoringConfig(registry=registry)
        ),
    )


# run.json keys that legitimately differ between two runs of the same inputs.
VOLATILE = {"run_id", "started_at", "finished_at", "outputs", "command"}


def test_same_inputs_give_the_same_outputs(
    tiny_cohort: dict[str, Path], trained_registry: Path, tmp_path: Path
) -> None:
    """Two runs of the same inputs and as_of: identical frames (apart from run_id) and the same run.json."""
    from immunostrat.pipeline import run

    params = _params(tiny_cohort, tmp_path / "runs", trained_registry)
    first, second = run.stratify(params), run.stratify(params)
    assert first.run_dir != second.run_dir
    for name in ("strata", "harmonised", "quarantine", "outside_panel"):
        a = pl.read_parquet(first.run_dir / f"{name}.parquet")
        b = pl.read_parquet(second.run_dir / f"{name}.parquet")
        if name == "strata":
            assert a["run_id"].to_list() != b["run_id"].to_list()
            a, b = a.drop("run_id"), b.drop("run_id")
        assert_frame_equal(a, b, check_exact=True)  # same rows in the same order
    one = {k: v for k, v in first.run_json.items() if k not in VOLATILE}
    two = {k: v for k, v in second.run_json.items() if k not in VOLATILE}
    assert one == two
    assert {k: v["rows"] for k, v in first.run_json["outputs"].items()} == {
        k: v["rows"] for k, v in second.run_json["outputs"].items()
    }


def test_two_runs_at_once_never_interleave(
    tiny_cohort: dict[str, Path], trained_registry: Path, tmp_path: Path
) -> None:
    """Two `stratify` processes on one output folder: each either completes its own folder or is refused."""
    out = tmp_path / "runs"
    cli = str(Path(sys.executable).parent / "immunostrat")
    cmd = [
        cli,
        "stratify",
        "--engine",
        "local",
        "--labs",
        str(tiny_cohort["labs"]),
        "--subjects",
        str(tiny_cohort["subjects"]),
        "--out",
        str(out),
        "--registry",
        str(trained_registry),
        "--as-of",
        AS_OF.isoformat(),
    ]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    completed = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] != 0]
    assert completed, results
    for code, _, err in refused:
        assert code == 2 and "is in use by another immunostrat run" in err, err
    runs = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(runs) == len(completed)
    for run_dir in runs:
        manifest = json.loads((run_dir / "run.json").read_text())
        assert manifest["status"] == "completed" and manifest["run_id"] == run_dir.name
        visible = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
        assert visible - {"sponsor"} == {*manifest["outputs"], "run.json"}
        for name, info in manifest["outputs"].items():
            assert hashlib.sha256((run_dir / name).read_bytes()).hexdigest() == info["sha256"]


# --------------------------------------------------------------------------------------------------
# Transient and persistent I/O errors
# --------------------------------------------------------------------------------------------------


class _State:
    """A stand-in for a Prefect state whose `result()` raises the task's exception (or returns)."""

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc

    def result(self) -> None:
        if self.exc is not None:
            raise self.exc


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (OSError(errno.EIO, "Input/output error", "/data/labs.csv"), True),
        (TimeoutError("share timed out"), True),
        (PermissionError(errno.EACCES, "Permission denied", "/data/labs.csv"), True),
        (InputError("/data/labs.csv", "missing required column(s): test"), False),
        (ValueError("bad value"), False),
        (None, False),
    ],
)
def test_retry_transient_retries_only_os_errors(exc: BaseException | None, retry: bool) -> None:
    from immunostrat.flows.runner import _retry_transient

    assert _retry_transient(None, None, _State(exc)) is retry


def test_os_error_inside_the_reader_stays_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from immunostrat.flows.runner import _retry_transient
    from immunostrat.ingest.inputs import read_labs

    path = tmp_path / "labs.csv"
    path.write_text("study_id,subject_id,test,result,unit,collected_at\n")

    def blink(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(pl, "read_csv", blink)
    with pytest.raises(OSError) as err:
        read_labs(path)
    assert str(path) in str(err.value)
    assert _retry_transient(None, None, _State(err.value)) is True


def test_cli_reports_os_errors_without_a_traceback(
    tiny_cohort: dict[str, Path], trained_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from immunostrat.cli.main import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    args = ["stratify", "--engine", "local", "--labs", str(tiny_cohort["labs"])]
    args += ["--subjects", str(tiny_cohort["subjects"]), "--out", str(blocker / "runs")]
    args += ["--registry", str(trained_registry), "--as-of", AS_OF.isoformat()]
    assert main(args) == 2  # found at launch, before any compute
    assert str(blocker) in capsys.readouterr().err


@pytest.fixture
def flaky_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make lab reads fail with EIO (`failures` times; -1 for always) and make ingest retry without delay."""
    from immunostrat.flows import runner
    from immunostrat.ingest import inputs

    state: dict[str, Any] = {"failures": 1, "calls": 0}
    real = inputs.read_labs

    def read(path: Any, *args: Any, **kwargs: Any) -> Any:
        state["calls"] += 1
        if state["failures"] < 0 or state["calls"] <= state["failures"]:
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(inputs, "read_labs", read)
    monkeypatch.setattr(runner, "IO_RETRY_DELAYS", [0, 0])
    return state


@pytest.mark.flow
def test_flow_retries_a_read_that_fails_once(
    prefect_harness: None,
    flaky_reads: dict[str, Any],
    tiny_cohort: dict[str, Path],
    trained_registry: Path,
    tmp_path: Path,
) -> None:
    from immunostrat.flows.stratify import stratify_flow

    run_dir = Path(stratify_flow(_params(tiny_cohort, tmp_path / "runs", trained_registry)))
    assert flaky_reads["calls"] == 2
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


@pytest.mark.flow
def test_flow_fails_naming_the_file_when_reads_keep_failing(
    prefect_harness: None,
    flaky_reads: dict[str, Any],
    tiny_cohort: dict[str, Path],
    trained_registry: Path,
    tmp_path: Path,
) -> None:
    from immunostrat.flows.stratify import stratify_flow

    flaky_reads["failures"] = -1
    with pytest.raises(OSError, match=str(tiny_cohort["labs"])):
        stratify_flow(_params(tiny_cohort, tmp_path / "runs", trained_registry))
    assert flaky_reads["calls"] == 3  # the first try and two retries
    runs = tmp_path / "runs"  # nothing but perhaps the (hidden) lock file
    assert not runs.exists() or not [p for p in runs.iterdir() if not p.name.startswith(".")]
