"""Run a plan in this process (`--engine local`, `validate`, the model commands); Prefect's flows run the same plans.

    plan = launch.plan_stratify(params)   # every launch check, before any compute
    outputs = run.execute(plan)           # the pipeline definition, with the plan's executor

`execute` takes the output folder's run lock, runs the pipeline into a staged run folder and renames it into
place (`immunostrat.pipeline.engine.execute`). `validate` and `labelled_strata` run a pipeline's steps without a run
folder and return its tables.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.ingest.atomic import run_lock
from immunostrat.pipeline import launch
from immunostrat.pipeline.engine.execute import LocalRunner, Runner, run_steps
from immunostrat.pipeline.engine.execute import execute as execute_pipeline
from immunostrat.pipeline.engine.runfolder import RunOutputs
from immunostrat.pipeline.launch import Plan


def execute(plan: Plan, runner: Runner | None = None) -> RunOutputs:
    """Run a plan into `plan.out/<run_id>`, one run at a time per output folder.

    Raises:
        RunStopped: a gate stopped the run (its run folder is written, status "failed").
        UserError: an input turned out unusable while reading it (no run folder).
    """
    assert plan.out is not None
    # One run at a time per output folder: a second run fails fast naming the holder, never interleaves.
    with run_lock(plan.out, run_id=plan.ctx.run_id) as lock:
        cleaned = [p.name for p in lock.remove_stale_staging()]  # leftovers of runs that were killed
        return execute_pipeline(
            plan.pipeline,
            plan.executor,
            runner or LocalRunner(),
            plan.ctx,
            out=plan.out,
            run_id=plan.ctx.run_id,
            manifest={"cleaned_up": cleaned},
        )


def stratify(params: Any) -> RunOutputs:
    """One stratify run in this process: launch checks, then the `STRATIFY` definition."""
    return execute(launch.plan_stratify(params))


def monitor(params: Any) -> RunOutputs:
    """One monitor run in this process: launch checks, then the `MONITOR` definition."""
    return execute(launch.plan_monitor(params))


@dataclass(frozen=True)
class Checked:
    """What `validate` found: the run's counts and every quarantined row, in single-pass order."""

    counts: dict[str, Any]
    quarantine: pl.DataFrame


def validate(params: Any) -> Checked:
    """Ingest, harmonise and validate (the `VALIDATE` prefix of stratify), streaming by the same rule."""
    plan = launch.plan_validate(params)
    with tempfile.TemporaryDirectory(prefix="immunostrat-validate-") as scratch:
        steps = run_steps(plan.pipeline, plan.executor, LocalRunner(), plan.ctx, Path(scratch))
        quarantine = steps.view.frame("quarantine")
        if not steps.view.whole:  # streamed partition by partition: back to single-pass order
            quarantine = plan.pipeline.order["quarantine"](quarantine, steps.view, plan.ctx)
    return Checked(counts=steps.manifest["counts"], quarantine=quarantine)


@dataclass(frozen=True)
class Labelled:
    """Baseline strata (no scores) with their counts and inputs' provenance, before outcomes are joined."""

    strata: pl.DataFrame
    counts: dict[str, Any]
    inputs: Any  # `immunostrat.ingest.inputs.Inputs`
    endpoints: pl.DataFrame | None = None  # with `train --endpoint`: the endpoint rows the outcome comes from
    protocol: Any = None  # `immunostrat.config.run.Protocol` of the run (its endpoint definition)


def labelled_steps(plan: Plan, runner: Runner | None = None) -> Labelled:
    """Run the `LABELLED` definition of a plan (`launch.plan_labelled`) and return its strata."""
    with tempfile.TemporaryDirectory(prefix="immunostrat-labelled-") as scratch:
        steps = run_steps(plan.pipeline, plan.executor, runner or LocalRunner(), plan.ctx, Path(scratch))
    if steps.stop is not None:
        raise steps.stop
    endpoints = steps.view.frame("endpoints") if "endpoints" in plan.pipeline.kept else None
    return Labelled(
        strata=steps.view.frame("strata"),
        counts=steps.manifest["counts"],
        inputs=steps.view.source,
        endpoints=endpoints,
        protocol=plan.ctx.protocol,
    )
