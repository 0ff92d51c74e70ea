"""End-to-end runs of the Prefect flows under the session-scoped test harness (the few slow tests)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from immunostrat.config.run import RunConfig, ScoringConfig, StratifyParams, ValidationConfig
from immunostrat.schemas.outputs import validate_output

from .support import AS_OF, Cohort, latest_flow_run_tasks

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
    from immunostrat.flows.stratify import stratify_flow

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
    from immunostrat.flows.stratify import run_stratify_flow

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


def test_flow_runs_are_named_after_what_ran_and_show_the_definitions_steps(
    prefect_harness: None, small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    from collections import Counter

    from immunostrat.flows.stratify import run_stratify_flow
    from immunostrat.pipeline.selection import STRATIFY

    run_dir = Path(run_stratify_flow(_params(small_cohort, tmp_path / "runs", trained_registry)))
    expected = Counter({"read-inputs": 1, "write": 1, **{s.name: 1 for s in (*STRATIFY.steps, *STRATIFY.finish)}})
    name, tasks = latest_flow_run_tasks(at_least=expected.total())
    assert name == f"stratify-{run_dir.name}"
    assert tasks == expected


def _cli_args(labs: Path, subjects: Path, out: Path, registry: Path) -> list[str]:
    """`immunostrat stratify` on the Prefect engine (the default), without publishing."""
    return [
        "stratify", "--labs", str(labs), "--subjects", str(subjects), "--out", str(out), "--registry", str(registry),
        "--as-of", AS_OF.isoformat(), "--no-publish",
    ]  # fmt: skip


def _stderr_and_logs(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    return capfd.readouterr().err + "\n".join(
        r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in caplog.records
    )


def test_prefect_engine_over_the_ceiling_exits_1_with_the_message_and_no_traceback(  # noqa: PLR0917
    prefect_harness: None,
    small_cohort: Cohort,
    trained_registry: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from immunostrat.cli.main import main

    args = _cli_args(small_cohort.labs, small_cohort.subjects, tmp_path / "runs", trained_registry)
    assert main([*args, "--max-quarantine-fraction", "0"]) == 1
    seen = _stderr_and_logs(capfd, caplog)
    assert "validation.max_quarantine_fraction" in seen and "Traceback" not in seen and "NoneType: None" not in seen


def test_prefect_engine_refuses_a_file_that_is_not_utf8_in_one_line(  # noqa: PLR0917
    prefect_harness: None,
    small_cohort: Cohort,
    trained_registry: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bad byte past the part launch samples is found while reading, inside the flow run: it fails with the
    one-line message as its state, exit 2, and no traceback in the terminal or the logs."""
    from immunostrat.cli.main import main

    text = small_cohort.labs.read_text(encoding="utf-8")
    header, *rows = text.splitlines()
    labs = tmp_path / "labs.csv"
    body = "\n".join(rows * (1 + 70_000 // len(text)))
    labs.write_bytes(f"{header}\n{body}\n".encode() + rows[0].encode() + b"\xb5\n")  # a Latin-1 micro sign
    assert labs.stat().st_size > 1 << 16
    assert main(_cli_args(labs, small_cohort.subjects, tmp_path / "runs", trained_registry)) == 2
    err = capfd.readouterr().err
    # Prefect logs the task's and the flow's final state (the same line); the command prints it once, no traceback.
    shown = [line for line in err.splitlines() if line.startswith("unusable input:")]
    assert len(shown) == 1 and str(labs) in shown[0] and "UTF-8" in shown[0], err
    logs = "\n".join(r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in caplog.records)
    assert "Traceback" not in err + logs and "NoneType: None" not in err + logs


def test_train_flow_shows_its_steps_as_tasks(prefect_harness: None, small_cohort: Cohort, tmp_path: Path) -> None:
    from collections import Counter

    from immunostrat.config.run import TrainingConfig, TrainParams
    from immunostrat.flows.train import run_train_flow
    from immunostrat.modelling.registry import resolve
    from immunostrat.pipeline.selection import LABELLED

    params = TrainParams(
        labs=[str(small_cohort.labs)],
        subjects=str(small_cohort.subjects),
        outcomes=str(small_cohort.outcomes),
        registry=str(tmp_path / "registry"),
        training=TrainingConfig(profile="small", cv_folds=3),
        config=RunConfig(validation=ValidationConfig(as_of=AS_OF)),
    )
    (tmp_path / "registry").mkdir()
    model_id = run_train_flow(params)
    assert resolve(model_id, tmp_path / "registry") == model_id
    expected = Counter({"read-inputs": 1, **{s.name: 1 for s in LABELLED.steps}})
    expected.update({"label": 1, "cross-validate": 1, "fit": 1, "register": 1})
    assert latest_flow_run_tasks(at_least=expected.total())[1] == expected


def test_monitor_flow_shows_its_steps_as_tasks_and_publishes_its_summary(prefect_harness: None, tmp_path: Path) -> None:
    """The monitor flow runs the MONITOR definition step by step (one task each), writes its tables, and leaves
    the endpoint summary as an artifact of its flow run."""
    from collections import Counter

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    from immunostrat.config.run import MonitorParams
    from immunostrat.flows.monitor import run_monitor_flow
    from immunostrat.pipeline.follow_up import MONITOR
    from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

    files = write_cohort(generate_cohort(SynthConfig(n_subjects=30, seed=5)), tmp_path / "input", fmt="parquet")
    params = MonitorParams(
        labs=[str(files["labs"]), str(files["labs_followup"])],
        subjects=str(files["subjects"]),
        visits=str(files["visits"]),
        out=str(tmp_path / "follow-up"),
        config=RunConfig(validation=ValidationConfig(as_of="2026-10-31")),
    )
    run_dir = Path(run_monitor_flow(params))
    expected = Counter({"read-inputs": 1, "write": 1, **{s.name: 1 for s in (*MONITOR.steps, *MONITOR.finish)}})
    name, tasks = latest_flow_run_tasks(at_least=expected.total())
    assert name == f"monitor-{run_dir.name}"
    assert tasks == expected
    endpoints = pl.read_parquet(run_dir / "endpoints.parquet")
    assert endpoints.group_by("endpoint", "landmark").len()["len"].unique().to_list() == [30]
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(limit=1, sort=FlowRunSort.START_TIME_DESC)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    assert {"monitor-summary", "monitor-endpoints"} <= {a.key for a in artifacts}


def test_a_monitor_run_with_changes_emits_one_event_with_pseudonyms_only(prefect_harness: None, tmp_path: Path) -> None:
    """The event a team's automation listens for carries the counts and the pseudonyms, never a subject id; a run
    where nothing changed emits none."""
    from immunostrat.flows.monitor import CHANGED_EVENT, emit_changes
    from immunostrat.pipeline.engine.runfolder import RunOutputs

    counts = {"toxicity": {"new": 1, "resolved": 0, "corrected": 0}, "endpoint": {"new": 0, "resolved": 0}}
    item = {"study_id": "S1", "subject_pseudonym": "ab" * 16, "kind": "toxicity", "item": "crs", "change": "new"}
    changed = {"run_id": "r2", "changes": {"previous_run": "r1", "counts": counts, "items": [item]}}
    event = emit_changes(RunOutputs(run_dir=tmp_path / "follow-up" / "r2", run_json=changed))
    assert event is not None and event.event == CHANGED_EVENT
    assert event.resource.id == "immunostrat.monitor.follow-up"
    assert event.payload["counts"] == counts and event.payload["changes"] == [item]
    assert "subject_id" not in json.dumps(event.payload)
    unchanged = {"run_id": "r3", "changes": {"previous_run": "r2", "counts": {"toxicity": {"new": 0}}, "items": []}}
    assert emit_changes(RunOutputs(run_dir=tmp_path / "follow-up" / "r3", run_json=unchanged)) is None
