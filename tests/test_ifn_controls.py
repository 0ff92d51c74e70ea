"""ifn_controls.parquet: the healthy controls' reference and scores, team-only QC of the expression matrices.

The test matrix (tests/data/readers/expression_matrix.csv) has six controls HC1-HC6 (rows 1-6) at a gene's
centre plus -0.2, -0.1, 0, 0, +0.1, +0.2 log2 for every gene; the centres are IFI27 5.0, IFI44 6.0, IFI44L 4.0,
RSAD2 7.0, IFIT1 6.5, ISG15 8.0, SIGLEC1 3.0. So per gene: mean = median = centre, SD = sqrt(0.1 / 5) =
sqrt(0.02). A control's median_fc score is 2^offset (every gene moves together); its mean_z score is
offset / sqrt(0.02).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from immunostrat.ingest.io import InputTable
from immunostrat.ingest.readers import ifn_method, read_expression
from immunostrat.ingest.readers.expression import IFN_CONTROL_SCHEMA, control_qc
from immunostrat.pipeline.follow_up import MONITOR
from immunostrat.pipeline.partition import split_table
from immunostrat.pipeline.selection import IFN_CONTROLS_OUTPUT, STRATIFY
from immunostrat.schemas.outputs import OutputContractError, validate_output

READERS = Path(__file__).parent / "data" / "readers"
MATRIX, SHEET = READERS / "expression_matrix.csv", READERS / "expression_samples.csv"
SD = math.sqrt(0.02)
OFFSETS = {"HC1": -0.2, "HC2": -0.1, "HC3": 0.0, "HC4": 0.0, "HC5": 0.1, "HC6": 0.2}
CENTRES = {"IFI27": 5.0, "IFI44": 6.0, "IFI44L": 4.0, "RSAD2": 7.0, "IFIT1": 6.5, "ISG15": 8.0, "SIGLEC1": 3.0}


def _qc(method: str, sheet: Path = SHEET) -> pl.DataFrame:
    return control_qc(read_expression(MATRIX, sheet, method=ifn_method(method)))


def _genes(qc: pl.DataFrame) -> dict[str, tuple[float, float, float]]:
    rows = qc.filter(pl.col("level") == "gene").select("gene", "control_mean", "control_sd", "control_median")
    return {g: (mean, sd, median) for g, mean, sd, median in rows.iter_rows()}


def _scores(qc: pl.DataFrame) -> dict[str, tuple[int, float]]:
    rows = qc.filter(pl.col("level") == "sample").select("sample", "source_row", "score")
    return {s: (r, score) for s, r, score in rows.iter_rows()}


def test_median_fc_reference_per_gene_and_score_per_control() -> None:
    qc = validate_output("ifn_controls", _qc("MEDIAN_FC_4"))
    assert qc["level"].to_list() == ["gene"] * 4 + ["sample"] * 6  # the reference first, then the controls
    assert set(qc["method"]) == {"MEDIAN_FC_4"} and set(qc["statistic"]) == {"median_fc"}
    assert set(qc["n_controls"]) == {6}
    genes = _genes(qc)
    assert list(genes) == ["IFI27", "IFI44", "IFI44L", "RSAD2"]
    for gene, (mean, sd, median) in genes.items():
        assert mean == pytest.approx(CENTRES[gene]) and median == pytest.approx(CENTRES[gene])
        assert sd == pytest.approx(SD)
    scores = _scores(qc)
    assert list(scores) == list(OFFSETS)
    for i, (sample, offset) in enumerate(OFFSETS.items(), start=1):
        assert scores[sample] == (i, pytest.approx(2.0**offset))


def test_mean_z_scores_controls_in_sd_units() -> None:
    qc = validate_output("ifn_controls", _qc("MEAN_Z"))
    assert set(qc["statistic"]) == {"mean_z"}
    assert list(_genes(qc)) == ["IFI27", "IFI44L", "IFIT1", "ISG15", "RSAD2", "SIGLEC1"]
    assert _genes(qc)["IFIT1"] == (pytest.approx(6.5), pytest.approx(SD), pytest.approx(6.5))
    scores = _scores(qc)
    assert scores["HC1"][1] == pytest.approx(-math.sqrt(2))  # -0.2 / sqrt(0.02)
    assert scores["HC3"][1] == pytest.approx(0.0, abs=1e-12)
    assert scores["HC6"][1] == pytest.approx(math.sqrt(2))


def test_patients_are_never_in_the_table() -> None:
    qc = _qc("MEDIAN_FC_4")
    assert not set(qc["sample"].drop_nulls()) & {"S1", "S2", "S3", "S4"}


def test_a_table_not_read_from_a_matrix_gives_no_rows() -> None:
    native = InputTable("labs.csv", pl.DataFrame({"test": ["c3"], "source_row": [1]}), "0" * 64, ())
    assert control_qc(native).schema == pl.Schema(IFN_CONTROL_SCHEMA)
    assert control_qc(native).height == 0


def test_partitions_together_give_the_single_pass_rows_with_the_reference_once(tmp_path: Path) -> None:
    """Controls with their own subject ids land in different partitions; the gene rows still come once."""
    sheet = pl.read_csv(SHEET, infer_schema=False).with_columns(
        study_id=pl.when(pl.col("healthy_control") == "true").then(pl.lit("HC")).otherwise("study_id"),
        subject_id=pl.when(pl.col("healthy_control") == "true").then(pl.col("sample")).otherwise("subject_id"),
    )
    sheet.write_csv(tmp_path / "sheet.csv")
    table = read_expression(MATRIX, tmp_path / "sheet.csv", method=ifn_method("MEDIAN_FC_4"))
    whole = control_qc(table)
    parts = [control_qc(part) for part in split_table(table, 4)]
    assert sum(1 for p in parts if p.filter(pl.col("level") == "sample").height) >= 2  # really spread out
    assert sum(p.filter(pl.col("level") == "gene").height for p in parts) == 4
    merged = pl.concat(parts).sort("source_row", nulls_last=False, maintain_order=True)
    assert merged.sort(pl.all(), nulls_last=True).equals(whole.sort(pl.all(), nulls_last=True))
    # a partition without the file's first control and without controls gives nothing
    lonely = replace(table, frame=table.frame.filter(pl.col("test") == "ifn_score"))
    assert control_qc(lonely).height == 0


# ---------------------------------------------------------------------------------------------- the contract


def _valid() -> pl.DataFrame:
    return _qc("MEDIAN_FC_4")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (pl.when(pl.col("level") == "gene").then(pl.lit("HC1")).otherwise("sample").alias("sample"), "a gene row"),
        (pl.when(pl.col("level") == "sample").then(None).otherwise("score").alias("score"), "a sample row"),
        (pl.when(pl.col("level") == "sample").then(0.5).otherwise("control_sd").alias("control_sd"), "a sample row"),
        (pl.when(pl.col("level") == "gene").then(pl.lit(-0.01)).otherwise("control_sd").alias("control_sd"), "sd"),
        (pl.when(pl.col("level") == "sample").then(float("nan")).otherwise("score").alias("score"), "score"),
        (pl.lit("patient").alias("level"), "level"),
        (pl.lit("median").alias("statistic"), "statistic"),
        (pl.lit(0, pl.Int64).alias("n_controls"), "n_controls"),
    ],
)
def test_the_contract_refuses_mixed_or_impossible_rows(edit: pl.Expr, problem: str) -> None:
    with pytest.raises(OutputContractError, match=r"ifn_controls\.parquet") as error:
        validate_output("ifn_controls", _valid().with_columns(edit))
    assert problem in str(error.value)


def test_the_contract_boundaries_that_hold() -> None:
    """SD 0 (controls alike) and n_controls 1 are the lowest accepted values."""
    edge = _valid().with_columns(
        pl.when(pl.col("level") == "gene").then(pl.lit(0.0)).otherwise("control_sd").alias("control_sd"),
        pl.lit(1, pl.Int64).alias("n_controls"),
    )
    assert validate_output("ifn_controls", edge).height == 10


def test_a_gene_or_control_appears_once_per_matrix() -> None:
    valid = _valid()
    with pytest.raises(OutputContractError, match="ifn_controls"):
        validate_output("ifn_controls", pl.concat([valid, valid.head(1)]))
    with pytest.raises(OutputContractError, match="ifn_controls"):
        validate_output("ifn_controls", pl.concat([valid, valid.tail(1)]))


# ---------------------------------------------------------------------------------------------- the run folder


def _stratify(out: Path, *extra: str, expression: bool = True) -> Path:
    from immunostrat.cli.main import main

    args = [
        "stratify", "--labs", str(READERS / "sdtm_lb.csv"), str(READERS / "sdtm_cp.json"),
        "--crosswalk", str(READERS / "crosswalk.csv"), "--subjects", str(READERS / "sdtm_dm.csv"),
        "--out", str(out), "--as-of", "2026-11-01", "--engine", "local", *extra,
    ]  # fmt: skip
    if expression:
        args += ["--expression", str(MATRIX), "--samples", str(SHEET)]
    assert main(args) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir


def test_both_pipelines_write_it_only_with_expression_matrices() -> None:
    assert IFN_CONTROLS_OUTPUT in STRATIFY.outputs and IFN_CONTROLS_OUTPUT in MONITOR.outputs
    assert IFN_CONTROLS_OUTPUT.contract == "ifn_controls"
    assert IFN_CONTROLS_OUTPUT.when is not None


def test_a_run_with_expression_keeps_it_and_the_sponsor_snapshot_never_sees_it(tmp_path: Path) -> None:
    key = tmp_path / "pseudonym.key"
    key.write_text("immunostrat-test-key-ifn-controls-" + "0" * 30 + "\n", encoding="utf-8")
    key.chmod(0o600)
    run_dir = _stratify(tmp_path / "out", "--key-file", str(key))
    qc = pl.read_parquet(run_dir / "ifn_controls.parquet")
    assert qc.height == 10 and qc.filter(pl.col("level") == "sample")["sample"].to_list() == list(OFFSETS)
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert run["outputs"]["ifn_controls.parquet"]["rows"] == 10  # with its checksum, like every output
    sponsor = run_dir / "sponsor"
    files = [p for p in sponsor.rglob("*") if p.is_file()]
    assert files and not [p for p in files if "ifn_control" in p.name]
    for path in files:
        # Embedded images are base64: any short text turns up in them by chance.
        content = re.sub(rb"data:image/[^\"')]+", b"", path.read_bytes())
        for sample in OFFSETS:  # no control's sample id anywhere: no control row, no score
            assert sample.encode() not in content, (path, sample)
    data = pl.read_parquet(sponsor / "data", hive_partitioning=True)
    assert data.height == pl.read_parquet(run_dir / "strata.parquet").height  # one row per stratified subject


def test_a_run_without_expression_writes_no_qc_table(tmp_path: Path) -> None:
    run_dir = _stratify(tmp_path / "out", "--no-publish", expression=False)
    assert not (run_dir / "ifn_controls.parquet").exists()
    assert "ifn_controls.parquet" not in json.loads((run_dir / "run.json").read_text(encoding="utf-8"))["outputs"]
