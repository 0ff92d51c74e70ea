"""`immunostrat serve`: turn a schedules file into Prefect deployments of the flows it names, and serve them.

Schedules need a Prefect server that outlives this process (the temporary server of an ad-hoc run dies with
it), so `serve` refuses to start without `PREFECT_API_URL` pointing at a healthy server.

Data roots. Every path of a served run must stay inside the schedules file's `data_roots`, also for a run started
from the Prefect UI with edited parameters. The roots are therefore not one of the runs' parameters (anyone who
can start a deployment may edit those) and not written into `os.environ` for the runs to inherit: each served
flow is `confined_flow(flow, roots)`, the flow with the roots bound in its code. Its runs execute that flow object
(Prefect's runner starts a process for each run from the flow it was given), and it runs the flow's body under
`immunostrat.config.settings.scoped(...)` with those roots, so `launch.check_data_roots` checks against them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from pydantic import Field, field_validator

from immunostrat.config.run import MonitorParams, StratifyParams, _Model, read_yaml_mapping, validated
from immunostrat.config.settings import Settings, read_settings, scoped
from immunostrat.pipeline.launch import check_data_roots

START_SERVER_HINT = (
    "Start one in another terminal with `prefect server start`, then "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api` and run `immunostrat serve` again "
    "(see docs/operations.md)."
)


class _ScheduleBase(_Model):
    """What every schedule has, whichever flow it runs."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Deployment name (lowercase, digits, dashes).")
    cron: str = Field(description="Cron expression, e.g. '0 2 * * *' for 02:00 daily.")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in.")
    tags: list[str] = Field(default_factory=list, description="Prefect tags, e.g. the study id.")


class StratifySchedule(_ScheduleBase):
    """A scheduled stratify run: the stratify flow's full parameters (`StratifyParams`)."""

    flow: Literal["stratify"] = Field(description="The flow this schedule runs.")
    parameters: StratifyParams = Field(
        description="The stratify flow's parameters. Leave config.validation.as_of unset so that each run uses "
        "its own day."
    )


class MonitorSchedule(_ScheduleBase):
    """A scheduled monitor run: the monitor flow's full parameters (`MonitorParams`)."""

    flow: Literal["monitor"] = Field(description="The flow this schedule runs.")
    parameters: MonitorParams = Field(
        description="The monitor flow's parameters (visits required). Leave config.validation.as_of unset so that "
        "each run uses its own day."
    )


# One variant per flow, told apart by `flow`.
Schedule = Annotated[StratifySchedule | MonitorSchedule, Field(discriminator="flow")]

#: Keys of a schedule in the flat layout of schedules files written before `flow:` (read as stratify).
_FLAT_KEYS = frozenset(StratifyParams.model_fields)


def _upgrade_flat(entry: Any) -> Any:
    """A flat schedule (stratify parameters beside `cron`, as before `flow:` existed) in today's layout."""
    if not isinstance(entry, dict) or "flow" in entry or "parameters" in entry:
        return entry
    base = {k: v for k, v in entry.items() if k not in _FLAT_KEYS}
    return {**base, "flow": "stratify", "parameters": {k: v for k, v in entry.items() if k in _FLAT_KEYS}}


class ScheduleFile(_Model):
    """The schedules file: the data roots, and a list of scheduled flow runs."""

    data_roots: list[str] = Field(
        min_length=1,
        description="Folders every input, output, registry and protocol path must stay inside (no '..', no links "
        "out). Kept out of the runs' parameters, which anyone who can start a deployment may edit.",
    )
    schedules: list[Schedule] = Field(min_length=1, description="Scheduled flow runs, each naming its flow.")

    @field_validator("schedules", mode="before")
    @classmethod
    def _flat_is_stratify(cls, value: Any) -> Any:
        return [_upgrade_flat(e) for e in value] if isinstance(value, list) else value


def load_schedules(path: Path) -> ScheduleFile:
    """Read and validate a schedules YAML file (and each run's parameters and paths)."""
    raw = read_yaml_mapping(path, "schedules file", allow_empty=False)
    parsed = validated(ScheduleFile, raw, f"schedules file {path}")
    with scoped(served_settings(parsed.data_roots)):
        for schedule in parsed.schedules:
            # Fail at launch, not at 02:00: the parameters must validate and every path must stay in the roots.
            check_data_roots(schedule.parameters, schedule.parameters.config, out=schedule.parameters.out,
                             protocol=schedule.parameters.protocol)  # fmt: skip
    return parsed


