"""The selection pipelines, each defined once: `STRATIFY`, `VALIDATE` (its prefix) and `LABELLED` (train/evaluate).

    stratify: read-inputs | split-inputs
              -> harmonise-validate        (per partition: map, parse, convert, validate; accounting)
              -> quarantine-ceiling        (gate: the quarantined fraction of selection-panel rows, over all
                                            partitions; the ceiling applies per analyte group)
              -> baseline-score            (per partition: baseline, eligibility, score)
              -> baseline-flag-agreement   (gate: SDTM's own baseline flags against ours; never stops)
              -> drift                     (gate: features against the model's training reference)
              -> summarise                 (gate: eligibility, groups and the funnel for run.json)
              -> write (run folder) -> publish (sponsor snapshot)

The phase and gate functions here compose the pure stages of `immunostrat.stages`; executors and runners
(`immunostrat.pipeline.engine`) run them, and the Prefect flows (`immunostrat.flows`) show each step as one task.

It is one module because it is the pipeline's one definition: its phases and gates read top to bottom as the steps
of a run, in the order above.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat import __version__
from immunostrat.config.run import Protocol, RunConfig, ValidationConfig
from immunostrat.errors import QuarantineCeilingError
from immunostrat.followup.baselines import with_selection_sledai
from immunostrat.followup.events import event_counts, validate_events
from immunostrat.followup.sledai import load_descriptors
from immunostrat.followup.visits import validate_visits, visit_counts
from immunostrat.ingest.inputs import Inputs, read_run_inputs
from immunostrat.ingest.readers import baseline_flag_agreement as sdtm_flag_agreement
from immunostrat.ingest.readers import merge_reader_quarantine
from immunostrat.ingest.readers.expression import control_qc
from immunostrat.ingest.reference import PANEL_GROUPS, SELECTION, ReferenceTables, load_reference
from immunostrat.modelling import drift as drift_checks
from immunostrat.modelling.scoring import score_strata
from immunostrat.pipeline.engine.definition import (
    Finish,
    Gate,
    Output,
    Phase,
    PhaseResult,
    Pipeline,
    Source,
    Tables,
    View,
)
from immunostrat.pipeline.partition import in_source_order, split_inputs, split_on_disk
from immunostrat.schemas.records import InputFile, ModelInfo
from immunostrat.stages.baseline import derive_baseline, missing_counts
from immunostrat.stages.eligibility import assess_eligibility, funnel
from immunostrat.stages.harmonise import harmonise_labs, harmonised_table
from immunostrat.stages.rules import count_by
from immunostrat.stages.subjects import SUBJECT_FOLLOW_UP_COLUMNS, subject_quarantine_counts, validate_subjects
from immunostrat.stages.validate import validate_labs

PACKAGES = ("polars", "pandera", "prefect", "scikit-learn", "pyarrow", "skops", "numpy", "pydantic")


@dataclass(frozen=True)
class RunContext:
    """What every step of a run reads besides its tables: resolved once at launch (`immunostrat.pipeline.launch`)."""

    run_id: str
    files: Any  # the input parameters (`immunostrat.config.run.InputFiles`)
    cfg: RunConfig
    reference: ReferenceTables
    protocol: Protocol | None = None
    model: Any = None  # `immunostrat.modelling.handle.ModelHandle`, verified at launch; None when nothing is scored
    partitions: int = 1  # partitions of an on-disk split (decided at launch from the inputs' size)
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def cutoffs(self) -> dict[str, float]:
        """Group cut-offs: the run's parameters when both are set, else the model card's."""
        s = self.cfg.scoring
        if s.possible_min is not None and s.likely_min is not None:
            return {"possible_min": s.possible_min, "likely_min": s.likely_min}
        return dict(self.model.default_cutoffs) if self.model is not None else {}

    def model_info(self) -> dict[str, Any]:
        """The run.json `model` entry (known at launch)."""
        overridden = self.cfg.scoring.possible_min is not None and self.cfg.scoring.likely_min is not None
        return ModelInfo(
            model_id=self.model.model_id,
            sha256=self.model.sha256,
            requested=self.cfg.scoring.model,
            features=[f.name for f in self.model.features],
            cutoffs=self.cutoffs,
            cutoffs_source="run parameters" if overridden else "model card",
            scored_from=self.model.scored_from,
        ).model_dump()


# ------------------------------------------------------------------------------------------ harmonise + validate


@dataclass
class Prepared:
    """Harmonised and validated inputs, and their accounting."""

    harmonised: pl.DataFrame
    lab_quarantine: pl.DataFrame
    outside_panel: pl.DataFrame
    subjects: pl.DataFrame | None
    subject_quarantine: pl.DataFrame | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    visits: pl.DataFrame | None = None
    visit_quarantine: pl.DataFrame | None = None
    events: pl.DataFrame | None = None
    event_quarantine: pl.DataFrame | None = None
    ifn_controls: pl.DataFrame | None = None  # healthy-control QC of the expression matrices (None: none given)

    @property
    def quarantine(self) -> pl.DataFrame:
        """Every quarantined row: lab rows first, then subject, visit and event rows."""
        others = [
            q
            for q in (self.subject_quarantine, self.visit_quarantine, self.event_quarantine)
            if q is not None and q.height
        ]
        if not others:
            return self.lab_quarantine
        return pl.concat([self.lab_quarantine, *others], how="diagonal_relaxed")


def _count_by_file(frame: pl.DataFrame) -> dict[str, int]:
    if frame.height == 0:
        return {}
    counts = frame.group_by("source_file").len()
    return dict(zip(counts["source_file"].to_list(), counts["len"].to_list(), strict=True))


def accounting(
    inputs: Inputs,
    *,
    harmonised: pl.DataFrame,
    outside: pl.DataFrame,
    lab_quarantine: pl.DataFrame,
    subjects: pl.DataFrame | None,
    subject_quarantine: pl.DataFrame | None,
) -> dict[str, Any]:
    """Per-file and total counts, each from its own source (never one derived from the others)."""
    accepted = _count_by_file(harmonised)
    out = _count_by_file(outside)
    quarantined = _count_by_file(lab_quarantine)
    per_file: dict[str, dict[str, Any]] = {}
    for table in inputs.labs:
        per_file[table.path] = {
            "kind": "labs",
            "rows_read": table.rows_read,
            "accepted": accepted.get(table.path, 0),
            "outside_panel": out.get(table.path, 0),
            "quarantined": quarantined.get(table.path, 0),
        }
    totals = {
        k: sum(int(f[k]) for f in per_file.values()) for k in ("rows_read", "accepted", "outside_panel", "quarantined")
    }
    counts: dict[str, Any] = {
        **totals,
        "per_file": per_file,
        "outside_panel_by_test": count_by(outside, "test"),
        "quarantined_by_reason": count_by(lab_quarantine, "reason_code"),
    }
    if inputs.subjects is not None and subjects is not None and subject_quarantine is not None:
        counts["subjects"] = {
            "path": inputs.subjects.path,
            "rows_read": inputs.subjects.rows_read,
            "accepted": subjects.height,
            # Refused rows, and field records (a bad optional field quarantined alone) apart from them.
            **subject_quarantine_counts(subject_quarantine),
        }
    return counts


def panel_group_counts(harmonised: pl.DataFrame, lab_quarantine: pl.DataFrame, ref: ReferenceTables) -> dict[str, Any]:
    """Per analyte group (`panel_group` of analytes.csv): `panel_rows`, `accepted` and `quarantined` lab rows.

    An accepted row counts in its analyte's group; a quarantined row in the group of its reported test (a unit
    conversion never changes the group). A quarantined row whose test maps to no analyte (an empty test, or a
    reader's rejected record) cannot be attributed and counts in the selection group, as the stricter choice.
    """
    group_of = ref.panel_group_of()
    accepted = count_by(harmonised.select(pl.col("analyte").replace_strict(group_of, default=SELECTION)), "analyte")
    if lab_quarantine.height and "test" in lab_quarantine.columns:
        test_key = pl.col("test").str.strip_chars().str.to_uppercase()
        analyte = test_key.replace_strict(ref.test_codes["code_key"], ref.test_codes["analyte"], default=None)
        group = analyte.replace_strict(group_of, default=SELECTION).fill_null(SELECTION)
        quarantined = count_by(lab_quarantine.select(group.alias("group")), "group")
    else:
        quarantined = {SELECTION: lab_quarantine.height} if lab_quarantine.height else {}
    return {
        g: {
            "panel_rows": accepted.get(g, 0) + quarantined.get(g, 0),
            "accepted": accepted.get(g, 0),
            "quarantined": quarantined.get(g, 0),
        }
        for g in PANEL_GROUPS
    }


def prepare(inputs: Inputs, cfg: RunConfig, ref: ReferenceTables | None = None) -> Prepared:
    """Harmonise and validate: the ingest-to-quarantine half of a run (`ref`: the run's mapping tables)."""
    ref = ref or load_reference(cfg.harmonise.alias_file, cfg.baseline.ifn_methods_file)
    raw = pl.concat([t.frame for t in inputs.labs], how="vertical") if inputs.labs else pl.DataFrame()
    parts = harmonise_labs(raw, ref, cfg.harmonise)
    subject_split = validate_subjects(inputs.subjects.frame) if inputs.subjects is not None else None
    enrolled = subject_split.accepted if subject_split is not None and cfg.validation.require_enrolled_subject else None
    lab_split = validate_labs(
        parts.candidates,
        cfg.validation.as_of,
        ref.ifn_methods["method"].to_list(),
        enrolled=enrolled,
        refused=subject_split.quarantine if subject_split is not None else None,  # their lab rows say why
    )
    harmonised = harmonised_table(lab_split.accepted)
    subjects = subject_split.accepted if subject_split is not None else None
    subject_quarantine = subject_split.quarantine if subject_split is not None else None
    prepared = Prepared(
        harmonised=harmonised,
        lab_quarantine=lab_split.quarantine,
        outside_panel=parts.outside_panel,
        subjects=subjects,
        subject_quarantine=subject_quarantine,
        counts=accounting(
            inputs,
            harmonised=harmonised,
            outside=parts.outside_panel,
            lab_quarantine=lab_split.quarantine,
            subjects=subjects,
            subject_quarantine=subject_quarantine,
        ),
    )
    expression = [t for t in inputs.labs if t.fmt == "expression"]
    if expression:
        prepared.ifn_controls = pl.concat([control_qc(t) for t in expression])
    if inputs.visits is not None:
        prepared = with_visits(prepared, inputs.visits, cfg)
    if inputs.events is not None:
        prepared = with_events(prepared, inputs.events, cfg)
    if any(t.rejected is not None for t in inputs.labs) or (inputs.subjects and inputs.subjects.rejected is not None):
        # Records a reader refused (e.g. FHIR entered-in-error) join the quarantine and the counts.
        prepared = merge_reader_quarantine(inputs, prepared)
    # Counted last, so that readers' rejected records are in (their tests name the group where they map).
    prepared.counts["panel_groups"] = panel_group_counts(prepared.harmonised, prepared.lab_quarantine, ref)
    return prepared


def with_visits(prepared: Prepared, visits: Any, cfg: RunConfig) -> Prepared:
    """Validate a visits file against the valid subjects: accepted visits, quarantined rows and their counts."""
    split = validate_visits(
        visits.frame,
        prepared.subjects,
        cfg.validation.as_of,
        cfg.visits,
        load_descriptors(),
        refused=prepared.subject_quarantine,  # their visits say why
    )
    prepared.visits, prepared.visit_quarantine = split.accepted, split.quarantine
    prepared.counts["visits"] = {"path": visits.path, **visit_counts(visits.rows_read, split)}
    return prepared


def with_events(prepared: Prepared, events: Any, cfg: RunConfig) -> Prepared:
    """Validate an events file (CRS / ICANS assessments) against the valid subjects, as visits are."""
    split = validate_events(
        events.frame, prepared.subjects, cfg.validation.as_of, refused=prepared.subject_quarantine, config=cfg.events
    )
    prepared.events, prepared.event_quarantine = split.accepted, split.quarantine
    prepared.counts["events"] = {"path": events.path, **event_counts(events.rows_read, split)}
    return prepared


def harmonise_validate(tables: Tables, ctx: RunContext) -> PhaseResult:
    """Phase: map, parse, convert and validate one partition; rows accepted, outside the panel or quarantined."""
    prepared = prepare(tables["inputs"], ctx.cfg, ctx.reference)
    return PhaseResult(
        tables={
            "harmonised": prepared.harmonised,
            "quarantine": prepared.quarantine,
            "outside_panel": prepared.outside_panel,
            "subjects": prepared.subjects,
            "visits": prepared.visits,
            "events": prepared.events,
            "ifn_controls": prepared.ifn_controls,
        },
        counts=prepared.counts,
    )


def check_quarantine_ceiling(
    counts: Mapping[str, Any], validation: ValidationConfig, groups: Sequence[str] = (SELECTION,)
) -> None:
    """Raise when a panel group's quarantined fraction exceeds its ceiling.

    Checked: `groups` (the groups the run depends on) and every group with its own ceiling in
    `validation.max_quarantine_fraction_by_group`; each against that ceiling, else
    `validation.max_quarantine_fraction`. `counts["panel_groups"]` comes from `panel_group_counts`.
    """
    by_group = counts["panel_groups"]
    overrides = validation.max_quarantine_fraction_by_group
    for group in dict.fromkeys([*groups, *overrides]):  # two groups at most
        tally = by_group.get(group, {})
        panel_rows, quarantined = int(tally.get("panel_rows", 0)), int(tally.get("quarantined", 0))
        ceiling = overrides.get(group, validation.max_quarantine_fraction)
        if panel_rows == 0 or quarantined / panel_rows <= ceiling:
            continue
        setting = (
            f"validation.max_quarantine_fraction_by_group.{group}"
            if group in overrides
            else "validation.max_quarantine_fraction"
        )
        top = ", ".join(f"{k}: {v}" for k, v in list(counts.get("quarantined_by_reason", {}).items())[:5])
        raise QuarantineCeilingError(
            f"{quarantined} of {panel_rows} {group} panel rows ({quarantined / panel_rows:.1%}) were quarantined, "
            f"above the ceiling of {ceiling:.1%} ({setting}; the ceiling applies per analyte group). Most common "
            f"reasons over all lab rows: {top}. See quarantine.parquet in the run folder."
        )


def quarantine_ceiling_gate(groups: Sequence[str]) -> Gate:
    """The quarantine-ceiling gate of a pipeline depending on the analyte `groups` (`check_quarantine_ceiling`)."""

    def quarantine_ceiling(view: View, ctx: RunContext, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Gate: stop the run when too large a fraction of a group's panel rows was quarantined (all partitions)."""
        check_quarantine_ceiling(manifest["counts"], ctx.cfg.validation, groups)
        return {}

    return Gate(
        name="quarantine-ceiling",
        stages=("quarantine ceiling",),
        description=f"stop the run (status failed, quarantine written) when more than "
        f"validation.max_quarantine_fraction of the rows of an analyte group ({', '.join(groups)}, and any group "
        "with its own ceiling) were quarantined, over all partitions",
        reads=(),
        run=quarantine_ceiling,
    )


# --------------------------------------------------------------------------------- baseline, eligibility, score


def baseline_and_eligibility(
    harmonised: pl.DataFrame,
    subjects: pl.DataFrame | None,
    ref: ReferenceTables,
    cfg: RunConfig,
    protocol: Protocol,
    *,
    visits: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Baseline and eligibility: one row per valid subject, and the selection SLEDAI-2K counts.

    With visits, the selection baseline visit's SLEDAI-2K joins the subjects file's (`with_selection_sledai`);
    the follow-up dates (day 0, discontinuation) are not part of the strata contract.
    """
    if subjects is None:
        raise ValueError("stratify needs a subjects file (reference dates anchor the baseline window)")
    with_sledai, counts = with_selection_sledai(
        subjects, visits, harmonised, config=cfg.followup, baseline=cfg.baseline
    )
    selection = with_sledai.drop(SUBJECT_FOLLOW_UP_COLUMNS, strict=False)
    return assess_eligibility(derive_baseline(harmonised, selection, ref, cfg.baseline), protocol), counts


def build_strata(
    prepared: Prepared, protocol: Protocol, cfg: RunConfig, ref: ReferenceTables | None = None
) -> pl.DataFrame:
    """Baseline and eligibility of prepared inputs (a plain function for notebooks and tests)."""
    ref = ref or load_reference(cfg.harmonise.alias_file, cfg.baseline.ifn_methods_file)
    strata, _ = baseline_and_eligibility(
        prepared.harmonised, prepared.subjects, ref, cfg, protocol, visits=prepared.visits
    )
    return strata


def _strata(tables: Tables, ctx: RunContext) -> tuple[pl.DataFrame, dict[str, Any]]:
    assert ctx.protocol is not None
    strata, counts = baseline_and_eligibility(
        tables["harmonised"], tables["subjects"], ctx.reference, ctx.cfg, ctx.protocol, visits=tables.get("visits")
    )
    return strata, {"selection_sledai": counts}


def score(strata: pl.DataFrame, ctx: RunContext) -> pl.DataFrame:
    """Probabilities, groups and per-feature contributions from the run's model (verified at launch)."""
    scored = score_strata(strata, ctx.model.for_scoring(), cutoffs=ctx.cutoffs)
    return scored.with_columns(run_id=pl.lit(ctx.run_id))


def baseline_eligibility(tables: Tables, ctx: RunContext) -> PhaseResult:
    """Phase: baseline profile and eligibility of one partition's subjects (the features a model learns from)."""
    strata, counts = _strata(tables, ctx)
    return PhaseResult(tables={"strata": strata}, counts=counts)


def baseline_score(tables: Tables, ctx: RunContext) -> PhaseResult:
    """Phase: baseline, eligibility and responder score of one partition's subjects."""
    strata, counts = _strata(tables, ctx)
    return PhaseResult(tables={"strata": score(strata, ctx)}, counts=counts)


def baseline_flag_agreement(view: View, ctx: RunContext, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Gate (never stops): how often our baseline choice agrees with SDTM's own LBBLFL / LBLOBXFL flags."""
    labs = view.source.labs
    if not any(t.fmt == "sdtm" for t in labs):
        return {}
    if not view.whole:
        # Needs every SDTM row's flags beside the whole strata table: a single-pass figure only.
        return {"counts": {"sdtm_baseline_flags": {"not_computed": "streaming mode"}}}
    return {
        "counts": {"sdtm_baseline_flags": sdtm_flag_agreement(view.frame("harmonised"), view.frame("strata"), labs)}
    }


_STRATA_FOR_SUMMARY = ("eligible", "responder_group", "missing_analytes")


def summary_columns(ctx: RunContext) -> list[str]:
    """The strata columns the whole-run figures read (never the whole strata table)."""
    criteria = [f"criterion_{c.id}" for c in ctx.protocol.criteria] if ctx.protocol is not None else []
    features = [f.source for f in ctx.model.features] if ctx.model is not None else []
    return list(dict.fromkeys([*_STRATA_FOR_SUMMARY, *criteria, *features]))


def drift(view: View, ctx: RunContext, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Gate: the cohort's feature distributions against the model's training reference; stops on drift when
    `scoring.fail_on_drift` is set."""
    s = ctx.cfg.scoring
    frame = view.frame("strata", summary_columns(ctx))
    # The same model object that scored the partitions (loaded once per run).
    result = drift_checks.compare(
        frame, ctx.model.for_scoring(), s.drift_threshold, missing_threshold=s.drift_missing_threshold
    )
    drift_checks.check(result, s.fail_on_drift)  # DriftError carries `result` into run.json
    return {"drift": result}


def summary_stats(strata: pl.DataFrame, protocol: Protocol) -> dict[str, Any]:
    """Counts a reader wants first: eligibility, groups, missing analytes, funnel."""
    eligible = strata["eligible"]
    groups = count_by(strata, "responder_group") if "responder_group" in strata.columns else {}
    return {
        "subjects": strata.height,
        "eligible": {
            "true": int((eligible == True).sum()),  # noqa: E712
            "false": int((eligible == False).sum()),  # noqa: E712
            "not_assessable": int(eligible.is_null().sum()),
        },
        "responder_groups": groups,
        "missing_baseline_by_analyte": missing_counts(strata),
        "eligibility_funnel": funnel(strata, protocol),
    }


def summarise(view: View, ctx: RunContext, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Gate (never stops): the figures run.json and the summary lead with."""
    assert ctx.protocol is not None
    summary = summary_stats(view.frame("strata", summary_columns(ctx)), ctx.protocol)
    summary["drift"] = drift_checks.summary_line(manifest["drift"])
    return {"summary": summary}


# -------------------------------------------------------------------------------------------------- provenance


def package_versions() -> dict[str, str]:
    """Versions of immunostrat, Python and the pinned stack, for provenance."""
    found = {"immunostrat": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe_inputs(inputs: Inputs, ctx: RunContext) -> dict[str, Any]:
    """The provenance part of run.json: parameters, protocol, every input file with its checksum, versions."""
    files = [
        InputFile(
            path=t.path,
            kind="labs",
            format=t.fmt,
            sha256=t.sha256,
            rows=t.rows_read,
            extra_columns=list(t.extra_columns),
            notes=t.notes,
        )
        for t in inputs.labs
    ]
    for kind in ("subjects", "visits", "events"):
        table = getattr(inputs, kind)
        if table is not None:
            files.append(
                InputFile(
                    path=table.path,
                    kind=kind,
                    format=table.fmt,
                    sha256=table.sha256,
                    rows=table.rows_read,
                    notes=table.notes,
                )
            )
    record: dict[str, Any] = {
        "started_at": ctx.started.isoformat(),
        "as_of": ctx.cfg.validation.as_of.isoformat(),
        "parameters": json.loads(ctx.cfg.model_dump_json()),
    }
    if ctx.protocol is not None:
        record["protocol"] = {"protocol_id": ctx.protocol.protocol_id, "version": ctx.protocol.version}
    # Only the keys given: subjects, visits and events files have no `extra_columns`.
    written = [f.model_dump(exclude_unset=True) for f in files]
    record.update(inputs=written, versions=package_versions(), command=sys.argv)
    if ctx.model is not None:
        record["model"] = ctx.model_info()
    return record


# ------------------------------------------------------------------------------------- order of merged partitions


def _file_order(view: View) -> dict[str, int]:
    """Lab files in run order, then the subjects, visits and events files (as one pass lists their rows)."""
    source = view.source
    paths = [t.path for t in source.labs]
    others = (source.subjects, getattr(source, "visits", None), getattr(source, "events", None))
    paths += [t.path for t in others if t is not None]
    return {p: i for i, p in enumerate(dict.fromkeys(paths))}


def _labs_in_source_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    return in_source_order(frame, _file_order(view))


def _subjects_in_source_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    return frame.sort("source_row")


def _strata_in_subject_order(frame: pl.DataFrame, view: View, ctx: RunContext) -> pl.DataFrame:
    key = ["study_id", "subject_id"]
    order = view.frame("subjects", [*key, "source_row"])
    return frame.join(order, on=key, how="left").sort("source_row").drop("source_row")


# Single-pass order of each merged table: lab rows by input file then row; quarantine lab rows first, then
# subject rows, then visit rows; strata in subjects-file order.
ORDER = {
    "harmonised": _labs_in_source_order,
    "outside_panel": _labs_in_source_order,
    "ifn_controls": _labs_in_source_order,  # per matrix: gene rows (no source_row, nulls first), then controls
    "quarantine": _labs_in_source_order,
    "subjects": _subjects_in_source_order,
    "strata": _strata_in_subject_order,
}


# --------------------------------------------------------------------------------------------------- pipelines


def _publish(run_dir: Path, ctx: RunContext) -> Any:
    # Start-up time: the sponsor snapshot (its report, jinja2, the registry) loads only for a run that publishes;
    # `validate` runs this definition's prefix and never gets here.
    from immunostrat.sponsor.publish import publish_run

    # The pseudonym key is loaded inside, never passed around.
    return publish_run(run_dir, ctx.cfg.publish)


SOURCE = Source(
    read=lambda ctx: read_run_inputs(ctx.files, ctx.cfg),
    split=split_inputs,
    split_on_disk=lambda ctx, folder: split_on_disk(ctx.files, ctx.cfg, folder, ctx.partitions),
    describe=describe_inputs,
)

HARMONISE_VALIDATE = Phase(
    name="harmonise-validate",
    stages=("harmonise", "validate"),
    description="map tests onto the panel, parse results and dates, convert units; pandera checks split rows "
    "into accepted, outside the panel and quarantined (with a reason code and a readable message)",
    reads=("inputs",),
    writes=("harmonised", "quarantine", "outside_panel", "subjects", "visits", "events", "ifn_controls"),
    run=harmonise_validate,
)
#: The team's QC of the expression matrices' healthy controls: written when matrices are given, never published.
IFN_CONTROLS_OUTPUT = Output(
    "ifn_controls.parquet",
    "ifn_controls",
    contract="ifn_controls",
    when=lambda ctx: bool(getattr(ctx.files, "expression", None)),
)
#: Selection pipelines depend on the selection panel only: messy follow-up analytes never stop them.
QUARANTINE_CEILING = quarantine_ceiling_gate((SELECTION,))
#: For pipelines that read the follow-up analytes too (monitor): every group is checked.
QUARANTINE_CEILING_ALL_GROUPS = quarantine_ceiling_gate(PANEL_GROUPS)

STRATIFY = Pipeline(
    name="stratify",
    description="ingest, validate, baseline, eligibility, responder score; write a run folder and publish it",
    source=SOURCE,
    steps=(
        HARMONISE_VALIDATE,
        QUARANTINE_CEILING,
        Phase(
            name="baseline-score",
            stages=("baseline", "eligibility", "score"),
            description="per subject: the baseline measurement per analyte and derived flags, protocol "
            "eligibility, then the responder probability, group and per-feature contributions",
            reads=("harmonised", "subjects", "visits"),
            writes=("strata",),
            run=baseline_score,
        ),
        Gate(
            name="baseline-flag-agreement",
            stages=(),
            description="SDTM inputs only: agreement of our baseline choice with the sponsor's own baseline flags",
            reads=("harmonised", "strata"),
            run=baseline_flag_agreement,
        ),
        Gate(
            name="drift",
            stages=("drift gate",),
            description="PSI and missingness of the model's features against its training reference; stops the "
            "run only when scoring.fail_on_drift is set",
            reads=("strata",),
            run=drift,
        ),
        Gate(
            name="summarise",
            stages=(),
            description="eligibility, responder groups, missing analytes and the eligibility funnel for run.json",
            reads=("strata",),
            run=summarise,
        ),
    ),
    outputs=(
        Output("harmonised.parquet", "harmonised", contract="harmonised"),
        Output("quarantine.parquet", "quarantine", contract="quarantine"),
        Output("outside_panel.parquet", "outside_panel", contract="outside_panel"),
        IFN_CONTROLS_OUTPUT,
        Output("strata.parquet", "strata", contract="strata", on_failure=False),
    ),
    finish=(
        Finish(
            name="publish",
            stages=("publish",),
            description="the pseudonymised sponsor snapshot, its manifest, data dictionary and report",
            run=_publish,
            when=lambda ctx: ctx.cfg.publish.enabled,
        ),
    ),
    order=ORDER,
    kept=("subjects",),  # the strata's order rule reads the subjects' file order
)

VALIDATE = STRATIFY.prefix(
    "harmonise-validate",
    name="validate",
    description="what a site runs before sending data: ingest, harmonise and validate, every problem reported",
    kept=("quarantine",),
)

LABELLED = Pipeline(
    name="labelled-strata",
    description="the features a model learns from and is evaluated on, derived exactly as stratify derives them",
    source=SOURCE,
    steps=(
        HARMONISE_VALIDATE,
        QUARANTINE_CEILING,
        Phase(
            name="baseline-eligibility",
            stages=("baseline", "eligibility"),
            description="per subject: the baseline measurement per analyte, derived flags and eligibility",
            reads=("harmonised", "subjects", "visits"),
            writes=("strata",),
            run=baseline_eligibility,
        ),
    ),
    order=ORDER,
    kept=("strata", "subjects"),
)

PIPELINES = {p.name: p for p in (STRATIFY, VALIDATE, LABELLED)}
