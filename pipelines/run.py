"""The stratify and validate pipelines as plain functions (no Prefect), composed from the stages.

`immunostrat.flows` wraps the same functions in Prefect tasks; `immunostrat validate` and the tests call
them directly so that quick checks answer in seconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat import __version__
from immunostrat.config import Protocol, RunConfig, StratifyParams, load_protocol
from immunostrat.io import (
    InputTable,
    read_labs,
    read_subjects,
    sha256_file,
    write_json_atomic,
    write_parquet_atomic,
)
from immunostrat.reference import ReferenceTables, load_reference
from immunostrat.stages.baseline import derive_baseline, missing_counts
from immunostrat.stages.eligibility import assess_eligibility, funnel
from immunostrat.stages.harmonise import harmonise_labs, harmonised_table
from immunostrat.stages.validate import validate_labs, validate_subjects

PACKAGES = ("polars", "pandera", "prefect", "scikit-learn", "pyarrow", "skops", "numpy", "pydantic")


class QuarantineCeilingError(RuntimeError):
    """Too large a fraction of panel rows was quarantined; the run stops with the quarantine written."""


@dataclass(frozen=True)
class Inputs:
    """Every input file of a run, read and checked for structure (before any compute)."""

    labs: list[InputTable]
    subjects: InputTable | None


@dataclass
class Prepared:
    """Harmonised and validated inputs, and their accounting."""

    harmonised: pl.DataFrame
    lab_quarantine: pl.DataFrame
    outside_panel: pl.DataFrame
    subjects: pl.DataFrame | None
    subject_quarantine: pl.DataFrame | None = None
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def quarantine(self) -> pl.DataFrame:
        """Every quarantined row: lab rows first, then subject rows."""
        if self.subject_quarantine is None or self.subject_quarantine.height == 0:
            return self.lab_quarantine
        return pl.concat([self.lab_quarantine, self.subject_quarantine], how="diagonal_relaxed")


def reader_options(cfg: RunConfig, samples: str | Path | None = None) -> Any:
    """`immunostrat.readers.ReaderOptions` from the run configuration."""
    from immunostrat.readers import ReaderOptions

    r = cfg.readers
    return ReaderOptions(
        study_id=r.study_id,
        crosswalk=r.crosswalk,
        samples=samples,
        ifn_method=r.ifn_method,
        ifn_genes=tuple(r.ifn_genes) if r.ifn_genes else None,
        ifn_statistic=r.ifn_statistic,
        min_controls=r.min_controls,
        log2_max=r.log2_max,
        reference_date_from=r.reference_date_from,
        alias_file=cfg.harmonise.alias_file,
    )


def read_inputs(
    lab_paths: Sequence[str | Path],
    subjects_path: str | Path | None,
    *,
    cfg: RunConfig | None = None,
    lab_format: str | None = None,
    expression: Sequence[str | Path] = (),
    samples: str | Path | None = None,
    patients: str | Path | None = None,
) -> Inputs:
    """Read all inputs; raises `InputError` on the first unusable file, before any compute.

    Lab files may be native, SDTM (LB/CP) or FHIR (detected from content unless `lab_format` names it);
    expression matrices become IFN-score rows; FHIR Patients fill missing sex and age of the subjects.
    """
    options = reader_options(cfg, samples) if cfg is not None else None
    labs = [read_labs(p, lab_format, options) for p in lab_paths]
    labs += [read_labs(m, "expression", options) for m in expression]
    subjects = read_subjects(subjects_path, None, options) if subjects_path is not None else None
    if patients is not None and subjects is not None:
        from immunostrat.readers import add_patient_demographics, read_fhir_patients

        r = cfg.readers if cfg is not None else None
        found = read_fhir_patients(patients, study_id=r.study_id if r else None, crosswalk=r.crosswalk if r else None)
        subjects = add_patient_demographics(subjects, found)
    return Inputs(labs=labs, subjects=subjects)


def input_options(params: Any) -> dict[str, Any]:
    """Keyword options of `read_inputs` for a run's parameters (empty for plain native inputs)."""
    options: dict[str, Any] = {"cfg": params.config}
    if params.lab_format:
        options["lab_format"] = params.lab_format
    if params.expression:
        options.update(expression=list(params.expression), samples=params.samples)
    if params.patients:
        options["patients"] = params.patients
    return options


def _count_by_file(frame: pl.DataFrame) -> dict[str, int]:
    if frame.height == 0:
        return {}
    counts = frame.group_by("source_file").len()
    return dict(zip(counts["source_file"].to_list(), counts["len"].to_list(), strict=True))


