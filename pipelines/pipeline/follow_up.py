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

import datetime as dt
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.config.endpoints import EndpointDefinition
from immunostrat.errors import SettingsError
from immunostrat.followup.activity import activity as visit_activity
from immunostrat.followup.baselines import treatment_baseline
from immunostrat.followup.changes import change_counts, comparable, compare_findings, findings
from immunostrat.followup.crs_icans import disagreement_counts, grade_crs_icans, worst_crs_icans
from immunostrat.followup.endpoints import endpoints as landmark_endpoints
from immunostrat.followup.endpoints import renal_values
from immunostrat.followup.events import validate_events
from immunostrat.followup.icaht import icaht_grades
from immunostrat.followup.immune_course import immune_course
from immunostrat.followup.lab_grades import (
    criteria_from_config,
    grade_labs,
    treatment_baseline_labs,
    worst_emergent_grades,
    worst_grades_wide,
)
from immunostrat.followup.report import render_follow_up_report
from immunostrat.followup.sledai import load_descriptors
from immunostrat.ingest.io import write_text_atomic
from immunostrat.pipeline.engine.definition import Finish, Gate, Output, Phase, PhaseResult, Pipeline, Tables, View
from immunostrat.pipeline.selection import (
    HARMONISE_VALIDATE,
    IFN_CONTROLS_OUTPUT,
    LABELLED,
    ORDER,
    QUARANTINE_CEILING_ALL_GROUPS,
    SOURCE,
    RunContext,
)
from immunostrat.schemas.events import EVENT_OPTIONAL, EVENT_REQUIRED
from immunostrat.schemas.records import RunRecord, read_run_record
from immunostrat.schemas.toxicity import LICATS_COLUMNS
from immunostrat.sponsor.follow_up import publish_follow_up
from immunostrat.sponsor.pseudonym import PseudonymKeyError, load_key, subject_pseudonyms

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


# ------------------------------------------------------------------------------------- immune course, toxicity


def _events_or_empty(events: pl.DataFrame | None, subjects: pl.DataFrame, ctx: RunContext) -> pl.DataFrame:
    """The accepted events, or an empty table of their contract's columns when no events file was given."""
    if events is not None:
        return events
    columns = {c: pl.String() for c in (*EVENT_REQUIRED, *EVENT_OPTIONAL, "source_file")}
    empty = pl.DataFrame(schema={**columns, "source_row": pl.Int64()})
    return validate_events(empty, subjects, ctx.cfg.validation.as_of, config=ctx.cfg.events).accepted


def _toxicity(
    subjects: pl.DataFrame,
    worst_events: pl.DataFrame,
    icaht: pl.DataFrame,
    course: pl.DataFrame,
    ctcae: pl.DataFrame,
) -> pl.DataFrame:
    """toxicity.parquet's rows: one per subject, its worst toxicities side by side (schemas.toxicity)."""
    keys = subjects.select(_KEY).unique(keep="first", maintain_order=True)
    frame = keys
    for part in (worst_events, icaht, course.select(*_KEY, *LICATS_COLUMNS), ctcae):
        frame = frame.join(part, on=_KEY, how="left", maintain_order="left")
    # Subjects without day 0 get no ICAHT row: not infused.
    reasons = [c for c in icaht.columns if c.endswith("_grade_reason")]
    return frame.with_columns(
        pl.when(pl.col(r.removesuffix("_reason")).is_null() & pl.col(r).is_null())
        .then(pl.lit("NOT_INFUSED"))
        .otherwise(pl.col(r))
        .alias(r)
        for r in reasons
    )


