"""Run a pipeline definition's steps as Prefect tasks: one task per step, mapped over partitions, never per subject.

Tasks are coarse and never persist their results (frames pass between tasks in memory; the run folder on disk is
the record). Tasks that read or write files retry transient OS errors (1 s, then 5 s); a bad input is not retried.
A user error inside a task (`immunostrat.errors.UserError`) fails the task with its one-line message as the state
message, without a traceback: the flow then fails with the same message, which the UI shows and the command line
prints, with the error's exit code.

A flow the command line calls in this process (`flow_heartbeats`) sends no heartbeats unless the team set Prefect's
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`: Prefect joins its heartbeat thread when a flow run ends, about 0.9 s per run,
and only an automation the team creates reads heartbeats (docs/operations.md, "What Prefect costs").
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect import Task, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient
from prefect.context import FlowRunContext, SettingsContext, get_settings_context
from prefect.results import ResultRecord
from prefect.states import Failed, State
from prefect.utilities.annotations import quote

from immunostrat.errors import UserError, as_payload, from_payload, is_payload
from immunostrat.ingest.io import InputError

#: Seconds before the first and second retry of a task that reads or writes files.
IO_RETRY_DELAYS = [1, 5]


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


def run_step(fn: Callable[..., Any], *args: Any) -> Any:
    """The body of every step's task: a user error becomes a Failed state with its message (no traceback)."""
    try:
        return fn(*args)
    except UserError as exc:
        return Failed(message=str(exc), data=as_payload(exc))


def run_partition(fn: Callable[..., Any], partition: Any, ctx: Any) -> Any:
    """The body of a phase's task when partitions are mapped onto the task runner (named parameters to map)."""
    return run_step(fn, partition, ctx)


def result_of(state: State[Any]) -> Any:
    """A task's or flow's result; a user error is raised again as itself, any other failure with its traceback."""
    if state.is_completed() and isinstance(state.data, ResultRecord):
        # Held in memory (results are never persisted): what `state.result()` returns, without its hop through
        # Prefect's event-loop thread (0.1-0.2 s to start that thread on the first call of a busy process).
        return state.data.result
    if state.is_failed():
        data = state.result(raise_on_failure=False)
        if is_payload(data):
            raise from_payload(data)
    return state.result()


class _NoEmptyTraceback(logging.Filter):
    """Prefect logs a failed state with exc_info outside any exception, which prints 'NoneType: None'."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


def quiet_user_errors() -> None:
    """Install the filter above on Prefect's run loggers (once)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoEmptyTraceback) for f in logger.filters):
            logger.addFilter(_NoEmptyTraceback())


class PrefectRunner:
    """`immunostrat.pipeline.engine.execute.Runner` on Prefect: each step a task named after it, partitions mapped."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, bool, Callable[..., Any]], Task[..., Any]] = {}
        quiet_user_errors()

    def _task(self, name: str, io: bool, body: Callable[..., Any] = run_step) -> Task[..., Any]:
        key = (name, io, body)
        if key not in self._tasks:
            options: dict[str, Any] = {"name": name, "cache_policy": NO_CACHE, "persist_result": False}
            if io:
                options.update(
                    retries=len(IO_RETRY_DELAYS),
                    retry_delay_seconds=IO_RETRY_DELAYS,
                    retry_condition_fn=_retry_transient,
                )
            self._tasks[key] = task(**options)(body)
        return self._tasks[key]

    def call(self, name: str, fn: Callable[..., Any], *args: Any, io: bool = False) -> Any:
        # Quoted: Prefect would walk every argument (definitions, settings, frames' containers) twice per task
        # looking for upstream futures, and there are none: the steps run in order in this flow.
        quoted = [quote(a) for a in args]
        state: State[Any] = self._task(name, io)(quote(fn), *quoted, return_state=True)  # type: ignore[assignment]
        return result_of(state)

    def map(self, name: str, fn: Callable[..., Any], items: Sequence[Any], ctx: Any, *, sequential: bool) -> list[Any]:
        if sequential or len(items) <= 1:
            # One partition at a time (streaming bounds memory this way): one task run each, in order.
            return [self.call(name, fn, item, ctx) for item in items]
        # Mapped with named parameters: `run_step`'s `*args` cannot be mapped over.
        # Not quoted as in `call`: Dask's workers are handed the annotation itself, not its value.
        futures = self._task(name, False, run_partition).map(fn=unmapped(fn), partition=list(items), ctx=unmapped(ctx))
        futures.wait()
        return [result_of(f.state) for f in futures]


def dask_task_runner(address: str | None, workers: int = 2) -> Any:
    """A prefect-dask task runner: the given scheduler, or a local cluster of `workers` threads.

    Threads, not processes, locally: polars releases the GIL, and threads avoid pickling partitions.
    """
    from prefect_dask import DaskTaskRunner  # start-up time: Dask loads only for in-memory partitions

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": False, "dashboard_address": None},
    )


def flow_run_name(flow_name: str) -> Callable[[], str]:
    """A first name for a flow run: the flow, the deployment (or 'ad-hoc') and the UTC time; renamed after launch."""

    def name() -> str:
        where = deployment_name() or "ad-hoc"
        return f"{flow_name}-{where}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"

    return name


def _flow_run_context() -> Any:
    """The running (sync) flow run's context, or None outside a flow run."""

    context = FlowRunContext.get()
    if context is None or context.flow_run is None or not isinstance(context.client, SyncPrefectClient):
        return None  # our flows are sync: their engine's client is a SyncPrefectClient
    return context


