"""Prefect flows `stratify` and `train`: a thin orchestration layer over `immunostrat.run`.

Tasks are coarse (one per stage) and never persist their frames as Prefect results: frames pass between
tasks in memory, and only the run folder on disk is the record. I/O tasks retry transient OS errors;
structural input errors (missing column, unreadable file) fail at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from immunostrat import run as pipeline
from immunostrat.config import Protocol, RunConfig, StratifyParams, TrainParams
from immunostrat.io import InputError


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry OS-level failures (a share that blinked); never retry a structurally bad input."""
    try:
        state.result()
    except InputError:
        return False
    except OSError:
        return True
    except Exception:
        return False
    return False


def io_task(name: str) -> Any:
    """A Prefect task that reads or writes files: OS errors are retried (1 s, then 5 s), bad input is not."""
    return task(
        name=name, retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_transient, cache_policy=NO_CACHE
    )


@io_task(name="ingest")
def ingest(labs: Sequence[str | Path], subjects: str | Path | None, **options: Any) -> pipeline.Inputs:
    """Read every input file and check its structure before any compute."""
    return pipeline.read_inputs(labs, subjects, **options)


@task(name="harmonise-validate", cache_policy=NO_CACHE)
def harmonise_validate(inputs: pipeline.Inputs, cfg: RunConfig) -> pipeline.Prepared:
    """Map, parse, convert and validate; split rows into accepted, outside panel and quarantined."""
    prepared = pipeline.prepare(inputs, cfg)
    c = prepared.counts
    get_run_logger().info(
        "rows read %d = accepted %d + outside panel %d + quarantined %d",
        c["rows_read"],
        c["accepted"],
        c["outside_panel"],
        c["quarantined"],
    )
    return prepared


@task(name="baseline-eligibility", cache_policy=NO_CACHE)
def baseline_eligibility(prepared: pipeline.Prepared, protocol: Protocol, cfg: RunConfig) -> pl.DataFrame:
    """Baseline profile and eligibility per subject."""
    return pipeline.build_strata(prepared, protocol, cfg)


