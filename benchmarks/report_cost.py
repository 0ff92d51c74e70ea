"""What building a run's report costs: one fresh process reads the run's sponsor snapshot and writes report.html.

Usage:
    python benchmarks/report_cost.py RUN_DIR                         # this interpreter, once: one JSON line
    python benchmarks/report_cost.py RUN_DIR --python A --python B   # each interpreter in turn, `--rounds` times

RUN_DIR is a published stratify run (`RUN/sponsor/` holds the snapshot). The report is written to a temporary
file, never into the run. Figures: the seconds to import the report's path (`immunostrat.sponsor.publish`) and
to build the report (`write_report`: read the snapshot, the model card, compute the sections and their figures,
render the page), the same again in the same process (`again_s`: the work without first-use imports), the
page's size, and whether matplotlib was imported. With `--python`, the interpreters (e.g. two
checkouts' environments) run interleaved on the same run, and the median of each figure is printed per
interpreter, with the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def measure(run_dir: Path) -> dict[str, Any]:
    """Import the report's path and build the report once, in this process."""
    start = time.perf_counter()
    from immunostrat.sponsor.publish import write_report

    imported = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="report-cost-") as scratch:
        start = time.perf_counter()
        out = write_report(run_dir, Path(scratch) / "report.html")
        built = time.perf_counter() - start
        size = out.stat().st_size
        start = time.perf_counter()
        write_report(run_dir, Path(scratch) / "again.html")
        again = time.perf_counter() - start
    return {
        "import_s": round(imported, 3),
        "report_s": round(built, 3),
        "again_s": round(again, 3),
        "bytes": size,
        "matplotlib": "matplotlib" in sys.modules,
    }


def interleaved(run_dir: Path, pythons: list[str], rounds: int) -> dict[str, Any]:
    """Each interpreter once per round, in order; the median of each figure per interpreter."""
    samples: dict[str, list[dict[str, Any]]] = {p: [] for p in pythons}
    load_start = os.getloadavg()[0]
    for _ in range(rounds):
        for python in pythons:
            out = subprocess.run(
                [python, __file__, str(run_dir)], capture_output=True, text=True, check=True, timeout=1800
            ).stdout
            samples[python].append(json.loads(out.strip().splitlines()[-1]))
    result: dict[str, Any] = {"rounds": rounds, "load_start": round(load_start, 2)}
    for python, runs in samples.items():
        result[python] = {
            "import_s": statistics.median(r["import_s"] for r in runs),
            "report_s": statistics.median(r["report_s"] for r in runs),
            "again_s": statistics.median(r["again_s"] for r in runs),
            "bytes": runs[-1]["bytes"],
            "matplotlib": runs[-1]["matplotlib"],
        }
    result["load_end"] = round(os.getloadavg()[0], 2)
    return result


def main() -> int:
    """Measure once in this process, or drive the given interpreters."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--python", action="append", default=[], help="an interpreter to time (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.python:
        print(json.dumps(interleaved(args.run_dir, args.python, args.rounds)))
    else:
        print(json.dumps(measure(args.run_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
