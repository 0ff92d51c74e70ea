"""The `monitor` flow: the `MONITOR` definition (immunostrat.followup_definitions), one task per step.

Launch checks run first (a bad setting fails the flow run with a one-line message, before any compute). The run's
summary (endpoint rates, and by predicted group with `--strata`) becomes a Markdown artifact in the UI.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from immunostrat import launch, run
from immunostrat.config import MonitorParams
from immunostrat.engine.runfolder import RunOutputs
from immunostrat.errors import UserError
from immunostrat.flows.runner import PrefectRunner, failed, flow_run_name, rename_flow_run, result_of
from immunostrat.flows.stratify import dask_task_runner


def publish_artifacts(result: RunOutputs, min_cell_count: int) -> None:
    """Endpoint rates as a table and a Markdown summary in the Prefect UI (small counts suppressed)."""
    from immunostrat.followup.summary import monitor_summary

    markdown, rows = monitor_summary(result.run_json, min_cell_count=min_cell_count)
    create_markdown_artifact(markdown=markdown, key="monitor-summary", description="Follow-up summary")
    if rows:
        create_table_artifact(table=rows, key="monitor-endpoints", description="Endpoint rates per landmark")


@flow(name="monitor", flow_run_name=flow_run_name("monitor"), log_prints=True, validate_parameters=True)
def monitor_flow(params: MonitorParams) -> Any:
    """Disease activity per visit and response endpoints at landmarks; writes one run folder and returns its path."""
    try:
        plan = launch.plan_monitor(params)
        rename_flow_run("monitor", plan.ctx.run_id)
        result = run.execute(plan, PrefectRunner())
    except UserError as exc:
        return failed(exc)
    publish_artifacts(result, params.config.publish.min_cell_count)
    return str(result.run_dir)


def run_monitor_flow(params: MonitorParams) -> str:
    """Call the monitor flow in this process; returns the run folder, or raises the user error that stopped it."""
    flow_to_run = monitor_flow
    if params.partitions > 1 and not params.streaming:
        flow_to_run = monitor_flow.with_options(task_runner=dask_task_runner(params.dask_address))
    return str(result_of(flow_to_run(params, return_state=True)))
