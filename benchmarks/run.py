"""Benchmark immunostrat against the raw polars floor, on the same generated files, in the same run.

Usage:
    python benchmarks/run.py --subjects 100000 [--subjects 1000000] [--prefect-server]
    python benchmarks/run.py --streaming-subjects 10000000     # streaming mode only (no eager floor fits)

For each N it generates a native-contract cohort with the shared, independent generator
(`../shared/benchmarks/gen_native_cohort.py`, 10 lab rows per subject), then times as whole processes
(wall time and peak RSS from the kernel's rusage of the child):

- the floor: `peers.py floor` (read, cast `result`, pivot to one row per subject, write Parquet);
- `immunostrat validate` (ingest, harmonise, validate; no Prefect);
- `immunostrat stratify --engine local` (every stage, all outputs, imports included) as run by default
  (streaming above 1M lab rows: partitions split on disk and processed one at a time), and with
  `--no-streaming` (the whole cohort in memory in one pass);
- with `--prefect-server`: `immunostrat stratify` as a Prefect flow against a `prefect server start` that was
  started (and became healthy) before the timing, as scheduled runs use it;
- `benchmarks/stages.py` (the same stages in one process, each timed on its own).

Cohorts above 1M subjects are generated as blocks of 1M subjects (the shared generator holds a whole cohort in
memory), each block with its own seed and a block prefix on the subject ids, concatenated by a streaming sink.

Results are printed and saved as JSON under benchmarks/results/. Speed is measured here, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SHARED = ROOT.parent / "shared" / "benchmarks"
BLOCK = 1_000_000  # largest cohort the shared generator writes in one go here


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command as a child process; return wall seconds, peak RSS (MB), exit code and its stdout tail."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "cmd": " ".join(cmd),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit_code": proc.returncode,
        "tail": output.strip().splitlines()[-3:],
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "cpu": cpu, "python": platform.python_version()}


def _key_env() -> dict[str, str]:
    # Sponsor publishing (part of every stratify run) needs a pseudonym key: a throwaway one for benchmarks.
    return {
        **os.environ,
        "IMMUNOSTRAT_PSEUDONYM_KEY": os.environ.get("IMMUNOSTRAT_PSEUDONYM_KEY", "bench-only-" + "0" * 53),
    }


def generate(n: int, data: Path, shared: Path, seed: int) -> dict[str, Any]:
    """Write data/labs.parquet and data/subjects.parquet for n subjects; returns the generator's timing."""
    py = sys.executable
    if n <= BLOCK:
        return timed([py, str(shared / "gen_native_cohort.py"), str(data), str(n), str(seed)])
    start = time.perf_counter()
    blocks = []
    for b in range((n + BLOCK - 1) // BLOCK):
        folder = data / "blocks" / f"b{b:03d}"
        size = min(BLOCK, n - b * BLOCK)
        gen = timed([py, str(shared / "gen_native_cohort.py"), str(folder), str(size), str(seed + b)])
        if gen["exit_code"] != 0:
            return gen
        blocks.append(folder)
    import polars as pl

    for name in ("labs", "subjects"):
        # Block prefixes keep subject ids unique across blocks; the sink streams, so memory stays flat.
        pl.concat(
            [
                pl.scan_parquet(f / f"{name}.parquet").with_columns(
                    pl.format("B{}-{}", pl.lit(i), pl.col("subject_id")).alias("subject_id")
                )
                for i, f in enumerate(blocks)
            ]
        ).sink_parquet(data / f"{name}.parquet")
    shutil.rmtree(data / "blocks")
    return {"cmd": f"gen_native_cohort.py in {len(blocks)} blocks", "wall_s": round(time.perf_counter() - start, 2)}


@contextlib.contextmanager
def prefect_server(workdir: Path, port: int = 4299) -> Iterator[dict[str, str]]:
    """A dedicated `prefect server start`, healthy before it is yielded; yields the client's environment."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    log = open(workdir / "prefect-server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"prefect server did not become healthy; see {workdir / 'prefect-server.log'}")
            time.sleep(1)
        yield {"PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def _median(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample with the median wall time, with every round's wall time and the largest peak RSS beside it."""
    ordered = sorted(samples, key=lambda r: r["wall_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["walls_s"] = [r["wall_s"] for r in samples]
    median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in samples)
    median["exit_code"] = max(r["exit_code"] for r in samples)
    return median


def bench(
    n: int,
    workdir: Path,
    shared: Path,
    seed: int,
    *,
    full: bool = True,
    server_env: dict[str, str] | None = None,
    reuse: bool = False,
    rounds: int = 1,
    one_pass: bool = True,
) -> dict[str, Any]:
    """Generate one cohort of n subjects and time the floor and immunostrat on it (`full=False`: streaming only)."""
    py = sys.executable
    env = _key_env()
    immunostrat = str(Path(py).parent / "immunostrat")
    data = workdir / f"n{n}"
    if reuse and (data / "labs.parquet").is_file() and (data / "subjects.parquet").is_file():
        gen: dict[str, Any] = {"cmd": "reused", "wall_s": 0.0}
    else:
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        gen = generate(n, data, shared, seed)
    (data / "floor").mkdir(exist_ok=True)
    labs, subjects = str(data / "labs.parquet"), str(data / "subjects.parquet")
    # The shared generator writes IFN scores without a method; name one explicitly (never guessed).
    common = ["--labs", labs, "--ifn-default-method", "MEDIAN_FC_21", "--as-of", "2026-11-01"]
    stratify = [immunostrat, "stratify", *common, "--subjects", subjects]
    results: dict[str, Any] = {"subjects": n, "lab_rows": n * 10, "generate": gen, "rounds": rounds}
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {}
    if full:
        commands["floor"] = ([py, str(shared / "peers.py"), "floor", labs, subjects, str(data / "floor")], None)
        commands["validate"] = ([immunostrat, "validate", *common, "--subjects", subjects, "--show", "0"], env)
        if one_pass:
            # One pass over the whole cohort in memory: the way every run worked before streaming.
            commands["stratify_one_pass"] = (
                [*stratify, "--engine", "local", "--no-streaming", "--out", str(data / "runs-one-pass")],
                env,
            )
    # The default: streams when the lab rows exceed one partition (1M rows), else one pass.
    commands["stratify"] = ([*stratify, "--engine", "local", "--out", str(data / "runs")], env)
    if server_env is not None:
        commands["stratify_prefect_server"] = (
            [*stratify, "--engine", "prefect", "--out", str(data / "runs-prefect")],
            {**env, **server_env},
        )
    # Rounds interleave the commands (floor, validate, stratify, floor, ...), so that a slow spell of the machine
    # falls on all of them alike; each figure is the median of its rounds, and ratios are taken within one run.
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key in commands}
    for _ in range(rounds):
        for key, (cmd, cmd_env) in commands.items():
            samples[key].append(timed(cmd, cmd_env))
            for runs in ("runs", "runs-one-pass", "runs-prefect"):
                shutil.rmtree(data / runs, ignore_errors=True)  # 10M-subject outputs are large
    for key, found in samples.items():
        results[key] = _median(found)
    if full:
        stages = timed([py, str(HERE / "stages.py"), labs, subjects, str(data / "stage-runs")], env)
        results["stages_process"] = stages
        try:
            results["stages"] = json.loads(stages["tail"][-1])
        except (IndexError, json.JSONDecodeError):
            results["stages"] = {}
        floor = results["floor"]["wall_s"]
        for key in ("stratify", "stratify_one_pass", "stratify_prefect_server", "validate"):
            if key in results:
                results[f"ratio_{key}_to_floor"] = round(results[key]["wall_s"] / floor, 2)
    return results


def report(res: dict[str, Any]) -> str:
    """A readable block for one N."""
    lines = [f"== {res['subjects']:,} subjects ({res['lab_rows']:,} lab rows) =="]
    for key in ("floor", "validate", "stratify", "stratify_one_pass", "stratify_prefect_server"):
        if key not in res:
            continue
        r = res[key]
        lines.append(
            f"  {key:<24} wall {r['wall_s']:>8.2f} s   peak RSS {r['peak_rss_mb']:>8.1f} MB   exit {r['exit_code']}"
            + (f"   rounds {r['walls_s']}" if len(r.get("walls_s", [])) > 1 else "")
        )
    ratios = [f"{k[len('ratio_') : -len('_to_floor')]}/floor {v:.2f}" for k, v in res.items() if k.startswith("ratio_")]
    if ratios:
        lines.append("  " + "   ".join(ratios))
    if res.get("stages"):
        lines.append("  stages (one process): " + ", ".join(f"{k} {v:.2f}s" for k, v in res["stages"].items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, action="append", help="cohort size (repeatable); default 100000")
    parser.add_argument(
        "--streaming-subjects", type=int, action="append", default=[], help="cohort size timed by stratify only"
    )
    parser.add_argument(
        "--prefect-server", action="store_true", help="also time the Prefect flow against a running server"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/immunostrat-bench"))
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="folder with gen_native_cohort.py and peers.py"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-data", action="store_true", help="time the cohort already in WORKDIR/n<N> if present")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; each figure is their median")
    parser.add_argument(
        "--no-one-pass", action="store_true", help="skip the in-memory one-pass stratify (--no-streaming)"
    )
    args = parser.parse_args()
    sizes = args.subjects or ([] if args.streaming_subjects else [100_000])
    out: dict[str, Any] = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    print(f"machine: {out['machine']}")
    with contextlib.ExitStack() as stack:
        server_env = stack.enter_context(prefect_server(args.workdir)) if args.prefect_server else None
        plan = [(n, True) for n in sizes] + [(n, False) for n in args.streaming_subjects]
        for n, full in plan:
            res = bench(
                n,
                args.workdir,
                args.shared,
                args.seed,
                full=full,
                server_env=server_env,
                reuse=args.reuse_data,
                rounds=args.rounds,
                one_pass=not args.no_one_pass,
            )
            out["runs"].append(res)
            print(report(res), flush=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
