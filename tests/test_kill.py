"""Kill `stratify` with SIGKILL (to its whole process group) at many points; nothing half-written is ever visible.

Each child runs the stratify stages without Prefect (`--engine local` semantics) in its own session. Some are
the real console script killed after a random delay; the others run a small harness that stops at a named
point (after a stage, with a run folder half-staged and a temp file torn in half, just before the staging
folder is renamed into place) and touches a marker file, so the kill lands exactly there. After each kill:

- the previous run's folder is byte-for-byte intact and readable;
- every visible entry of the output folder is a complete run (run.json and every output it lists, with the
  recorded SHA-256); leftovers are hidden names only (``.<run_id>.partial``, ``.tmp-*``, the lock file);
- a re-run on the same output folder completes.

All children of this file run in parallel (one module fixture) to keep it short.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from immunostrat.config.run import RunConfig, ScoringConfig, StratifyParams, ValidationConfig
from immunostrat.ingest.atomic import is_hidden_leftover

from .support import AS_OF

CLI = str(Path(sys.executable).parent / "immunostrat")

# Runs the stratify stages, stopping at the point named in argv[1]: touches argv[2] and sleeps to be killed.
HARNESS = r"""
import os, sys, time
from pathlib import Path

point, marker, params_json = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def stop(name):
    if name == point:
        marker.touch()
        time.sleep(300)

from immunostrat.pipeline import launch
from immunostrat.pipeline import run
from immunostrat.config.run import StratifyParams
from immunostrat.pipeline.engine.execute import LocalRunner

# Points named after a pipeline step stop right after that step's first partition.
STEP_OF = {"after-validate": "harmonise-validate", "streaming-after-validate": "harmonise-validate"}

class StopAfter(LocalRunner):
    def call(self, name, fn, *args, io=False):
        out = fn(*args)
        if point == "after-read" and name in ("read-inputs", "split-inputs"):
            stop(point)
        return out

    def map(self, name, fn, items, ctx, *, sequential):
        results = []
        for item in items:
            results.append(fn(item, ctx))
            if STEP_OF.get(point) == name:
                stop(point)
        return results

