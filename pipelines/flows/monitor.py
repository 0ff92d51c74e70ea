"""The `monitor` flow: the `MONITOR` definition (immunostrat.pipeline.follow_up), one task per step.

Launch checks run first (a bad setting fails the flow run with a one-line message, before any compute). The run's
summary (endpoint rates, and by predicted group with `--strata`) becomes a Markdown artifact in the UI.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from immunostrat.config.run import MonitorParams
from immunostrat.errors import UserError
from immunostrat.flows.runner import PrefectRunner, call_flow, failed, flow_run_name, rename_flow_run
from immunostrat.followup.summary import monitor_summary
from immunostrat.pipeline import launch, run
from immunostrat.pipeline.engine.runfolder import RunOutputs

#: The Prefect event a monitor run emits when its findings changed since the previous run (docs/operations.md).
CHANGED_EVENT = "immunostrat.monitor.changed"


def emit_changes(result: RunOutputs) -> Any:
    """Emit `CHANGED_EVENT` when anything changed since the previous monitor run: counts per kind and change, and
    each change with the subject's pseudonym (never its identifier). Returns the event, or None when nothing
    changed or the runs were not comparable. Events reach automations only through a long-lived server."""
    changes = result.run_json.get("changes", {})
    counts = changes.get("counts", {})
    if not any(n for by_change in counts.values() for n in by_change.values()):
        return None
    return emit_event(
        event=CHANGED_EVENT,
        resource={"prefect.resource.id": f"immunostrat.monitor.{result.run_dir.parent.name}"},
        payload={
            "run_id": result.run_json.get("run_id"),
            "previous_run": changes.get("previous_run"),
            "counts": counts,
            "changes": changes.get("items", []),
        },
    )


def publish_artifacts(result: RunOutputs, min_cell_count: int) -> None:
    """Endpoint rates as a table and a Markdown summary in the Prefect UI (small counts suppressed)."""
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
    emit_changes(result)
    return str(result.run_dir)


def run_monitor_flow(params: MonitorParams) -> str:
    """Call the monitor flow in this process; returns the run folder, or raises the user error that stopped it."""
    return call_flow(monitor_flow, params, partitioned=True)
