"""Benchmark immunostrat against the raw polars floor and the pandas peer, on the same generated files, in one run.

Usage:
    python benchmarks/run.py --make-envs                       # once: runtime-only and pandas-peer environments
    benchmarks/.venv-runtime/bin/python benchmarks/run.py --subjects 500 --subjects 100000 --subjects 1000000 \\
        --prefect-server [--monitor-subjects 500] [--rounds 5]
    python benchmarks/run.py --streaming-subjects 10000000     # streaming mode only (no eager floor fits)

The commands timed are those of the Python running this script (its `immunostrat`): run it with the runtime-only
environment's Python (`pip install .`, no dev extras), as the speed goals are stated; the report says which
environment it was and whether test-only packages were installed in it. `--make-envs` builds
`benchmarks/.venv-runtime` (`pip install .`) and `benchmarks/.venv-pandas` (the same plus pandas and
pandera[pandas], for `peers.py pandas`) from the configured package index.

For each N it generates a native-contract cohort with the shared, independent generator
(`../shared/benchmarks/gen_native_cohort.py`, 10 lab rows per subject), then times whole processes:

- the floor: `peers.py floor` (read, cast `result`, pivot to one row per subject, write Parquet);
- the pandas peer: `peers.py pandas` (pandas + pandera + scikit-learn), when `benchmarks/.venv-pandas` exists;
- `immunostrat validate` (ingest, harmonise, validate; no Prefect);
- `immunostrat stratify --engine local` (every stage, publishing and report, imports included) as run by default
  (streaming above 1M lab rows), and with `--no-streaming` (the whole cohort in memory in one pass);
- with `--prefect-server`: `immunostrat stratify` as a Prefect flow against a `prefect server start` that was
  started (and became healthy) before the timing, as scheduled runs use it; and Prefect's own cost
  (`benchmarks/prefect_cost.py`: import, first flow call, per-task overhead);
- `benchmarks/stages.py` (the same stages in one process, each timed on its own), once per N.

Rounds interleave the commands (floor, peer, validate, stratify, ..., floor, ...), so that a slow spell of the
machine falls on all of them alike; each figure is the median of `--rounds` rounds and each ratio is to the floor
of the same run. Peak RSS is the kernel's `ru_maxrss` from `wait4` on the child: the largest resident set of the
child and of every descendant it waited for (the largest single process of the tree, not their sum). The Prefect
server is a separate process tree, never in a command's figure: its own peak (the sum of each server process's
high-water mark) is reported beside. The load average is read at the start and the end: a machine with more
than half a runnable process per core is reported as loaded.

`--monitor-subjects N` also runs `benchmarks/monitor.py`'s follow-up cohort (its own generator and commands).
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
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SHARED = ROOT.parent / "shared" / "benchmarks"
RUNTIME_ENV = HERE / ".venv-runtime"
PANDAS_ENV = HERE / ".venv-pandas"
BLOCK = 1_000_000  # largest cohort the shared generator writes in one go here
#: Reported with the environment: what a run's speed depends on.
PACKAGES = ("immunostrat", "polars", "pandera", "prefect", "scikit-learn", "skops", "pyarrow", "pydantic", "numpy")
#: Installed only by the dev extras: any of them present means the environment is not runtime-only.
DEV_ONLY = ("pytest", "hypothesis", "mypy", "ruff", "pandas", "duckdb")
#: Command keys in report order; ratios are taken to "floor".
ORDER = ("floor", "pandas_peer", "validate", "stratify", "stratify_one_pass", "stratify_prefect_server")


# --------------------------------------------------------------------------------------------------
# Processes, machine and environment
# --------------------------------------------------------------------------------------------------


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


def load_average() -> dict[str, Any]:
    """The 1, 5 and 15 minute load averages, and whether the machine counts as loaded (> 0.5 per core)."""
    one, five, fifteen = os.getloadavg()
    return {"1 min": round(one, 2), "5 min": round(five, 2), "15 min": round(fifteen, 2)} | {
        "loaded": one > 0.5 * (os.cpu_count() or 1)
    }


def environment(python: str) -> dict[str, Any]:
    """The environment whose commands are timed: its Python, package versions and whether dev extras are in it."""
    probe = (
        "import importlib.metadata as m, json, platform, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        f"print(json.dumps({{'python': platform.python_version(), 'prefix': sys.prefix,"
        f" 'packages': {{n: v(n) for n in {list(PACKAGES)!r}}}, 'dev_only': {{n: v(n) for n in {list(DEV_ONLY)!r}}}}}))"
    )
    found = json.loads(subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True).stdout)
    dev = {name: version for name, version in found.pop("dev_only").items() if version}
    return found | {"dev_packages_installed": dev, "runtime_only": not dev}


def _key_env() -> dict[str, str]:
    # Sponsor publishing (part of every stratify run) needs a pseudonym key: a throwaway one for benchmarks.
    return {
        **os.environ,
        "IMMUNOSTRAT_PSEUDONYM_KEY": os.environ.get("IMMUNOSTRAT_PSEUDONYM_KEY", "bench-only-" + "0" * 53),
    }


def make_envs() -> None:
    """Create the runtime-only environment (`pip install .`) and the pandas peer's (plus pandas, pandera[pandas])."""
    for folder, extra in ((RUNTIME_ENV, []), (PANDAS_ENV, ["pandas", "pandera[pandas]==0.35.0"])):
        if not (folder / "bin" / "python").is_file():
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run([str(folder / "bin" / "pip"), "install", "-q", str(ROOT), *extra], check=True)
        print(f"{folder}: {environment(str(folder / 'bin' / 'python'))}")


