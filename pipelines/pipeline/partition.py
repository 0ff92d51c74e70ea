"""Subject partitions: cut a run's inputs by a hash of the (stripped) study and subject identifiers.

Every rule that relates rows to each other (duplicates, enrolment, baseline selection) works within one
subject, so partitioning by subject gives the same rows as a single pass. Two ways to cut:

- `split_inputs`: rows already read, cut in memory (partitioned runs, e.g. on Dask);
- `split_on_disk`: native lab and subject files split by one streaming pass each into LZ4 Arrow IPC files,
  one folder per partition (streaming runs); other formats (SDTM, FHIR, expression) are read whole (they are
  small next to native lab exports) and cut in memory.

`in_source_order` puts merged rows back in single-pass order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import polars as pl

from immunostrat.ingest.inputs import Inputs, read_inputs
from immunostrat.ingest.io import (
    LAB_OPTIONAL,
    LAB_REQUIRED,
    SUBJECT_OPTIONAL,
    SUBJECT_REQUIRED,
    InputTable,
    ScannedInput,
    read_errors,
    scan_input,
    sha256_file,
)
from immunostrat.ingest.readers.detect import detect_kind

_SUBJECT_KEY = ("study_id", "subject_id")
# LZ4: uncompressed Arrow string views take ~160 bytes a lab row on disk; LZ4 takes a tenth of that.
SCRATCH_COMPRESSION: Literal["lz4"] = "lz4"
_LABS, _SUBJECTS = ("lab results", LAB_REQUIRED), ("subjects", SUBJECT_REQUIRED)


def partition_of(n: int) -> pl.Expr:
    """Partition number (0..n-1) of a row, from its stripped study and subject identifiers."""
    key = pl.struct(*(pl.col(c).str.strip_chars().fill_null("") for c in _SUBJECT_KEY))
    # A fixed seed keeps the assignment stable across processes and runs.
    return (key.hash(seed=20261121) % n).cast(pl.Int64)


def partition_count(partitions: int, partition_rows: int, lab_rows: int) -> int:
    """`partitions` when set above 1, otherwise enough partitions of `partition_rows` lab rows."""
    if partitions > 1:
        return partitions
    return max(1, math.ceil(lab_rows / partition_rows))


# ----------------------------------------------------------------------------------------------------- in memory


def split_table(table: InputTable, n: int) -> list[InputTable]:
    """One file's rows (and the records its reader refused) in `n` subject partitions."""
    tagged = table.frame.with_columns(_part=partition_of(n))
    # Records a reader already refused travel with their subject's partition, so each is counted once.
    rejected = table.rejected.with_columns(_part=partition_of(n)) if table.rejected is not None else None
    return [
        replace(
            table,
            frame=tagged.filter(pl.col("_part") == k).drop("_part"),
            rejected=rejected.filter(pl.col("_part") == k).drop("_part") if rejected is not None else None,
        )
        for k in range(n)
    ]


def split_inputs(inputs: Inputs, n: int) -> list[Inputs]:
    """Split every input file's rows into `n` partitions by subject."""
    if n < 1:
        raise ValueError(f"partitions must be >= 1, got {n}")
    labs = [split_table(t, n) for t in inputs.labs]
    subjects = split_table(inputs.subjects, n) if inputs.subjects is not None else None
    visits = split_table(inputs.visits, n) if inputs.visits is not None else None
    events = split_table(inputs.events, n) if inputs.events is not None else None
    return [
        Inputs(
            labs=[parts[k] for parts in labs],
            subjects=subjects[k] if subjects is not None else None,
            visits=visits[k] if visits is not None else None,
            events=events[k] if events is not None else None,
        )
        for k in range(n)
    ]


def in_source_order(frame: pl.DataFrame, file_order: dict[str, int]) -> pl.DataFrame:
    """Rows in single-pass order: by input file (in run order, unknown files last), then by row within the file."""
    order = pl.col("source_file").replace_strict(file_order, default=len(file_order), return_dtype=pl.Int64)
    return frame.sort(order, "source_row", maintain_order=True)


# ----------------------------------------------------------------------------------------------------- on disk