real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    src_name, dst_name = os.path.basename(os.fspath(src)), os.path.basename(os.fspath(dst))
    if src_name.startswith(".tmp-") and dst_name == "quarantine.parquet" and point == "torn-file":
        with open(src, "r+b") as handle:  # a write cut short: half the bytes, under the temp name
            handle.truncate(os.path.getsize(src) // 2)
        stop("torn-file")
    if src_name.endswith(".partial"):
        stop("before-rename")
    if src_name.startswith(".sponsor.partial"):
        stop("during-publish")
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace

plan = launch.plan_stratify(StratifyParams.model_validate_json(params_json))
print(run.execute(plan, StopAfter()).run_dir)
"""
# Where the harness children stop to be killed: mid-compute (nothing written yet), with the run folder half
# staged and a temp file torn in half, with the run folder fully staged just before its rename, and with the
# sponsor snapshot staged inside the (complete, visible) run folder just before its own rename.
# A streaming run (2 partitions) is also stopped after its first partition is validated: its split inputs and
# scratch tables sit inside the hidden staging folder.
POINTS = ("after-validate", "torn-file", "before-rename", "during-publish", "streaming-after-validate")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): _sha(p) for p in sorted(run_dir.rglob("*")) if p.is_file()}


def check_run_folder(run_dir: Path) -> None:
    """A visible run folder is complete: run.json lists exactly its files, each with the recorded checksum.

    A sponsor snapshot (``sponsor/``, added by publish after the run folder is in place) is complete too when
    present: every file its manifest lists, with the recorded checksum. Hidden entries are leftovers only.
    """
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["run_id"] == run_dir.name
    names = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    assert names - {"sponsor"} == {*manifest["outputs"], "run.json"}, f"{run_dir.name}: {sorted(names)}"
    for hidden in (p.name for p in run_dir.iterdir() if p.name.startswith(".")):
        assert hidden.startswith((".sponsor.", ".tmp-")), f"{run_dir.name}: unexpected hidden entry {hidden}"
    for name, info in manifest["outputs"].items():
        assert _sha(run_dir / name) == info["sha256"], f"{run_dir.name}/{name} is not what run.json recorded"
        if name.endswith(".parquet") and "rows" in info:
            assert pl.read_parquet(run_dir / name).height == info["rows"]
    if "sponsor" in names:
        snapshot = run_dir / "sponsor"
        sponsor = json.loads((snapshot / "manifest.json").read_text())
        listed = [(name, info["sha256"]) for name, info in sponsor.get("files", {}).items()]
        listed += [(f["path"], f["sha256"]) for study in sponsor.get("studies", {}).values() for f in study["files"]]
        for rel, sha in listed:
            assert _sha(snapshot / rel) == sha, f"{run_dir.name}/sponsor/{rel} is not what its manifest recorded"


def check_output_folder(out: Path, previous: Path, before: dict[str, str]) -> list[str]:
    """Assert the invariants after a kill; return the hidden leftovers found at the top level."""
    assert _snapshot(previous) == before, "the previous run's files changed"
    for parquet in previous.glob("*.parquet"):
        pl.read_parquet(parquet)
    json.loads((previous / "run.json").read_text())
    leftovers = []
    for entry in sorted(out.iterdir()):
        if entry.name.startswith("."):
            assert is_hidden_leftover(entry.name) or entry.name.endswith(".lock"), entry.name
            leftovers.append(entry.name)
        elif entry.is_dir():
            check_run_folder(entry)
        else:  # OUT/sponsor-manifest.json, rewritten atomically by publish
            assert entry.suffix == ".json", f"unexpected file {entry.name} under a final name"
            json.loads(entry.read_text())
    return leftovers


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, trained_registry: Path) -> dict[str, Any]:
    """A tiny cohort and an output folder holding one finished run (the 'previous run')."""
    from immunostrat.pipeline import run
    from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

    base = tmp_path_factory.mktemp("kill")
    paths = write_cohort(generate_cohort(SynthConfig(n_subjects=15, seed=3)), base / "cohort", fmt="csv")
    params = StratifyParams(
        labs=[str(paths["labs"])],
        subjects=str(paths["subjects"]),
        out=str(base / "template"),
        config=RunConfig(validation=ValidationConfig(as_of=AS_OF), scoring=ScoringConfig(registry=trained_registry)),
    )
    previous = run.stratify(params).run_dir
    return {"base": base, "params": params, "previous": previous, "registry": trained_registry, "paths": paths}


def _fresh_out(setup: dict[str, Any], name: str) -> tuple[Path, Path, StratifyParams]:
    out = setup["base"] / name
    shutil.copytree(setup["base"] / "template", out)
    previous = out / setup["previous"].name
    return out, previous, setup["params"].model_copy(update={"out": str(out)})


def _runs(out: Path) -> list[Path]:
    """The visible run folders of an output folder."""
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def _kill(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _spawn(args: list[str]) -> subprocess.Popen[Any]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for(marker: Path, proc: subprocess.Popen[Any], deadline: float) -> None:
    while not marker.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"{marker.name}: the child exited {proc.returncode} before the point:\n{err}")
        assert time.monotonic() < deadline, f"{marker.name}: never reached"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def killed(setup: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every kill of this file, done in parallel: harness children at POINTS, CLI children after random delays.

    Also leaves one harness child alive, stopped after reading its inputs (`busy`), for the concurrency test.
    """
    seed = int(os.environ.get("IMMUNOSTRAT_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    base, paths = setup["base"], setup["paths"]
    harness: dict[str, tuple[subprocess.Popen[Any], Path, Path, Path, StratifyParams]] = {}
    for point in (*POINTS, "busy"):
        out, previous, params = _fresh_out(setup, f"out-{point}")
        marker = base / f"at-{point}"
        stop_at = "after-read" if point == "busy" else point
        if point.startswith("streaming"):
            params = params.model_copy(update={"streaming": True, "partitions": 2})
        proc = _spawn([sys.executable, "-c", HARNESS, stop_at, str(marker), params.model_dump_json()])
        harness[point] = (proc, marker, out, previous, params)
    cli = []
    for i in range(2):
        out, previous, _ = _fresh_out(setup, f"cli-{i}")
        cmd = [CLI, "stratify", "--engine", "local", "--labs", str(paths["labs"]), "--subjects"]
        cmd += [str(paths["subjects"]), "--out", str(out), "--registry", str(setup["registry"])]
        cmd += ["--as-of", AS_OF.isoformat(), *(["--streaming"] if i else [])]
        cli.append((_spawn(cmd), rng.uniform(0.2, 8.0), out, previous))
    start = time.monotonic()
    try:
        for proc, delay, *_ in sorted(cli, key=lambda c: c[1]):
            time.sleep(max(0.0, start + delay - time.monotonic()))
            _kill(proc)
        for point, (proc, marker, *_) in harness.items():
            _wait_for(marker, proc, start + 180)
            if point != "busy":
                _kill(proc)
        yield {"seed": seed, "harness": harness, "cli": cli, "before": _snapshot(setup["previous"])}
    finally:
        for child in [*(h[0] for h in harness.values()), *(c[0] for c in cli)]:
            if child.poll() is None:
                _kill(child)


def test_sigkill_mid_run_leaves_nothing_half_written(killed: dict[str, Any]) -> None:
    """At every point, the folder holds the previous run and hidden leftovers only; a re-run completes."""
    from immunostrat.pipeline import run

    for point in ("after-validate", "torn-file", "streaming-after-validate"):
        _, _, out, previous, params = killed["harness"][point]
        leftovers = check_output_folder(out, previous, killed["before"])
        assert _runs(out) == [previous], point
        if point.startswith("streaming"):  # the split inputs and scratch tables live in the hidden staging only
            (staged,) = out.glob(".*.partial")
            assert staged.name in leftovers and list((staged / ".parts").rglob("*.ipc"))
        if point == "torn-file":  # the torn file exists only under its temp name, inside the hidden staging
            (staged,) = out.glob(".*.partial")
            assert staged.name in leftovers and not (staged / "quarantine.parquet").exists()
            assert (staged / "harmonised.parquet").exists() and list(staged.glob(".tmp-quarantine.parquet-*"))
        rerun = run.stratify(params).run_dir
        check_output_folder(out, previous, killed["before"])
        assert json.loads((rerun / "run.json").read_text())["status"] == "completed"
    _, _, out, previous, _ = killed["harness"]["before-rename"]
    check_output_folder(out, previous, killed["before"])
    (staged,) = out.glob(".*.partial")
    assert (staged / "run.json").exists()  # fully staged, yet invisible until the rename
    _, _, out, previous, params = killed["harness"]["during-publish"]
    check_output_folder(out, previous, killed["before"])
    (published,) = (r for r in _runs(out) if r != previous)  # the run is complete; its snapshot is not there
    assert not (published / "sponsor").exists() and list(published.glob(".sponsor.partial*"))


def test_sigkill_of_the_real_cli_after_random_delays(killed: dict[str, Any]) -> None:
    """The console script killed after random delays (seeded: IMMUNOSTRAT_KILL_SEED reproduces a failure)."""
    for proc, delay, out, previous in killed["cli"]:
        try:
            check_output_folder(out, previous, killed["before"])
        except AssertionError as exc:
            raise AssertionError(f"seed {killed['seed']}, delay {delay:.2f} s (exit {proc.returncode}): {exc}") from exc


def test_next_run_cleans_up_after_a_killed_one(killed: dict[str, Any]) -> None:
    from immunostrat.pipeline import run

    _, _, out, previous, params = killed["harness"]["before-rename"]
    assert list(out.glob(".*.partial"))
    rerun = run.stratify(params).run_dir
    assert not list(out.glob(".*.partial")) and not list(out.glob(".tmp-*"))
    assert _runs(out) == sorted([previous, rerun])


def test_second_run_on_a_busy_folder_fails_fast(
    setup: dict[str, Any], killed: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from immunostrat.cli.main import main

    holder, _, out, _, _ = killed["harness"]["busy"]
    assert holder.poll() is None
    paths = setup["paths"]
    started = time.monotonic()
    code = main(
        ["stratify", "--engine", "local", "--labs", str(paths["labs"]), "--subjects", str(paths["subjects"]),
         "--out", str(out), "--registry", str(setup["registry"]), "--as-of", AS_OF.isoformat()]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"pid {holder.pid}" in err and "in use by another immunostrat run" in err, err
    assert time.monotonic() - started < 5
