"""Baseline: one row per subject with the baseline value of each analyte and derived flags.

Baseline rule, per subject and analyte: among accepted measurements dated from `window_days_before` days
before `reference_date` to `window_days_after` days after it, and strictly before `first_exposure_date`
when one is given, take the one closest to `reference_date`. Ties are broken, in order, by: a measurement
on or before the reference date over one after it; the later collection time; the lower source file name
and row number. Missing analytes stay missing (null); nothing is imputed.
"""

from __future__ import annotations

import polars as pl

from immunostrat.config import BaselineConfig
from immunostrat.reference import ReferenceTables

# The analytes counted for completeness (anti-dsDNA counts as present in either IU/mL or xULN form).
CORE_ANALYTES = (
    "anti_dsdna",
    "c3",
    "c4",
    "ifn_score",
    "cd19_b_cells",
    "cd3_t_cells",
    "cd4_t_cells",
    "cd8_t_cells",
    "plasmablasts",
    "lymphocytes",
)
_KEY = ["study_id", "subject_id"]


def select_baseline(harmonised: pl.DataFrame, subjects: pl.DataFrame, cfg: BaselineConfig) -> pl.DataFrame:
    """The baseline measurement per (study_id, subject_id, analyte), long format, with `days_from_reference`."""
    anchors = subjects.select(*_KEY, "reference_date", "first_exposure_date")
    days = (pl.col("collected_date") - pl.col("reference_date")).dt.total_days()
    in_window = days.is_between(-cfg.window_days_before, cfg.window_days_after) & (
        pl.col("first_exposure_date").is_null() | (pl.col("collected_date") < pl.col("first_exposure_date"))
    )
    windowed = harmonised.join(anchors, on=_KEY, how="inner").with_columns(days_from_reference=days).filter(in_window)
    # The tie rule is applied to a narrow frame (keys and sort columns only) and the chosen rows are gathered,
    # so the sort never moves the wide rows.
    chosen = (
        windowed.select(*_KEY, "analyte", "days_from_reference", "collected_at", "source_file", "source_row")
        .with_row_index("_row")
        .sort(
            [
                *_KEY,
                "analyte",
                pl.col("days_from_reference").abs(),
                pl.col("days_from_reference") > 0,
                "collected_at",
                "source_file",
                "source_row",
            ],
            descending=[False, False, False, False, False, True, False, False],
            nulls_last=True,
        )
        .unique(subset=[*_KEY, "analyte"], keep="first", maintain_order=True)
    )
    return windowed[chosen["_row"]]


def _above(value: pl.Expr, censoring: pl.Expr, cutoff: pl.Expr, inclusive: pl.Expr) -> pl.Expr:
    """Three-valued `value is above cutoff` (or at it when inclusive), honouring censoring.

    "<v" with v at or below the cut-off is known to be below it; ">v" with v at or above it is known to be
    above; anything else censored is unknown (null).
    """
    exact = (value > cutoff) | (inclusive & (value == cutoff))
    return (
        pl.when(censoring.is_null())
        .then(exact)
        .when(censoring == "<")
        .then(pl.when(value <= cutoff).then(False))
        .when(censoring == "<=")
        .then(pl.when((value < cutoff) | (~inclusive & (value == cutoff))).then(False))
        .when(censoring == ">")
        .then(pl.when(value >= cutoff).then(True))
        .when(censoring == ">=")
        .then(pl.when((value > cutoff) | (inclusive & (value == cutoff))).then(True))
        .otherwise(None)
    )


def _below(value: pl.Expr, censoring: pl.Expr, cutoff: pl.Expr) -> pl.Expr:
    """Three-valued `value is strictly below cutoff`, honouring censoring."""
    flipped = censoring.replace_strict({"<": ">", "<=": ">=", ">": "<", ">=": "<="}, default=None)
    return _above(-value, flipped, -cutoff, pl.lit(False))


def derive_baseline(
    harmonised: pl.DataFrame, subjects: pl.DataFrame, ref: ReferenceTables, cfg: BaselineConfig
) -> pl.DataFrame:
    """One row per valid subject: subject fields, baseline values per analyte, and derived flags.

    Args:
        harmonised: the accepted long table (`harmonised_table`).
        subjects: valid, typed subjects (`validate_subjects(...).accepted`).
        ref: mapping tables (panel order and IFN-method cut-offs).
        cfg: window and default cut-offs.
    """
    panel = ref.panel
    chosen = select_baseline(harmonised, subjects, cfg)
    fields = ["value", "collected_date", "censoring", "ref_low", "ref_high", "method"]
    wide = chosen.pivot(
        on="analyte", on_columns=panel, index=_KEY, values=fields, aggregate_function="first", separator="|"
    )
    renames: dict[str, str] = {}
    for analyte in panel:
        renames[f"value|{analyte}"] = analyte
        renames[f"collected_date|{analyte}"] = f"{analyte}_date"
        renames[f"censoring|{analyte}"] = f"{analyte}_censoring"
    keep = {
        "ref_high|anti_dsdna": "anti_dsdna_ref_high",
        "method|anti_dsdna": "anti_dsdna_method",
        "ref_low|c3": "c3_ref_low",
        "ref_low|c4": "c4_ref_low",
        "method|ifn_score": "ifn_method",
    }
    wide = wide.rename({**renames, **keep}, strict=False).select(
        *_KEY,
        *(c for a in panel for c in (a, f"{a}_date", f"{a}_censoring")),
        *keep.values(),
    )
    strata = subjects.drop("source_file", "source_row").join(wide, on=_KEY, how="left", maintain_order="left")
    return add_flags(strata, ref, cfg)


