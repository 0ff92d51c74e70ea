"""Executors: produce a run's subject partitions, keep each partition's tables, and merge them for gates and outputs.

- `InMemory(1)`: a single pass is one partition.
- `InMemory(n)`: n in-memory partitions (a Prefect flow maps them onto a Dask task runner); merged tables are
  put back in single-pass order by the pipeline's order rules, so outputs are identical to one pass.
- `Streaming()`: inputs are split on disk by subject (one streaming pass), partitions run one at a time and
  keep their tables as LZ4 Arrow IPC scratch files, which gates scan column by column and outputs are sunk
  from. Peak memory is one partition's working set. Rows are ordered partition by partition.

An executor never names a stage: it runs the `Phase` objects it is given and keeps the tables the pipeline
says are needed later (`Pipeline.kept_after`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from immunostrat.pipeline.engine.definition import Phase, Pipeline, View
from immunostrat.schemas.outputs import validate_output

# LZ4: uncompressed Arrow string views take ~160 bytes a lab row on disk (18 GB for 100M rows); LZ4 takes a
# tenth of that and decompresses faster than the disk reads the difference.
SCRATCH_COMPRESSION: Literal["lz4"] = "lz4"


@dataclass(frozen=True)
class UnitResult:
    """One partition after a phase: its kept tables (in memory) or a handle to them (on disk), and counts."""

    partition: Any
    counts: dict[str, Any]


@dataclass(frozen=True)
class Produced:
    """A run's partitions, and its inputs (whole in memory, or their provenance only when streaming)."""

    partitions: list[Any]
    source: Any
    whole: bool
    scratch: Path  # where partition tables are kept on disk (inside the run's staging folder)


@dataclass(frozen=True)
class OutputSource:
    """A merged table to write: an eager frame (its contract is checked on write) or a lazy concatenation of
    partition files that were checked when kept."""

    frame: pl.DataFrame | pl.LazyFrame
    rows: int


def _validate(contract: str | None, frame: pl.DataFrame) -> None:
    if contract is not None:
        validate_output(contract, frame)


# ----------------------------------------------------------------------------------------------------- in memory


@dataclass(frozen=True)
class _InMemoryUnit:
    """Runs a phase on one in-memory partition (a plain, picklable callable: Dask may ship it to a worker)."""

    phase: Phase
    keep: frozenset[str]

    def __call__(self, partition: dict[str, Any], ctx: Any) -> UnitResult:
        result = self.phase.run({name: partition[name] for name in self.phase.reads}, ctx)
        tables = {name: value for name, value in {**partition, **result.tables}.items() if name in self.keep}
        return UnitResult(partition=tables, counts=result.counts)


