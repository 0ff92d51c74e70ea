"""Streaming (out-of-core) stratify runs, for cohorts larger than memory.

One streaming pass splits each native lab file on disk into subject partitions (Arrow IPC with LZ4:
scratch files written once and read once). Partitions then go one at a time through the same stages as a
single pass: harmonise and validate each (pass 1); check the quarantine ceiling on the summed counts; then
baseline, eligibility and scoring each (pass 2). Every partition's tables are checked against their output
contracts and kept as scratch files; the run folder's Parquet files are concatenated from them by a streaming
sink. Peak memory is one partition's working set plus the subjects table, whatever the number of lab rows.

Every rule that relates rows to each other works within one subject, and a subject's rows all land in one
partition (`immunostrat.partition`), so the outputs hold exactly the rows and values of a single pass. Only the
order differs: partition by partition, source order within each.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import polars as pl

from immunostrat.config import Protocol, RunConfig, StratifyParams
from immunostrat.io import (
    LAB_OPTIONAL,
    LAB_REQUIRED,
    SUBJECT_OPTIONAL,
    SUBJECT_REQUIRED,
    InputTable,
    ScannedInput,
    atomic_path,
    read_errors,
    scan_input,
    sha256_file,
)
from immunostrat.partition import in_source_order, partition_of, split_table

SCRATCH = ".parts"  # inside the run's staging folder, so a killed run's scratch goes with its staging
_BY_COUNT = ("outside_panel_by_test", "quarantined_by_reason")
# LZ4: uncompressed Arrow string views take ~160 bytes a lab row on disk (18 GB for 100M rows); LZ4 takes a
# tenth of that and decompresses faster than the disk reads the difference.
SCRATCH_COMPRESSION: Literal["lz4"] = "lz4"


def _is_native(path: str, lab_format: str | None) -> bool:
    if lab_format:
        return lab_format == "native"
    from immunostrat.readers.detect import detect_kind

    return detect_kind(path) == "native"


@dataclass
class SplitInputs:
    """A run's inputs cut into `n` subject partitions: native lab files on disk, the rest in memory."""

    n: int
    labs: list[InputTable]  # one per lab file, in run order; on-disk ones hold no rows (`row_count` says how many)
    subjects: InputTable  # the whole subjects file's provenance (no rows)
    on_disk: dict[int, Path] = field(default_factory=dict)  # lab file index -> folder of its partition files
    in_memory: dict[int, list[InputTable]] = field(default_factory=dict)  # lab file index -> its partitions
    subject_parts: list[InputTable] = field(default_factory=list)  # when the subjects are split in memory
    subjects_on_disk: Path | None = None  # else the folder of their partition files

    def partition(self, k: int) -> Any:
        """The `Inputs` of partition `k` (rows split on disk are read now)."""
        from immunostrat.run import Inputs

        labs = [
            _from_disk(t, self.on_disk[i], k) if i in self.on_disk else self.in_memory[i][k]
            for i, t in enumerate(self.labs)
        ]
        if self.subjects_on_disk is not None:
            return Inputs(labs=labs, subjects=_from_disk(self.subjects, self.subjects_on_disk, k))
        return Inputs(labs=labs, subjects=self.subject_parts[k])

    def header(self) -> Any:
        """`Inputs` carrying provenance only (paths, checksums, row counts), for run.json."""
        from immunostrat.run import Inputs

        return Inputs(labs=self.labs, subjects=self.subjects)


def _read_partition(folder: Path, k: int, empty: pl.DataFrame) -> pl.DataFrame:
    files = sorted((folder / f"_part={k}").glob("*.ipc"))
    if not files:
        return empty
    frame = pl.concat([pl.read_ipc(f) for f in files], how="vertical")
    # The sink keeps source order; sorting only if it did not costs one check.
    return frame if frame["source_row"].is_sorted() else frame.sort("source_row")


def _from_disk(header: InputTable, folder: Path, k: int) -> InputTable:
    return replace(header, frame=_read_partition(folder, k, header.frame), row_count=None)


def _header_only(table: InputTable) -> InputTable:
    return replace(table, frame=table.frame.clear(), rejected=None, detail=None, row_count=table.rows_read)


def wanted(params: StratifyParams) -> bool:
    """Whether a run streams: as configured, else when the native lab rows exceed one partition's worth.

    Raises:
        InputError: a native lab file is unusable (checked on its header, before any compute).
    """
    if params.streaming is not None:
        return params.streaming
    if params.partitions > 1:  # in-memory partitions (on Dask) were asked for
        return False
    native = [p for p in params.labs if _is_native(p, params.lab_format)]
    rows = sum(_count_rows(scan_input(p, LAB_REQUIRED, LAB_OPTIONAL, kind=_LABS[0]), _LABS) for p in native)
    return rows > params.partition_rows


