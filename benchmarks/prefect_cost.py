"""Prefect's own cost, apart from immunostrat's work: importing it, the first flow call, and each task run.

Usage: PREFECT_API_URL=http://127.0.0.1:4299/api python benchmarks/prefect_cost.py [TASKS]

Against the server the environment names (benchmarks/run.py starts one and passes it), in one fresh process:
`import prefect`; the first call of a one-task flow (client set-up, flow and task run registration); a second
call of it (the per-flow-run floor); and a flow of TASKS trivial tasks run one after another, whose time beyond
the one-task flow, divided by the extra tasks, is the overhead of one task run. Prints one JSON line of seconds.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    """Measure and print the figures as one JSON line (last line)."""
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    start = time.perf_counter()
    from prefect import flow, task

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

    start = time.perf_counter()
    one_task()
    first = time.perf_counter() - start
    start = time.perf_counter()
    one_task()
    second = time.perf_counter() - start
    start = time.perf_counter()
    many_tasks(tasks)
    many = time.perf_counter() - start
    print(
        json.dumps(
            {
                "import_prefect_s": round(imported, 3),
                "first_flow_call_s": round(first, 3),
                "later_flow_call_s": round(second, 3),
                "per_task_s": round((many - second) / (tasks - 1), 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
