"""IFN signature from an expression matrix: methods, controls, errors, and the rows it yields."""

from __future__ import annotations

import statistics
from pathlib import Path

import polars as pl
import pytest

from immunostrat.ingest.inputs import read_labs
from immunostrat.ingest.io import InputError
from immunostrat.ingest.readers import ExpressionError, ReaderOptions, ifn_method, read_crosswalk, read_expression
from immunostrat.ingest.readers.expression import CONTROL_TEST, builtin_methods

DATA = Path(__file__).parent / "data" / "readers"
MATRIX = DATA / "expression_matrix.csv"
SHEET = DATA / "expression_samples.csv"
# The matrix is built as control median + these log2 offsets (see tests/data/readers/expression_matrix.csv).
S1 = {"IFI27": 2, "IFI44": 3, "IFI44L": 3, "RSAD2": 4, "IFIT1": 2, "ISG15": 2, "SIGLEC1": 1}
S2 = {"IFI27": 0, "IFI44": 0, "IFI44L": 1, "RSAD2": 1, "IFIT1": 0, "ISG15": 0, "SIGLEC1": 0}
CONTROL_SD = statistics.stdev([-0.2, -0.1, 0.0, 0.0, 0.1, 0.2])


def _scores(method: str, matrix: Path = MATRIX, **kw: object) -> dict[str, float]:
    table = read_expression(matrix, SHEET, method=ifn_method(method), **kw)
    assert table.detail is not None
    return {s: v for s, v in table.detail.select("sample", "score").iter_rows() if v is not None}


def _median_fc(offsets: dict[str, int], genes: tuple[str, ...]) -> float:
    return statistics.median(2.0 ** offsets[g] for g in genes)


@pytest.mark.parametrize("method", ["MEDIAN_FC_4", "MEDIAN_FC_6"])
def test_median_fold_change(method: str) -> None:
    """Median over the method's genes of 2^(x - control median); controls score about 1."""
    genes = builtin_methods()[method].genes
    scores = _scores(method)
    assert scores["S1"] == pytest.approx(_median_fc(S1, genes))
    assert scores["S2"] == pytest.approx(_median_fc(S2, genes))
    assert scores["S1"] == (8.0 if method == "MEDIAN_FC_4" else 4.0)
    assert all(0.8 < scores[f"HC{i}"] < 1.2 for i in range(1, 7))


def test_mean_z_score() -> None:
    """Mean over the genes of (x - control mean) / control SD."""
    genes = builtin_methods()["MEAN_Z"].genes
    scores = _scores("MEAN_Z")
    # Polars' float sums vs Python's exactly rounded statistics on scores of 2-17: they differ by ~1e-15.
    assert scores["S1"] == pytest.approx(statistics.mean(S1[g] for g in genes) / CONTROL_SD, rel=1e-9)
    assert scores["S2"] == pytest.approx(statistics.mean(S2[g] for g in genes) / CONTROL_SD, rel=1e-9)


def test_rows_method_and_control_accounting() -> None:
    """Patients become ifn_score rows with the method; controls are outside-panel rows; every sample is a row."""
    options = ReaderOptions(samples=SHEET, crosswalk=read_crosswalk(DATA / "crosswalk.csv"))
    table = read_labs(MATRIX, "expression", options)
    frame = table.frame
    assert table.rows_read == 10 and frame.height + (table.rejected.height if table.rejected is not None else 0) == 10
    patients = frame.filter(pl.col("test") == "ifn_score")
    assert patients.select("subject_id", "result", "unit", "method", "collected_at").rows() == [
        ("SLE01-001", "8.0", "", "MEDIAN_FC_4", "2025-02-20"),
        ("SLE01-002", "1.5", "", "MEDIAN_FC_4", "2025-03-01"),
    ]
    assert frame.filter(pl.col("test") == CONTROL_TEST).height == 6
    assert table.rejected is not None
    assert table.rejected.select("source_row", "reason_code").rows() == [
        (9, "SUBJECT_NOT_IN_CROSSWALK"),
        (10, "SAMPLE_NOT_IN_SHEET"),
    ]
    assert "sample 'S4' listed in the sample sheet" in table.rejected["message"][1]
    assert table.notes["healthy_controls"] == 6 and table.notes["genes"] == ["IFI27", "IFI44", "IFI44L", "RSAD2"]


