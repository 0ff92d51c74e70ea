"""Partitioned runs give the single-pass outputs exactly: in-process and on a local Dask cluster."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from immunostrat.config.run import RunConfig, ScoringConfig, StratifyParams, ValidationConfig
from immunostrat.ingest.inputs import read_inputs
from immunostrat.pipeline import run as pipeline
from immunostrat.pipeline.partition import partition_of, split_inputs

from .support import AS_OF, Cohort

OUTPUTS = ("strata.parquet", "harmonised.parquet", "quarantine.parquet", "outside_panel.parquet")


def _params(cohort: Cohort, out: Path, registry: Path, partitions: int) -> StratifyParams:
    return StratifyParams(
        labs=[str(cohort.labs)],
        subjects=str(cohort.subjects),
        out=str(out),
        partitions=partitions,
        config=RunConfig(validation=ValidationConfig(as_of=AS_OF), scoring=ScoringConfig(registry=registry)),
    )


def _read(run_dir: Path, name: str) -> pl.DataFrame:
    frame = pl.read_parquet(run_dir / name)
    return frame.drop("run_id") if "run_id" in frame.columns else frame


def _assert_same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert_frame_equal(_read(a, name), _read(b, name))


def test_partitions_split_by_subject_and_lose_no_row(small_cohort: Cohort) -> None:
    inputs = read_inputs([small_cohort.labs], small_cohort.subjects)
    parts = split_inputs(inputs, 4)
    assert sum(p.labs[0].frame.height for p in parts) == inputs.labs[0].frame.height
    keys = [set(p.labs[0].frame["subject_id"].str.strip_chars().to_list()) for p in parts]
    assert all(not (keys[i] & keys[j]) for i in range(4) for j in range(i + 1, 4))  # a subject lives in one part
    assert all(p.labs[0].frame.height for p in parts)  # the hash spreads 200 subjects over all four


def test_partition_assignment_ignores_surrounding_white_space() -> None:
    frame = pl.DataFrame({"study_id": ["S1", " S1 "], "subject_id": ["P1", "P1\t"]})
    assert frame.select(partition_of(7)).to_series().n_unique() == 1


def test_in_process_partitions_reproduce_the_single_pass(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    single = pipeline.stratify(_params(small_cohort, tmp_path / "one", trained_registry, 1)).run_dir
    split = pipeline.stratify(_params(small_cohort, tmp_path / "four", trained_registry, 4)).run_dir
    _assert_same_outputs(single, split)


@pytest.mark.flow
def test_dask_partitioned_flow_reproduces_the_single_pass(
    prefect_harness: None, small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    from immunostrat.flows.stratify import run_stratify_flow

    single = pipeline.stratify(_params(small_cohort, tmp_path / "one", trained_registry, 1)).run_dir
    on_dask = Path(run_stratify_flow(_params(small_cohort, tmp_path / "dask", trained_registry, 4)))
    _assert_same_outputs(single, on_dask)
