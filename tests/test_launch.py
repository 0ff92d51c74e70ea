"""Launch checks and exit codes (issue 11): user errors stop before compute, in one line, with the documented code.

0 success; 1 a run-time stop (quarantine ceiling, drift gate; validate: problems); 2 unusable input or settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from immunostrat.cli.main import main
from immunostrat.errors import EXIT_STOPPED, EXIT_UNUSABLE

from .support import AS_OF, Cohort

READERS = Path(__file__).parent / "data" / "readers"


def _stratify_args(cohort: Cohort, out: Path, registry: Path, *extra: str) -> list[str]:
    return [
        "stratify", "--labs", str(cohort.labs), "--subjects", str(cohort.subjects), "--out", str(out),
        "--registry", str(registry), "--as-of", AS_OF.isoformat(), *extra,
    ]  # fmt: skip


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_stratify_without_a_key_exits_2_before_importing_prefect(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path
) -> None:
    """The default engine is Prefect; a missing key is found at launch: no Prefect import, no server."""
    probe = (
        "import sys\n"
        "from immunostrat.cli.main import main\n"
        f"code = main({_stratify_args(small_cohort, tmp_path / 'runs', trained_registry)!r})\n"
        "print('prefect imported' if 'prefect' in sys.modules else 'prefect not imported')\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMUNOSTRAT_PSEUDONYM_KEY")}
    env["HOME"] = str(tmp_path)  # no demo key from an earlier run either
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == EXIT_UNUSABLE, done.stderr
    assert done.stdout.strip() == "prefect not imported"
    assert "no pseudonym key" in _one_line(done.stderr)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_over_the_quarantine_ceiling_the_local_engine_exits_1_with_the_ceiling_message(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _stratify_args(small_cohort, tmp_path / "runs", trained_registry, "--engine", "local")
    assert main([*args, "--max-quarantine-fraction", "0", "--no-publish"]) == EXIT_STOPPED
    assert "validation.max_quarantine_fraction" in _one_line(capsys.readouterr().err)
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert (run_dir / "quarantine.parquet").exists() and not (run_dir / "strata.parquet").exists()


def test_a_custom_ifn_method_without_a_cut_off_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "stratify", "--labs", str(READERS / "sdtm_lb.csv"), "--subjects", str(READERS / "sdtm_dm.csv"),
        "--expression", str(READERS / "expression_matrix.csv"), "--samples", str(READERS / "expression_samples.csv"),
        "--ifn-method", "MY_SIGNATURE", "--ifn-genes", "IFI27", "IFI44L", "--ifn-statistic", "median_fc",
        "--out", str(tmp_path / "runs"), "--engine", "local", "--no-publish",
    ]  # fmt: skip
    assert main(args) == EXIT_UNUSABLE
    line = _one_line(capsys.readouterr().err)
    assert "MY_SIGNATURE" in line and "no cut-off" in line and "baseline.ifn_methods_file" in line


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--model", "no-such-model"], "no-such-model"),
        (["--protocol", "missing-protocol.yaml"], "cannot read protocol file"),
        (["--partition-rows", "5"], "partition_rows"),
    ],
)
def test_unusable_settings_exit_2_in_one_line(  # noqa: PLR0917 (pytest passes fixtures by position)
    flags: list[str],
    expected: str,
    small_cohort: Cohort,
    trained_registry: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _stratify_args(small_cohort, tmp_path / "runs", trained_registry, "--engine", "local", "--no-publish")
    assert main([*args, *flags]) == EXIT_UNUSABLE
    assert expected in _one_line(capsys.readouterr().err)


def test_a_bad_config_file_names_the_setting(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("validation:\n  max_quarantine_fraction: 2\n", encoding="utf-8")
    args = _stratify_args(small_cohort, tmp_path / "runs", trained_registry, "--engine", "local")
    assert main([*args, "--config", str(config)]) == EXIT_UNUSABLE
    line = _one_line(capsys.readouterr().err)
    assert "validation.max_quarantine_fraction" in line and str(config) in line


def test_a_programming_error_keeps_its_traceback(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only user errors become one-line messages: a bug inside a stage is raised as itself."""
    from immunostrat.pipeline import selection as definitions

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(definitions, "derive_baseline", broken)
    args = _stratify_args(small_cohort, tmp_path / "runs", trained_registry, "--engine", "local", "--no-publish")
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(args)


