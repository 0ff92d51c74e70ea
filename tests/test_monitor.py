"""The monitor command end to end on a small synthetic cohort: every visit row ends in one place, one activity row
per accepted visit, one endpoint row per subject, endpoint and landmark, and rates by the stratify run's groups."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from immunostrat.cli import main
from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

AS_OF = "2026-10-31"  # the synthetic cohort's data cut-off: no visit is dated after it


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("monitor")
    paths = write_cohort(generate_cohort(SynthConfig(n_subjects=60, seed=3)), folder / "input", fmt="csv")
    return {k: Path(v) for k, v in paths.items()}


def _run(args: list[str], out: Path) -> Path:
    assert main(args) == 0
    return max(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_monitor_accounts_for_every_visit_and_writes_one_endpoint_row_per_subject_landmark(
    cohort: dict[str, Path], tmp_path: Path
) -> None:
    common = ["--labs", str(cohort["labs"]), "--subjects", str(cohort["subjects"]), "--as-of", AS_OF]
    strata_run = _run(
        ["stratify", "--engine", "local", *common, "--no-publish", "--out", str(tmp_path / "s")], tmp_path / "s"
    )
    run = _run(
        [
            "monitor", "--engine", "local", "--labs", str(cohort["labs"]), str(cohort["labs_followup"]),
            "--subjects", str(cohort["subjects"]), "--visits", str(cohort["visits"]), "--as-of", AS_OF,
            "--strata", str(strata_run), "--out", str(tmp_path / "m"),
        ],
        tmp_path / "m",
    )  # fmt: skip
    manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "completed"
    visits = manifest["counts"]["visits"]
    rows_in_file = pl.read_csv(cohort["visits"], infer_schema=False).height
    assert visits["rows_read"] == rows_in_file == visits["accepted"] + visits["quarantined"]
    activity = pl.read_parquet(run / "activity.parquet")
    assert activity.height == visits["accepted"]
    endpoints = pl.read_parquet(run / "endpoints.parquet")
    subjects = manifest["counts"]["subjects"]["accepted"]
    per_subject = endpoints.group_by("endpoint", "landmark").len()["len"].unique().to_list()
    assert per_subject == [subjects]  # every subject has one row per endpoint and landmark
    assert endpoints.filter(pl.col("met").is_null())["reason"].is_in(["EVALUATED"]).sum() == 0
    by_group = manifest["summary"]["by_predicted_group"]
    assert by_group["model"]["model_id"] == json.loads((strata_run / "run.json").read_text())["model"]["model_id"]
    _check_the_reports_and_the_follow_up_snapshot(run, endpoints)


def _check_the_reports_and_the_follow_up_snapshot(run: Path, endpoints: pl.DataFrame) -> None:
    """The team report in the run folder; the sponsor snapshot: every endpoint row, pseudonymised, no dates; the
    current manifest's follow_up section names it."""
    team = (run / "report.html").read_text(encoding="utf-8")
    assert 'data-section="by-group"' in team
    assert not [s for s in endpoints["subject_id"].unique().to_list() if s in team]
    snapshot = run / "sponsor"
    published = pl.read_parquet(snapshot / "data" / "*" / "*.parquet", hive_partitioning=True)
    assert published.height == endpoints.height
    assert not {"subject_id", "visit_date"} & set(published.columns)
    current = json.loads((run.parent / "sponsor-manifest.json").read_text(encoding="utf-8"))
    studies = sorted(endpoints["study_id"].unique().to_list())
    assert sorted(current["follow_up"]) == studies and current["studies"] == {}
    assert {e["run_id"] for e in current["follow_up"].values()} == {run.name}
    rates = pl.read_parquet(snapshot / "endpoint_rates.parquet")
    hidden = pl.any_horizontal(pl.col("met", "not_met", "not_assessable", "subjects").is_null())
    assert rates.filter(hidden)["suppressed"].all() and not rates.filter(~hidden)["suppressed"].any()


def test_monitor_without_a_visits_file_stops_at_launch_in_one_line(
    cohort: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["monitor", "--labs", str(cohort["labs"]), "--subjects", str(cohort["subjects"]), "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--visits" in err and len(err.splitlines()) == 1
