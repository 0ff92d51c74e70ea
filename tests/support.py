"""Constants and small types shared by tests (importable, unlike conftest)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl

AS_OF = dt.date(2026, 11, 1)
#: The harmonised-lab columns the follow-up derivations read, and an empty table of them.
LAB_SCHEMA: dict[str, pl.DataType] = {
    "study_id": pl.String(),
    "subject_id": pl.String(),
    "analyte": pl.String(),
    "value": pl.Float64(),
    "value_high": pl.Float64(),
    "censoring": pl.String(),
    "ref_low": pl.Float64(),
    "ref_high": pl.Float64(),
    "collected_date": pl.Date(),
}
NO_LABS = pl.DataFrame(schema=LAB_SCHEMA)


@dataclass(frozen=True)
class Cohort:
    """Paths of a generated cohort."""

    labs: Path
    subjects: Path
    outcomes: Path


def latest_flow_run_tasks(at_least: int = 0, timeout_s: float = 20.0) -> tuple[str, Counter[str]]:
    """The newest flow run's name and its task runs per task name (runs are named `<task name>-<suffix>`).

    The server records task runs from the events the flow sends, after the flow has returned, so a read right
    after the run can miss the last ones on a busy machine: read again until `at_least` task runs are there or
    `timeout_s` has passed (the caller's assertion then shows what was missing).
    """
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
        while True:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            if len(tasks) >= at_least or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return flow_run.name, Counter(t.name.rsplit("-", 1)[0] for t in tasks)