def test_deciding_to_stream_reads_no_csv_row(small_cohort: Cohort, tmp_path: Path) -> None:
    """Parquet rows come from its metadata; CSV rows are estimated from the file size (documented constant)."""
    import polars as pl

    from immunostrat.config.run import StratifyParams
    from immunostrat.pipeline.launch import CSV_BYTES_PER_ROW, estimated_lab_rows

    csv = small_cohort.labs
    parquet = tmp_path / "labs.parquet"
    pl.read_csv(csv, infer_schema=False).write_parquet(parquet)
    rows = pl.read_csv(csv, infer_schema=False).height
    files = StratifyParams(labs=[str(parquet)], subjects="s", out="o")
    assert estimated_lab_rows(files) == rows
    files = StratifyParams(labs=[str(csv)], subjects="s", out="o")
    assert estimated_lab_rows(files) == -(-csv.stat().st_size // CSV_BYTES_PER_ROW)
    assert estimated_lab_rows(files) >= rows  # the estimate errs towards streaming


@pytest.fixture
def mixed_outcomes(tmp_path: Path) -> Path:
    path = tmp_path / "outcomes.csv"
    path.write_text(
        "study_id,subject_id,responded,endpoint\n"
        "SLE-CART-01,SLE01-001,1,DORIS_M6\nSLE-CART-01,SLE01-002,0,DORIS_M6\nSLE-CART-01,SLE01-003,1,DORIS_M6\n",
        encoding="utf-8",
    )
    return path


def _mixed_args(outcomes: Path) -> list[str]:
    return [
        "--labs", str(READERS / "sdtm_lb.csv"), str(READERS / "sdtm_cp.json"),
        str(READERS / "fhir_observations.ndjson"), "--crosswalk", str(READERS / "crosswalk.csv"),
        "--study-id", "SLE-CART-01", "--subjects", str(READERS / "sdtm_dm.csv"), "--outcomes", str(outcomes),
        "--as-of", AS_OF.isoformat(), "--n-bootstrap", "20",
    ]  # fmt: skip


def test_evaluate_reads_fhir_and_sdtm_with_the_crosswalk_and_study(
    mixed_outcomes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`evaluate` takes stratify's input options (before, it accepted and dropped them, and FHIR had no study)."""
    import json

    report = tmp_path / "report.json"
    assert main(["evaluate", *_mixed_args(mixed_outcomes), "--report", str(report)]) == 0, capsys.readouterr().err
    data = json.loads(report.read_text())["data"]
    assert [Path(f["path"]).name for f in data["inputs"]][:3] == [
        "sdtm_lb.csv",
        "sdtm_cp.json",
        "fhir_observations.ndjson",
    ]
    # Accepted rows per file (tests/test_mixed_sources.py works them out): LB 8, CP 3, FHIR 5 (pat-a, pat-b).
    assert data["lab_counts"]["accepted"] == 8 + 3 + 5
    assert data["subjects_with_outcome"] == 3


def test_models_compare_reads_fhir_and_sdtm_with_the_crosswalk_and_study(
    mixed_outcomes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from immunostrat.modelling.registry import list_models

    first, second = (m["model_id"] for m in list_models()[:2])
    report = tmp_path / "compare.json"
    code = main(["models", "compare", first, second, *_mixed_args(mixed_outcomes), "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())["data"]
    assert data["lab_counts"]["accepted"] == 8 + 3 + 5


def test_train_with_a_missing_outcomes_file_exits_2_at_launch(
    small_cohort: Cohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The outcomes file is checked with the other inputs, before the (default) Prefect engine starts."""
    args = ["train", "--labs", str(small_cohort.labs), "--subjects", str(small_cohort.subjects)]
    assert main([*args, "--outcomes", str(tmp_path / "missing.csv"), "--registry", str(tmp_path)]) == EXIT_UNUSABLE
    assert "outcomes file not found" in _one_line(capsys.readouterr().err)


def test_an_unwritable_prefect_home_exits_2_before_a_server_starts(
    small_cohort: Cohort, trained_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("PREFECT_HOME", str(blocker / "prefect"))  # inside a file: cannot be created
    args = _stratify_args(small_cohort, tmp_path / "runs", trained_registry, "--no-publish")
    assert main(args) == EXIT_UNUSABLE
    line = _one_line(capsys.readouterr().err)
    assert "PREFECT_HOME" in line and "--engine local" in line