def partition_count(params: StratifyParams, lab_rows: int) -> int:
    """`params.partitions` when set above 1, otherwise enough partitions of `params.partition_rows` lab rows."""
    if params.partitions > 1:
        return params.partitions
    return max(1, math.ceil(lab_rows / params.partition_rows))


def split_inputs(params: StratifyParams, scratch: Path) -> SplitInputs:
    """Check every input's structure, then cut the inputs into subject partitions.

    Native files (labs and subjects) are checked on their header and split on disk by one streaming pass each;
    other formats (SDTM, FHIR, expression) are read whole (they are small next to native lab exports) and split
    in memory, as are subjects completed from FHIR Patients.

    Raises:
        InputError: an input is unusable (before any compute, as in a single-pass run).
    """
    from immunostrat.run import read_inputs

    cfg = params.config
    native = [p for p in params.labs if _is_native(p, params.lab_format)]
    scanned = {p: scan_input(p, LAB_REQUIRED, LAB_OPTIONAL, kind=_LABS[0]) for p in native}
    others = [p for p in params.labs if p not in scanned]
    subjects = None
    if not params.patients and _is_native(params.subjects, None):
        subjects = scan_input(params.subjects, SUBJECT_REQUIRED, SUBJECT_OPTIONAL, kind=_SUBJECTS[0])
    eager = read_inputs(
        others,
        params.subjects if subjects is None else None,
        cfg=cfg,
        lab_format=params.lab_format,
        expression=list(params.expression),
        samples=params.samples,
        patients=params.patients,
    )
    rows = {p: _count_rows(s, _LABS) for p, s in scanned.items()}
    n = partition_count(params, sum(rows.values()) + sum(t.rows_read for t in eager.labs))
    eager_labs = iter(eager.labs)
    ordered = [scanned.get(p) or next(eager_labs) for p in params.labs] + list(eager_labs)  # expression last
    if subjects is not None:
        split = SplitInputs(n=n, labs=[], subjects=_scanned_header(subjects, _count_rows(subjects, _SUBJECTS)))
        split.subjects_on_disk = _split_to_disk(subjects, n, scratch / "subjects", _SUBJECTS)
    else:
        assert eager.subjects is not None  # stratify and validate stream only with a subjects file
        split = SplitInputs(
            n=n, labs=[], subjects=_header_only(eager.subjects), subject_parts=split_table(eager.subjects, n)
        )
    for i, table in enumerate(ordered):
        if isinstance(table, ScannedInput):
            split.on_disk[i] = _split_to_disk(table, n, scratch / f"labs-{i}", _LABS)
            split.labs.append(_scanned_header(table, rows[table.path]))
        else:
            split.in_memory[i] = split_table(table, n)
            split.labs.append(_header_only(table))
    return split


_LABS, _SUBJECTS = ("lab results", LAB_REQUIRED), ("subjects", SUBJECT_REQUIRED)


def _scanned_header(scanned: ScannedInput, rows: int) -> InputTable:
    empty = scanned.frame.clear().collect()
    # The checksum is taken here, where provenance is recorded (deciding to stream needs none).
    return InputTable(scanned.path, empty, sha256_file(scanned.path), scanned.extra_columns, row_count=rows)


def _count_rows(scanned: ScannedInput, kind: tuple[str, tuple[str, ...]]) -> int:
    with read_errors(Path(scanned.path), scanned.fmt, *kind):
        return int(scanned.frame.select(pl.len()).collect().item())


def _split_to_disk(scanned: ScannedInput, n: int, folder: Path, kind: tuple[str, tuple[str, ...]]) -> Path:
    with read_errors(Path(scanned.path), scanned.fmt, *kind):
        scanned.frame.with_columns(_part=partition_of(n)).sink_ipc(
            pl.PartitionBy(folder, key="_part", include_key=False), mkdir=True, compression=SCRATCH_COMPRESSION
        )
    return folder


