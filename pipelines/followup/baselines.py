"""The two baselines of a CAR-T trial, named apart: selection (eligibility) and treatment (endpoints).

- **Selection baseline visit** (`selection_baseline_visit`): per subject, the visit closest to `reference_date`
  within the lab baseline's window (`BaselineConfig.window_days_before` / `window_days_after`) and before first
  exposure (first_exposure_date, else day 0); ties go to the earlier visit, then the earlier input row. The visit
  is chosen by date alone, whatever its completeness: its `sledai_2k` may be null (not every descriptor known).
  `merge_selection_sledai` combines it with the subjects file's `sledai_2k` (`FollowUpConfig
  .selection_sledai_precedence`; default: the subjects file wins, as the value the site screened on, and the
  visit fills a gap), recording `sledai_2k_source` and counting disagreements.
- **Treatment baseline** (`treatment_baseline`): per subject, the last visit strictly before first exposure
  (first_exposure_date, else day 0) and at most `FollowUpConfig.treatment_baseline_window_days` (default 90)
  before it; endpoints, seroconversion and toxicity grades compare against it. With it come the renal inputs:
  the latest `upcr` and `egfr` lab values dated in that visit's lookback window and its renal descriptors.
  Subjects without exposure or without such a visit get nulls (not assessable later).
"""

from __future__ import annotations

import polars as pl

from immunostrat.config.followup import FollowUpConfig
from immunostrat.config.run import BaselineConfig
from immunostrat.followup.activity import KEY, activity, item

#: The renal SLEDAI-2K descriptors the treatment baseline carries (renal involvement, renal response).
RENAL_DESCRIPTORS: tuple[str, ...] = ("urinary_casts", "hematuria", "proteinuria", "pyuria")
#: Lab analytes the treatment baseline carries, latest in the visit's lookback window.
RENAL_ANALYTES: tuple[str, ...] = ("upcr", "egfr")
#: Visit fields the treatment baseline carries (null when the activity table lacks one).
TREATMENT_FIELDS: dict[str, pl.DataType] = {
    "sledai_2k": pl.Int64(),
    "clinical_sledai_2k": pl.Int64(),
    "pga": pl.Float64(),
    "prednisone_mg_day": pl.Float64(),
}


def _exposure(subjects: pl.DataFrame) -> pl.Expr:
    """First exposure: `first_exposure_date`, else `day0` (whichever columns `subjects` has)."""
    columns = [c for c in ("first_exposure_date", "day0") if c in subjects.columns]
    return pl.coalesce(columns) if columns else pl.lit(None, pl.Date)


def _anchors(subjects: pl.DataFrame, *columns: str) -> pl.DataFrame:
    """One row per subject (the first when repeated): the key, `columns` and `_exposure`."""
    return subjects.select(*KEY, *columns, _exposure=_exposure(subjects)).unique(
        subset=KEY, keep="first", maintain_order=True
    )


def selection_baseline_visit(
    activity: pl.DataFrame, subjects: pl.DataFrame, baseline: BaselineConfig | None = None
) -> pl.DataFrame:
    """The selection baseline visit of each subject that has one (see the module docstring).

    Args:
        activity: the activity table (`study_id`, `subject_id`, `visit_date`, `sledai_2k`, `clinical_sledai_2k`).
        subjects: accepted subjects (`reference_date`, `first_exposure_date`, `day0`).
        baseline: the baseline window (defaults when None).

    Returns:
        `study_id`, `subject_id`, `selection_visit_date`, `sledai_2k`, `clinical_sledai_2k`; one row per subject
        with a visit in the window, in the input order of the chosen visits.
    """
    cfg = baseline or BaselineConfig()
    days = (pl.col("visit_date") - pl.col("reference_date")).dt.total_days()
    in_window = days.is_between(-cfg.window_days_before, cfg.window_days_after) & (
        pl.col("_exposure").is_null() | (pl.col("visit_date") < pl.col("_exposure"))
    )
    return (
        activity.select(*KEY, "visit_date", "sledai_2k", "clinical_sledai_2k")
        .with_row_index("_row")
        .join(_anchors(subjects, "reference_date"), on=KEY, how="inner", maintain_order="left")
        .filter(in_window)
        # Closest first; at equal distance the earlier (before the reference date), then the earlier row.
        .sort(days.abs() * 2 + (days > 0), "_row")
        .unique(subset=KEY, keep="first", maintain_order=True)
        .sort("_row")
        .select(*KEY, pl.col("visit_date").alias("selection_visit_date"), "sledai_2k", "clinical_sledai_2k")
    )


