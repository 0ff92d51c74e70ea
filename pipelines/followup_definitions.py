"""The follow-up pipeline, defined once: `MONITOR` (the `monitor` command and flow).

    monitor: read-inputs | split-inputs
             -> harmonise-validate    (shared with stratify: labs, subjects and visits; accounting)
             -> quarantine-ceiling    (gate: per analyte group, over all partitions)
             -> activity              (per partition: SLEDAI-2K per visit from items and labs; treatment baseline)
             -> endpoints             (per partition: each endpoint at each landmark, with a reason code)
             -> summarise-follow-up   (gate: endpoint rates; by the responder group a stratify run predicted)
             -> write (run folder)

Every step works within one subject, so partitions give the same rows as one pass. The phase functions here
compose the pure follow-up derivations (`activity`, `baselines`, `endpoints`); the engine runs them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.definitions import (
    HARMONISE_VALIDATE,
    LABELLED,
    ORDER,
    QUARANTINE_CEILING_ALL_GROUPS,
    SOURCE,
    RunContext,
)
from immunostrat.engine.definition import Finish, Gate, Output, Phase, PhaseResult, Pipeline, Tables, View
from immunostrat.errors import SettingsError
from immunostrat.followup.activity import activity as visit_activity
from immunostrat.followup.baselines import treatment_baseline
from immunostrat.followup.endpoints import endpoints as landmark_endpoints
from immunostrat.followup.endpoints import renal_values
from immunostrat.followup.sledai import load_descriptors

_KEY = ["study_id", "subject_id"]


def activity_phase(tables: Tables, ctx: RunContext) -> PhaseResult:
    """Phase: SLEDAI-2K per visit (reported items and labs in the lookback window) and each subject's treatment
    baseline (the last assessment before first exposure)."""
    subjects = tables["subjects"]
    visits = tables["visits"]
    labs = tables["harmonised"]
    frame, counts = visit_activity(
        visits, labs, subjects, load_descriptors(), config=ctx.cfg.followup, baseline=ctx.cfg.baseline
    )
    frame = frame.sort(*_KEY, "visit_date", maintain_order=True)
    baseline = treatment_baseline(frame, subjects, labs, ctx.cfg.followup)
    return PhaseResult(
        tables={"activity": frame, "treatment_baseline": baseline}, counts={"follow_up": {"activity": counts}}
    )


def endpoints_phase(tables: Tables, ctx: RunContext) -> PhaseResult:
    """Phase: every endpoint of the protocol's definition at every landmark, per subject."""
    assert ctx.protocol is not None
    definition = ctx.protocol.endpoints
    activity = renal_values(tables["activity"], tables["harmonised"], definition.renal_lab_lookback_days)
    rows = landmark_endpoints(
        activity, tables["treatment_baseline"], tables["subjects"], definition, ctx.cfg.validation.as_of
    )
    return PhaseResult(tables={"endpoints": rows}, counts={"follow_up": {"endpoint_rows": rows.height}})


# ---------------------------------------------------------------------------------------------------- summary


def endpoint_rates(endpoints: pl.DataFrame, by: list[str] | None = None) -> pl.DataFrame:
    """Met, not met and not assessable per endpoint and landmark (and `by`), with the rate among the assessable."""
    keys = [*(by or []), "endpoint", "landmark"]
    return (
        endpoints.group_by(keys, maintain_order=True)
        .agg(
            met=(pl.col("met") == True).sum(),  # noqa: E712
            not_met=(pl.col("met") == False).sum(),  # noqa: E712
            not_assessable=pl.col("met").is_null().sum(),
        )
        .with_columns(
            rate=pl.when(pl.col("met") + pl.col("not_met") > 0).then(
                pl.col("met") / (pl.col("met") + pl.col("not_met"))
            )
        )
        .sort(keys)
    )


