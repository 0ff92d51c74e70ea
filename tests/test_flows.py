"""End-to-end runs of the Prefect flows under the session-scoped test harness (the few slow tests)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from immunostrat.config import RunConfig, ScoringConfig, StratifyParams, ValidationConfig
from immunostrat.schemas.outputs import validate_output

from .support import AS_OF, Cohort

pytestmark = pytest.mark.flow


def _params(cohort: Cohort, out: Path, registry: Path) -> StratifyParams:
    return StratifyParams(
        labs=[str(cohort.labs)],
        subjects=str(cohort.subjects),
        out=str(out),
        config=RunConfig(validation=ValidationConfig(as_of=AS_OF), scoring=ScoringConfig(registry=registry)),
    )


def test_stratify_flow_writes_a_complete_run_and_accounts_for_every_row(
    prefect_harness: None, small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    from immunostrat.flows import stratify_flow

    run_dir = Path(stratify_flow(_params(small_cohort, tmp_path / "runs", trained_registry)))

    names = {p.name for p in run_dir.iterdir()}
    assert {"strata.parquet", "harmonised.parquet", "quarantine.parquet", "outside_panel.parquet", "run.json"} <= names
    assert not [n for n in names if n.startswith(".tmp-")]

    # Recount every figure of the accounting identity from disk, each from its own source.
    rows_read = pl.read_csv(small_cohort.labs, infer_schema=False).height
    harmonised = pl.read_parquet(run_dir / "harmonised.parquet")
    quarantine = pl.read_parquet(run_dir / "quarantine.parquet")
    outside = pl.read_parquet(run_dir / "outside_panel.parquet")
    lab_quarantine = quarantine.filter(pl.col("source_file") == str(small_cohort.labs))
    assert harmonised.height + outside.height + lab_quarantine.height == rows_read
    placed = pl.concat([t.select("source_file", "source_row") for t in (harmonised, outside, lab_quarantine)])
    assert placed.n_unique() == rows_read  # each row in exactly one place

    manifest = json.loads((run_dir / "run.json").read_text())
    counts = manifest["counts"]
    assert counts["rows_read"] == rows_read
    assert (counts["accepted"], counts["outside_panel"], counts["quarantined"]) == (
        harmonised.height,
        outside.height,
        lab_quarantine.height,
    )
    assert manifest["status"] == "completed"
    assert manifest["as_of"] == AS_OF.isoformat()
    assert manifest["model"]["sha256"] and manifest["outputs"]["strata.parquet"]["sha256"]

    strata = validate_output("strata", pl.read_parquet(run_dir / "strata.parquet"))
    validate_output("harmonised", harmonised)
    validate_output("quarantine", quarantine)
    assert strata.height == pl.read_csv(small_cohort.subjects, infer_schema=False).height
    assert set(strata["responder_group"].unique()) <= {"likely", "possible", "unlikely", "not_assessable"}
    assert strata["run_id"].unique().to_list() == [manifest["run_id"]]


def test_stratify_flow_fails_loudly_above_the_quarantine_ceiling(
    prefect_harness: None, small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    from immunostrat.errors import QuarantineCeilingError
    from immunostrat.flows import run_stratify_flow

    params = _params(small_cohort, tmp_path / "runs", trained_registry)
    strict = params.model_copy(
        update={
            "config": params.config.model_copy(
                update={"validation": ValidationConfig(as_of=AS_OF, max_quarantine_fraction=0.0)}
            )
        }
    )
    with pytest.raises(QuarantineCeilingError, match="max_quarantine_fraction"):
        run_stratify_flow(strict)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "failed" and "ceiling" in manifest["error"]
    assert (run_dir / "quarantine.parquet").exists() and not (run_dir / "strata.parquet").exists()
