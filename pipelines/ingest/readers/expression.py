"""The type I interferon gene signature computed from an expression matrix, as `ifn_score` lab rows.

Inputs: a matrix of log2 expression (one row per sample, one column per gene; the sample column is named
`sample`, or is the first column; CSV or Parquet) and a sample sheet (`sample`, `study_id`, `subject_id`,
`collected_at`, `healthy_control`, optional `site_id`).

Methods (`schemas/reference/ifn_gene_sets.csv`; the cut-offs are in `ifn_methods.csv`):

- `median_fc`: per gene, the fold change against the healthy controls' median, 2^(x - median_controls(x));
  the score is the median of those fold changes over the method's genes (MEDIAN_FC_4, MEDIAN_FC_6).
- `mean_z`: per gene, (x - mean_controls) / sd_controls (sample SD); the score is their mean (MEAN_Z).

Each sample is one record (`source_row` = its row in the matrix). A patient sample becomes an `ifn_score` row
(method recorded). A healthy control is a record read too: it becomes a row with test `IFN_REFERENCE_CONTROL`,
which is outside the panel, so it is counted (per test, in run.json) and never scored as a patient; its own
score is in the row.

Quality control (`control_qc`, the team-only run table `ifn_controls.parquet`, never published): one long table
per matrix, with two kinds of row (`level`): a `gene` row per gene of the method with the controls' mean, SD
(sample SD, ddof 1) and median of the log2 values, the reference every score is computed against; and a `sample`
row per healthy control with its own score. One table rather than two, so that a matrix's reference and its
controls' scores travel (and are checked) together; `level` tells them apart. A control's score is computed
against a reference that includes that control (as the scores of the published methods are), so controls score
about 1 (`median_fc`) or 0 (`mean_z`) by construction; a control far from that is the outlier to look at.
A run cuts rows into subject partitions: every partition holds the file's reference (the reader's notes), so
only the partition holding the file's first control row emits the gene rows, and the table has them once.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.ingest.io import InputError, InputTable, read_input, sha256_file
from immunostrat.ingest.readers._frames import (
    LAB_COLUMNS,
    RejectRule,
    blank_to_null,
    check_file,
    finish,
    number_text,
    place_date,
)
from immunostrat.ingest.readers.crosswalk import MAX_LISTED_IDS, Crosswalk, map_identifiers
from immunostrat.ingest.readers.detect import sniff

STATISTICS = ("median_fc", "mean_z")
CONTROL_TEST = "IFN_REFERENCE_CONTROL"
SAMPLE_REQUIRED = ("sample", "collected_at", "healthy_control")
SAMPLE_OPTIONAL = ("study_id", "subject_id", "site_id")
#: Log2 expression (microarray, RNA-seq log2 CPM/TPM, qPCR -dCt) stays well below this; raw counts do not.
DEFAULT_LOG2_MAX = 30.0
DEFAULT_MIN_CONTROLS = 5
_TRUE = ("TRUE", "T", "YES", "Y", "1")
_FALSE = ("FALSE", "F", "NO", "N", "0")


class ExpressionError(InputError):
    """The expression data cannot be scored (too few controls, missing genes, not log scale, ...)."""


@dataclass(frozen=True)
class IfnMethod:
    """A signature method: its name (recorded on every score), statistic and gene set."""

    name: str
    statistic: str
    genes: tuple[str, ...]


def builtin_methods() -> dict[str, IfnMethod]:
    """The methods of `schemas/reference/ifn_gene_sets.csv`, by name."""
    path = Path(str(resources.files("immunostrat.schemas") / "reference" / "ifn_gene_sets.csv"))
    table = pl.read_csv(path, infer_schema=False)
    return {
        m: IfnMethod(m, s, tuple(g.split()))
        for m, s, g in table.select(
            pl.col("method").str.strip_chars().str.to_uppercase(), "statistic", "genes"
        ).iter_rows()
    }


def ifn_method(name: str, genes: tuple[str, ...] | list[str] | None = None, statistic: str | None = None) -> IfnMethod:
    """A built-in method by name, or a custom one (a new name with its genes and statistic).

    A built-in name always means its own gene set: a different set needs its own name (and its own cut-off in
    an IFN methods file), because scores of different gene sets are on different scales.

    Raises:
        ValueError: an unknown name without genes/statistic, or a built-in name with other genes.
    """
    key = name.strip().upper()
    known = builtin_methods()
    wanted = tuple(g.strip().upper() for g in genes) if genes else None
    if key in known:
        method = known[key]
        if wanted is not None and set(wanted) != set(method.genes):
            raise ValueError(
                f"{key} is defined by its genes ({' '.join(method.genes)}); give a new method name for another "
                "gene set, with its cut-off in an IFN methods file"
            )
        if statistic is not None and statistic != method.statistic:
            raise ValueError(f"{key} uses the {method.statistic} statistic, not {statistic}")
        return method
    if not wanted or statistic not in STATISTICS:
        raise ValueError(
            f"unknown IFN method {key!r}: built-in methods are {', '.join(sorted(known))}; a custom method needs "
            f"its genes and a statistic ({' or '.join(STATISTICS)})"
        )
    return IfnMethod(key, statistic, wanted)


def _read_matrix(path: Path) -> tuple[pl.DataFrame, str]:
    """(frame with `sample` String + one Float64 column per gene, upper-case gene names), container."""
    container = sniff(path).container
    try:
        raw = pl.read_parquet(path) if container == "parquet" else pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise ExpressionError(path, f"cannot be read as an expression matrix: {str(exc).splitlines()[0]}") from exc
    names = [c.lstrip("\ufeff").strip() for c in raw.columns]
    lowered = [n.lower() for n in names]
    sample_at = lowered.index("sample") if "sample" in lowered else 0
    genes = [n.upper() for i, n in enumerate(names) if i != sample_at]
    dupes = sorted({g for g in genes if genes.count(g) > 1})
    if dupes:
        raise ExpressionError(path, f"gene column(s) appear more than once: {', '.join(dupes)}")
    gene_cols = [c for i, c in enumerate(raw.columns) if i != sample_at]
    text = raw.select(
        pl.col(raw.columns[sample_at]).cast(pl.String).str.strip_chars().alias("sample"),
        *(pl.col(c).cast(pl.String).str.strip_chars().alias(g) for c, g in zip(gene_cols, genes, strict=True)),
    )
    numbers = text.with_columns(pl.col(genes).cast(pl.Float64, strict=False))
    # A value that is present but not a number is an error in the file, not a missing value.
    bad = text.select("sample", *genes).unpivot(index="sample", variable_name="gene", value_name="text")
    bad = bad.with_columns(number=pl.col("text").cast(pl.Float64, strict=False)).filter(
        (pl.col("text").fill_null("") != "") & (pl.col("number").is_null() | pl.col("number").is_infinite())
    )
    if bad.height:
        first = bad.head(5).select(pl.format("{} {}={}", "sample", "gene", "text")).to_series().to_list()
        raise ExpressionError(path, f"{bad.height} value(s) are not finite numbers, e.g. {'; '.join(first)}")
    if numbers["sample"].null_count() or numbers["sample"].is_duplicated().any():
        dup = numbers.filter(pl.col("sample").is_duplicated())["sample"].unique().to_list()
        raise ExpressionError(path, f"sample ids must be present and unique; repeated or empty: {dup[:10]}")
    return numbers, container


def _check_log_scale(path: Path, matrix: pl.DataFrame, genes: list[str], log2_max: float) -> None:
    if not genes:
        return
    top = matrix.select(pl.max_horizontal(pl.col(genes).max())).item()
    if top is not None and top > log2_max:
        raise ExpressionError(
            path,
            f"values reach {top:g}: not log2 expression (log2 values stay below {log2_max:g}; raw counts, "
            "intensities or linear fold changes do not). Give log2-transformed values",
        )


def _read_sheet(path: str | Path) -> pl.DataFrame:
    sheet = read_input(path, SAMPLE_REQUIRED, SAMPLE_OPTIONAL, kind="sample sheet").frame
    flag = sheet["healthy_control"].str.strip_chars().str.to_uppercase()
    sheet = sheet.with_columns(
        sample=pl.col("sample").str.strip_chars(),
        _control=pl.when(flag.is_in(_TRUE)).then(True).when(flag.is_in(_FALSE)).then(False).otherwise(None),
    )
    bad = sheet.filter(pl.col("_control").is_null())
    if bad.height:
        rows = ", ".join(f"row {r} ({s})" for r, s in bad.select("source_row", "sample").head(10).iter_rows())
        raise ExpressionError(path, f"healthy_control must be true or false; not readable at {rows}")
    dupes = sheet.filter(pl.col("sample").is_duplicated())["sample"].unique().to_list()
    if dupes or sheet["sample"].null_count():
        raise ExpressionError(path, f"sample ids must be present and unique in the sample sheet; repeated: {dupes}")
    return sheet.drop("source_file", "source_row")


def score_samples(
    matrix: pl.DataFrame, controls: list[str], method: IfnMethod, min_controls: int, path: str | Path = "<matrix>"
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Score every sample of a log2 matrix against the healthy controls.

    Args:
        matrix: `sample` plus one Float64 column per gene (at least the method's genes).
        controls: sample ids of the healthy controls.
        method: the signature method.
        min_controls: fewest controls accepted.
        path: for messages.

    Returns:
        (scores: sample, score, missing_genes; reference: gene, median, mean, sd of the controls).

    Raises:
        ExpressionError: missing genes, too few controls, controls with missing values, or (mean_z) a gene
            whose controls do not vary.
    """
    genes = list(method.genes)
    missing = [g for g in genes if g not in matrix.columns]
    if missing:
        raise ExpressionError(path, f"gene(s) of {method.name} missing from the matrix: {', '.join(missing)}")
    n_controls = matrix.filter(pl.col("sample").is_in(controls)).height
    if n_controls < min_controls:
        raise ExpressionError(
            path,
            f"{n_controls} healthy control sample(s) in the matrix; {method.name} is scored against healthy "
            f"controls and needs at least {min_controls}",
        )
    long = matrix.select("sample", *genes).unpivot(index="sample", variable_name="gene", value_name="x")
    control_rows = long.filter(pl.col("sample").is_in(controls))
    incomplete = control_rows.filter(pl.col("x").is_null() | pl.col("x").is_nan())
    if incomplete.height:
        pairs = incomplete.head(5).select(pl.format("{} {}", "sample", "gene")).to_series().to_list()
        raise ExpressionError(path, f"healthy controls lack values ({'; '.join(pairs)}); the reference needs them all")
    reference = control_rows.group_by("gene", maintain_order=True).agg(
        median=pl.col("x").median(), mean=pl.col("x").mean(), sd=pl.col("x").std(ddof=1)
    )
    if method.statistic == "mean_z":
        flat = reference.filter(~(pl.col("sd") > 0).fill_null(False))["gene"].to_list()
        if flat:
            raise ExpressionError(path, f"healthy controls do not vary for gene(s) {', '.join(flat)}: no z-score")
    x = pl.when(pl.col("x").is_nan()).then(None).otherwise(pl.col("x"))
    per_gene = (
        pl.lit(2.0).pow(x - pl.col("median"))
        if method.statistic == "median_fc"
        else (x - pl.col("mean")) / pl.col("sd")
    )
    statistic = pl.col("_g").median() if method.statistic == "median_fc" else pl.col("_g").mean()
    scores = (
        long.join(reference, on="gene", how="left")
        .with_columns(_g=per_gene)
        .group_by("sample", maintain_order=True)
        .agg(
            score=pl.when(pl.col("_g").null_count() == 0).then(statistic),
            missing_genes=pl.col("gene").filter(pl.col("_g").is_null()).sort().str.join(", "),
        )
    )
    return scores, reference


