"""Benchmark `immunostrat monitor` on the follow-up benchmark cohort (issues 12, 13, 15).

Usage:
    python benchmarks/monitor.py --subjects 500 --subjects 100000 [--rounds 3] [--prefect-server]

For each N it writes the follow-up cohort with the one documented generator (`benchmarks/gen_followup.py OUT N
SEED`: subjects, selection-time labs, visits, follow-up labs and, when the generator writes them, events), then
times as whole processes (wall time and peak RSS of the child, from the kernel's rusage):

- `immunostrat validate` on the same lab, subject and visit files (what a site runs);
- `immunostrat monitor --engine local` (every phase, outputs, team report and follow-up snapshot; streaming as
  by default);
- with `--prefect-server`: `immunostrat monitor` as a Prefect flow against a server started before the timing.

Rounds are interleaved (every command once per round) and each figure is the median. Results are printed and
saved as JSON under benchmarks/results/. Speed is measured here, never in tests. Where the time goes, step by
step: `benchmarks/monitor_stages.py DATA OUT [--cpu]` on a generated cohort folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import _key_env, machine, prefect_server, timed  # noqa: E402  (benchmarks/ is a folder of scripts)

AS_OF = "2026-10-31"  # the generator's data cut-off


def generate(n: int, data: Path, seed: int) -> dict[str, Any]:
    """Write the follow-up cohort of n subjects to `data` (Parquet); the generator's JSON line."""
    data.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, str(HERE / "gen_followup.py"), str(data), str(n), str(seed)],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def commands(data: Path, out: Path) -> dict[str, list[str]]:
    """The timed command lines on one cohort (events included when the cohort has them)."""
    exe = str(Path(sys.executable).with_name("immunostrat"))
    labs = [str(data / "labs.parquet"), str(data / "labs_followup.parquet")]
    subjects, visits = str(data / "subjects.parquet"), str(data / "visits.parquet")
    events = ["--events", str(data / "events.parquet")] if (data / "events.parquet").is_file() else []
    monitor = [exe, "monitor", "--labs", *labs, "--subjects", subjects, "--visits", visits, *events]
    monitor += ["--as-of", AS_OF, "--out", str(out)]
    return {
        "validate": [exe, "validate", "--labs", *labs, "--subjects", subjects, "--visits", visits],
        "monitor --engine local": [*monitor, "--engine", "local"],
        "monitor (Prefect server)": [*monitor, "--engine", "prefect"],
    }


def bench(n: int, workdir: Path, seed: int, rounds: int, server: bool) -> dict[str, Any]:
    """Generate one cohort and time each command `rounds` times, interleaved."""
    data = workdir / f"followup-n{n}"
    generated = generate(n, data, seed)
    cmds = commands(data, workdir / "out")
    if not server:
        cmds.pop("monitor (Prefect server)")
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
    env = _key_env()
    with contextlib.ExitStack() as stack:
        # One server for every round, healthy before any timing (as scheduled runs use a long-lived server).
        flow_env = {**env, **stack.enter_context(prefect_server(workdir))} if server else env
        for _ in range(rounds):
            for name, cmd in cmds.items():
                shutil.rmtree(workdir / "out", ignore_errors=True)
                samples[name].append(timed(cmd, env=flow_env if name.endswith("(Prefect server)") else env))
    results = {}
    for name, runs in samples.items():
        results[name] = {
            "wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
            "exit_codes": [r["exit_code"] for r in runs],
            "tail": runs[-1]["tail"],
        }
    return {"subjects": n, "rounds": rounds, "generator": generated, "commands": results}


def report(res: dict[str, Any]) -> str:
    """A Markdown table of one cohort's figures."""
    lines = [
        f"### monitor, {res['subjects']:,} subjects (median of {res['rounds']})",
        "",
        "| command | wall (s) | peak RSS (MB) | exit |",
        "|---|---|---|---|",
    ]
    for name, r in res["commands"].items():
        lines.append(f"| {name} | {r['wall_s']} | {r['peak_rss_mb']} | {','.join(map(str, r['exit_codes']))} |")
    return "\n".join(lines)


def main() -> int:
    """Parse the options, run the benchmark, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subjects", type=int, action="append", help="cohort size (repeatable); default 500")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each figure is their median")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/immunostrat-bench-monitor"))
    parser.add_argument("--prefect-server", action="store_true", help="also time the flow against a server")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = [bench(n, args.workdir, args.seed, args.rounds, args.prefect_server) for n in args.subjects or [500]]
    for res in runs:
        print(report(res), end="\n\n")
    out = HERE / "results" / f"monitor-{started.replace(':', '')}.json"
    out.parent.mkdir(exist_ok=True)
    load = dict(zip(("1 min", "5 min", "15 min"), (round(x, 2) for x in os.getloadavg()), strict=True))
    print(f"load average at the end: {load} (other work on the machine makes every figure slower)")
    record = {"started": started, "machine": machine(), "load_average_at_end": load, "runs": runs}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