def read_strata_run(run_dir: str | Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The responder groups a completed stratify run predicted, and that run's model entry (never re-scored).

    `run_dir` is a run folder, or an output folder of stratify runs (its newest run is used; run.json records which).
    """
    from immunostrat.engine.runfolder import read_manifest

    folder = Path(run_dir)
    if not (folder / "run.json").is_file() and folder.is_dir():
        # An output folder of stratify runs: its newest run (run ids begin with their UTC start time).
        runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "run.json").is_file())
        if runs:
            folder = runs[-1]
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"--strata {folder}: not a readable run folder (run.json: {exc})") from exc
    if manifest.get("status") != "completed" or "strata.parquet" not in manifest.get("outputs", {}):
        raise SettingsError(
            f"--strata {folder}: the run did not complete with a strata.parquet; give a completed stratify run"
        )
    groups = pl.read_parquet(folder / "strata.parquet", columns=[*_KEY, "responder_group"])
    return groups, {**manifest.get("model", {}), "_run_dir": str(folder)}


def summarise_follow_up(view: View, ctx: RunContext, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Gate (never stops): endpoint rates for run.json; by the predicted responder group when `--strata` is given."""
    rows = view.frame("endpoints", [*_KEY, "endpoint", "landmark", "met", "reason"])
    assert ctx.protocol is not None
    definition = ctx.protocol.endpoints
    summary: dict[str, Any] = {
        # What a later run compares against before it lists "what changed" (same version and content).
        "endpoint_definition": {
            "version": definition.version,
            "sha256": hashlib.sha256(definition.model_dump_json().encode()).hexdigest(),
            "endpoints": list(definition.endpoints),
            "landmarks": list(definition.landmarks),
        },
        "subjects": view.frame("subjects", _KEY).height,
        "visits": view.frame("activity", _KEY).height,
        "endpoints": endpoint_rates(rows).to_dicts(),
        "reasons": {
            f"{k['endpoint']}@{k['landmark']}": {r: n for r, n in zip(k["reason"], k["n"], strict=True)}
            for k in rows.filter(pl.col("reason").is_not_null())
            .group_by("endpoint", "landmark", "reason")
            .len("n")
            .sort("endpoint", "landmark", "reason")
            .group_by("endpoint", "landmark", maintain_order=True)
            .agg("reason", "n")
            .to_dicts()
        },
    }
    strata_run = getattr(ctx.files, "strata", None)
    if strata_run:
        groups, model = read_strata_run(strata_run)
        joined = rows.join(groups, on=_KEY, how="left").with_columns(
            pl.col("responder_group").fill_null("not in the stratify run")
        )
        summary["by_predicted_group"] = {
            "strata_run": model.pop("_run_dir", str(strata_run)),
            "model": model,
            "rates": endpoint_rates(joined, ["responder_group"]).to_dicts(),
        }
    return {"summary": summary}


# --------------------------------------------------------------------------------------------------- finishing

#: The team's follow-up report, in the run folder (the sponsor's copy travels with the snapshot).
TEAM_REPORT = "report.html"


def write_team_report(run_dir: Path, ctx: RunContext) -> Path:
    """Finish: RUN/report.html, the follow-up report for the team (aggregates; small cells suppressed)."""
    from immunostrat.followup.report import render_follow_up_report
    from immunostrat.io import write_text_atomic

    html = render_follow_up_report(run_dir, min_cell_count=ctx.cfg.publish.min_cell_count)
    return write_text_atomic(html, run_dir / TEAM_REPORT)


def publish_follow_up_snapshot(run_dir: Path, ctx: RunContext) -> Any:
    """Finish: the sponsor's follow-up snapshot (pseudonymised endpoint rows, suppressed rates, report)."""
    from immunostrat.publish import publish_follow_up

    return publish_follow_up(run_dir, ctx.cfg.publish)  # the key is loaded inside, never passed around


# --------------------------------------------------------------------------------------------------- pipeline


def _activity_in_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    return frame.sort(*_KEY, "visit_date", maintain_order=True)


def _endpoints_in_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    return frame.sort(*_KEY, maintain_order=True)


ACTIVITY = Phase(
    name="activity",
    stages=("activity", "treatment baseline"),
    description="per visit: each SLEDAI-2K descriptor from the site's items and labs in the lookback window, with "
    "its source; the scores and their bounds; per subject the treatment baseline",
    reads=("harmonised", "subjects", "visits"),
    writes=("activity", "treatment_baseline"),
    run=activity_phase,
)
ENDPOINTS = Phase(
    name="endpoints",
    stages=("endpoints",),
    description="per subject: each endpoint at each landmark (the visit closest to the target day in its window): "
    "met, not met or not assessable with a reason code",
    reads=("activity", "treatment_baseline", "subjects", "harmonised"),
    writes=("endpoints",),
    run=endpoints_phase,
)

MONITOR = Pipeline(
    name="monitor",
    description="follow-up after infusion: disease activity per visit, response endpoints at landmarks",
    source=SOURCE,
    steps=(
        HARMONISE_VALIDATE,
        QUARANTINE_CEILING_ALL_GROUPS,
        ACTIVITY,
        ENDPOINTS,
        Gate(
            name="summarise-follow-up",
            stages=(),
            description="endpoint rates for run.json; with --strata, by the responder group predicted before "
            "infusion (that run's model, never re-scored)",
            reads=("endpoints", "activity", "subjects"),
            run=summarise_follow_up,
        ),
    ),
    outputs=(
        Output("harmonised.parquet", "harmonised", contract="harmonised"),
        Output("quarantine.parquet", "quarantine", contract="quarantine"),
        Output("outside_panel.parquet", "outside_panel"),
        Output("activity.parquet", "activity", contract="activity", on_failure=False),
        Output("endpoints.parquet", "endpoints", contract="endpoints", on_failure=False),
    ),
    finish=(
        Finish(
            name="team-report",
            stages=("report",),
            description="RUN/report.html: the follow-up report for the team (aggregates, small cells suppressed)",
            run=write_team_report,
        ),
        Finish(
            name="publish",
            stages=("publish",),
            description="the sponsor's follow-up snapshot: pseudonymised endpoint rows with study days, rates "
            "with small cells suppressed, manifest and report; `follow_up` in OUT/sponsor-manifest.json",
            run=publish_follow_up_snapshot,
            when=lambda ctx: ctx.cfg.publish.enabled,
        ),
    ),
    order={**ORDER, "activity": _activity_in_order, "endpoints": _endpoints_in_order},
    kept=("subjects",),
)

#: The features a model learns from (as `LABELLED` derives them) beside the endpoints its outcome is derived from
#: (`train --endpoint`): one pass over the same inputs.
LABELLED_BY_ENDPOINT = Pipeline(
    name="labelled-strata-endpoints",
    description="baseline features and, from the visits, the endpoint that labels them",
    source=SOURCE,
    steps=(*LABELLED.steps, ACTIVITY, ENDPOINTS),
    order={**ORDER, "activity": _activity_in_order, "endpoints": _endpoints_in_order},
    kept=("strata", "subjects", "endpoints"),
)