def _check_genes(path: Path, matrix: pl.DataFrame, genes: list[str], method: IfnMethod) -> None:
    """Refuse a matrix without every gene of the method, with a hint when it looks transposed (genes x samples)."""
    missing = [g for g in method.genes if g not in genes]
    if missing:
        first_col = set(matrix["sample"].str.to_uppercase().to_list())
        hint = (
            " (the genes are in the first column: the matrix looks genes x samples; give samples x genes)"
            if set(method.genes) <= first_col
            else ""
        )
        raise ExpressionError(path, f"gene(s) of {method.name} missing from the matrix: {', '.join(missing)}{hint}")


def _sample_rows(matrix: pl.DataFrame, scores: pl.DataFrame, sheet: pl.DataFrame, method: IfnMethod) -> pl.DataFrame:
    """One raw lab row per sample of the matrix, in matrix order: its score as an `ifn_score` result (a healthy
    control's under its own test), with the sample sheet's subject, study and collection date."""
    return (
        matrix.select("sample")
        .with_row_index("source_row", offset=1)
        .join(scores, on="sample", how="left", maintain_order="left")
        .join(sheet, on="sample", how="left", maintain_order="left")
        .with_columns(
            _in_sheet=pl.col("_control").is_not_null(),
            _control=pl.col("_control").fill_null(False),
            _source_id=blank_to_null(pl.col("subject_id")),
            _source_study=blank_to_null(pl.col("study_id")),
        )
        .with_columns(
            test=pl.when(pl.col("_control")).then(pl.lit(CONTROL_TEST)).otherwise(pl.lit("ifn_score")),
            result=number_text(pl.col("score")),
            unit=pl.lit(""),
            method=pl.lit(method.name),
            collected_at=place_date(pl.col("collected_at")),
            _panel=~pl.col("_control"),
        )
    )


