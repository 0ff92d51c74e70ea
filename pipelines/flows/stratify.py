"""The `stratify` flow: the `STRATIFY` definition (immunostrat.pipeline.selection), one task per step.

Launch checks run first (a bad setting fails the flow run with a one-line message, before any compute); the
run's model is resolved and verified there, once, and handed to the steps. In-memory partitions
(`partitions` > 1) run on a Dask task runner; a streaming run's partitions run one after another.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from immunostrat.config.run import StratifyParams
from immunostrat.errors import UserError
from immunostrat.flows.runner import PrefectRunner, call_flow, failed, flow_run_name, rename_flow_run
from immunostrat.pipeline import launch, run
from immunostrat.pipeline.engine.runfolder import RunOutputs
from immunostrat.reporting.artifacts import artifact_summary


def publish_artifacts(result: RunOutputs, min_cell_count: int) -> None:
    """A Markdown summary and a table of group counts in the Prefect UI (small counts suppressed)."""
    markdown, rows = artifact_summary(result.run_dir, min_cell_count=min_cell_count)
    create_markdown_artifact(markdown=markdown, key="stratify-summary", description="Run summary")
    if rows:
        create_table_artifact(table=rows, key="stratify-groups", description="Subjects per responder group")


@flow(name="stratify", flow_run_name=flow_run_name("stratify"), log_prints=True, validate_parameters=True)
def stratify_flow(params: StratifyParams) -> Any:
    """Ingest, validate, baseline, eligibility, score and write one run folder, then publish; returns its path."""
    try:
        plan = launch.plan_stratify(params)
        rename_flow_run("stratify", plan.ctx.run_id)
        result = run.execute(plan, PrefectRunner())
    except UserError as exc:
        return failed(exc)
    publish_artifacts(result, params.config.publish.min_cell_count)
    return str(result.run_dir)


def run_stratify_flow(params: StratifyParams) -> str:
    """Call the stratify flow in this process (on a Dask task runner for in-memory partitions); returns the run
    folder, or raises the user error that stopped it."""
    return call_flow(stratify_flow, params, partitioned=True)
