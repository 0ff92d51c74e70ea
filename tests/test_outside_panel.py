"""outside_panel.parquet: its contract (OutsidePanelRow), checked before stratify and monitor write it."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from immunostrat.pipeline.engine.executors import InMemory
from immunostrat.pipeline.follow_up import MONITOR
from immunostrat.pipeline.selection import STRATIFY
from immunostrat.schemas.outputs import OUTPUT_MODELS, OutputContractError, OutsidePanelRow, validate_output

from .fixtures_labs import SOURCE, harmonise, lab_row

READERS = Path(__file__).parent / "data" / "readers"


def _table(**columns: list) -> pl.DataFrame:
    data = {"source_file": ["labs.csv", "labs.csv"], "source_row": [1, 2], "test": ["ALT", "ALB"], **columns}
    return pl.DataFrame(data, schema={"source_file": pl.String, "source_row": pl.Int64, "test": pl.String})


def test_a_well_formed_table_meets_the_contract() -> None:
    assert validate_output("outside_panel", _table()).height == 2
    assert validate_output("outside_panel.parquet", _table().head(0)).height == 0
    assert OUTPUT_MODELS["outside_panel.parquet"] is OutsidePanelRow


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (_table(source_row=[0, 2]), "source_row"),  # rows are 1-based: 0 is below, 1 (first case) is the boundary
        (_table(test=["ALT", ""]), "test"),  # an empty test is quarantined TEST_MISSING, never set aside
        (_table(test=["ALT", None]), "test"),
        (_table(source_row=[2, 2]), "uniqueness"),  # one input row is set aside once
        (_table(source_file=["labs.csv", ""]), "source_file"),
    ],
)
def test_the_contract_refuses_bad_rows(frame: pl.DataFrame, problem: str) -> None:
    with pytest.raises(OutputContractError, match=r"outside_panel\.parquet") as error:
        validate_output("outside_panel", frame)
    assert problem in str(error.value)


def test_the_contract_is_strict() -> None:
    extra = _table().with_columns(subject_id=pl.lit("P001"))
    with pytest.raises(OutputContractError, match="unexpected column"):
        validate_output("outside_panel", extra)


def test_unknown_tests_are_set_aside_and_meet_the_contract() -> None:
    """Row 2 (ALT) maps to no analyte; row 3 (blank test) stays with the panel rows (validate: TEST_MISSING)."""
    parts = harmonise([lab_row(), lab_row(test="ALT"), lab_row(test="  "), lab_row(test="HbA1c")])
    outside = validate_output("outside_panel", parts.outside_panel)
    assert outside.rows() == [(SOURCE, 2, "ALT"), (SOURCE, 4, "HbA1c")]


def test_stratify_and_monitor_check_it_before_writing() -> None:
    for pipeline in (STRATIFY, MONITOR):
        (output,) = [o for o in pipeline.outputs if o.file == "outside_panel.parquet"]
        assert output.contract == "outside_panel", pipeline.name
        assert pipeline.contracts()["outside_panel"] == "outside_panel"  # also checked per partition (streaming)


class _View:
    """A merged view holding one table, as an executor's output step sees it."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self._frame = frame

    whole = True
    source = None

    def frame(self, table: str, columns: list[str] | None = None) -> pl.DataFrame:
        return self._frame


def test_a_broken_table_is_refused_before_anything_is_written() -> None:
    broken = _table(source_row=[1, 1])
    with pytest.raises(OutputContractError, match=r"outside_panel\.parquet"):
        InMemory().output(_View(broken), "outside_panel", "outside_panel")


def test_a_stratify_run_writes_the_rows_outside_the_panel(tmp_path: Path) -> None:
    """Mixed sources: ALT (sdtm_lb row 8), ALB (row 11), NKLY (sdtm_cp row 4), LOINC 15074-8 glucose (FHIR row 8),
    and the matrix's six healthy controls (rows 1-6): read from the test files, not from the code."""
    from immunostrat.cli.main import main

    args = [
        "stratify", "--labs", str(READERS / "sdtm_lb.csv"), str(READERS / "sdtm_cp.json"),
        str(READERS / "fhir_observations.ndjson"), "--expression", str(READERS / "expression_matrix.csv"),
        "--samples", str(READERS / "expression_samples.csv"), "--crosswalk", str(READERS / "crosswalk.csv"),
        "--subjects", str(READERS / "sdtm_dm.csv"), "--no-publish", "--out", str(tmp_path), "--as-of", "2026-11-01",
        "--engine", "local",
    ]  # fmt: skip
    assert main(args) == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    outside = pl.read_parquet(run_dir / "outside_panel.parquet")
    got = [(Path(f).name, r, t) for f, r, t in outside.rows()]
    assert got == [
        ("sdtm_lb.csv", 8, "ALT"),
        ("sdtm_lb.csv", 11, "ALB"),
        ("sdtm_cp.json", 4, "NKLY"),
        ("fhir_observations.ndjson", 8, "15074-8"),
        *(("expression_matrix.csv", row, "IFN_REFERENCE_CONTROL") for row in range(1, 7)),
    ]
    validate_output("outside_panel", outside)