def course_toxicity_phase(tables: Tables, ctx: RunContext) -> PhaseResult:
    """Phase: the immune course per subject, CTCAE laboratory grades, CRS/ICANS per assessment, ICAHT, and the
    toxicity summary per subject."""
    assert ctx.protocol is not None
    cfg = ctx.cfg
    subjects, labs = tables["subjects"], tables["harmonised"]
    course = immune_course(
        labs,
        subjects,
        tables["activity"],
        tables["treatment_baseline"],
        cfg.immune_course,
        followup=cfg.followup,
        baseline=cfg.baseline,
        renal_population=ctx.protocol.endpoints.renal_population,
    )
    criteria = criteria_from_config(cfg.lab_grades, ctx.reference)
    baseline_values = treatment_baseline_labs(
        labs,
        subjects,
        cfg.lab_grades.baseline_window_days,
        include_exposure_day=cfg.lab_grades.baseline_includes_exposure_day,
    )
    grades = grade_labs(labs, subjects, baseline_values, criteria, cfg.lab_grades, reference=ctx.reference)
    terms = criteria["term"].unique(maintain_order=True).to_list()
    ctcae = worst_grades_wide(worst_emergent_grades(grades, cfg.lab_grades), terms)
    graded = grade_crs_icans(_events_or_empty(tables.get("events"), subjects, ctx), subjects, cfg.crs_icans)
    icaht = icaht_grades(labs, subjects, cfg.icaht)
    toxicity = _toxicity(subjects, worst_crs_icans(graded, subjects, cfg.crs_icans), icaht, course, ctcae)
    reasons = grades.group_by("reason").len().sort("reason")
    counts = {
        "crs_icans": disagreement_counts(graded),
        "lab_grades_by_reason": dict(zip(reasons["reason"], reasons["len"], strict=True)),
    }
    return PhaseResult(
        tables={"immune_course": course, "lab_grades": grades, "crs_icans": graded, "toxicity": toxicity},
        counts={"follow_up": counts},
    )


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


def read_strata_run(run_dir: str | Path) -> tuple[pl.DataFrame, Path, RunRecord]:
    """The responder groups a completed stratify run predicted (never re-scored), the run folder read and its
    run.json (of any version: older run folders stay readable).

    `run_dir` is a run folder, or an output folder of stratify runs (its newest run is used; run.json records which).
    """
    folder = Path(run_dir)
    if not (folder / "run.json").is_file() and folder.is_dir():
        # An output folder of stratify runs: its newest run (run ids begin with their UTC start time).
        runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "run.json").is_file())
        if runs:
            folder = runs[-1]
    try:
        record = read_run_record(folder)
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise SettingsError(f"--strata {folder}: not a readable run folder (run.json: {exc})") from exc
    if not record.completed or "strata.parquet" not in record.outputs:
        raise SettingsError(
            f"--strata {folder}: the run did not complete with a strata.parquet; give a completed stratify run"
        )
    groups = pl.read_parquet(folder / "strata.parquet", columns=[*_KEY, "responder_group"])
    return groups, folder, record


def definition_record(definition: EndpointDefinition) -> dict[str, Any]:
    """The endpoint definition as run.json records it: version, content hash, endpoints and landmarks."""
    return {
        "version": definition.version,
        "sha256": hashlib.sha256(definition.model_dump_json().encode()).hexdigest(),
        "endpoints": list(definition.endpoints),
        "landmarks": list(definition.landmarks),
    }


