"""Baseline: one row per subject with the baseline value of each analyte and derived flags.

Baseline rule, per subject and analyte: among accepted measurements dated from `window_days_before` days
before `reference_date` to `window_days_after` days after it, and strictly before `first_exposure_date`
when one is given, take the one closest to `reference_date`. Ties are broken, in order, by: a measurement
on or before the reference date over one after it; the later collection time; the lower source file name
and row number. Missing analytes stay missing (null); nothing is imputed.

Only the selection panel (`panel_group` selection in analytes.csv) gets baseline columns. One follow-up
analyte is also a subject field: eGFR. The subjects file's `egfr` wins; when it is empty, the exact (uncensored)
lab `egfr` chosen by the baseline rule fills it. `egfr_source` says which (`subjects`, `labs`, or null when
neither), and `egfr_equation` is the lab row's `method` (e.g. CKD-EPI 2021) when the value came from the labs.
A censored lab eGFR (">90") never fills it: eligibility compares `egfr` as an exact number, so "<60" would
pass a criterion of >= 30 that it may fail.
"""

from __future__ import annotations

import polars as pl

from immunostrat.config.run import BaselineConfig
from immunostrat.ingest.reference import ReferenceTables

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
EGFR = "egfr"


# The tie rule as sort keys, most significant first (nulls sort last); see the module docstring. Distance and
# side are one key, 2 * |days| plus 1 when after the reference date: one integer sorts faster than two columns.
_TIE_ORDER = [
    pl.col("days_from_reference").abs() * 2 + (pl.col("days_from_reference") > 0),
    pl.col("collected_at"),
    pl.col("source_file"),
    pl.col("source_row"),
]
_TIE_DESCENDING = [False, True, False, False]
_RECORDED_TIE_COLUMNS = ["collected_at", "source_file", "source_row"]
_TIE_COLUMNS = ["days_from_reference", *_RECORDED_TIE_COLUMNS]


def _windowed(harmonised: pl.LazyFrame, anchors: pl.LazyFrame, cfg: BaselineConfig) -> pl.LazyFrame:
    """Measurements inside their subject's baseline window, with `days_from_reference` and the anchor columns."""
    days = (pl.col("collected_date") - pl.col("reference_date")).dt.total_days()
    in_window = days.is_between(-cfg.window_days_before, cfg.window_days_after) & (
        pl.col("first_exposure_date").is_null() | (pl.col("collected_date") < pl.col("first_exposure_date"))
    )
    return harmonised.join(anchors, on=_KEY, how="inner").with_columns(days_from_reference=days).filter(in_window)


def _first_by_tie_rule(candidates: pl.DataFrame, group: list[str]) -> pl.Series:
    """Positions in `candidates` of the row the tie rule puts first in each `group`, groups in ascending order."""
    # The sort runs on a narrow frame (group and tie columns only), so it never moves the wide rows.
    return (
        candidates.select(*group, *_TIE_COLUMNS)
        .with_row_index("_row")
        .sort([*group, *_TIE_ORDER], descending=[False] * len(group) + _TIE_DESCENDING, nulls_last=True)
        .unique(subset=group, keep="first", maintain_order=True)["_row"]
    )


def select_baseline(harmonised: pl.DataFrame, subjects: pl.DataFrame, cfg: BaselineConfig) -> pl.DataFrame:
    """The baseline measurement per (study_id, subject_id, analyte), long format, with `days_from_reference`."""
    anchors = subjects.lazy().select(*_KEY, "reference_date", "first_exposure_date")
    windowed = _windowed(harmonised.lazy(), anchors, cfg).collect()
    return windowed[_first_by_tie_rule(windowed, [*_KEY, "analyte"])]


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


def _subject_ids(subjects: pl.DataFrame) -> pl.Series:
    """Row position of each subject's first row, so repeated (study_id, subject_id) rows share one baseline."""
    ids = subjects.select(*_KEY).with_row_index("_subject")
    # Validated subjects are unique; the grouped form is only paid for when they are not.
    if ids.select(pl.struct(_KEY).is_unique().all()).item():
        return ids["_subject"]
    return ids.select(pl.col("_subject").first().over(_KEY)).to_series()


def _panel_columns(analyte: str) -> dict[str, str]:
    """Strata column per field of the chosen measurement, for every panel analyte."""
    return {"value": analyte, "collected_date": f"{analyte}_date", "censoring": f"{analyte}_censoring"}


