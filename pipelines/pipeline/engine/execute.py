"""Run a pipeline definition with an executor and a runner: the one place the shape of a run is written.

`run_steps` produces the partitions, runs each phase over them and each gate over the whole run, merging
counts as it goes; a gate that stops the run ends the steps. `execute` does that inside a staged run folder,
then writes the pipeline's outputs and run.json (also for a stopped run, which is recorded as "failed"), renames
the folder into place and runs the finishing steps of a completed run.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from immunostrat.errors import RunStopped
from immunostrat.pipeline.engine.definition import Finish, Gate, Output, Phase, Pipeline, View
from immunostrat.pipeline.engine.executors import Produced, UnitResult
from immunostrat.pipeline.engine.runfolder import (
    RunOutputs,
    read_manifest,
    staged_run_folder,
    write_manifest,
    write_table,
)

SCRATCH = ".parts"  # inside the run's staging folder, so a killed run's scratch goes with its staging


class Executor(Protocol):
    name: str
    produce_step: str
    sequential: bool

    def produce(self, pipeline: Pipeline, ctx: Any, scratch: Path) -> Produced: ...

    def unit(
        self, pipeline: Pipeline, phase: Phase, keep: frozenset[str], scratch: Path
    ) -> Callable[..., UnitResult]: ...

    def view(self, pipeline: Pipeline, produced: Produced, partitions: Sequence[Any], ctx: Any) -> View: ...

    def output(self, view: View, table: str, contract: str | None) -> Any: ...


class Runner(Protocol):
    """Runs the steps: directly (`LocalRunner`) or as Prefect tasks (`immunostrat.flows.runner.PrefectRunner`)."""

    def call(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False) -> Any: ...

    def map(
        self, name: str, fn: Callable[..., Any], items: Sequence[Any], ctx: Any, *, sequential: bool
    ) -> list[Any]: ...


class LocalRunner:
    """Calls each step in this process, partitions one after another."""

    def call(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False) -> Any:
        return fn(*args)

    def map(self, name: str, fn: Callable[..., Any], items: Sequence[Any], ctx: Any, *, sequential: bool) -> list[Any]:
        return [fn(item, ctx) for item in items]


def merge_counts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum per-partition counts: numbers add up, dicts merge key by key, other values (paths) are the first's.

    A dict named `*_by_*` is a frequency table: most frequent first, ties by name (as one pass orders it).
    """

    def merge(values: list[Any], key: str = "") -> Any:
        first = values[0]
        if isinstance(first, Mapping):
            keys = list(dict.fromkeys(k for v in values for k in v))
            merged = {k: merge([v[k] for v in values if k in v], k) for k in keys}
            if "_by_" in key:
                merged = dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))
            return merged
        if isinstance(first, int) and not isinstance(first, bool):
            return sum(values)
        return first

    parts = [p for p in parts if p]
    return merge(list(parts)) if parts else {}


def deep_update(target: dict[str, Any], updates: Mapping[str, Any]) -> None:
    """Merge `updates` into `target`, dict by dict."""
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value


@dataclass
class StepsResult:
    """What the steps left: the partitions, the merged view, run.json entries and the stop, if a gate stopped."""

    produced: Produced
    partitions: list[Any]
    view: View
    manifest: dict[str, Any] = field(default_factory=dict)
    stop: RunStopped | None = None


def _runs(step: Gate | Finish | Output, ctx: Any) -> bool:
    return step.when is None or bool(step.when(ctx))


def run_steps(pipeline: Pipeline, executor: Executor, runner: Runner, ctx: Any, scratch: Path) -> StepsResult:
    """Produce the partitions, then run every phase and gate of `pipeline` in order.

    A gate's `RunStopped` ends the steps and is returned (with the run.json entries it carries), not raised:
    the caller still writes what the run produced.
    """
    produced: Produced = runner.call(executor.produce_step, executor.produce, pipeline, ctx, scratch, io=True)
    partitions = list(produced.partitions)
    manifest: dict[str, Any] = {"counts": {}}
    view = executor.view(pipeline, produced, partitions, ctx)
    for index, step in enumerate(pipeline.steps):
        if isinstance(step, Phase):
            unit = executor.unit(pipeline, step, pipeline.kept_after(index), scratch)
            results: list[UnitResult] = runner.map(step.name, unit, partitions, ctx, sequential=executor.sequential)
            partitions = [r.partition for r in results]
            deep_update(manifest["counts"], merge_counts([r.counts for r in results]))
            view = executor.view(pipeline, produced, partitions, ctx)
        elif _runs(step, ctx):
            try:
                deep_update(manifest, runner.call(step.name, step.run, view, ctx, manifest))
            except RunStopped as stop:
                deep_update(manifest, stop.manifest)
                return StepsResult(produced, partitions, view, manifest, stop)
    return StepsResult(produced, partitions, view, manifest)


def _write_outputs(
    outputs: Sequence[Output], executor: Executor, result: StepsResult, staging: Path, run_id: str
) -> dict[str, Any]:
    written = {}
    for output in outputs:
        if result.stop is not None and not output.on_failure:
            continue
        source = executor.output(result.view, output.table, output.contract)
        written[output.file] = write_table(source, staging / output.file, run_id)
    return written


def execute(
    pipeline: Pipeline,
    executor: Executor,
    runner: Runner,
    ctx: Any,
    *,
    out: str | Path,
    run_id: str,
    manifest: Mapping[str, Any],
) -> RunOutputs:
    """Run `pipeline` into the run folder `out/run_id`, written atomically; then its finishing steps.

    `manifest` holds the run.json entries known before compute (parameters, protocol, model). When a gate stops
    the run, the folder is still written (status "failed", the outputs marked `on_failure`) and the stop is
    raised after it is in place.
    """
    with staged_run_folder(out, run_id) as staging:
        scratch = staging / SCRATCH
        result = run_steps(pipeline, executor, runner, ctx, scratch)
        record = dict(manifest)
        record.update(pipeline.source.describe(result.produced.source, ctx))
        record["partitions"] = len(result.partitions)
        if not result.produced.whole:
            record["streaming"] = True
        deep_update(record, result.manifest)
        if result.stop is not None:
            record.update(status="failed", error=str(result.stop))
        else:
            record["status"] = "completed"
        record["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        wanted = tuple(o for o in pipeline.outputs if _runs(o, ctx))  # an output with `when` only for its runs
        outputs = runner.call("write", _write_outputs, wanted, executor, result, staging, run_id, io=True)
        shutil.rmtree(scratch, ignore_errors=True)
        write_manifest(staging, run_id, record, outputs)
    run_dir = Path(out) / run_id
    if result.stop is not None:
        raise result.stop
    for step in pipeline.finish:
        if _runs(step, ctx):
            runner.call(step.name, step.run, run_dir, ctx, io=step.io)
    return RunOutputs(run_dir=run_dir, run_json=read_manifest(run_dir))