def prepare_streaming(params: StratifyParams, scratch: Path) -> tuple[dict[str, Any], pl.DataFrame]:
    """Harmonise and validate partition by partition: the whole run's counts and quarantine (for `validate`).

    Only the quarantined rows are kept; they come back in single-pass order (lab rows by file and row, then
    subject rows), so a streamed `validate` reports exactly what a single pass reports.
    """
    from immunostrat.run import Prepared, prepare

    split = split_inputs(params, scratch)
    file_order = {t.path: i for i, t in enumerate(split.labs)}
    counts, labs, subjects = [], [], []
    for k in range(split.n):
        prepared = prepare(split.partition(k), params.config)
        counts.append(prepared.counts)
        labs.append(prepared.lab_quarantine)
        if prepared.subject_quarantine is not None:
            subjects.append(prepared.subject_quarantine)
    merged = Prepared(
        harmonised=pl.DataFrame(),
        lab_quarantine=in_source_order(pl.concat(labs, how="diagonal_relaxed"), file_order),
        outside_panel=pl.DataFrame(),
        subjects=None,
        subject_quarantine=pl.concat(subjects, how="diagonal_relaxed").sort("source_row") if subjects else None,
    )
    return merge_counts(counts), merged.quarantine


def merge_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-partition accounting (`immunostrat.run.accounting`) into the whole run's."""

    def merge(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            keys = list(dict.fromkeys(k for v in values for k in v))
            return {k: merge([v[k] for v in values if k in v]) for k in keys}
        if isinstance(first, int) and not isinstance(first, bool):
            return sum(values)
        return first  # paths and kinds: the same in every partition

    merged: dict[str, Any] = merge(parts)
    for section in (merged, merged.get("subjects", {})):
        for key in _BY_COUNT:
            if key in section:
                # Same order as a single pass: most frequent first, ties by name.
                section[key] = dict(sorted(section[key].items(), key=lambda kv: (-kv[1], kv[0])))
    return merged


class Scratch:
    """Per-partition tables of one run, checked against their contracts and kept as IPC files until assembly."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, list[Path]] = {}
        self.rows: dict[str, int] = {}

    def put(self, name: str, k: int, frame: pl.DataFrame, contract: str | None = None) -> None:
        if contract is not None:
            from immunostrat.schemas.outputs import validate_output

            validate_output(contract, frame)
        path = self.folder / name / f"{k:05d}.ipc"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_ipc(path, compression=SCRATCH_COMPRESSION)
        self.files.setdefault(name, []).append(path)
        self.rows[name] = self.rows.get(name, 0) + frame.height

    def get(self, name: str, k: int) -> pl.DataFrame:
        return pl.read_ipc(self.folder / name / f"{k:05d}.ipc")

    def scan(self, name: str) -> pl.LazyFrame:
        # diagonal_relaxed: a partition without (say) reader-refused records lacks their extra columns.
        return pl.concat([pl.scan_ipc(p) for p in self.files[name]], how="diagonal_relaxed")

    def assemble(self, name: str, final: Path, metadata: dict[str, str]) -> dict[str, Any]:
        """Concatenate the partitions of `name` into one Parquet file (streaming, written atomically)."""
        with atomic_path(final) as tmp:
            self.scan(name).sink_parquet(tmp, compression="zstd", metadata=metadata)
        return {"rows": self.rows[name], "sha256": sha256_file(final)}


_STRATA_FOR_SUMMARY = ("eligible", "responder_group", "missing_analytes")


def _summary_columns(protocol: Protocol, model: Any) -> list[str]:
    criteria = [f"criterion_{c.id}" for c in protocol.criteria]
    return list(dict.fromkeys([*_STRATA_FOR_SUMMARY, *criteria, *(f.source for f in model.features)]))


@dataclass(frozen=True)
class StreamingRun:
    """What a streaming run needs from `immunostrat.run.stratify`."""

    params: StratifyParams
    stages: Any  # immunostrat.run.Stages
    protocol: Protocol
    run_id: str
    started: dt.datetime
    model_ready: Future[Any]
    cleaned: list[str]
    base_manifest: Callable[..., dict[str, Any]]


def run_streaming(run: StreamingRun) -> Any:
    """Split, process partition by partition, assemble and rename the run folder; returns `RunOutputs`.

    Failure of the quarantine ceiling or the drift check still leaves a complete run folder (status "failed",
    no strata), then raises, exactly as a single-pass run does.
    """
    from immunostrat import run as pipeline

    params, stages, cfg = run.params, run.stages, run.params.config
    failure: BaseException | None = None
    with pipeline.staged_run_folder(params.out, run.run_id) as staging:
        scratch = Scratch(staging / SCRATCH)
        split = stages.split(params, staging / SCRATCH / "inputs")
        manifest = run.base_manifest(split.header(), cfg, run.protocol, run.started)
        manifest.update(cleaned_up=run.cleaned, partitions=split.n, streaming=True)
        # Pass 1: harmonise and validate (one Prefect task per partition and stage in a flow).
        counts = [stages.validate_partition(split, k, cfg, scratch) for k in range(split.n)]
        manifest["counts"] = merge_counts(counts)
        if any(t.fmt == "sdtm" for t in split.labs):
            # Needs every SDTM row's flags beside the whole strata table: a single-pass figure only.
            manifest["counts"]["sdtm_baseline_flags"] = {"not_computed": "streaming mode"}
        n = split.n
        del split  # its subject partitions are on disk now: free them before scoring and publishing
        try:
            pipeline.check_quarantine_ceiling(manifest["counts"], cfg.validation.max_quarantine_fraction)
            _score_partitions(run, n, scratch, manifest)
        except (pipeline.QuarantineCeilingError, _DriftFailure) as exc:
            failure = exc.__cause__ if isinstance(exc, _DriftFailure) else exc
            manifest.update(status="failed", error=str(failure), finished_at=dt.datetime.now(dt.UTC).isoformat())
        names = ["harmonised", "quarantine", "outside_panel"] + (["strata"] if failure is None else [])
        metadata = pipeline.provenance_metadata(run.run_id)
        outputs = {f"{n}.parquet": scratch.assemble(n, staging / f"{n}.parquet", metadata) for n in names}
        shutil.rmtree(staging / SCRATCH)
        pipeline.finish_manifest(staging, run.run_id, manifest, outputs)
    if failure is not None:
        raise failure
    run_dir = Path(params.out) / run.run_id
    result = pipeline.RunOutputs(run_dir=run_dir, run_json=json.loads((run_dir / "run.json").read_text("utf-8")))
    if cfg.publish.enabled:
        stages.publish(run_dir, cfg.publish)
    return result


def validate_partition(split: SplitInputs, k: int, cfg: RunConfig, scratch: Scratch) -> dict[str, Any]:
    """Pass 1 of partition `k`: harmonise and validate, keep its tables as scratch files; returns its counts.

    Only counts come back, never frames: a Prefect task keeps its return value in memory for the whole flow
    run, which would otherwise add up to the whole cohort.
    """
    from immunostrat.run import prepare

    prepared = prepare(split.partition(k), cfg)
    scratch.put("harmonised", k, prepared.harmonised, contract="harmonised")
    scratch.put("quarantine", k, prepared.quarantine, contract="quarantine")
    scratch.put("outside_panel", k, prepared.outside_panel)
    if prepared.subjects is not None:
        scratch.put("subjects", k, prepared.subjects)
    return prepared.counts


def score_partition(k: int, scratch: Scratch, protocol: Protocol, cfg: RunConfig, run_id: str) -> dict[str, Any]:
    """Pass 2 of partition `k`: baseline, eligibility and score from its scratch tables; returns the model info."""
    from immunostrat.run import Prepared, build_strata, score

    prepared = Prepared(
        harmonised=scratch.get("harmonised", k),
        lab_quarantine=pl.DataFrame(),
        outside_panel=pl.DataFrame(),
        subjects=scratch.get("subjects", k),
    )
    scored, model_info = score(build_strata(prepared, protocol, cfg), cfg, run_id)
    scratch.put("strata", k, scored, contract="strata")
    return model_info


class _DriftFailure(Exception):
    """Carries a DriftError out of scoring so that the run folder is still finished."""


def _score_partitions(run: StreamingRun, n: int, scratch: Scratch, manifest: dict[str, Any]) -> None:
    from immunostrat import drift
    from immunostrat import run as pipeline

    cfg = run.params.config
    model = run.model_ready.result()  # a refused model (checksum, trusted types, features) stops the run here
    # Pass 2: baseline, eligibility, score.
    infos = [run.stages.score_partition(k, scratch, run.protocol, cfg, run.run_id) for k in range(n)]
    model_info = infos[-1]  # the same model scores every partition
    # Whole-cohort figures from the few columns they read, never the whole strata table.
    summary_frame = scratch.scan("strata").select(_summary_columns(run.protocol, model)).collect()
    manifest["drift"] = drift.compare(
        summary_frame, model, cfg.scoring.drift_threshold, missing_threshold=cfg.scoring.drift_missing_threshold
    )
    manifest["model"] = model_info
    try:
        drift.check(manifest["drift"], cfg.scoring.fail_on_drift)
    except drift.DriftError as exc:
        raise _DriftFailure() from exc
    manifest.update(
        status="completed",
        summary={
            **pipeline.summary_stats(summary_frame, run.protocol),
            "drift": drift.summary_line(manifest["drift"]),
        },
        finished_at=dt.datetime.now(dt.UTC).isoformat(),
    )