def _count_by(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if frame.height == 0:
        return {}
    counts = frame.group_by(column).len().sort("len", column, descending=[True, False])
    return {str(k): int(v) for k, v in zip(counts[column].to_list(), counts["len"].to_list(), strict=True)}


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
        "outside_panel_by_test": _count_by(outside, "test"),
        "quarantined_by_reason": _count_by(lab_quarantine, "reason_code"),
    }
    if inputs.subjects is not None and subjects is not None and subject_quarantine is not None:
        counts["subjects"] = {
            "path": inputs.subjects.path,
            "rows_read": inputs.subjects.rows_read,
            "accepted": subjects.height,
            "quarantined": subject_quarantine.height,
            "quarantined_by_reason": _count_by(subject_quarantine, "reason_code"),
        }
    return counts


def prepare(inputs: Inputs, cfg: RunConfig, ref: ReferenceTables | None = None) -> Prepared:
    """Harmonise and validate: the ingest-to-quarantine half of a run."""
    ref = ref or load_reference(cfg.harmonise.alias_file, cfg.baseline.ifn_methods_file)
    raw = pl.concat([t.frame for t in inputs.labs], how="vertical") if inputs.labs else pl.DataFrame()
    parts = harmonise_labs(raw, ref, cfg.harmonise)
    subject_split = validate_subjects(inputs.subjects.frame) if inputs.subjects is not None else None
    enrolled = subject_split.accepted if subject_split is not None and cfg.validation.require_enrolled_subject else None
    lab_split = validate_labs(
        parts.candidates, cfg.validation.as_of, ref.ifn_methods["method"].to_list(), enrolled=enrolled
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
    if any(t.rejected is not None for t in inputs.labs) or (inputs.subjects and inputs.subjects.rejected is not None):
        from immunostrat.readers import merge_reader_quarantine

        # Records a reader refused (e.g. FHIR entered-in-error) join the quarantine and the counts.
        prepared = merge_reader_quarantine(inputs, prepared)
    return prepared


def check_quarantine_ceiling(counts: dict[str, Any], ceiling: float) -> None:
    """Raise when the quarantined fraction of panel rows exceeds the configured ceiling."""
    panel_rows = int(counts["accepted"]) + int(counts["quarantined"])
    if panel_rows == 0:
        return
    fraction = int(counts["quarantined"]) / panel_rows
    if fraction > ceiling:
        top = ", ".join(f"{k}: {v}" for k, v in list(counts["quarantined_by_reason"].items())[:5])
        raise QuarantineCeilingError(
            f"{counts['quarantined']} of {panel_rows} panel rows ({fraction:.1%}) were quarantined, above the "
            f"ceiling of {ceiling:.1%} (validation.max_quarantine_fraction). Most common reasons: {top}. "
            "See quarantine.parquet in the run folder."
        )


def build_strata(
    prepared: Prepared, protocol: Protocol, cfg: RunConfig, ref: ReferenceTables | None = None
) -> pl.DataFrame:
    """Baseline and eligibility: one row per valid subject."""
    if prepared.subjects is None:
        raise ValueError("stratify needs a subjects file (reference dates anchor the baseline window)")
    ref = ref or load_reference(cfg.harmonise.alias_file, cfg.baseline.ifn_methods_file)
    strata = derive_baseline(prepared.harmonised, prepared.subjects, ref, cfg.baseline)
    return assess_eligibility(strata, protocol)


def package_versions() -> dict[str, str]:
    """Versions of immunostrat, Python and the pinned stack, for provenance."""
    found = {"immunostrat": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable, unique run id: UTC time plus a random suffix."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def summary_stats(strata: pl.DataFrame, protocol: Protocol) -> dict[str, Any]:
    """Counts a reader wants first: eligibility, groups, missing analytes, funnel."""
    eligible = strata["eligible"]
    groups = _count_by(strata, "responder_group") if "responder_group" in strata.columns else {}
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


# Output file -> the pandera contract (immunostrat.schemas.outputs) it is checked against before writing.
OUTPUT_CONTRACTS = {"harmonised.parquet": "harmonised", "quarantine.parquet": "quarantine", "strata.parquet": "strata"}


@dataclass(frozen=True)
class RunOutputs:
    """Where a finished run wrote its files."""

    run_dir: Path
    run_json: dict[str, Any]


@contextlib.contextmanager
def staged_run_folder(out_dir: str | Path, run_id: str) -> Iterator[Path]:
    """Yield a hidden staging folder that is renamed to `<out_dir>/<run_id>` when the block succeeds.

    A crash leaves no `<run_id>` folder at all (only a hidden `.<run_id>.partial`, removed here or by the next
    run's cleanup), so readers never see a half-written run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".{run_id}.partial"
    final = out / run_id
    if final.exists():
        raise FileExistsError(f"run folder {final} already exists")
    staging.mkdir()
    try:
        yield staging
        from immunostrat.safety import fsync_dir

        fsync_dir(staging)  # the folder's entries reach the disk before it is renamed into place
        os.replace(staging, final)
        fsync_dir(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def provenance_metadata(run_id: str) -> dict[str, str]:
    """Key-value metadata written into every output Parquet footer."""
    return {"immunostrat_run_id": run_id, "immunostrat_version": __version__}


def finish_manifest(staging: Path, run_id: str, manifest: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Write run.json (the last file of a run folder) into the staging folder."""
    write_json_atomic({**manifest, "run_id": run_id, "outputs": outputs}, staging / "run.json")


def write_run(
    out_dir: str | Path,
    run_id: str,
    *,
    strata: pl.DataFrame | None,
    prepared: Prepared,
    manifest: dict[str, Any],
) -> RunOutputs:
    """Write the run folder atomically: files go to a hidden staging folder renamed into place at the end.

    Inside, every file is itself written temp-then-rename, after its output contract was checked.
    """
    files: dict[str, pl.DataFrame] = {
        "harmonised.parquet": prepared.harmonised,
        "quarantine.parquet": prepared.quarantine,
        "outside_panel.parquet": prepared.outside_panel,
    }
    if strata is not None:
        files["strata.parquet"] = strata
    from immunostrat.schemas.outputs import validate_output  # imports scikit-learn: only when writing

    with staged_run_folder(out_dir, run_id) as staging:
        outputs = {}
        for name, frame in files.items():
            if name in OUTPUT_CONTRACTS:
                # The output contracts are enforced before anything is written under a final name.
                validate_output(OUTPUT_CONTRACTS[name], frame)
            path = write_parquet_atomic(frame, staging / name, metadata=provenance_metadata(run_id))
            outputs[name] = {"rows": frame.height, "sha256": sha256_file(path)}
        finish_manifest(staging, run_id, manifest, outputs)
    final = Path(out_dir) / run_id
    return RunOutputs(run_dir=final, run_json=json.loads((final / "run.json").read_text(encoding="utf-8")))


def base_manifest(inputs: Inputs, cfg: RunConfig, protocol: Protocol, started_at: dt.datetime) -> dict[str, Any]:
    """The provenance part of run.json known before compute."""
    return {
        "started_at": started_at.isoformat(),
        "as_of": cfg.validation.as_of.isoformat(),
        "parameters": json.loads(cfg.model_dump_json()),
        "protocol": {"protocol_id": protocol.protocol_id, "version": protocol.version},
        "inputs": [
            {
                "path": t.path,
                "kind": "labs",
                "format": t.fmt,
                "sha256": t.sha256,
                "rows": t.rows_read,
                "extra_columns": list(t.extra_columns),
                "notes": t.notes,
            }
            for t in inputs.labs
        ]
        + (
            [
                {
                    "path": inputs.subjects.path,
                    "kind": "subjects",
                    "format": inputs.subjects.fmt,
                    "sha256": inputs.subjects.sha256,
                    "rows": inputs.subjects.rows_read,
                    "notes": inputs.subjects.notes,
                }
            ]
            if inputs.subjects is not None
            else []
        ),
        "versions": package_versions(),
        "command": sys.argv,
    }


_MODEL_PREFETCH: dict[tuple[str, str], Future[Any]] = {}


def _model_key(cfg: RunConfig) -> tuple[str, str]:
    return cfg.scoring.model, str(cfg.scoring.registry or "")


def _load_model(model: str, registry: Path | None) -> Any:
    from immunostrat.registry import load_model

    return load_model(model, registry)


def prefetch_model(cfg: RunConfig) -> Future[Any]:
    """Start loading (and verifying) the run's model in a background thread.

    Importing scikit-learn and skops and checking the model file take seconds; they overlap with
    harmonisation (polars releases the GIL), and a refused model is reported before baseline and scoring.
    """
    key = _model_key(cfg)
    if key not in _MODEL_PREFETCH:
        # No `with`: leaving it would wait for the load and undo the overlap.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-prefetch")
        _MODEL_PREFETCH[key] = pool.submit(_load_model, cfg.scoring.model, cfg.scoring.registry)
        pool.shutdown(wait=False)
    return _MODEL_PREFETCH[key]


def score(strata: pl.DataFrame, cfg: RunConfig, run_id: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Load the configured model (checksum verified) and add probabilities, groups and contributions."""
    from immunostrat.modeling import score_strata

    future = _MODEL_PREFETCH.pop(_model_key(cfg), None)
    model = future.result() if future is not None else _load_model(cfg.scoring.model, cfg.scoring.registry)
    overridden = cfg.scoring.possible_min is not None and cfg.scoring.likely_min is not None
    cutoffs = (
        {"possible_min": cfg.scoring.possible_min, "likely_min": cfg.scoring.likely_min}
        if overridden
        else dict(model.default_cutoffs)
    )
    scored = score_strata(strata, model, cutoffs=cutoffs).with_columns(run_id=pl.lit(run_id))
    info = {
        "model_id": model.model_id,
        "sha256": model.sha256,
        "requested": cfg.scoring.model,
        "features": list(model.feature_names),
        "cutoffs": cutoffs,
        "cutoffs_source": "run parameters" if overridden else "model card",
    }
    return scored, info


def _prepare_each(parts: list[Inputs], cfg: RunConfig) -> list[Prepared]:
    from immunostrat.partition import prepare_each

    return prepare_each(parts, cfg)


def _score_each(
    parts: list[Prepared], protocol: Protocol, cfg: RunConfig, run_id: str
) -> list[tuple[pl.DataFrame, dict[str, Any]]]:
    from immunostrat.partition import score_each

    return score_each(parts, protocol, cfg, run_id)


def _split(params: StratifyParams, scratch: Path) -> Any:
    from immunostrat.streaming import split_inputs

    return split_inputs(params, scratch)


def _validate_partition(split: Any, k: int, cfg: RunConfig, scratch: Any) -> dict[str, Any]:
    from immunostrat.streaming import validate_partition

    return validate_partition(split, k, cfg, scratch)


def _score_partition(k: int, scratch: Any, protocol: Protocol, cfg: RunConfig, run_id: str) -> dict[str, Any]:
    from immunostrat.streaming import score_partition

    return score_partition(k, scratch, protocol, cfg, run_id)


def _publish(run_dir: Path, cfg: Any) -> Any:
    from immunostrat.publish import publish_run

    return publish_run(run_dir, cfg)


@dataclass(frozen=True)
class Stages:
    """The stage callables a stratify run is composed of; the Prefect flows swap in task-wrapped ones."""

    read_inputs: Callable[..., Inputs] = read_inputs
    prepare: Callable[[Inputs, RunConfig], Prepared] = prepare
    build_strata: Callable[[Prepared, Protocol, RunConfig], pl.DataFrame] = build_strata
    score: Callable[[pl.DataFrame, RunConfig, str], tuple[pl.DataFrame, dict[str, Any]]] = score
    write_run: Callable[..., RunOutputs] = write_run
    publish: Callable[[Path, Any], Any] = _publish
    # Streaming runs: structure checks and the on-disk split by subject partition (immunostrat.streaming).
    split: Callable[[StratifyParams, Path], Any] = _split
    validate_partition: Callable[..., dict[str, Any]] = _validate_partition
    score_partition: Callable[..., dict[str, Any]] = _score_partition
    # Partitioned runs: the same stages over subject partitions (a loop here; mapped tasks in the flow).
    prepare_each: Callable[[list[Inputs], RunConfig], list[Prepared]] = _prepare_each
    score_each: Callable[[list[Prepared], Protocol, RunConfig, str], list[tuple[pl.DataFrame, dict[str, Any]]]] = (
        _score_each
    )


def stratify(params: StratifyParams, stages: Stages | None = None) -> RunOutputs:
    """One stratify run: ingest, validate, baseline, eligibility, score, write.

    With `params.partitions > 1` the stages run per subject partition and the results are merged into the
    same outputs a single pass gives. Streaming runs (`params.streaming`, by default when the lab rows exceed
    `params.partition_rows`) split partitions on disk and process them one at a time (`immunostrat.streaming`),
    so memory is bounded by a partition.

    When the quarantined fraction exceeds the ceiling, the run folder is still written (quarantine and run.json
    with status "failed", no strata) and `QuarantineCeilingError` is raised.
    """
    from immunostrat import safety

    roots = safety.data_roots_from_env()
    if roots:
        # Paths from config and schedules must stay inside the configured data roots (no .., no links out).
        safety.check_stratify_paths(params, roots)
    stages = stages or Stages()
    started = dt.datetime.now(dt.UTC)
    cfg = params.config
    protocol = load_protocol(Path(params.protocol) if params.protocol else None)
    run_id = new_run_id(started)
    if cfg.publish.enabled:
        from immunostrat.pseudonym import load_key

        # A missing pseudonym key stops the run before any compute; the key itself is never passed around.
        load_key(cfg.publish.key_file, demo=cfg.publish.demo_key)
    # One run at a time per output folder: a second run fails fast naming the holder, never interleaves.
    with safety.run_lock(params.out, run_id=run_id) as lock:
        cleaned = [p.name for p in lock.remove_stale_staging()]  # leftovers of runs that were killed
        try:
            from immunostrat import streaming as out_of_core

            if out_of_core.wanted(params):
                # The model loads in the background while the inputs are split.
                streaming = out_of_core.StreamingRun(
                    params, stages, protocol, run_id, started, prefetch_model(cfg), cleaned, base_manifest
                )
                outputs: RunOutputs = out_of_core.run_streaming(streaming)
            else:
                inputs = stages.read_inputs(params.labs, params.subjects, **input_options(params))
                outputs = _stratify_after_ingest(
                    params,
                    stages,
                    inputs=inputs,
                    protocol=protocol,
                    run_id=run_id,
                    started=started,
                    model_ready=prefetch_model(cfg),
                    cleaned=cleaned,
                )
        finally:
            _MODEL_PREFETCH.pop(_model_key(cfg), None)  # never reuse a loaded model across runs
    return outputs


def _stratify_after_ingest(
    params: StratifyParams,
    stages: Stages,
    *,
    inputs: Inputs,
    protocol: Protocol,
    run_id: str,
    started: dt.datetime,
    model_ready: Future[Any],
    cleaned: list[str],
) -> RunOutputs:
    cfg = params.config
    manifest = base_manifest(inputs, cfg, protocol, started)
    manifest["cleaned_up"] = cleaned
    manifest["partitions"] = params.partitions
    partitioned = params.partitions > 1
    if partitioned:
        from immunostrat.partition import merge_prepared, merge_strata, split_inputs

        prepared_parts = stages.prepare_each(split_inputs(inputs, params.partitions), cfg)
        prepared = merge_prepared(inputs, prepared_parts)
    else:
        prepared = stages.prepare(inputs, cfg)
    manifest["counts"] = prepared.counts
    try:
        check_quarantine_ceiling(prepared.counts, cfg.validation.max_quarantine_fraction)
    except QuarantineCeilingError as exc:
        manifest.update(status="failed", error=str(exc), finished_at=dt.datetime.now(dt.UTC).isoformat())
        stages.write_run(params.out, run_id, strata=None, prepared=prepared, manifest=manifest)
        raise
    model = model_ready.result()  # a refused model (checksum, trusted types, features) stops the run here
    if partitioned:
        results = stages.score_each(prepared_parts, protocol, cfg, run_id)
        scored = merge_strata(prepared, [r[0] for r in results])
        model_info = results[0][1]
    else:
        scored, model_info = stages.score(stages.build_strata(prepared, protocol, cfg), cfg, run_id)
    if any(t.fmt == "sdtm" for t in inputs.labs):
        from immunostrat.readers import baseline_flag_agreement

        # How often our baseline choice agrees with the sponsor's own LBBLFL / LBLOBXFL flags.
        manifest["counts"]["sdtm_baseline_flags"] = baseline_flag_agreement(prepared.harmonised, scored, inputs.labs)
    from immunostrat import drift

    # The cohort's feature distributions against the model's training reference (after merging partitions).
    manifest["drift"] = drift.compare(
        scored, model, cfg.scoring.drift_threshold, missing_threshold=cfg.scoring.drift_missing_threshold
    )
    try:
        drift.check(manifest["drift"], cfg.scoring.fail_on_drift)
    except drift.DriftError as exc:
        manifest.update(
            status="failed", model=model_info, error=str(exc), finished_at=dt.datetime.now(dt.UTC).isoformat()
        )
        stages.write_run(params.out, run_id, strata=None, prepared=prepared, manifest=manifest)
        raise
    manifest.update(
        status="completed",
        model=model_info,
        summary={**summary_stats(scored, protocol), "drift": drift.summary_line(manifest["drift"])},
        finished_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    outputs = stages.write_run(params.out, run_id, strata=scored, prepared=prepared, manifest=manifest)
    if cfg.publish.enabled:
        stages.publish(outputs.run_dir, cfg.publish)
    return outputs