def merge_selection_sledai(
    subjects: pl.DataFrame, selection: pl.DataFrame, config: FollowUpConfig | None = None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Each subject's selection SLEDAI-2K from the subjects file and the selection baseline visit, with its source.

    Args:
        subjects: accepted subjects (`study_id`, `subject_id`, `sledai_2k` as the file gave it, may be null).
        selection: `selection_baseline_visit`'s result.
        config: `selection_sledai_precedence` (default `subjects`: the file's value wins, the visit's fills a gap).

    Returns:
        One row per row of `subjects`, in its order: `study_id`, `subject_id`, `sledai_2k`, `sledai_2k_source`
        (`subjects`, `visits`, or null when neither gives one), `clinical_sledai_2k` and `selection_visit_date`
        (from the visit; null without one); and counts: `sledai_2k_from_subjects`, `sledai_2k_from_visits`,
        `sledai_2k_missing`, `sledai_2k_disagreements` (both known and different, whichever won).
    """
    cfg = config or FollowUpConfig()
    from_file, from_visit = pl.col("sledai_2k"), pl.col("_visit_sledai")
    first, second = (
        (from_file, from_visit) if cfg.selection_sledai_precedence == "subjects" else (from_visit, from_file)
    )
    names = ("subjects", "visits") if cfg.selection_sledai_precedence == "subjects" else ("visits", "subjects")
    visit = selection.select(
        *KEY, "selection_visit_date", "clinical_sledai_2k", pl.col("sledai_2k").alias("_visit_sledai")
    )
    merged = subjects.select(*KEY, pl.col("sledai_2k").cast(pl.Int64)).join(
        visit, on=KEY, how="left", maintain_order="left"
    )
    out = merged.select(
        *KEY,
        pl.coalesce(first, second).alias("sledai_2k"),
        pl.when(first.is_not_null())
        .then(pl.lit(names[0]))
        .when(second.is_not_null())
        .then(pl.lit(names[1]))
        .otherwise(None)
        .alias("sledai_2k_source"),
        "clinical_sledai_2k",
        "selection_visit_date",
    )
    counts = {
        "sledai_2k_from_subjects": int((out["sledai_2k_source"] == "subjects").sum()),
        "sledai_2k_from_visits": int((out["sledai_2k_source"] == "visits").sum()),
        "sledai_2k_missing": int(out["sledai_2k_source"].null_count()),
        "sledai_2k_disagreements": int(merged.select((from_file != from_visit).fill_null(False).sum()).item()),
    }
    return out, counts


def with_selection_sledai(
    subjects: pl.DataFrame,
    visits: pl.DataFrame | None,
    labs: pl.DataFrame,
    *,
    config: FollowUpConfig | None = None,
    baseline: BaselineConfig | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """`subjects` with the selection SLEDAI-2K: `sledai_2k` (merged), `sledai_2k_source`, `clinical_sledai_2k`.

    The two new columns sit right after `sledai_2k`, in the subjects' row order. Without visits (None or empty)
    the subjects file is the only source: `sledai_2k_source` is `subjects` where it gave a score, and
    `clinical_sledai_2k` is null (it needs the descriptors). With visits, SLEDAI-2K is derived per visit before
    first exposure (labs included, as `activity` does), the selection baseline visit is chosen and merged by
    `config.selection_sledai_precedence`; the counts are `merge_selection_sledai`'s.
    """
    cfg = config or FollowUpConfig()
    if visits is None or visits.is_empty():
        selection = pl.DataFrame(
            schema={
                **dict.fromkeys(KEY, pl.String()),
                "selection_visit_date": pl.Date(),
                "sledai_2k": pl.Int64(),
                "clinical_sledai_2k": pl.Int64(),
            }
        )
    else:
        exposure = _anchors(subjects).select(*KEY, "_exposure")
        before = (
            visits.join(exposure, on=KEY, how="left", maintain_order="left")
            .filter(pl.col("_exposure").is_null() | (pl.col("visit_date") < pl.col("_exposure")))
            .drop("_exposure")
        )
        scored, _ = activity(before, labs, subjects, config=cfg, baseline=baseline)
        selection = selection_baseline_visit(scored, subjects, baseline)
    merged, counts = merge_selection_sledai(subjects, selection, cfg)
    columns = [c for c in subjects.columns if c != "clinical_sledai_2k"]
    at = columns.index("sledai_2k") + 1
    out = subjects.with_columns(
        sledai_2k=merged["sledai_2k"],
        sledai_2k_source=merged["sledai_2k_source"],
        clinical_sledai_2k=merged["clinical_sledai_2k"],
    )
    return out.select(*columns[:at], "sledai_2k_source", "clinical_sledai_2k", *columns[at:]), counts


def treatment_baseline(
    activity: pl.DataFrame,
    subjects: pl.DataFrame,
    labs: pl.DataFrame,
    config: FollowUpConfig | None = None,
) -> pl.DataFrame:
    """The treatment baseline of every subject (see the module docstring).

    Args:
        activity: the activity table (`visit_date`, the scores, `pga`, `prednisone_mg_day`, `item_<renal>`).
        subjects: accepted subjects (`first_exposure_date`, `day0`).
        labs: harmonised labs (`analyte`, `value`, `censoring`, `collected_date`; `collected_at` breaks ties
            between rows of one date when present, else the earlier input row wins).
        config: `treatment_baseline_window_days` and `lookback_days` (defaults when None).

    Returns:
        One row per subject, in `subjects` order: `study_id`, `subject_id`, `treatment_baseline_date`,
        `sledai_2k`, `clinical_sledai_2k`, `pga`, `prednisone_mg_day`, `item_<renal>` per renal descriptor,
        and per renal analyte `A` (`upcr`, `egfr`) `A`, `A_censoring`, `A_date`; all null without a qualifying
        visit (no exposure date, or no visit in the window).
    """
    cfg = config or FollowUpConfig()
    renal_items = {item(d): pl.Boolean() for d in RENAL_DESCRIPTORS}
    fields = {**TREATMENT_FIELDS, **renal_items}
    missing = [pl.lit(None, t).alias(c) for c, t in fields.items() if c not in activity.columns]
    days_before = (pl.col("_exposure") - pl.col("visit_date")).dt.total_days()
    chosen = (
        activity.with_columns(missing)
        .select(*KEY, "visit_date", *(pl.col(c).cast(t) for c, t in fields.items()))
        .with_row_index("_row")
        .join(_anchors(subjects), on=KEY, how="inner")
        .filter(days_before.is_between(1, cfg.treatment_baseline_window_days))
        # The last visit; on one date, the earlier input row.
        .sort(pl.col("visit_date"), pl.col("_row"), descending=[True, False])
        .unique(subset=KEY, keep="first", maintain_order=True)
        .drop("_row", "_exposure")
        .rename({"visit_date": "treatment_baseline_date"})
    )
    out = subjects.select(*KEY).join(chosen, on=KEY, how="left", maintain_order="left")
    return out.join(_latest_labs(out, labs, cfg), on=KEY, how="left", maintain_order="left")


def _latest_labs(chosen: pl.DataFrame, labs: pl.DataFrame, cfg: FollowUpConfig) -> pl.DataFrame:
    """Per subject with a treatment baseline: the latest value of each renal analyte in its lookback window."""
    tie = [c for c in ("collected_at",) if c in labs.columns]
    censoring = pl.col("censoring") if "censoring" in labs.columns else pl.lit(None, pl.String)
    days_before = (pl.col("treatment_baseline_date") - pl.col("collected_date")).dt.total_days()
    located = (
        labs.filter(pl.col("analyte").is_in(RENAL_ANALYTES))
        .select(*KEY, "analyte", "value", "collected_date", *tie, censoring.alias("censoring"))
        .with_row_index("_row")
        .join(chosen.select(*KEY, "treatment_baseline_date").drop_nulls(), on=KEY, how="inner")
        .filter(days_before.is_between(0, cfg.lookback_days))
        .sort("collected_date", *tie, "_row", descending=[True] * (1 + len(tie)) + [False], nulls_last=True)
        .unique(subset=[*KEY, "analyte"], keep="first", maintain_order=True)
    )
    per_analyte = [
        located.filter(pl.col("analyte") == a).select(
            *KEY,
            pl.col("value").alias(a),
            pl.col("censoring").alias(f"{a}_censoring"),
            pl.col("collected_date").alias(f"{a}_date"),
        )
        for a in RENAL_ANALYTES
    ]
    result = chosen.select(*KEY).unique(subset=KEY, keep="first", maintain_order=True)
    for frame in per_analyte:  # two analytes
        result = result.join(frame, on=KEY, how="left", maintain_order="left")
    return result