def _sample_rules(samples: str | Path, method: IfnMethod) -> list[RejectRule]:
    """Rows refused by the reader: samples not in the sheet, scores missing genes, subjects not in the crosswalk."""
    return [
        RejectRule(
            "SAMPLE_NOT_IN_SHEET",
            "subject_id",
            ~pl.col("_in_sheet"),
            pl.format("sample '{}' listed in the sample sheet {}", "sample", pl.lit(str(samples))),
        ),
        RejectRule(
            "EXPRESSION_VALUE_MISSING",
            "result",
            pl.col("_in_sheet") & pl.col("_panel") & pl.col("score").is_null(),
            pl.format("log2 values for every gene of {} (missing: {})", pl.lit(method.name), "missing_genes"),
        ),
        RejectRule(
            "SUBJECT_NOT_IN_CROSSWALK",
            "subject_id",
            pl.col("_in_sheet") & pl.col("_unmapped") & pl.col("_panel"),
            pl.lit("a sample-sheet subject listed in the crosswalk; unknown identifiers are not guessed"),
        ),
    ]


def read_expression(
    path: str | Path,
    samples: str | Path,
    *,
    method: IfnMethod,
    min_controls: int = DEFAULT_MIN_CONTROLS,
    log2_max: float = DEFAULT_LOG2_MAX,
    crosswalk: Crosswalk | None = None,
    source: str = "EXPRESSION",
) -> InputTable:
    """Score an expression matrix and return one raw lab row per sample (see module docstring).

    Raises:
        ExpressionError: the matrix or sample sheet cannot be scored (named genes, control counts, scale).
    """
    p = check_file(path, "expression matrix")
    matrix, container = _read_matrix(p)
    genes = [c for c in matrix.columns if c != "sample"]
    _check_genes(p, matrix, genes, method)
    _check_log_scale(p, matrix, genes, log2_max)
    sheet = _read_sheet(samples)
    controls = sheet.filter(pl.col("_control"))["sample"].to_list()
    scores, reference = score_samples(matrix, controls, method, min_controls, p)
    rows = _sample_rows(matrix, scores, sheet, method)
    rows, xw_notes = map_identifiers(rows, source=source, crosswalk=crosswalk)
    not_in_matrix = sheet.join(matrix.select("sample"), on="sample", how="anti")["sample"].sort().to_list()
    notes: dict[str, Any] = {
        "format": "expression",
        "container": container,
        "samples_file": str(samples),
        "samples_sha256": sha256_file(samples),
        "method": method.name,
        "statistic": method.statistic,
        "genes": list(method.genes),
        "samples": rows.height,
        "healthy_controls": int(rows["_control"].sum()),
        "min_controls": min_controls,
        "control_reference": {g: {"median": md, "mean": mn, "sd": sd} for g, md, mn, sd in reference.iter_rows()},
        "sheet_samples_not_in_matrix": {"count": len(not_in_matrix), "samples": not_in_matrix[:MAX_LISTED_IDS]},
        "crosswalk": xw_notes,
    }
    rules = _sample_rules(samples, method)
    detail = rows.select(
        pl.lit(str(path)).alias("source_file"),
        pl.col("source_row").cast(pl.Int64),
        "sample",
        pl.col("_control").alias("healthy_control"),
        "score",
        "missing_genes",
    )
    return finish(
        p,
        rows,
        columns=LAB_COLUMNS,
        sha256=sha256_file(p),
        fmt="expression",
        notes=notes,
        detail=detail,
        rules=rules,
        source_label="expression",
    )


