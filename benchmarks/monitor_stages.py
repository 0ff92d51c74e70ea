"""Time each step of the monitor definition in one process: seconds and peak RSS after each step (issue 15).

Usage: python benchmarks/monitor_stages.py DATA OUTDIR [--cpu]
DATA is a follow-up cohort folder written by `benchmarks/gen_followup.py` (labs, follow-up labs, subjects, visits
and, when present, events). The run is `immunostrat monitor --engine local` with `benchmarks/monitor.py`'s
`--as-of`; the steps are the definition's own (`immunostrat.pipeline.follow_up.MONITOR`), timed by
`benchmarks/stages.py`'s runner. `--cpu` counts this process's CPU seconds instead of wall seconds (steadier on a
shared machine; with POLARS_MAX_THREADS=1 it is the work a step does). The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from monitor import commands  # noqa: E402  (benchmarks/ is a folder of scripts)
from run import _key_env  # noqa: E402
from stages import TimingRunner  # noqa: E402

import immunostrat.pipeline.run as pipeline_run  # noqa: E402
from immunostrat.cli.main import main as cli_main  # noqa: E402


class PeakTimingRunner(TimingRunner):
    """`TimingRunner` that also records the process's peak RSS (MB) after each step and can count CPU seconds."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.peak_mb: dict[str, int] = {}

    def _timed(self, name: str, work: Callable[[], Any]) -> Any:
        start = self.clock()
        out = work()
        self.times[name] = round(self.times.get(name, 0.0) + self.clock() - start, 3)
        self.peak_mb[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        return out


def main() -> int:
    """Run monitor on DATA into OUTDIR with every step timed; print the figures as JSON."""
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    clock = time.process_time if "--cpu" in sys.argv[3:] else time.perf_counter
    runner = PeakTimingRunner(clock)
    pipeline_run.LocalRunner = lambda: runner  # the run's runner is this one
    argv = commands(data, out)["monitor --engine local"][1:]
    os.environ.update(_key_env())  # publishing needs a pseudonym key: the benchmarks' throwaway one
    start = clock()
    code = cli_main(argv)
    total = round(clock() - start, 2)
    unit = "cpu_s" if clock is time.process_time else "wall_s"
    print(json.dumps({unit: {"total": total, **runner.times}, "peak_rss_mb_after": runner.peak_mb}))
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