# Reference limits and methods kept only where a flag reads them: column -> (analyte, field).
_LIMIT_COLUMNS = {
    "anti_dsdna_ref_high": ("anti_dsdna", "ref_high"),
    "anti_dsdna_method": ("anti_dsdna", "method"),
    "c3_ref_low": ("c3", "ref_low"),
    "c4_ref_low": ("c4", "ref_low"),
    "ifn_method": ("ifn_score", "method"),
}


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
    panel = ref.selection_panel
    # eGFR is chosen by the same rule, among exact lab values only, to fill an empty subjects-file egfr.
    chosen_analytes = [*panel, EGFR]
    n_analytes = len(chosen_analytes)
    subject_ids = _subject_ids(subjects)
    anchors = subjects.lazy().select(*_KEY, "reference_date", "first_exposure_date", _subject=subject_ids)
    # Window on the keys alone, remembering each measurement's row (`_lab`): joining the full rows would copy
    # every string column. A (subject, analyte) cell is one integer, so the tie-rule sort runs on numbers, not
    # on the string keys; analytes outside the panel get no column and are dropped here.
    analyte_code = pl.col("analyte").replace_strict(
        chosen_analytes, range(n_analytes), default=None, return_dtype=pl.UInt64
    )
    usable = (pl.col("analyte") != EGFR) | pl.col("censoring").is_null()
    labs = (
        harmonised.lazy()
        .select(*_KEY, "collected_date", _analyte=analyte_code, _usable=usable)
        .with_row_index("_lab")
        .filter(pl.col("_analyte").is_not_null() & pl.col("_usable"))
        .drop("_usable")
    )
    located = (
        _windowed(labs, anchors, cfg)
        .select(
            "_lab", "days_from_reference", _cell=pl.col("_subject").cast(pl.UInt64) * n_analytes + pl.col("_analyte")
        )
        .collect()
    )
    candidates = located.hstack(harmonised.select(pl.col(_RECORDED_TIE_COLUMNS).gather(located["_lab"])))
    chosen = candidates[_first_by_tie_rule(candidates, ["_cell"])]
    # The harmonised row of every (subject, analyte) cell, null where there is no baseline: a gather per
    # analyte and field then replaces a pivot and a join on the string keys.
    grid = pl.repeat(None, subjects.height * n_analytes, dtype=located["_lab"].dtype, eager=True).scatter(
        chosen["_cell"], chosen["_lab"]
    )
    first_cell = subject_ids.cast(pl.UInt64) * n_analytes
    rows = {analyte: grid.gather(first_cell + k) for k, analyte in enumerate(chosen_analytes)}
    wide = pl.DataFrame(
        [
            *(
                harmonised[field].gather(rows[analyte]).alias(name)
                for analyte in panel
                for field, name in _panel_columns(analyte).items()
            ),
            *(harmonised[field].gather(rows[analyte]).alias(name) for name, (analyte, field) in _LIMIT_COLUMNS.items()),
        ]
    )
    strata = pl.concat([subjects.drop("source_file", "source_row"), wide], how="horizontal")
    strata = strata.with_columns(
        _egfr_lab=harmonised["value"].gather(rows[EGFR]), _egfr_method=harmonised["method"].gather(rows[EGFR])
    )
    return add_flags(_with_egfr_source(strata), ref, cfg)


def _with_egfr_source(strata: pl.DataFrame) -> pl.DataFrame:
    """`egfr` from the subjects file, else the baseline lab eGFR (`_egfr_lab`); `egfr_source`, `egfr_equation`."""
    from_subjects = pl.col("egfr").is_not_null()
    from_labs = ~from_subjects & pl.col("_egfr_lab").is_not_null()
    filled = strata.with_columns(
        egfr=pl.coalesce("egfr", "_egfr_lab"),
        egfr_source=pl.when(from_subjects)
        .then(pl.lit("subjects"))
        .when(from_labs)
        .then(pl.lit("labs"))
        .otherwise(pl.lit(None, pl.String)),
        egfr_equation=pl.when(from_labs).then(pl.col("_egfr_method")).otherwise(pl.lit(None, pl.String)),
    ).drop("_egfr_lab", "_egfr_method")
    # Beside `egfr`, where a reader looks for them.
    columns = [c for c in filled.columns if c not in ("egfr_source", "egfr_equation")]
    at = columns.index("egfr") + 1
    return filled.select([*columns[:at], "egfr_source", "egfr_equation", *columns[at:]])


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
    missing = names_where(strata.select((~p).alias(a) for a, p in zip(CORE_ANALYTES, present, strict=True)))
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
            missing_analytes=missing,
        )
        .with_columns(
            # Kleene logic: any known True makes the subject active; all known False makes them inactive.
            serologically_active=pl.col("anti_dsdna_positive") | pl.col("c3_low") | pl.col("c4_low"),
        )
        .drop("_ifn_cutoff", "_ifn_inclusive")
    )


def names_where(flags: pl.DataFrame) -> pl.Series:
    """Per row, the names of the columns of `flags` that are True, in column order (List[String]).

    Null counts as not True. Faster than `concat_list(when(flag).then(name)).list.drop_nulls()` by far: rows
    share few distinct flag patterns, so each pattern's list is built once (a Python loop over the distinct
    patterns, not the rows) and joined back.
    """
    if not flags.width:
        return pl.Series(values=[[]] * flags.height, dtype=pl.List(pl.String))
    keys = flags.select(pl.all().fill_null(False))
    patterns = keys.unique()
    names = [[name for name, flag in zip(keys.columns, row, strict=True) if flag] for row in patterns.iter_rows()]
    lists = patterns.with_columns(_names=pl.Series(values=names, dtype=pl.List(pl.String)))
    return keys.join(lists, on=keys.columns, how="left", maintain_order="left")["_names"]


def missing_counts(strata: pl.DataFrame) -> dict[str, int]:
    """Subjects without a baseline value, per core analyte."""
    exploded = strata.select(pl.col("missing_analytes").explode()).drop_nulls()
    counts = exploded.group_by("missing_analytes").len()
    found = dict(zip(counts["missing_analytes"].to_list(), counts["len"].to_list(), strict=True))
    return {a: int(found.get(a, 0)) for a in CORE_ANALYTES}