#: The two kinds of row of `ifn_controls.parquet` (see the module docstring).
QC_LEVELS = ("gene", "sample")
#: Columns and types of `ifn_controls.parquet` (contract: `immunostrat.schemas.ifn_controls.IfnControlRow`).
IFN_CONTROL_SCHEMA: dict[str, type[pl.DataType]] = {
    "source_file": pl.String,
    "method": pl.String,
    "statistic": pl.String,
    "n_controls": pl.Int64,
    "level": pl.String,
    "gene": pl.String,
    "control_mean": pl.Float64,
    "control_sd": pl.Float64,
    "control_median": pl.Float64,
    "sample": pl.String,
    "source_row": pl.Int64,
    "score": pl.Float64,
}


def control_qc(table: InputTable) -> pl.DataFrame:
    """The rows of `ifn_controls.parquet` for one expression file, or for the part of it a subject partition holds.

    `sample` rows: every healthy control among `table.frame`'s rows (test `IFN_REFERENCE_CONTROL`), with its
    score from the reader's `detail`. `gene` rows: the controls' reference per gene (the reader's notes, which
    every partition carries whole), only when `table.frame` holds the file's first control row, so that a
    partitioned run writes them once. Gene rows come first (in the method's gene order), then controls by row.
    Any other table (not read as an expression matrix) gives no rows.
    """
    empty = pl.DataFrame(schema=IFN_CONTROL_SCHEMA)
    if table.fmt != "expression" or table.detail is None or "control_reference" not in table.notes:
        return empty
    notes = table.notes
    # The detail names the file as the caller spelled it, the rows as `table.path`: match on the row only.
    held = table.frame.filter(pl.col("test") == CONTROL_TEST).select("source_row")
    controls = table.detail.filter(pl.col("healthy_control"))
    samples = controls.join(held, on="source_row", how="semi").select(
        pl.lit(table.path).alias("source_file"), pl.lit("sample").alias("level"), "sample", "source_row", "score"
    )
    first = controls["source_row"].min()
    reference: dict[str, dict[str, float | None]] = (
        notes["control_reference"] if held.filter(pl.col("source_row") == first).height else {}
    )
    genes = pl.DataFrame(
        {
            "gene": list(reference),
            "control_mean": [r["mean"] for r in reference.values()],
            "control_sd": [r["sd"] for r in reference.values()],
            "control_median": [r["median"] for r in reference.values()],
        },
        schema={"gene": pl.String, "control_mean": pl.Float64, "control_sd": pl.Float64, "control_median": pl.Float64},
    ).with_columns(source_file=pl.lit(table.path), level=pl.lit("gene"))
    rows = pl.concat([genes, samples], how="diagonal_relaxed").with_columns(
        method=pl.lit(notes["method"]),
        statistic=pl.lit(notes["statistic"]),
        n_controls=pl.lit(notes["healthy_controls"], pl.Int64),
    )
    return rows.select(pl.col(c).cast(t) for c, t in IFN_CONTROL_SCHEMA.items()) if rows.height else empty