# --------------------------------------------------------------------------------------------------
# Data and the Prefect server
# --------------------------------------------------------------------------------------------------


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


def cohort(n: int, workdir: Path, shared: Path, seed: int, reuse: bool) -> tuple[Path, dict[str, Any]]:
    """The folder holding the n-subject cohort (generated unless reused) and the generator's timing."""
    data = workdir / f"n{n}"
    if reuse and (data / "labs.parquet").is_file() and (data / "subjects.parquet").is_file():
        return data, {"cmd": "reused", "wall_s": 0.0}
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    return data, generate(n, data, shared, seed)


@dataclass(frozen=True)
class Server:
    """A running `prefect server start`: the client environment to reach it, and its process group."""

    env: dict[str, str]
    pid: int

    def peak_rss_mb(self) -> float:
        """The sum of each server process's own high-water mark (VmHWM): an upper bound of the server's peak."""
        total_kb = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Field 6 of /proc/PID/stat (after the command name in brackets) is the session id.
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) != self.pid:
                    continue
                for line in (proc / "status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
        return round(total_kb / 1024, 1)


@contextlib.contextmanager
def running_prefect_server(workdir: Path, port: int = 4299) -> Iterator[Server]:
    """A dedicated `prefect server start` in its own session, healthy before it is yielded."""
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
        client = {"PREFECT_HOME": str(home), "PREFECT_API_URL": url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        yield Server(env=client, pid=server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


@contextlib.contextmanager
def prefect_server(workdir: Path, port: int = 4299) -> Iterator[dict[str, str]]:
    """A dedicated `prefect server start`, healthy before it is yielded; yields the client's environment."""
    with running_prefect_server(workdir, port) as server:
        yield server.env


# --------------------------------------------------------------------------------------------------
# One cohort: the commands, interleaved rounds, medians and ratios
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What to time on each cohort (from the command line)."""

    shared: Path
    rounds: int
    one_pass: bool
    pandas_python: str | None
    server: Server | None


def command_lines(data: Path, opts: Options, *, full: bool) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    """Each timed command line on one cohort with its environment (None: inherit); `full=False`: stratify only."""
    py = sys.executable
    env = _key_env()
    immunostrat = str(Path(py).parent / "immunostrat")
    labs, subjects = str(data / "labs.parquet"), str(data / "subjects.parquet")
    # The shared generator writes IFN scores without a method; name one explicitly (never guessed).
    common = ["--labs", labs, "--ifn-default-method", "MEDIAN_FC_21", "--as-of", "2026-11-01"]
    stratify = [immunostrat, "stratify", *common, "--subjects", subjects]
    peers = str(opts.shared / "peers.py")
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = {}
    if full:
        (data / "floor").mkdir(exist_ok=True)
        commands["floor"] = ([py, peers, "floor", labs, subjects, str(data / "floor")], None)
        if opts.pandas_python is not None:
            (data / "pandas").mkdir(exist_ok=True)
            commands["pandas_peer"] = (
                [opts.pandas_python, peers, "pandas", labs, subjects, str(data / "pandas")],
                None,
            )
        commands["validate"] = ([immunostrat, "validate", *common, "--subjects", subjects, "--show", "0"], env)
        if opts.one_pass:
            # One pass over the whole cohort in memory: the way every run worked before streaming.
            commands["stratify_one_pass"] = (
                [*stratify, "--engine", "local", "--no-streaming", "--out", str(data / "runs-one-pass")],
                env,
            )
    # The default: streams when the lab rows exceed one partition (1M rows), else one pass; publishes and reports.
    commands["stratify"] = ([*stratify, "--engine", "local", "--out", str(data / "runs")], env)
    if opts.server is not None:
        commands["stratify_prefect_server"] = (
            [*stratify, "--engine", "prefect", "--out", str(data / "runs-prefect")],
            {**env, **opts.server.env},
        )
    return commands


def interleaved(
    commands: dict[str, tuple[list[str], dict[str, str] | None]], rounds: int, data: Path
) -> dict[str, list[dict[str, Any]]]:
    """Every command once per round, in order, `rounds` times; run folders are removed after each command."""
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key in commands}
    for _ in range(rounds):
        for key, (cmd, cmd_env) in commands.items():
            samples[key].append(timed(cmd, cmd_env))
            for runs in ("runs", "runs-one-pass", "runs-prefect"):
                shutil.rmtree(data / runs, ignore_errors=True)  # 10M-subject outputs are large
    return samples


def _median(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample with the median wall time, with every round's wall time and the largest peak RSS beside it."""
    ordered = sorted(samples, key=lambda r: r["wall_s"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["walls_s"] = [r["wall_s"] for r in samples]
    median["peak_rss_mb"] = max(r["peak_rss_mb"] for r in samples)
    median["exit_code"] = max(r["exit_code"] for r in samples)
    return median


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Each command's median wall time over the floor's median in the same run."""
    if "floor" not in results:
        return {}
    floor = results["floor"]["wall_s"]
    return {key: round(results[key]["wall_s"] / floor, 2) for key in ORDER[1:] if key in results and floor > 0}


def stage_times(data: Path) -> dict[str, Any]:
    """`benchmarks/stages.py` once on the cohort: the definition's steps timed in one process."""
    inputs = [str(data / "labs.parquet"), str(data / "subjects.parquet"), str(data / "stage-runs")]
    stages = timed([sys.executable, str(HERE / "stages.py"), *inputs], _key_env())
    try:
        times = json.loads(stages["tail"][-1])
    except (IndexError, json.JSONDecodeError):
        times = {}
    return {"stages_process": stages, "stages": times}


def bench(n: int, workdir: Path, seed: int, opts: Options, *, full: bool = True, reuse: bool = False) -> dict[str, Any]:
    """Generate one cohort of n subjects and time the floor, the peer and immunostrat on it."""
    data, gen = cohort(n, workdir, opts.shared, seed, reuse)
    results: dict[str, Any] = {"subjects": n, "lab_rows": n * 10, "generate": gen, "rounds": opts.rounds}
    samples = interleaved(command_lines(data, opts, full=full), opts.rounds, data)
    results |= {key: _median(found) for key, found in samples.items()}
    results["ratios_to_floor"] = ratios(results)
    if full:
        results |= stage_times(data)
    if opts.server is not None:
        results["prefect_server_peak_rss_mb"] = opts.server.peak_rss_mb()
    return results


def prefect_cost(server: Server, rounds: int) -> dict[str, Any]:
    """`benchmarks/prefect_cost.py` against the running server, `rounds` times; the median of each figure."""
    runs = []
    for _ in range(rounds):
        out = timed([sys.executable, str(HERE / "prefect_cost.py")], {**os.environ, **server.env})
        with contextlib.suppress(IndexError, json.JSONDecodeError):
            runs.append(json.loads(out["tail"][-1]))
    if not runs:
        return {}
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]} | {"rounds": len(runs)}


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------


def report(res: dict[str, Any]) -> str:
    """A readable block for one N."""
    lines = [f"== {res['subjects']:,} subjects ({res['lab_rows']:,} lab rows), median of {res['rounds']} =="]
    ratio = res.get("ratios_to_floor", {})
    for key in ORDER:
        if key not in res:
            continue
        r = res[key]
        lines.append(
            f"  {key:<24} wall {r['wall_s']:>8.2f} s"
            + (f" ({ratio[key]:>5.2f}x floor)" if key in ratio else " " * 18)
            + f"   peak RSS {r['peak_rss_mb']:>8.1f} MB   exit {r['exit_code']}"
            + (f"   rounds {r['walls_s']}" if len(r.get("walls_s", [])) > 1 else "")
        )
    if "prefect_server_peak_rss_mb" in res:
        lines.append(f"  Prefect server (separate process tree): peak RSS {res['prefect_server_peak_rss_mb']} MB")
    if res.get("stages"):
        lines.append("  stages (one process): " + ", ".join(f"{k} {v:.2f}s" for k, v in res["stages"].items()))
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subjects", type=int, action="append", help="cohort size (repeatable); default 100000")
    parser.add_argument(
        "--streaming-subjects", type=int, action="append", default=[], help="cohort size timed by stratify only"
    )
    parser.add_argument(
        "--prefect-server", action="store_true", help="also time the Prefect flow against a running server"
    )
    parser.add_argument("--monitor-subjects", type=int, action="append", default=[], help="monitor cohort size")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/immunostrat-bench"))
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="folder with gen_native_cohort.py and peers.py"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-data", action="store_true", help="time the cohort already in WORKDIR/n<N> if present")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each figure is their median")
    parser.add_argument(
        "--no-one-pass", action="store_true", help="skip the in-memory one-pass stratify (--no-streaming)"
    )
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas peer even if its environment exists")
    parser.add_argument(
        "--make-envs", action="store_true", help="create benchmarks/.venv-runtime and .venv-pandas, then exit"
    )
    return parser.parse_args()


def main() -> int:
    """Time every requested cohort; print each block, and save everything as JSON under benchmarks/results/."""
    args = parse_args()
    if args.make_envs:
        make_envs()
        return 0
    sizes = args.subjects or ([] if args.streaming_subjects or args.monitor_subjects else [100_000])
    pandas_python = PANDAS_ENV / "bin" / "python"
    out: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "environment": environment(sys.executable),
        "load_average_at_start": load_average(),
        "runs": [],
    }
    print(
        f"machine: {out['machine']}\nenvironment: {out['environment']}\nload at start: {out['load_average_at_start']}"
    )
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running_prefect_server(args.workdir)) if args.prefect_server else None
        opts = Options(
            shared=args.shared,
            rounds=args.rounds,
            one_pass=not args.no_one_pass,
            pandas_python=str(pandas_python) if pandas_python.is_file() and not args.no_pandas else None,
            server=server,
        )
        if server is not None:
            out["prefect_cost"] = prefect_cost(server, args.rounds)
            print(f"Prefect's own cost (median of {args.rounds}): {out['prefect_cost']}", flush=True)
        plan = [(n, True) for n in sizes] + [(n, False) for n in args.streaming_subjects]
        for n, full in plan:
            res = bench(n, args.workdir, args.seed, opts, full=full, reuse=args.reuse_data)
            out["runs"].append(res)
            print(report(res), flush=True)
    if args.monitor_subjects:
        sys.path.insert(0, str(HERE))
        import monitor  # benchmarks/ is a folder of scripts

        out["monitor"] = [
            monitor.bench(n, args.workdir, 12, args.rounds, args.prefect_server) for n in args.monitor_subjects
        ]
        for res in out["monitor"]:
            print(monitor.report(res), flush=True)
    out["load_average_at_end"] = load_average()
    loaded = out["load_average_at_start"]["loaded"] or out["load_average_at_end"]["loaded"]
    print(f"load at end: {out['load_average_at_end']}" + ("  -- LOADED MACHINE: figures are upper bounds" * loaded))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
