"""Benchmark immunostrat against the raw polars floor, on the same generated files, in the same run.

Usage:
    python benchmarks/run.py --subjects 100000 [--subjects 1000000] [--workdir /tmp/immunostrat-bench]

For each N it generates a native-contract cohort with the shared, independent generator
(`../shared/benchmarks/gen_native_cohort.py`, 10 lab rows per subject), then times as whole processes
(wall time and peak RSS from the kernel's rusage of the child):

- the floor: `peers.py floor` (read, cast `result`, pivot to one row per subject, write Parquet);
- `immunostrat validate` (ingest, harmonise, validate; no Prefect);
- `immunostrat stratify --engine local` (every stage, all outputs, imports included);
- `benchmarks/stages.py` (the same stages in one process, each timed on its own).

Results are printed and saved as JSON under benchmarks/results/. Speed is measured here, never in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SHARED = ROOT.parent / "shared" / "benchmarks"


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


def bench(n: int, workdir: Path, shared: Path, seed: int) -> dict[str, Any]:
    """Generate one cohort of n subjects and time the floor and immunostrat on it."""
    py = sys.executable
    # Sponsor publishing (part of every stratify run) needs a pseudonym key: a throwaway one for benchmarks.
    env = {
        **os.environ,
        "IMMUNOSTRAT_PSEUDONYM_KEY": os.environ.get("IMMUNOSTRAT_PSEUDONYM_KEY", "bench-only-" + "0" * 53),
    }
    immunostrat = str(Path(py).parent / "immunostrat")
    data = workdir / f"n{n}"
    if data.exists():
        shutil.rmtree(data)
    (data / "floor").mkdir(parents=True)
    gen = timed([py, str(shared / "gen_native_cohort.py"), str(data), str(n), str(seed)])
    labs, subjects = str(data / "labs.parquet"), str(data / "subjects.parquet")
    # The shared generator writes IFN scores without a method; name one explicitly (never guessed).
    common = ["--labs", labs, "--ifn-default-method", "MEDIAN_FC_21", "--as-of", "2026-11-01"]
    results: dict[str, Any] = {"subjects": n, "lab_rows": n * 10, "generate": gen}
    results["floor"] = timed([py, str(shared / "peers.py"), "floor", labs, subjects, str(data / "floor")])
    results["validate"] = timed([immunostrat, "validate", *common, "--subjects", subjects, "--show", "0"], env)
    results["stratify"] = timed(
        [immunostrat, "stratify", "--engine", "local", *common, "--subjects", subjects, "--out", str(data / "runs")],
        env,
    )
    stages = timed([py, str(HERE / "stages.py"), labs, subjects, str(data / "stage-runs")], env)
    results["stages_process"] = stages
    try:
        results["stages"] = json.loads(stages["tail"][-1])
    except (IndexError, json.JSONDecodeError):
        results["stages"] = {}
    floor = results["floor"]["wall_s"]
    results["ratio_stratify_to_floor"] = round(results["stratify"]["wall_s"] / floor, 2)
    results["ratio_validate_to_floor"] = round(results["validate"]["wall_s"] / floor, 2)
    return results


def report(res: dict[str, Any]) -> str:
    """A readable block for one N."""
    lines = [f"== {res['subjects']:,} subjects ({res['lab_rows']:,} lab rows) =="]
    for key in ("floor", "validate", "stratify"):
        r = res[key]
        lines.append(
            f"  {key:<10} wall {r['wall_s']:>8.2f} s   peak RSS {r['peak_rss_mb']:>8.1f} MB   exit {r['exit_code']}"
        )
    lines.append(
        f"  ratio stratify/floor {res['ratio_stratify_to_floor']:.2f}   "
        f"validate/floor {res['ratio_validate_to_floor']:.2f}"
    )
    if res.get("stages"):
        lines.append("  stages (one process): " + ", ".join(f"{k} {v:.2f}s" for k, v in res["stages"].items()))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, action="append", help="cohort size (repeatable); default 100000")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/immunostrat-bench"))
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="folder with gen_native_cohort.py and peers.py"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = args.subjects or [100_000]
    out: dict[str, Any] = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    print(f"machine: {out['machine']}")
    for n in sizes:
        res = bench(n, args.workdir, args.shared, args.seed)
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
