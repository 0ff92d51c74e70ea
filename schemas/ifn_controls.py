"""Contract of `ifn_controls.parquet`: the healthy controls of each expression matrix, for the team's quality control.

Written into the run folder by stratify and monitor when expression matrices are given (never into the sponsor
snapshot). One long table with two kinds of row (`level`, rules in `immunostrat.ingest.readers.expression`):

- `gene`: per matrix and gene of the IFN method, the controls' mean, SD and median of the log2 values: the
  reference every score of that matrix is computed against;
- `sample`: per healthy control, its own score against that reference.

Columns a kind of row does not use are null on it; the row checks below hold each kind to its columns, so the
two kinds cannot mix. A separate module (not `outputs.py`) because the table is the readers' QC, not part of the
selection or follow-up results; `OUTPUT_MODELS` registers it like the others.
"""

from __future__ import annotations

from typing import Any

import pandera.polars as pa
import polars as pl

from immunostrat.ingest.readers.expression import QC_LEVELS, STATISTICS

_GENE_COLUMNS = ("gene", "control_mean", "control_median")
_SAMPLE_COLUMNS = ("sample", "source_row", "score")


def _is_finite(cls: Any, data: pa.PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key).is_finite())


class IfnControlRow(pa.DataFrameModel):
    """One gene's healthy-control reference, or one healthy control's own IFN score, of an expression matrix
    (`ifn_controls.parquet`, team only)."""

    source_file: str = pa.Field(
        str_length={"min_value": 1}, description="The expression matrix the controls are in, as given."
    )
    method: str = pa.Field(
        str_length={"min_value": 1},
        description="IFN-signature method the matrix was scored with (`MEDIAN_FC_4`, `MEDIAN_FC_6`, `MEAN_Z` or a "
        "custom name), as on its `ifn_score` rows.",
    )
    statistic: str = pa.Field(
        isin=list(STATISTICS),
        description="The method's statistic: `median_fc` (median over the genes of 2^(x - control median)) or "
        "`mean_z` (mean over the genes of (x - control mean) / control SD).",
    )
    n_controls: int = pa.Field(ge=1, description="Healthy-control samples of the matrix the reference is built from.")
    level: str = pa.Field(
        isin=list(QC_LEVELS),
        description="`gene`: a row of the controls' reference for one gene; `sample`: one healthy control's score.",
    )
    gene: str = pa.Field(
        nullable=True,
        description="Gene rows: the gene symbol, one of the method's genes (`ifn_gene_sets.csv`, or a custom "
        "method's). Null on sample rows.",
    )
    control_mean: float = pa.Field(
        nullable=True,
        description="Gene rows: mean of the controls' log2 values for the gene (the `mean_z` centre). Null on sample "
        "rows.",
        metadata={"unit": "log2 expression"},
    )
    control_sd: float = pa.Field(
        nullable=True,
        ge=0,
        description="Gene rows: sample standard deviation (ddof 1) of the controls' log2 values (the `mean_z` "
        "scale); null with a single control (the run options require at least 2). Null on sample rows.",
        metadata={"unit": "log2 expression"},
    )
    control_median: float = pa.Field(
        nullable=True,
        description="Gene rows: median of the controls' log2 values for the gene (the `median_fc` reference). Null "
        "on sample rows.",
        metadata={"unit": "log2 expression"},
    )
    sample: str = pa.Field(
        nullable=True, description="Sample rows: the control's sample id (matrix and sample sheet). Null on gene rows."
    )
    source_row: int = pa.Field(
        nullable=True,
        ge=1,
        description="Sample rows: 1-based data row of the control in `source_file` (as on its `IFN_REFERENCE_CONTROL` "
        "row of `outside_panel.parquet`). Null on gene rows.",
    )
    score: float = pa.Field(
        nullable=True,
        description="Sample rows: the control's own score with `method`, against a reference that includes it: "
        "about 1 for `median_fc`, about 0 for `mean_z`; a control far from that is an outlier. Null on gene rows.",
        metadata={"unit": "score (scale set by `method`)"},
    )

    _finite = pa.check(
        "control_mean", "control_sd", "control_median", "score", name="is_finite", error="finite (not NaN, not ±inf)"
    )(_is_finite)

    @pa.dataframe_check(
        name="gene_row_columns",
        error="a gene row has `gene`, `control_mean` and `control_median`, and no `sample`, `source_row` or `score`",
    )
    @classmethod
    def _gene_row_columns(cls, data: pa.PolarsData) -> pl.LazyFrame:
        filled = pl.all_horizontal(pl.col(c).is_not_null() for c in _GENE_COLUMNS)
        empty = pl.all_horizontal(pl.col(c).is_null() for c in _SAMPLE_COLUMNS)
        return data.lazyframe.select((pl.col("level") != "gene") | (filled & empty))

    @pa.dataframe_check(
        name="sample_row_columns",
        error="a sample row has `sample`, `source_row` and `score`, and no gene or reference columns",
    )
    @classmethod
    def _sample_row_columns(cls, data: pa.PolarsData) -> pl.LazyFrame:
        filled = pl.all_horizontal(pl.col(c).is_not_null() for c in _SAMPLE_COLUMNS)
        empty = pl.all_horizontal(pl.col(c).is_null() for c in (*_GENE_COLUMNS, "control_sd"))
        return data.lazyframe.select((pl.col("level") != "sample") | (filled & empty))

    class Config:
        title = "ifn_controls.parquet"
        strict = True
        unique = ("source_file", "level", "gene", "source_row")