def deployment_name() -> str | None:
    """The deployment of the running flow run, or None for an ad-hoc run.

    Read through the flow engine's own client, one API call and only for a deployed run: Prefect's
    `prefect.runtime.deployment.name` opens a new client and reads the flow run first (50-190 ms measured).
    """
    context = _flow_run_context()
    if context is None or context.flow_run.deployment_id is None:
        return None
    return str(context.client.read_deployment(context.flow_run.deployment_id).name)


def rename_flow_run(flow_name: str, run_id: str) -> None:
    """Name the running flow run after what ran: flow, run id and, when scheduled, the deployment."""
    context = _flow_run_context()
    if context is None:
        return
    deployed = deployment_name()
    name = f"{flow_name}-{run_id}" + (f"-{deployed}" if deployed else "")
    context.client.update_flow_run(context.flow_run.id, name=name)


@contextmanager
def flow_heartbeats() -> Iterator[None]:
    """Around a flow called in this process: Prefect's flow-run heartbeats only if the team configured them.

    Heartbeats let an automation mark a flow run whose process died as crashed; a command-line run is attended
    (its exit code and terminal show a crash), and each flow run pays for them when it ends (Prefect joins the
    heartbeat thread, which sleeps in 1 s steps: 0.9 s per run measured). So they are off unless
    `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` is set (environment or Prefect profile; then Prefect's value applies).
    Served deployments run in processes Prefect starts and keep Prefect's default (every 180 s).
    """

    context = get_settings_context()
    if "heartbeat_frequency" in context.settings.flows.model_fields_set:
        yield
        return
    # A copy of the current settings with one field changed: Prefect's `temporary_settings` builds its copy by
    # reading the environment, profiles and .env files again and validating every setting (0.1-0.25 s).
    flows = context.settings.flows.model_copy(update={"heartbeat_frequency": None})
    with SettingsContext(profile=context.profile, settings=context.settings.model_copy(update={"flows": flows})):
        yield


def call_flow(flow_to_call: Any, params: Any, *, partitioned: bool = False) -> str:
    """Call a flow in this process with its params (heartbeats as `flow_heartbeats` decides); returns its result
    as text (a run folder or model id), or raises the user error that stopped it.

    `partitioned`: the params choose in-memory partitions (`partitions` > 1 without streaming), which run on a
    Dask task runner (`dask_task_runner`); a streaming run's partitions run one after another.
    """
    if partitioned and params.partitions > 1 and not params.streaming:
        flow_to_call = flow_to_call.with_options(task_runner=dask_task_runner(params.dask_address))
    with flow_heartbeats():
        return str(result_of(flow_to_call(params, return_state=True)))


def failed(exc: UserError) -> State[Any]:
    """The final state of a flow stopped by a user error: its one-line message, its exit code as data."""
    return Failed(message=str(exc), data=as_payload(exc))
