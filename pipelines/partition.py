"""Partitioned runs: split a cohort by subject, run the stages per partition, merge identically.

Every rule that relates rows to each other (duplicates, enrolment, baseline selection) works within one
subject, so partitioning by a hash of the (stripped) study and subject identifiers gives the same result as
a single pass. Merging restores the single-pass row order, so outputs are identical, not merely equivalent.
Partitions run sequentially in-process (`run_partitioned`) or as one Prefect task each on a Dask cluster
(`immunostrat.flows.stratify_partitioned_flow`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import polars as pl

from immunostrat.config import Protocol, RunConfig
from immunostrat.io import InputTable
from immunostrat.run import Inputs, Prepared, accounting

_SUBJECT_KEY = ("study_id", "subject_id")


def partition_of(n: int) -> pl.Expr:
    """Partition number (0..n-1) of a row, from its stripped study and subject identifiers."""
    key = pl.struct(*(pl.col(c).str.strip_chars().fill_null("") for c in _SUBJECT_KEY))
    # A fixed seed keeps the assignment stable across processes and runs.
    return (key.hash(seed=20261121) % n).cast(pl.Int64)


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
    return [
        Inputs(labs=[parts[k] for parts in labs], subjects=subjects[k] if subjects is not None else None)
        for k in range(n)
    ]


def in_source_order(frame: pl.DataFrame, file_order: dict[str, int]) -> pl.DataFrame:
    """Rows in single-pass order: by input file (in run order), then by row within the file."""
    order = pl.col("source_file").replace_strict(file_order, default=len(file_order), return_dtype=pl.Int64)
    return frame.sort(order, "source_row", maintain_order=True)


def merge_prepared(inputs: Inputs, parts: list[Prepared]) -> Prepared:
    """Concatenate per-partition results in single-pass row order and recount them against the inputs."""
    file_order = {t.path: i for i, t in enumerate(inputs.labs)}
    harmonised = in_source_order(pl.concat([p.harmonised for p in parts], how="vertical"), file_order)
    lab_quarantine = in_source_order(pl.concat([p.lab_quarantine for p in parts], how="diagonal_relaxed"), file_order)
    outside = in_source_order(pl.concat([p.outside_panel for p in parts], how="vertical"), file_order)
    subjects = subject_quarantine = None
    if inputs.subjects is not None:
        subjects = pl.concat([p.subjects for p in parts if p.subjects is not None]).sort("source_row")
        subject_quarantine = pl.concat(
            [p.subject_quarantine for p in parts if p.subject_quarantine is not None], how="diagonal_relaxed"
        ).sort("source_row")
    return Prepared(
        harmonised=harmonised,
        lab_quarantine=lab_quarantine,
        outside_panel=outside,
        subjects=subjects,
        subject_quarantine=subject_quarantine,
        counts=accounting(
            inputs,
            harmonised=harmonised,
            outside=outside,
            lab_quarantine=lab_quarantine,
            subjects=subjects,
            subject_quarantine=subject_quarantine,
        ),
    )


def merge_strata(merged: Prepared, parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate per-partition strata in the subjects file's order (the single-pass order)."""
    strata = pl.concat(parts, how="vertical")
    if merged.subjects is None:
        return strata
    order = merged.subjects.select(*_SUBJECT_KEY, "source_row")
    return strata.join(order, on=list(_SUBJECT_KEY), how="left").sort("source_row").drop("source_row")


def prepare_each(parts: list[Inputs], cfg: RunConfig) -> list[Prepared]:
    """`prepare` over partitions, one after another (the flow maps them onto a task runner instead)."""
    from immunostrat.run import prepare

    return [prepare(p, cfg) for p in parts]


def score_each(
    parts: list[Prepared], protocol: Protocol, cfg: RunConfig, run_id: str
) -> list[tuple[pl.DataFrame, dict[str, Any]]]:
    """Baseline, eligibility and scoring over partitions, one after another."""
    from immunostrat.run import build_strata, score

    return [score(build_strata(p, protocol, cfg), cfg, run_id) for p in parts]