def is_native(path: str, lab_format: str | None) -> bool:
    """Whether a lab file is in the native contract (named by `lab_format`, else detected from its content)."""
    if lab_format:
        return lab_format == "native"
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
    # Visits are read whole and cut in memory: a few rows per subject and month, small next to the labs.
    visits: InputTable | None = None  # the whole visits file's provenance (no rows)
    visit_parts: list[InputTable] = field(default_factory=list)
    events: InputTable | None = None  # likewise the events file (CRS / ICANS assessments)
    event_parts: list[InputTable] = field(default_factory=list)

    def partition(self, k: int) -> Inputs:
        """The `Inputs` of partition `k` (rows split on disk are read now)."""
        labs = [
            _from_disk(t, self.on_disk[i], k) if i in self.on_disk else self.in_memory[i][k]
            for i, t in enumerate(self.labs)
        ]
        visits = self.visit_parts[k] if self.visit_parts else None
        events = self.event_parts[k] if self.event_parts else None
        if self.subjects_on_disk is not None:
            subjects = _from_disk(self.subjects, self.subjects_on_disk, k)
        else:
            subjects = self.subject_parts[k]
        return Inputs(labs=labs, subjects=subjects, visits=visits, events=events)

    def header(self) -> Inputs:
        """`Inputs` carrying provenance only (paths, checksums, row counts), for run.json."""
        return Inputs(labs=self.labs, subjects=self.subjects, visits=self.visits, events=self.events)


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


def _split_to_disk(scanned: ScannedInput, n: int, folder: Path, kind: tuple[str, tuple[str, ...]]) -> int:
    """Sink a scanned file into `n` partition folders; returns its row count (from the written files' footers)."""
    with read_errors(Path(scanned.path), scanned.fmt, *kind):
        scanned.frame.with_columns(_part=partition_of(n)).sink_ipc(
            pl.PartitionBy(folder, key="_part", include_key=False), mkdir=True, compression=SCRATCH_COMPRESSION
        )
    files = sorted(folder.glob("_part=*/*.ipc"))
    return int(sum(pl.scan_ipc(f).select(pl.len()).collect().item() for f in files))


def _scanned_header(scanned: ScannedInput, rows: int) -> InputTable:
    empty = scanned.frame.clear().collect()
    # The checksum is taken here, where provenance is recorded (deciding to stream needs none).
    return InputTable(scanned.path, empty, sha256_file(scanned.path), scanned.extra_columns, row_count=rows)


def split_on_disk(files: Any, cfg: Any, folder: Path, n: int) -> SplitInputs:
    """Check every input's structure, then cut the inputs into `n` subject partitions (see the module docstring).

    Args:
        files: the run's input parameters (`immunostrat.config.run.InputFiles`).
        cfg: the run configuration (reader options).
        folder: scratch folder for the partition files.
        n: number of partitions (decided at launch from the inputs' size).

    Raises:
        InputError: an input is unusable (before any compute, as in a single-pass run).
    """
    native = [p for p in files.labs if is_native(p, files.lab_format)]
    scanned = {p: scan_input(p, LAB_REQUIRED, LAB_OPTIONAL, kind=_LABS[0]) for p in native}
    others = [p for p in files.labs if p not in scanned]
    subjects = None
    if not files.patients and is_native(files.subjects, None):
        subjects = scan_input(files.subjects, SUBJECT_REQUIRED, SUBJECT_OPTIONAL, kind=_SUBJECTS[0])
    eager = read_inputs(
        others,
        files.subjects if subjects is None else None,
        cfg=cfg,
        lab_format=files.lab_format,
        expression=list(files.expression),
        samples=files.samples,
        patients=files.patients,
        visits=getattr(files, "visits", None) or None,
        events=getattr(files, "events", None) or None,
    )
    eager_labs = iter(eager.labs)
    ordered = [scanned.get(p) or next(eager_labs) for p in files.labs] + list(eager_labs)  # expression last
    if subjects is not None:
        rows = _split_to_disk(subjects, n, folder / "subjects", _SUBJECTS)
        split = SplitInputs(
            n=n, labs=[], subjects=_scanned_header(subjects, rows), subjects_on_disk=folder / "subjects"
        )
    else:
        assert eager.subjects is not None  # stratify and validate stream only with a subjects file
        split = SplitInputs(
            n=n, labs=[], subjects=_header_only(eager.subjects), subject_parts=split_table(eager.subjects, n)
        )
    if eager.visits is not None:
        split.visits, split.visit_parts = _header_only(eager.visits), split_table(eager.visits, n)
    if eager.events is not None:
        split.events, split.event_parts = _header_only(eager.events), split_table(eager.events, n)
    for i, table in enumerate(ordered):
        if isinstance(table, ScannedInput):
            split.on_disk[i] = folder / f"labs-{i}"
            rows = _split_to_disk(table, n, split.on_disk[i], _LABS)
            split.labs.append(_scanned_header(table, rows))
        else:
            split.in_memory[i] = split_table(table, n)
            split.labs.append(_header_only(table))
    return split
