"""The command line: `validate` exit codes and messages, `stratify --engine local`, `models`."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from immunostrat.cli.main import EXIT_OK, EXIT_PROBLEMS, EXIT_UNUSABLE, main

from .support import AS_OF, Cohort

HEADER = "study_id,subject_id,site_id,test,result,unit,collected_at,method,ref_low,ref_high\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_validate_exits_2_naming_the_missing_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labs = _write(tmp_path / "labs.csv", "study_id,subject_id,test,result,unit\nST1,S1,C3,0.9,g/L\n")
    assert main(["validate", "--labs", str(labs)]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "collected_at" in err and str(labs) in err


def test_validate_exits_1_naming_row_column_and_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labs = _write(
        tmp_path / "labs.csv",
        HEADER
        + "ST1,S1,A,C3,0.9,g/L,2026-01-10,,,\n"
        + "ST1,S1,A,C4,0.2,furlongs,2026-01-10,,,\n"
        + "ST1,S1,A,C3,0.8,g/L,2026-02-30,,,\n",
    )
    report = tmp_path / "problems.json"
    code = main(["validate", "--labs", str(labs), "--as-of", AS_OF.isoformat(), "--report", str(report)])
    out = capsys.readouterr().out
    assert code == EXIT_PROBLEMS
    assert f"{labs} row 2, column 'unit': value 'furlongs'" in out
    assert f"{labs} row 3, column 'collected_at': value '2026-02-30'" in out
    problems = json.loads(report.read_text())
    assert [(p["source_row"], p["reason_code"]) for p in problems] == [(2, "UNIT_UNKNOWN"), (3, "DATE_INVALID")]


def test_validate_exits_0_on_a_clean_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labs = _write(tmp_path / "labs.csv", HEADER + "ST1,S1,A,C3,90,mg/dL,2026-01-10,,90,180\n")
    assert main(["validate", "--labs", str(labs), "--as-of", AS_OF.isoformat()]) == EXIT_OK
    assert "no problems found" in capsys.readouterr().out


def test_validate_csv_report_lists_every_problem(tmp_path: Path, small_cohort: Cohort) -> None:
    report = tmp_path / "report.csv"
    code = main(
        [
            "validate",
            "--labs",
            str(small_cohort.labs),
            "--subjects",
            str(small_cohort.subjects),
            "--report",
            str(report),
        ]
    )
    problems = pl.read_csv(report, infer_schema=False)
    assert code == (EXIT_PROBLEMS if problems.height else EXIT_OK)
    assert {"source_file", "source_row", "reason_code", "message"} <= set(problems.columns)


def test_stratify_local_engine_writes_run_folder(
    tmp_path: Path, small_cohort: Cohort, trained_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "stratify", "--engine", "local", "--labs", str(small_cohort.labs), "--subjects", str(small_cohort.subjects),
            "--out", str(tmp_path / "runs"), "--registry", str(trained_registry), "--as-of", AS_OF.isoformat(),
        ]
    )  # fmt: skip
    assert code == EXIT_OK
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run_dir / "strata.parquet").exists() and (run_dir / "run.json").exists()


def test_stratify_with_overridden_cutoffs_records_them(
    tmp_path: Path, small_cohort: Cohort, trained_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["stratify", "--engine", "local", "--labs", str(small_cohort.labs), "--subjects", str(small_cohort.subjects)]
    args += [
        "--out",
        str(tmp_path),
        "--registry",
        str(trained_registry),
        "--possible-min",
        "0.2",
        "--likely-min",
        "0.9",
    ]
    assert main(args) == EXIT_OK
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    model = json.loads((run_dir / "run.json").read_text())["model"]
    assert model["cutoffs"] == {"possible_min": 0.2, "likely_min": 0.9}
    assert model["cutoffs_source"] == "run parameters"


def test_models_list_and_show(trained_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--registry", str(trained_registry)]) == EXIT_OK
    listing = capsys.readouterr().out
    assert "champion" in listing
    assert main(["models", "show", "champion", "--registry", str(trained_registry)]) == EXIT_OK
    assert "not for clinical use" in capsys.readouterr().out.lower()


SCHEDULES = """
data_roots: [/data]
schedules:
  - name: sle-cart-01-nightly
    cron: "0 2 * * *"
    timezone: Europe/Berlin
    labs: [/data/labs.parquet]
    subjects: /data/subjects.parquet
    out: /data/runs
    config: {scoring: {model: champion}}
"""


def test_serve_without_a_server_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    schedules = _write(tmp_path / "schedules.yaml", SCHEDULES)
    assert main(["serve", "--schedules", str(schedules)]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "PREFECT_API_URL" in err and "prefect server start" in err


def test_serve_rejects_an_invalid_schedules_file_before_contacting_prefect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "schedules.yaml", SCHEDULES.replace("scoring: {model: champion}", "scoring: {nope: 1}"))
    assert main(["serve", "--schedules", str(bad)]) == EXIT_UNUSABLE
    assert "nope" in capsys.readouterr().err


def test_schedules_leave_as_of_to_each_run() -> None:
    from immunostrat.config.run import RunConfig, StratifyParams

    params = StratifyParams(labs=["l"], subjects="s", out="o", config=RunConfig.model_validate({}))
    dumped = params.model_dump(mode="json", exclude_unset=True)
    assert "as_of" not in str(dumped)


def test_flat_schedules_pass_streaming_options_to_their_stratify_runs(tmp_path: Path) -> None:
    """A schedules file written before `flow:` existed is read as stratify schedules, options and all."""
    from immunostrat.cli.serve import load_schedules

    text = SCHEDULES + "    streaming: true\n    partition_rows: 500000\n"
    (schedule,) = load_schedules(_write(tmp_path / "schedules.yaml", text)).schedules
    assert schedule.flow == "stratify"
    assert schedule.parameters.streaming is True and schedule.parameters.partition_rows == 500_000
    assert schedule.parameters.config.scoring.model == "champion"
    assert load_schedules(_write(tmp_path / "default.yaml", SCHEDULES)).schedules[0].parameters.streaming is None


NAMED_FLOW = """
data_roots: [/data]
schedules:
  - name: sle-cart-01-nightly
    cron: "0 2 * * *"
    flow: stratify
    parameters:
      labs: [/data/labs.parquet]
      subjects: /data/subjects.parquet
      out: /data/runs
      partitions: 4
      dask_address: tcp://10.0.0.5:8786
      config: {scoring: {model: champion}}
"""


def test_a_schedule_names_its_flow_and_takes_that_flows_full_parameters(tmp_path: Path) -> None:
    from immunostrat.cli.serve import load_schedules

    (schedule,) = load_schedules(_write(tmp_path / "schedules.yaml", NAMED_FLOW)).schedules
    assert schedule.flow == "stratify" and schedule.parameters.partitions == 4
    assert schedule.parameters.dask_address == "tcp://10.0.0.5:8786"
    dumped = schedule.parameters.model_dump(mode="json", exclude_unset=True)
    assert "as_of" not in str(dumped) and dumped["partitions"] == 4


def test_a_schedule_of_an_unknown_flow_is_refused_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path / "schedules.yaml", NAMED_FLOW.replace("flow: stratify", "flow: stratfy"))
    assert main(["serve", "--schedules", str(bad)]) == EXIT_UNUSABLE
    err = capsys.readouterr().err.strip()
    assert "schedules.0" in err and "'flow'" in err and "'stratify', 'monitor'" in err, err
    assert len(err.splitlines()) == 1, err
