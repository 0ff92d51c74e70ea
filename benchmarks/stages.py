"""Time each step of the stratify definition in one process; prints one JSON line of seconds per step (last line).

Usage: python benchmarks/stages.py LABS SUBJECTS OUTDIR
Called by benchmarks/run.py; useful alone when profiling (e.g. under py-spy or pyinstrument). The steps are the
pipeline definition's own (`immunostrat.pipeline.selection.STRATIFY`), run by a runner that times each one: nothing here
restates their order.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from immunostrat.config.run import HarmoniseConfig, RunConfig, StratifyParams, ValidationConfig
from immunostrat.pipeline import launch, run
from immunostrat.pipeline.engine.execute import LocalRunner


class TimingRunner(LocalRunner):
    """Runs the steps in this process and adds up the seconds each step name takes."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def _timed(self, name: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = work()
        self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - start, 3)
        return out

    def call(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False) -> Any:
        return self._timed(name, lambda: fn(*args))

    def map(self, name: str, fn: Callable[..., Any], items: Sequence[Any], ctx: Any, *, sequential: bool) -> list[Any]:
        return list(self._timed(name, lambda: [fn(item, ctx) for item in items]))


def main() -> int:
    labs, subjects, out = sys.argv[1:4]
    cfg = RunConfig(
        harmonise=HarmoniseConfig(ifn_default_method="MEDIAN_FC_21"),
        validation=ValidationConfig(as_of=dt.date(2026, 11, 1)),
    )
    runner = TimingRunner()
    start = time.perf_counter()
    plan = launch.plan_stratify(StratifyParams(labs=[labs], subjects=subjects, out=out, config=cfg))
    runner.times["launch"] = round(time.perf_counter() - start, 3)
    run.execute(plan, runner)
    print(json.dumps(runner.times))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