def add_flags(strata: pl.DataFrame, ref: ReferenceTables, cfg: BaselineConfig) -> pl.DataFrame:
    """Derived flags: anti-dsDNA positivity and ratio, low C3/C4, IFN-high and ratio, CD4/CD8, serology."""
    ifn = ref.ifn_methods.select(
        pl.col("method").alias("ifn_method"),
        pl.col("high_cutoff").alias("_ifn_cutoff"),
        pl.col("inclusive").alias("_ifn_inclusive"),
    )
    dsdna_cutoff = pl.coalesce(pl.col("anti_dsdna_ref_high"), pl.lit(cfg.anti_dsdna_default_cutoff))
    # Above the lab's own upper limit is positive; without one, at or above the default cut-off is positive.
    dsdna_inclusive = pl.col("anti_dsdna_ref_high").is_null()
    iu_positive = _above(pl.col("anti_dsdna"), pl.col("anti_dsdna_censoring"), dsdna_cutoff, dsdna_inclusive)
    xuln_positive = _above(pl.col("anti_dsdna_xuln"), pl.col("anti_dsdna_xuln_censoring"), pl.lit(1.0), pl.lit(False))
    c3_lln = pl.coalesce(pl.col("c3_ref_low"), pl.lit(cfg.c3_default_lln))
    c4_lln = pl.coalesce(pl.col("c4_ref_low"), pl.lit(cfg.c4_default_lln))
    present = [
        (pl.col("anti_dsdna").is_not_null() | pl.col("anti_dsdna_xuln").is_not_null())
        if a == "anti_dsdna"
        else pl.col(a).is_not_null()
        for a in CORE_ANALYTES
    ]
    return (
        strata.with_columns(
            # Hash lookups of the method's cut-off: joining would copy every strata column.
            _ifn_cutoff=pl.col("ifn_method").replace_strict(
                ifn["ifn_method"], ifn["_ifn_cutoff"], default=None, return_dtype=pl.Float64
            ),
            _ifn_inclusive=pl.col("ifn_method").replace_strict(
                ifn["ifn_method"], ifn["_ifn_inclusive"], default=None, return_dtype=pl.Boolean
            ),
        )
        .with_columns(
            anti_dsdna_ratio=pl.when(pl.col("anti_dsdna").is_not_null())
            .then(pl.col("anti_dsdna") / dsdna_cutoff)
            .otherwise(pl.col("anti_dsdna_xuln")),
            anti_dsdna_positive=pl.when(pl.col("anti_dsdna").is_not_null()).then(iu_positive).otherwise(xuln_positive),
            c3_low=_below(pl.col("c3"), pl.col("c3_censoring"), c3_lln),
            c4_low=_below(pl.col("c4"), pl.col("c4_censoring"), c4_lln),
            ifn_ratio=pl.col("ifn_score") / pl.col("_ifn_cutoff"),
            ifn_high=_above(
                pl.col("ifn_score"),
                pl.col("ifn_score_censoring"),
                pl.col("_ifn_cutoff"),
                pl.col("_ifn_inclusive"),
            ),
            cd4_cd8_ratio=pl.when(pl.col("cd8_t_cells") > 0).then(pl.col("cd4_t_cells") / pl.col("cd8_t_cells")),
            n_baseline_analytes=pl.sum_horizontal([p.cast(pl.Int32) for p in present]),
            missing_analytes=pl.concat_list(
                [pl.when(~p).then(pl.lit(a)) for a, p in zip(CORE_ANALYTES, present, strict=True)]
            ).list.drop_nulls(),
        )
        .with_columns(
            # Kleene logic: any known True makes the subject active; all known False makes them inactive.
            serologically_active=pl.col("anti_dsdna_positive") | pl.col("c3_low") | pl.col("c4_low"),
        )
        .drop("_ifn_cutoff", "_ifn_inclusive")
    )


def missing_counts(strata: pl.DataFrame) -> dict[str, int]:
    """Subjects without a baseline value, per core analyte."""
    exploded = strata.select(pl.col("missing_analytes").explode()).drop_nulls()
    counts = exploded.group_by("missing_analytes").len()
    found = dict(zip(counts["missing_analytes"].to_list(), counts["len"].to_list(), strict=True))
    return {a: int(found.get(a, 0)) for a in CORE_ANALYTES}