def summarise_follow_up(view: View, ctx: RunContext, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Gate (never stops): endpoint rates for run.json; by the predicted responder group when `--strata` is given."""
    rows = view.frame("endpoints", [*_KEY, "endpoint", "landmark", "met", "reason"])
    assert ctx.protocol is not None
    summary: dict[str, Any] = {
        # What a later run compares against before it lists "what changed" (same version and content).
        "endpoint_definition": definition_record(ctx.protocol.endpoints),
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
        groups, folder, strata_record = read_strata_run(strata_run)
        joined = rows.join(groups, on=_KEY, how="left").with_columns(
            pl.col("responder_group").fill_null("not in the stratify run")
        )
        summary["by_predicted_group"] = {
            "strata_run": str(folder),
            "model": strata_record.model.model_dump(exclude_unset=True) if strata_record.model else {},
            "rates": endpoint_rates(joined, ["responder_group"]).to_dicts(),
        }
    return {"summary": summary}


# ---------------------------------------------------------------------------------------------- what changed

_FINDING_COLUMNS = {
    "endpoints": [*_KEY, "endpoint", "landmark", "met", "visit_day", "visit_date"],
    "lab_grades": [*_KEY, "term", "grade", "baseline_grade", "days_since_infusion", "collected_date"],
    "crs_icans": [*_KEY, "crs_grade", "icans_grade", "days_since_infusion", "assessed_at"],
    "immune_course": [*_KEY, "day0", "serological_relapse_day", "first_flare_day"],
}


def _relapses(course: pl.DataFrame) -> pl.DataFrame:
    """Relapse findings from the immune course: the serological relapse and the first flare, with their days."""
    return (
        course.select(*_KEY, serological_relapse="serological_relapse_day", flare="first_flare_day")
        .unpivot(["serological_relapse", "flare"], index=_KEY, variable_name="kind", value_name="day")
        .filter(pl.col("day").is_not_null())
    )


def _run_findings(tables: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    return findings(
        endpoints=tables["endpoints"],
        lab_grades=tables["lab_grades"],
        crs_icans=tables["crs_icans"],
        relapses=_relapses(tables["immune_course"]),
    )


def previous_monitor_runs(out: Path, run_id: str) -> list[tuple[Path, RunRecord]]:
    """Completed monitor runs of an output folder other than `run_id`, newest first, with their run.json (of any
    version; a folder whose run.json cannot be read is not a run)."""
    runs = []
    for folder in sorted((p for p in out.iterdir() if p.is_dir() and p.name != run_id), reverse=True):
        try:
            record = read_run_record(folder)
        except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
            continue
        if record.completed and all(f"{t}.parquet" in record.outputs for t in _FINDING_COLUMNS):
            runs.append((folder, record))
    return runs


def _items(changes: pl.DataFrame, ctx: RunContext) -> tuple[list[dict[str, Any]], str | None]:
    """Every change with the subject's pseudonym (never its identifier); none without a pseudonym key."""
    try:
        key = load_key(ctx.cfg.publish.key_file, demo=ctx.cfg.publish.demo_key)
    except PseudonymKeyError:
        return [], "no pseudonym key: changes are counted, not listed (give --key-file to list them)"
    listed = changes.with_columns(subject_pseudonyms(key, changes["study_id"], changes["subject_id"]))
    return listed.drop("subject_id").to_dicts(), None


def what_changed(view: View, ctx: RunContext, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Gate (never stops): what changed since the newest earlier completed monitor run of this output folder
    covering each study, under the same endpoint definition (`immunostrat.followup.changes`)."""
    assert ctx.protocol is not None
    definition = definition_record(ctx.protocol.endpoints)
    studies = set(view.frame("endpoints", ["study_id"])["study_id"].unique().to_list())
    chosen: dict[Path, tuple[RunRecord, set[str]]] = {}
    uncovered = set(studies)
    for folder, run in previous_monitor_runs(Path(ctx.files.out), ctx.run_id):
        if not uncovered:  # every study has its newest earlier run: older runs are not read
            break
        covered = set(pl.read_parquet(folder / "endpoints.parquet", columns=["study_id"])["study_id"].unique())
        mine = uncovered & covered
        if mine:
            chosen[folder] = (run, mine)
            uncovered -= mine
    if not chosen:
        return {"changes": {"previous_run": None, "not_compared": comparable(None, definition)}}
    # The merged finding tables (lab grades: one row per graded measurement) only when there is a run to compare.
    current_tables = {t: view.frame(t, columns) for t, columns in _FINDING_COLUMNS.items()}
    all_changes, previous_ids, reasons = [], [], []
    day0 = current_tables["immune_course"].select(*_KEY, "day0")
    now = _run_findings(current_tables)  # once, whichever earlier runs the studies are compared with
    for folder, (run, mine) in chosen.items():
        previous_ids.append(folder.name)
        reason = comparable(run.to_json_dict(), definition)
        if reason:
            reasons.append(f"{folder.name}: {reason}")
            continue
        before = _run_findings(
            {t: pl.read_parquet(folder / f"{t}.parquet", columns=c) for t, c in _FINDING_COLUMNS.items()}
        )
        in_scope = pl.col("study_id").is_in(sorted(mine))
        all_changes.append(
            compare_findings(
                before.filter(in_scope),
                now.filter(in_scope),
                dt.date.fromisoformat(str(run.as_of)),
                day0=day0,
                endpoints_now=current_tables["endpoints"],
            )
        )
    changes = pl.concat(all_changes) if all_changes else compare_findings(findings(), findings(), dt.date.min)
    items, note = _items(changes, ctx)
    record: dict[str, Any] = {
        "previous_run": ", ".join(previous_ids),
        "counts": change_counts(changes),
        "items": items,
    }
    if reasons:
        record["not_compared"] = "; ".join(reasons)
    if note:
        record["note"] = note
    return {"changes": record}


# --------------------------------------------------------------------------------------------------- finishing

#: The team's follow-up report, in the run folder (the sponsor's copy travels with the snapshot).
TEAM_REPORT = "report.html"


def write_team_report(run_dir: Path, ctx: RunContext) -> Path:
    """Finish: RUN/report.html, the follow-up report for the team (aggregates; small cells suppressed)."""
    html = render_follow_up_report(
        run_dir, min_cell_count=ctx.cfg.publish.min_cell_count, lane_labels=_pseudonym_labels(ctx)
    )
    return write_text_atomic(html, run_dir / TEAM_REPORT)


def _pseudonym_labels(ctx: RunContext) -> Any:
    """Swimmer-lane labels: the first 8 hex digits of each subject's pseudonym; None (numbered lanes) without a
    key. Subject identifiers never reach the report."""
    try:
        key = load_key(ctx.cfg.publish.key_file, demo=ctx.cfg.publish.demo_key)
    except PseudonymKeyError:
        return None
    return lambda frame: subject_pseudonyms(key, frame["study_id"], frame["subject_id"]).str.head(8).to_list()


def publish_follow_up_snapshot(run_dir: Path, ctx: RunContext) -> Any:
    """Finish: the sponsor's follow-up snapshot (pseudonymised endpoint rows, suppressed rates, report)."""
    return publish_follow_up(run_dir, ctx.cfg.publish)  # the key is loaded inside, never passed around


# --------------------------------------------------------------------------------------------------- pipeline


def _activity_in_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    return frame.sort(*_KEY, "visit_date", maintain_order=True)


def _endpoints_in_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    return frame.sort(*_KEY, maintain_order=True)


def _subjects_in_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    """One row per subject, in subjects-file order (as strata.parquet)."""
    order = view.frame("subjects", [*_KEY, "source_row"])
    return frame.join(order, on=_KEY, how="left").sort("source_row", maintain_order=True).drop("source_row")


def _events_in_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    return frame.sort("source_file", "source_row", maintain_order=True)


def _labs_in_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    """Graded measurements by term, then in input order (file, row)."""
    return frame.sort("term", "source_file", "source_row", maintain_order=True)


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

COURSE_TOXICITY = Phase(
    name="immune-course-toxicity",
    stages=("immune course", "lab grades", "CRS/ICANS", "ICAHT", "toxicity"),
    description="per subject: B-cell aplasia and return, CAR-T peaks, serology, IgG, flares, the LICATS signal; "
    "CTCAE v5 lab grades per measurement; ASTCT CRS and ICANS per assessment; ICAHT; the worst of each",
    reads=("harmonised", "subjects", "activity", "treatment_baseline", "events"),
    writes=("immune_course", "lab_grades", "crs_icans", "toxicity"),
    run=course_toxicity_phase,
)
WHAT_CHANGED = Gate(
    name="what-changed",
    stages=("what changed",),
    description="new, resolved and corrected findings (grade >= 3 toxicities, endpoints met, relapses) against the "
    "newest earlier monitor run of the output folder, under the same endpoint definition",
    reads=tuple(_FINDING_COLUMNS),
    run=what_changed,
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
        COURSE_TOXICITY,
        Gate(
            name="summarise-follow-up",
            stages=(),
            description="endpoint rates for run.json; with --strata, by the responder group predicted before "
            "infusion (that run's model, never re-scored)",
            reads=("endpoints", "activity", "subjects"),
            run=summarise_follow_up,
        ),
        WHAT_CHANGED,
    ),
    outputs=(
        Output("harmonised.parquet", "harmonised", contract="harmonised"),
        Output("quarantine.parquet", "quarantine", contract="quarantine"),
        Output("outside_panel.parquet", "outside_panel", contract="outside_panel"),
        IFN_CONTROLS_OUTPUT,
        Output("activity.parquet", "activity", contract="activity", on_failure=False),
        Output("endpoints.parquet", "endpoints", contract="endpoints", on_failure=False),
        Output("immune_course.parquet", "immune_course", contract="immune_course", on_failure=False),
        Output("lab_grades.parquet", "lab_grades", contract="lab_grades", on_failure=False),
        Output("crs_icans.parquet", "crs_icans", contract="crs_icans", on_failure=False),
        Output("toxicity.parquet", "toxicity", contract="toxicity", on_failure=False),
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
    order={
        **ORDER,
        "activity": _activity_in_order,
        "endpoints": _endpoints_in_order,
        "immune_course": _subjects_in_order,
        "toxicity": _subjects_in_order,
        "crs_icans": _events_in_order,
        "lab_grades": _labs_in_order,
    },
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