def served_settings(data_roots: Sequence[str]) -> Settings:
    """The settings of a served run: the environment's, with the schedules file's data roots."""
    return read_settings().model_copy(update={"data_roots": tuple(Path(r) for r in data_roots)})


def confined_flow(flow: Any, data_roots: Sequence[str]) -> Any:
    """`flow` with `data_roots` bound: each run checks its paths against them, whatever its parameters say.

    The returned flow has the same name, run names, parameters (schema included) and options; its body runs
    `flow`'s under `settings.scoped(served_settings(data_roots))`. The roots live in the function's closure,
    which Prefect's runner pickles into the process of each run.
    """
    # start-up time: Prefect loads only when serving (tests and launch checks read schedules without it)
    from prefect import Flow

    roots = tuple(str(r) for r in data_roots)
    body = flow.fn

    def run_confined(params: Any) -> Any:
        with scoped(served_settings(roots)):
            return body(params)

    # The flow's own parameters (resolved types, not the strings of postponed annotations): same schema and
    # validation as the flow's.
    run_confined.__annotations__ = typing.get_type_hints(body)
    run_confined.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
    run_confined.__doc__ = body.__doc__
    return Flow(
        fn=run_confined,
        name=flow.name,
        flow_run_name=flow.flow_run_name,
        log_prints=flow.log_prints,
        validate_parameters=flow.should_validate_parameters,
        description=flow.description,
    )


def _server_problem() -> str | None:
    url = os.environ.get("PREFECT_API_URL", "").strip()
    if not url:
        return "immunostrat serve needs a running Prefect server, and PREFECT_API_URL is not set."
    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as exc:
        return f"no Prefect server answers at PREFECT_API_URL={url} ({type(exc).__name__})."
    if response.status_code != 200:
        return f"the Prefect server at {url} answered /health with HTTP {response.status_code}."
    return None


def serve_schedules(path: Path) -> int:
    """Validate the schedules, check the server, then serve the deployments (blocks until stopped)."""
    schedules = load_schedules(path)  # a SettingsError (exit 2) names the file and the setting
    problem = _server_problem()
    if problem:
        print(f"{problem} {START_SERVER_HINT}", file=sys.stderr)
        return 2
    # Runs started from the UI with edited parameters are checked against the same roots at their launch.
    from prefect.runner import Runner  # start-up time, as above

    from immunostrat.flows.monitor import monitor_flow  # start-up time, as above
    from immunostrat.flows.stratify import stratify_flow  # start-up time, as above

    served = {"stratify": stratify_flow, "monitor": monitor_flow}
    flows = {name: confined_flow(f, schedules.data_roots) for name, f in served.items()}
    runner = Runner(pause_on_shutdown=True)  # as prefect.serve: Ctrl-C pauses the schedules
    for s in schedules.schedules:
        runner.add_flow(flows[s.flow], **deployment_options(s))
    print(f"serving {len(schedules.schedules)} deployment(s): {', '.join(s.name for s in schedules.schedules)}")
    try:
        asyncio.run(runner.start())
    except KeyboardInterrupt:
        print("stopped; the schedules are paused")
    return 0


def deployment_options(schedule: StratifySchedule | MonitorSchedule) -> dict[str, Any]:
    """The deployment of one schedule: its name, cron in its time zone, tags and the flow's parameters."""
    from prefect.schedules import Cron  # start-up time, as above

    # exclude_unset: defaults such as validation.as_of (today) are evaluated at run time, not frozen now.
    parameters = {"params": schedule.parameters.model_dump(mode="json", exclude_unset=True)}
    validation = parameters["params"].setdefault("config", {}).setdefault("validation", {})
    validation.setdefault("as_of_timezone", schedule.timezone)  # an unset as_of is today in the schedule's zone
    return {
        "name": schedule.name,
        "schedules": [Cron(schedule.cron, timezone=schedule.timezone)],
        "parameters": parameters,
        "tags": schedule.tags,
    }