@task(name="score", cache_policy=NO_CACHE)
def score(strata: pl.DataFrame, cfg: RunConfig, run_id: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Responder probability, group and per-feature contributions."""
    return pipeline.score(strata, cfg, run_id)


@io_task(name="write")
def write(out: str | Path, run_id: str, **kwargs: Any) -> pipeline.RunOutputs:
    """Write the run folder atomically."""
    return pipeline.write_run(out, run_id, **kwargs)


@task(name="harmonise-validate-partition", cache_policy=NO_CACHE)
def harmonise_validate_partition(inputs: pipeline.Inputs, cfg: RunConfig) -> pipeline.Prepared:
    """Harmonise and validate one subject partition."""
    return pipeline.prepare(inputs, cfg)


@task(name="baseline-score-partition", cache_policy=NO_CACHE)
def baseline_score_partition(
    prepared: pipeline.Prepared, protocol: Protocol, cfg: RunConfig, run_id: str
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Baseline, eligibility and scoring of one subject partition."""
    return pipeline.score(pipeline.build_strata(prepared, protocol, cfg), cfg, run_id)


def _prepare_mapped(parts: list[pipeline.Inputs], cfg: RunConfig) -> list[pipeline.Prepared]:
    # One task per partition (never per subject): Prefect's per-task overhead stays negligible.
    return list(harmonise_validate_partition.map(parts, cfg=unmapped(cfg)).result())


def _score_mapped(
    parts: list[pipeline.Prepared], protocol: Protocol, cfg: RunConfig, run_id: str
) -> list[tuple[pl.DataFrame, dict[str, Any]]]:
    futures = baseline_score_partition.map(
        parts, protocol=unmapped(protocol), cfg=unmapped(cfg), run_id=unmapped(run_id)
    )
    return list(futures.result())


@io_task(name="split-inputs")
def split_inputs(params: StratifyParams, scratch: Path) -> Any:
    """Streaming runs: check every input's structure, then split the inputs on disk by subject partition."""
    from immunostrat.streaming import split_inputs as split

    return split(params, scratch)


# Streaming runs: the same stage names per partition; tables go to scratch files and only counts come back.
@task(name="harmonise-validate-partition", cache_policy=NO_CACHE)
def validate_streamed_partition(split: Any, k: int, cfg: RunConfig, scratch: Any) -> dict[str, Any]:
    """Harmonise and validate one partition of a streaming run."""
    from immunostrat.streaming import validate_partition

    return validate_partition(split, k, cfg, scratch)


@task(name="baseline-score-partition", cache_policy=NO_CACHE)
def score_streamed_partition(k: int, scratch: Any, protocol: Protocol, cfg: RunConfig, run_id: str) -> dict[str, Any]:
    """Baseline, eligibility and scoring of one partition of a streaming run."""
    from immunostrat.streaming import score_partition

    return score_partition(k, scratch, protocol, cfg, run_id)


@io_task(name="publish")
def publish(run_dir: Path, cfg: Any) -> Any:
    """Publish the sponsor snapshot (the pseudonym key is loaded inside, never passed as a task input)."""
    from immunostrat.publish import publish_run

    return publish_run(run_dir, cfg)


FLOW_STAGES = pipeline.Stages(
    read_inputs=ingest,
    prepare=harmonise_validate,
    build_strata=baseline_eligibility,
    score=score,
    write_run=write,
    prepare_each=_prepare_mapped,
    score_each=_score_mapped,
    publish=publish,
    split=split_inputs,
    validate_partition=validate_streamed_partition,
    score_partition=score_streamed_partition,
)


def dask_task_runner(address: str | None, workers: int = 2) -> Any:
    """A prefect-dask task runner: the given scheduler, or a local cluster of `workers` threads.

    Threads, not processes, locally: polars releases the GIL, and threads avoid pickling partitions.
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": False, "dashboard_address": None},
    )


def run_stratify_flow(params: StratifyParams) -> str:
    """Call the stratify flow, on a Dask task runner when the run is partitioned in memory.

    A streaming run processes its partitions one after another (that is what bounds its memory), so it keeps
    the default runner.
    """
    flow_to_run = stratify_flow
    if params.partitions > 1 and not params.streaming:
        flow_to_run = stratify_flow.with_options(task_runner=dask_task_runner(params.dask_address))
    return flow_to_run(params)


def _publish_artifacts(result: pipeline.RunOutputs, min_cell_count: int) -> None:
    """A Markdown summary and a table of group counts in the Prefect UI (small counts suppressed)."""
    from immunostrat.report import artifact_summary

    markdown, rows = artifact_summary(result.run_dir, min_cell_count=min_cell_count)
    create_markdown_artifact(markdown=markdown, key="stratify-summary", description="Run summary")
    if rows:
        create_table_artifact(table=rows, key="stratify-groups", description="Subjects per responder group")


def _stratify_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters.get("params", {})
    out = params.get("out", "") if isinstance(params, dict) else getattr(params, "out", "")
    return f"stratify-{Path(str(out)).name or 'run'}"


@flow(name="stratify", flow_run_name=_stratify_run_name, log_prints=True, validate_parameters=True)
def stratify_flow(params: StratifyParams) -> str:
    """Ingest, validate, baseline, eligibility, score and write one run folder; returns its path."""
    result = pipeline.stratify(params, FLOW_STAGES)
    _publish_artifacts(result, params.config.publish.min_cell_count)
    return str(result.run_dir)


@flow(name="train", log_prints=True, validate_parameters=True)
def train_flow(params: TrainParams) -> str:
    """Fit a responder model on baseline features and outcomes; register it; returns the model id."""
    from immunostrat import training

    return training.train(params)