class _MergedView:
    """Merged in-memory tables, concatenated and put in single-pass order once, on first use."""

    def __init__(self, pipeline: Pipeline, produced: Produced, partitions: Sequence[dict[str, Any]], ctx: Any):
        self._pipeline, self._partitions, self._ctx = pipeline, partitions, ctx
        self._source = produced.source
        self._merged: dict[str, pl.DataFrame] = {}

    @property
    def whole(self) -> bool:
        return True

    @property
    def source(self) -> Any:
        return self._source

    def frame(self, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        if table not in self._merged:
            parts = [p[table] for p in self._partitions if p.get(table) is not None]
            if len(self._partitions) == 1:
                merged = parts[0] if parts else pl.DataFrame()
            else:
                merged = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
                rule = self._pipeline.order.get(table)
                if rule is not None:
                    merged = rule(merged, self, self._ctx)
            self._merged[table] = merged
        frame = self._merged[table]
        return frame.select(columns) if columns is not None else frame


@dataclass
class InMemory:
    """Every partition in memory: `partitions=1` is a single pass."""

    partitions: int = 1
    name: str = "in-memory"
    produce_step: str = "read-inputs"
    sequential: bool = False  # partitions may run at once (a Prefect flow maps them onto its task runner)

    def produce(self, pipeline: Pipeline, ctx: Any, scratch: Path) -> Produced:
        """Read the inputs whole and cut them into subject partitions."""
        inputs = pipeline.source.read(ctx)
        parts = [inputs] if self.partitions == 1 else pipeline.source.split(inputs, self.partitions)
        return Produced(partitions=[{"inputs": p} for p in parts], source=inputs, whole=True, scratch=scratch)

    def unit(self, pipeline: Pipeline, phase: Phase, keep: frozenset[str], scratch: Path) -> Callable[..., UnitResult]:
        return _InMemoryUnit(phase, keep)

    def view(self, pipeline: Pipeline, produced: Produced, partitions: Sequence[Any], ctx: Any) -> View:
        return _MergedView(pipeline, produced, partitions, ctx)

    def output(self, view: View, table: str, contract: str | None) -> OutputSource:
        frame = view.frame(table)
        _validate(contract, frame)  # the output contracts are enforced before anything is written
        return OutputSource(frame=frame, rows=frame.height)


# ----------------------------------------------------------------------------------------------------- on disk


@dataclass(frozen=True)
class DiskPartition:
    """Partition `k` of a streaming run: its inputs come from the on-disk split, its tables from scratch files."""

    k: int
    split: Any  # the source's on-disk split (`.partition(k)` reads partition k's inputs)


def _scratch_file(scratch: Path, table: str, k: int) -> Path:
    return scratch / "tables" / table / f"{k:05d}.ipc"


@dataclass(frozen=True)
class _DiskUnit:
    """Runs a phase on one on-disk partition: reads its tables, keeps the new ones as scratch files.

    Only counts come back, never frames: a Prefect task keeps its return value in memory for the whole flow run,
    which would otherwise add up to the whole cohort.
    """

    phase: Phase
    keep: frozenset[str]
    contracts: dict[str, str]
    scratch: Path

    def __call__(self, partition: DiskPartition, ctx: Any) -> UnitResult:
        tables = {
            name: partition.split.partition(partition.k) if name == "inputs" else self._read(name, partition.k)
            for name in self.phase.reads
        }
        result = self.phase.run(tables, ctx)
        for name, frame in result.tables.items():
            if name in self.keep and frame is not None:
                _validate(self.contracts.get(name), frame)
                path = _scratch_file(self.scratch, name, partition.k)
                path.parent.mkdir(parents=True, exist_ok=True)
                frame.write_ipc(path, compression=SCRATCH_COMPRESSION)
        return UnitResult(partition=partition, counts=result.counts)

    def _read(self, table: str, k: int) -> pl.DataFrame | None:
        """A kept table of partition k; None when a phase returned None for it (an optional input not given),
        as the in-memory executor passes it."""
        path = _scratch_file(self.scratch, table, k)
        return pl.read_ipc(path) if path.exists() else None


class _ScratchView:
    """Merged streaming tables, scanned from the partitions' scratch files column by column."""

    def __init__(self, produced: Produced, scratch: Path, n: int) -> None:
        self._source, self._scratch, self._n = produced.source, scratch, n

    @property
    def whole(self) -> bool:
        return False

    @property
    def source(self) -> Any:
        return self._source

    def files(self, table: str) -> list[Path]:
        return [p for k in range(self._n) if (p := _scratch_file(self._scratch, table, k)).exists()]

    def scan(self, table: str) -> pl.LazyFrame:
        # diagonal_relaxed: a partition without (say) reader-refused records lacks their extra columns.
        return pl.concat([pl.scan_ipc(p) for p in self.files(table)], how="diagonal_relaxed")

    def frame(self, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        if not self.files(table):
            return pl.DataFrame()
        lazy = self.scan(table)
        return (lazy.select(columns) if columns is not None else lazy).collect()


@dataclass
class Streaming:
    """Out of core: partitions split on disk and run one at a time, tables kept as scratch files."""

    name: str = "streaming"
    produce_step: str = "split-inputs"
    sequential: bool = True  # one partition at a time: that is what bounds memory

    def produce(self, pipeline: Pipeline, ctx: Any, scratch: Path) -> Produced:
        """Check every input's structure, then split the inputs on disk by subject partition."""
        split = pipeline.source.split_on_disk(ctx, scratch / "inputs")
        partitions = [DiskPartition(k, split) for k in range(split.n)]
        return Produced(partitions=partitions, source=split.header(), whole=False, scratch=scratch)

    def unit(self, pipeline: Pipeline, phase: Phase, keep: frozenset[str], scratch: Path) -> Callable[..., UnitResult]:
        return _DiskUnit(phase, keep, pipeline.contracts(), scratch)

    def view(self, pipeline: Pipeline, produced: Produced, partitions: Sequence[Any], ctx: Any) -> View:
        return _ScratchView(produced, produced.scratch, len(partitions))

    def output(self, view: View, table: str, contract: str | None) -> OutputSource:
        assert isinstance(view, _ScratchView)
        files = view.files(table)
        if not files:
            return OutputSource(frame=pl.DataFrame(), rows=0)
        rows = sum(pl.scan_ipc(f).select(pl.len()).collect().item() for f in files)
        # Each partition's table was checked against its contract when it was kept.
        return OutputSource(frame=view.scan(table), rows=int(rows))
