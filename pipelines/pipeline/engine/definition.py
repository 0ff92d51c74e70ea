"""A pipeline as one definition: phases per subject partition, separated by gates over the whole run.

A `Pipeline` is data: its source (how its inputs are read and cut into subject partitions), an ordered list of
steps, the tables it writes and the steps that finish a run. Two kinds of step:

- a `Phase` runs on one partition at a time: it reads named tables of that partition and returns new ones
  (plus additive counts). Every rule that relates rows to each other works within one subject, so a phase
  gives the same rows whether the cohort is one partition or many.
- a `Gate` runs once, between phases, on the whole run: the merged counts and the columns it names of the
  merged tables. It returns entries for run.json, or stops the run (`immunostrat.errors.RunStopped`).

Executors (`immunostrat.pipeline.engine.executors`) produce, keep and merge partitions; runners (`LocalRunner` here,
Prefect's in `immunostrat.flows.runner`) run the steps. Neither names a stage: everything specific to a
pipeline lives in its definition (`immunostrat.pipeline.selection`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import polars as pl

# Partition tables are polars frames, except the source's own "inputs" (read files with their provenance).
Tables = Mapping[str, Any]


@dataclass(frozen=True)
class PhaseResult:
    """What a phase returns for one partition: its new tables and additive counts (summed over partitions)."""

    tables: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)


class View(Protocol):
    """The whole run as a gate sees it: merged tables, read column by column (merged counts are in the run.json
    entries a gate is given)."""

    @property
    def whole(self) -> bool:
        """True when every row is in memory (and `source` holds the read inputs), False when streaming."""
        ...

    @property
    def source(self) -> Any:
        """The run's inputs: read whole in memory, or their provenance only (streaming)."""
        ...

    def frame(self, table: str, columns: Sequence[str] | None = None) -> pl.DataFrame:
        """The merged table (only `columns`, when given)."""
        ...


@dataclass(frozen=True)
class Phase:
    """A step run on each subject partition; `reads` and `writes` name partition tables."""

    name: str  # the task name in the Prefect UI
    stages: tuple[str, ...]  # the README stages it covers
    description: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    run: Callable[[Tables, Any], PhaseResult]


@dataclass(frozen=True)
class Gate:
    """A step run once over the whole run; returns run.json entries (merged into it) or raises RunStopped."""

    name: str
    stages: tuple[str, ...]
    description: str
    reads: tuple[str, ...]
    run: Callable[[View, Any, Mapping[str, Any]], dict[str, Any]]
    # Runs only when this holds for the run's context (e.g. drift only with a model); always when None.
    when: Callable[[Any], bool] | None = None


Step = Phase | Gate


@dataclass(frozen=True)
class Output:
    """A table written to the run folder as `file`, checked against the named output contract first."""

    file: str
    table: str
    contract: str | None = None
    on_failure: bool = True  # also written when a gate stopped the run
    # Written only when this holds for the run's context (e.g. an input was given); always when None.
    when: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Finish:
    """A step after the run folder is in place (publishing): runs only for completed runs, when `when` holds."""

    name: str
    stages: tuple[str, ...]
    description: str
    run: Callable[[Path, Any], Any]
    when: Callable[[Any], bool] | None = None
    io: bool = True


@dataclass(frozen=True)
class Source:
    """How a pipeline's inputs are read whole, cut into subject partitions in memory, or split on disk."""

    read: Callable[[Any], Any]  # ctx -> inputs
    split: Callable[[Any, int], list[Any]]  # inputs, n -> n partitions of inputs
    split_on_disk: Callable[[Any, Path], Any]  # ctx, folder -> an object with .n, .partition(k), .header()
    describe: Callable[[Any, Any], dict[str, Any]]  # inputs (or their header), ctx -> run.json provenance


# Restores a merged table's single-pass row order: (merged frame, view of the run, ctx) -> frame.
OrderRule = Callable[[pl.DataFrame, View, Any], pl.DataFrame]


@dataclass(frozen=True)
class Pipeline:
    """One pipeline: source, steps, outputs and finishing steps, wired once."""

    name: str
    description: str
    source: Source
    steps: tuple[Step, ...]
    outputs: tuple[Output, ...] = ()
    finish: tuple[Finish, ...] = ()
    order: Mapping[str, OrderRule] = field(default_factory=dict)
    # Tables kept to the end of the run besides the outputs: read by an order rule or by the caller afterwards
    # (e.g. validate's quarantine).
    kept: tuple[str, ...] = ()

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"pipeline {self.name} has no step {name!r}")

    def prefix(self, last: str, *, name: str, description: str, kept: tuple[str, ...] = ()) -> Pipeline:
        """The steps up to and including `last`, without outputs or finishing steps (e.g. `validate`)."""
        index = [s.name for s in self.steps].index(last)
        return replace(
            self,
            name=name,
            description=description,
            steps=self.steps[: index + 1],
            outputs=(),
            finish=(),
            kept=kept,
        )

    def kept_after(self, index: int) -> frozenset[str]:
        """Tables a partition must keep after step `index`: read later, written as outputs, or kept."""
        later = {t for s in self.steps[index + 1 :] for t in s.reads}
        return frozenset(later | {o.table for o in self.outputs} | set(self.kept))

    def contracts(self) -> dict[str, str]:
        """Output contract per table (checked before a table is kept on disk or written)."""
        return {o.table: o.contract for o in self.outputs if o.contract is not None}
