"""Prefect's own cost, apart from immunostrat's work: importing it, the first flow call, each flow run and task run.

Usage: PREFECT_API_URL=http://127.0.0.1:4299/api python benchmarks/prefect_cost.py [TASKS]

Against the server the environment names (benchmarks/run.py starts one and passes it), in one fresh process:
`import prefect`; the first call of a one-task flow (client set-up, flow and task run registration); later calls
of it, which are the per-flow-run floor, with heartbeats off (as immunostrat's command line runs a flow,
`immunostrat.flows.runner.flow_heartbeats`) and on (Prefect's default: the engine joins its heartbeat thread when
a run ends); and a flow of TASKS trivial tasks run one after another (heartbeats off), whose time beyond the
one-task flow, divided by the extra tasks, is the overhead of one task run. Prints one JSON line of seconds.
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


def main() -> int:
    """Measure and print the figures as one JSON line (last line)."""
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    start = time.perf_counter()
    from prefect import flow, task
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    imported = time.perf_counter() - start

    @task
    def identity(x: int) -> int:
        return x

    @flow
    def one_task() -> int:
        return identity(1)

    @flow
    def many_tasks(n: int) -> int:
        return sum(identity(i) for i in range(n))

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        first = _seconds(one_task)
        later = min(_seconds(one_task) for _ in range(3))
        many = _seconds(lambda: many_tasks(tasks))
    # Prefect's default (180 s): the flow's end waits for the heartbeat thread's current 1 s sleep.
    with_heartbeats = min(_seconds(one_task) for _ in range(3))
    print(
        json.dumps(
            {
                "import_prefect_s": round(imported, 3),
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
