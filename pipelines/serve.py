"""`immunostrat serve`: turn a schedules file into Prefect deployments of the stratify flow and serve them.

Schedules need a Prefect server that outlives this process (the temporary server of an ad-hoc run dies with
it), so `serve` refuses to start without `PREFECT_API_URL` pointing at a healthy server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from immunostrat.config import RunConfig, StratifyParams, _Model

START_SERVER_HINT = (
    "Start one in another terminal with `prefect server start`, then "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api` and run `immunostrat serve` again "
    "(see docs/operations.md)."
)


class Schedule(_Model):
    """One scheduled stratify run of a study."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Deployment name (lowercase, digits, dashes).")
    cron: str = Field(description="Cron expression, e.g. '0 2 * * *' for 02:00 daily.")
    timezone: str = Field(default="UTC", description="IANA time zone the cron expression is read in.")
    labs: list[str] = Field(min_length=1, description="Lab-result files read at each run.")
    subjects: str = Field(description="Subjects file read at each run.")
    out: str = Field(description="Output folder; each run adds a <run_id> sub-folder.")
    protocol: str | None = Field(default=None, description="Eligibility protocol YAML; built-in if empty.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="RunConfig overrides (harmonise, validation, baseline, scoring). Leave validation.as_of unset "
        "so that each run uses its own day.",
    )
    tags: list[str] = Field(default_factory=list, description="Prefect tags, e.g. the study id.")
    # Same meaning (and descriptions) as the stratify parameters they are passed to.
    streaming: bool | None = Field(default=None, description=StratifyParams.model_fields["streaming"].description)
    partition_rows: int = Field(
        default=StratifyParams.model_fields["partition_rows"].default,
        ge=10_000,
        description=StratifyParams.model_fields["partition_rows"].description,
    )


class ScheduleFile(_Model):
    """The schedules file: the data roots, and a list of scheduled runs."""

    data_roots: list[str] = Field(
        min_length=1,
        description="Folders every input, output, registry and protocol path must stay inside (no '..', no links "
        "out). Kept out of the runs' parameters, which anyone who can start a deployment may edit.",
    )
    schedules: list[Schedule] = Field(min_length=1, description="Scheduled stratify runs.")


def load_schedules(path: Path) -> ScheduleFile:
    """Read and validate a schedules YAML file (and each run's config)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read schedules file {path}: {exc.strerror}") from exc
    parsed = ScheduleFile.model_validate(raw)
    from immunostrat.safety import check_stratify_paths

    for schedule in parsed.schedules:
        # Fail at launch, not at 02:00: the config must validate and every path must stay in the data roots.
        check_stratify_paths(_params(schedule), parsed.data_roots)
    return parsed


def _params(s: Schedule) -> StratifyParams:
    return StratifyParams(
        labs=s.labs,
        subjects=s.subjects,
        out=s.out,
        protocol=s.protocol,
        config=RunConfig.model_validate(s.config),
        streaming=s.streaming,
        partition_rows=s.partition_rows,
    )


def _server_problem() -> str | None:
    url = os.environ.get("PREFECT_API_URL", "").strip()
    if not url:
        return "immunostrat serve needs a running Prefect server, and PREFECT_API_URL is not set."
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=5.0)
    except httpx.HTTPError as exc:
        return f"no Prefect server answers at PREFECT_API_URL={url} ({type(exc).__name__})."
    if response.status_code != 200:
        return f"the Prefect server at {url} answered /health with HTTP {response.status_code}."
    return None


def serve_schedules(path: Path) -> int:
    """Validate the schedules, check the server, then serve the deployments (blocks until stopped)."""
    try:
        schedules = load_schedules(path)
    except (ValueError, ValidationError) as exc:
        print(f"schedules file {path} is invalid: {exc}", file=sys.stderr)
        return 2
    problem = _server_problem()
    if problem:
        print(f"{problem} {START_SERVER_HINT}", file=sys.stderr)
        return 2
    from prefect import serve
    from prefect.schedules import Cron

    from immunostrat.flows.stratify import stratify_flow

    deployments = []
    # Runs started from the UI with edited parameters are checked against the same roots by run.stratify.
    os.environ["IMMUNOSTRAT_DATA_ROOTS"] = os.pathsep.join(schedules.data_roots)
    for s in schedules.schedules:
        params = _params(s)
        # exclude_unset: defaults such as validation.as_of (today) are evaluated at run time, not frozen now.
        parameters = {"params": params.model_dump(mode="json", exclude_unset=True)}
        deployments.append(
            stratify_flow.to_deployment(
                name=s.name, schedules=[Cron(s.cron, timezone=s.timezone)], parameters=parameters, tags=s.tags
            )
        )
    print(f"serving {len(deployments)} deployment(s): {', '.join(s.name for s in schedules.schedules)}")
    serve(*deployments)
    return 0