def test_parquet_matrix(tmp_path: Path) -> None:
    """A Parquet matrix with typed columns scores the same as the CSV."""
    parquet = tmp_path / "matrix.bin"
    pl.read_csv(MATRIX).write_parquet(parquet)
    assert _scores("MEDIAN_FC_4", parquet) == _scores("MEDIAN_FC_4")


def test_missing_patient_value_is_quarantined_naming_the_gene(tmp_path: Path) -> None:
    """A patient sample lacking a gene of the method has no score: quarantined, the gene named."""
    matrix = tmp_path / "m.csv"
    matrix.write_text(MATRIX.read_text().replace("S2,5.0,6.0,5.0,8.0", "S2,5.0,,5.0,8.0"))
    table = read_expression(matrix, SHEET, method=ifn_method("MEDIAN_FC_4"))
    assert table.rejected is not None
    row = table.rejected.filter(pl.col("source_row") == 8).row(0, named=True)
    assert row["reason_code"] == "EXPRESSION_VALUE_MISSING" and "missing: IFI44" in row["message"]


@pytest.mark.parametrize(
    ("edit", "kwargs", "problem"),
    [
        (None, {"min_controls": 7}, "6 healthy control sample"),
        (lambda t: t.replace(",RSAD2,", ",OTHER,"), {}, "missing from the matrix: RSAD2"),
        (lambda t: t.replace("HC1,4.8", "HC1,1200"), {}, "not log2 expression"),
        (lambda t: t.replace("HC2,4.9", "HC2,abc"), {}, "not finite numbers, e.g. HC2 IFI27=abc"),
        (lambda t: t.replace("HC3,5.0", "HC3,"), {}, "healthy controls lack values"),
    ],
)
def test_expression_errors(tmp_path: Path, edit, kwargs: dict, problem: str) -> None:
    """Too few controls, missing genes (named), a non-log scale, text values, incomplete controls."""
    matrix = tmp_path / "m.csv"
    matrix.write_text(edit(MATRIX.read_text()) if edit else MATRIX.read_text())
    with pytest.raises(ExpressionError, match=problem):
        read_expression(matrix, SHEET, method=ifn_method("MEDIAN_FC_4"), **kwargs)


def test_transposed_matrix_is_recognised(tmp_path: Path) -> None:
    """A genes x samples matrix is refused with a hint, not scored sideways."""
    transposed = tmp_path / "t.csv"
    frame = pl.read_csv(MATRIX)
    frame.drop("sample").transpose(include_header=True, header_name="sample", column_names=frame["sample"]).write_csv(
        transposed
    )
    with pytest.raises(ExpressionError, match="looks genes x samples"):
        read_expression(transposed, SHEET, method=ifn_method("MEDIAN_FC_4"))


def test_method_names() -> None:
    """Built-in names keep their gene sets; a custom set needs its own name and a statistic."""
    assert ifn_method("median_fc_6").genes == ("IFI27", "IFI44L", "IFIT1", "ISG15", "RSAD2", "SIGLEC1")
    with pytest.raises(ValueError, match="give a new method name"):
        ifn_method("MEDIAN_FC_4", genes=["IFI27", "IFI44"])
    with pytest.raises(ValueError, match="unknown IFN method"):
        ifn_method("MY_SCORE")
    custom = ifn_method("my_fc_2", genes=["ifi27", "rsad2"], statistic="median_fc")
    assert (custom.name, custom.genes) == ("MY_FC_2", ("IFI27", "RSAD2"))
    with pytest.raises(InputError, match="needs its sample sheet"):
        read_labs(MATRIX, "expression")


def test_sample_sheet_control_flag_must_be_readable(tmp_path: Path) -> None:
    """A healthy_control value that is not yes/no stops the read, naming the row."""
    sheet = tmp_path / "s.csv"
    sheet.write_text(SHEET.read_text().replace("HC1,,,2025-01-10,true", "HC1,,,2025-01-10,maybe"))
    with pytest.raises(ExpressionError, match=r"row 1 \(HC1\)"):
        read_expression(MATRIX, sheet, method=ifn_method("MEDIAN_FC_4"))
