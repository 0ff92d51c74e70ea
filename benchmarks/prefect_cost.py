"""Prefect's own cost, apart from immunostrat's work: importing it, the first flow call, each flow run and task run.

Usage: PREFECT_API_URL=http://127.0.0.1:4299/api python benchmarks/prefect_cost.py [TASKS]

Against the server the environment names (benchmarks/run.py starts one and passes it), in one fresh process
that first loads what `stratify` has loaded when it turns to Prefect (its launch checks):

- `import prefect`;
- importing the stratify flow's module beyond that (mostly declaring the flow: Prefect builds the JSON schema
  of its parameters);
- the first call of a one-task flow with one parameter, called as the command line calls a flow (heartbeats off,
  `immunostrat.flows.runner.flow_heartbeats`): client set-up, serialising the parameters (which imports FastAPI),
  flow and flow-run registration;
- later calls of it, the per-flow-run floor, with heartbeats off and on (Prefect's default: the engine joins its
  heartbeat thread when a run ends);
- a flow of TASKS trivial steps run one after another through `PrefectRunner.call` (one task run each, as a
  pipeline step): its time beyond the one-task flow, divided by the extra tasks, is the overhead of one task run.

Prints one JSON line of seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any


def _seconds(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _identity(x: int) -> int:
    return x


def main() -> int:
    """Measure and print the figures as one JSON line (last line)."""
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    # What `stratify` has loaded when it turns to Prefect (its launch checks ran): not Prefect's cost.
    import immunostrat.cli.runs
    import immunostrat.pipeline.launch
    import immunostrat.pipeline.run  # noqa: F401

    start = time.perf_counter()
    from prefect import flow

    imported = time.perf_counter() - start
    start = time.perf_counter()
    from immunostrat.flows import stratify  # noqa: F401 - its import is what is measured
    from immunostrat.flows.runner import PrefectRunner, flow_heartbeats

    flow_module = time.perf_counter() - start

    @flow
    def one_task(settings: dict[str, int]) -> int:
        return int(PrefectRunner().call("step", _identity, settings["x"]))

    @flow
    def many_tasks(n: int) -> int:
        runner = PrefectRunner()
        return sum(runner.call("step", _identity, i) for i in range(n))

    with flow_heartbeats():
        first = _seconds(lambda: one_task({"x": 1}))
        later = min(_seconds(lambda: one_task({"x": 1})) for _ in range(3))
        many = _seconds(lambda: many_tasks(tasks))
    # Prefect's default (180 s): the flow's end waits for the heartbeat thread's current 1 s sleep.
    with_heartbeats = min(_seconds(lambda: one_task({"x": 1})) for _ in range(3))
    print(
        json.dumps(
            {
                "import_prefect_s": round(imported, 3),
                "import_stratify_flow_s": round(flow_module, 3),
                "first_flow_call_s": round(first, 3),
                "later_flow_call_s": round(later, 3),
                "later_flow_call_with_heartbeats_s": round(with_heartbeats, 3),
                "per_task_s": round((many - later) / (tasks - 1), 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
