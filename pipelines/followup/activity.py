"""SLEDAI-2K per visit from the site's reported descriptors and the labs dated in the visit's lookback window.

Three steps, each a pure polars function:

1. `lab_descriptors`: the 8 laboratory and serology descriptors derived from lab rows of the subject dated on
   the visit day or up to `lookback_days` before it (labs after the visit never count). Per lab row a rule
   gives present, absent or unknown (censored and interval results are never guessed: see `above`); per visit
   and descriptor the rows combine as "any row present" in three-valued logic: present when any qualifying row
   is present, absent when every one is known absent, unknown otherwise (including when there is none).
   - low complement: C3 or C4 below the row's own `ref_low`, else `BaselineConfig.c3_default_lln` /
     `c4_default_lln`. Absent needs at least one C3 or C4 (or both, `low_complement_absent_needs`).
   - increased DNA binding: anti-dsDNA above the row's `ref_high`, or at/above `anti_dsdna_default_cutoff`
     without one; `anti_dsdna_xuln` above 1 (the baseline stage's rule, `stages/baseline.py`).
   - thrombocytopenia, leukopenia: platelets < 100, WBC < 3.0 (x10^9/L).
   - hematuria, pyuria: urine RBC, WBC > 5 /HPF; urinary casts: qualifying casts > 0 /LPF.
   - proteinuria: 24-h urine protein > 0.5 g/24h; UPCR > 0.5 g/g only when no 24-h value is in the window.
2. `activity`: each descriptor from the reported item and, for the 8 lab-derivable ones, the lab value, with its
   source (`lab`, `reported` or `missing`); where both are known and differ, `FollowUpConfig.disagreement`
   decides (default: the reported item, which can apply SLEDAI's exclusions). From first exposure on,
   thrombocytopenia and leukopenia come from the reported item only by default (lymphodepletion causes
   cytopenias; SLEDAI excludes drug causes). Then the scores (`sledai.sledai_scores`) and `days_since_infusion`.

Thresholds are `FollowUpConfig` fields (defaults from follow-up-facts.md §1).
"""

from __future__ import annotations

import polars as pl

from immunostrat.config.followup import FollowUpConfig
from immunostrat.config.run import BaselineConfig
from immunostrat.followup.columns import with_optional_columns
from immunostrat.followup.sledai import ITEM_PREFIX, Descriptor, load_descriptors, sledai_scores
from immunostrat.followup.thresholds import compare

KEY = ["study_id", "subject_id"]
#: The descriptors a lab rule can derive, in the order of the SLEDAI-2K table.
LAB_DERIVABLE: tuple[str, ...] = (
    "urinary_casts",
    "hematuria",
    "proteinuria",
    "pyuria",
    "low_complement",
    "increased_dna_binding",
    "thrombocytopenia",
    "leukopenia",
)
HEMATOLOGY: tuple[str, ...] = ("thrombocytopenia", "leukopenia")
SOURCES: tuple[str, ...] = ("lab", "reported", "missing")
SOURCE_SUFFIX = "_source"
LAB_SUFFIX = "_lab"
#: Visit fields carried into the activity table unchanged, with their types (null when the visits lack them).
CARRIED: dict[str, pl.DataType] = {
    "pga": pl.Float64(),
    "prednisone_mg_day": pl.Float64(),
    "antimalarial": pl.Boolean(),
    "hemolytic_anemia": pl.Boolean(),
    "gi_activity": pl.Boolean(),
    "other_investigational_drug": pl.Boolean(),
    "treatment_failure": pl.Boolean(),
    "immunosuppressants": pl.Int64(),
}
#: Lineage columns carried when the visits have them.
LINEAGE: dict[str, pl.DataType] = {"source_file": pl.String(), "source_row": pl.Int64()}
SCORES = ("sledai_2k", "sledai_2k_known", "sledai_2k_max", "sledai_items_missing", "clinical_sledai_2k")
_LAB_OPTIONAL: dict[str, pl.DataType] = {
    "value_high": pl.Float64(),
    "censoring": pl.String(),
    "ref_low": pl.Float64(),
    "ref_high": pl.Float64(),
}


def item(name: str) -> str:
    """The activity column of descriptor `name` (`item_<name>`)."""
    return ITEM_PREFIX + name


def _lab_rules(cfg: FollowUpConfig, baseline: BaselineConfig) -> dict[str, tuple[str, pl.Expr]]:
    """Analyte -> (descriptor, three-valued "this row shows the descriptor") for every analyte a rule reads."""

    def row(op: str, threshold: pl.Expr | float) -> pl.Expr:
        return compare(pl.col("value"), op, threshold, censoring=pl.col("censoring"), value_high=pl.col("value_high"))

    dsdna_cutoff = pl.coalesce(pl.col("ref_high"), pl.lit(baseline.anti_dsdna_default_cutoff))
    return {
        "urine_casts": ("urinary_casts", row(">", cfg.urine_casts_above)),
        "urine_rbc": ("hematuria", row(">", cfg.urine_rbc_above)),
        "urine_protein_24h": ("proteinuria", row(">", cfg.urine_protein_24h_above)),
        "upcr": ("proteinuria", row(">", cfg.upcr_above)),
        "urine_wbc": ("pyuria", row(">", cfg.urine_wbc_above)),
        "c3": ("low_complement", row("<", pl.coalesce(pl.col("ref_low"), pl.lit(baseline.c3_default_lln)))),
        "c4": ("low_complement", row("<", pl.coalesce(pl.col("ref_low"), pl.lit(baseline.c4_default_lln)))),
        # As the baseline stage: above the lab's own upper limit; without one, at or above the default cut-off.
        "anti_dsdna": (
            "increased_dna_binding",
            pl.when(pl.col("ref_high").is_null()).then(row(">=", dsdna_cutoff)).otherwise(row(">", dsdna_cutoff)),
        ),
        "anti_dsdna_xuln": ("increased_dna_binding", row(">", 1.0)),
        "platelets": ("thrombocytopenia", row("<", cfg.platelets_below)),
        "wbc": ("leukopenia", row("<", cfg.wbc_below)),
    }


def lab_rule(analyte: str, config: FollowUpConfig | None = None, baseline: BaselineConfig | None = None) -> pl.Expr:
    """The activity table's three-valued rule for one lab row of `analyte` (e.g. `anti_dsdna`: "shows increased
    DNA binding"; `c3`: "is low"), over the harmonised columns; for other modules that need the same verdict.

    Raises:
        KeyError: no rule reads `analyte`.
    """
    return _lab_rules(config or FollowUpConfig(), baseline or BaselineConfig())[analyte][1]


def _derivable(descriptors: tuple[Descriptor, ...]) -> list[str]:
    """The lab-derivable descriptors the table lists, in table order."""
    return [d.item for d in descriptors if d.item in LAB_DERIVABLE]


def lab_descriptors(
    visit_keys: pl.DataFrame,
    labs: pl.DataFrame,
    descriptors: tuple[Descriptor, ...] | None = None,
    *,
    config: FollowUpConfig | None = None,
    baseline: BaselineConfig | None = None,
) -> pl.DataFrame:
    """The lab-derived descriptors of each visit: `item_<name>_lab` (Boolean, null = unknown), row by row.

    Args:
        visit_keys: `study_id`, `subject_id`, `visit_date` per visit (other columns are ignored).
        labs: harmonised labs (`analyte`, `value`, `censoring`, `value_high`, `ref_low`, `ref_high`,
            `collected_date`); analytes no rule reads are ignored, and absent optional columns count as null.
        descriptors: the SLEDAI table (built-in when None); only the lab-derivable descriptors it lists get a
            column.
        config: thresholds, lookback and the complement rule (defaults when None).
        baseline: complement and anti-dsDNA default cut-offs, shared with the baseline stage.

    Returns:
        One row per row of `visit_keys`, in its order: `study_id`, `subject_id`, `visit_date` and one
        `item_<name>_lab` column per lab-derivable descriptor (rules in the module docstring).
    """
    descriptors = descriptors if descriptors is not None else load_descriptors()
    cfg, base = config or FollowUpConfig(), baseline or BaselineConfig()
    wanted = _derivable(descriptors)
    rules = {a: r for a, r in _lab_rules(cfg, base).items() if r[0] in wanted}
    analyte = pl.col("analyte")
    flag: pl.Expr = pl.lit(None, pl.Boolean)
    for name, (_, rule) in rules.items():  # a handful of analytes: one when/then per rule
        flag = pl.when(analyte == name).then(rule).otherwise(flag)
    flags = (
        with_optional_columns(labs, _LAB_OPTIONAL)
        .lazy()
        .filter(analyte.is_in(list(rules)))
        .select(
            *KEY,
            "collected_date",
            "analyte",
            _descriptor=analyte.replace_strict({a: r[0] for a, r in rules.items()}, return_dtype=pl.String),
            _flag=flag,
        )
    )
    keys = visit_keys.select(*KEY, "visit_date").with_row_index("_visit")
    # Labs per subject are few: join on the subject, then keep the window (join_asof picks one row, not "any").
    days_before = (pl.col("visit_date") - pl.col("collected_date")).dt.total_days()
    windowed = (
        keys.lazy()
        .join(flags, on=KEY, how="inner")
        .filter(days_before.is_between(0, cfg.lookback_days))
        # Proteinuria: UPCR rows only where the window holds no 24-hour urine protein.
        .filter((analyte != "upcr") | ~(analyte == "urine_protein_24h").any().over("_visit"))
    )
    combined = windowed.group_by("_visit", "_descriptor").agg(
        # Kleene "any": True if any row is True, null if none is but some is unknown, False if all are False.
        _value=pl.col("_flag").any(ignore_nulls=False),
        _has_c3=(analyte == "c3").any(),
        _has_c4=(analyte == "c4").any(),
    )
    if cfg.low_complement_absent_needs == "c3_and_c4":
        # Absent only when both were measured; a low one makes it present regardless.
        unproven = (pl.col("_descriptor") == "low_complement") & ~(pl.col("_has_c3") & pl.col("_has_c4"))
        value = pl.col("_value")
        combined = combined.with_columns(_value=pl.when(unproven & ~value).then(None).otherwise(value))
    wide = combined.group_by("_visit").agg(
        pl.col("_value").filter(pl.col("_descriptor") == d).first().alias(item(d) + LAB_SUFFIX) for d in wanted
    )
    return (
        keys.lazy()
        .join(wide, on="_visit", how="left", maintain_order="left")
        .drop("_visit")
        .with_columns(pl.col(item(d) + LAB_SUFFIX).cast(pl.Boolean) for d in wanted)
        .collect()
    )


# --------------------------------------------------------------------------------------------------
# Reported and lab values combined, and the scores
# --------------------------------------------------------------------------------------------------


def _source(first: pl.Expr, first_name: str, second: pl.Expr, second_name: str) -> pl.Expr:
    """The name of the first known of two values, else `missing`."""
    return (
        pl.when(first.is_not_null())
        .then(pl.lit(first_name))
        .when(second.is_not_null())
        .then(pl.lit(second_name))
        .otherwise(pl.lit("missing"))
    )


def _reported_source(reported: pl.Expr) -> pl.Expr:
    """`reported` where the reported item is known, else `missing`."""
    return pl.when(reported.is_not_null()).then(pl.lit("reported")).otherwise(pl.lit("missing"))


def _resolve(reported: pl.Expr, lab: pl.Expr, rule: str) -> tuple[pl.Expr, pl.Expr]:
    """(value, source) of a lab-derivable descriptor under the disagreement `rule`; one known value is used alone."""
    if rule == "prefer_reported":
        return pl.coalesce(reported, lab), _source(reported, "reported", lab, "lab")
    if rule == "prefer_lab":
        return pl.coalesce(lab, reported), _source(lab, "lab", reported, "reported")
    if rule == "present_if_either":
        both = reported.is_not_null() & lab.is_not_null()
        value = pl.when(both).then(reported | lab).otherwise(pl.coalesce(reported, lab))
        # Present from the lab alone is credited to the lab; otherwise the reported item.
        credited = pl.when(~reported & lab).then(pl.lit("lab")).otherwise(pl.lit("reported"))
        return value, pl.when(both).then(credited).otherwise(_source(reported, "reported", lab, "lab"))
    raise ValueError(f"unknown disagreement rule {rule!r}")


def _exposure_anchors(subjects: pl.DataFrame) -> pl.DataFrame:
    """Per subject (first listing wins): `_first_exposure_date` and `_day0`, null where the column is absent."""
    exposure_columns = [c for c in ("first_exposure_date", "day0") if c in subjects.columns]
    return (
        with_optional_columns(
            subjects.select(*KEY, *exposure_columns), {"first_exposure_date": pl.Date(), "day0": pl.Date()}
        )
        .unique(subset=KEY, keep="first", maintain_order=True)
        .select(*KEY, pl.col("first_exposure_date", "day0").cast(pl.Date).name.prefix("_"))
    )


def _resolved_items(
    descriptors: tuple[Descriptor, ...], derivable: list[str], cfg: FollowUpConfig
) -> tuple[list[pl.Expr], list[pl.Expr], list[pl.Expr]]:
    """Per descriptor, the expressions of its value and its source (reported and lab resolved by the
    configured rule), and per lab-derivable descriptor the count of visits where the two disagree."""
    after_exposure = (pl.col("visit_date") >= pl.coalesce("_first_exposure_date", "_day0")).fill_null(False)
    values, sources, disagreements = [], [], []
    for d in descriptors:  # 24 descriptors of configuration
        reported = pl.col(item(d.item))
        if d.item in derivable:
            lab_value = pl.col(item(d.item) + LAB_SUFFIX)
            value, source = _resolve(reported, lab_value, cfg.disagreement)
            if d.item in HEMATOLOGY and cfg.hematology_after_exposure == "reported":
                value = pl.when(after_exposure).then(reported).otherwise(value)
                source = pl.when(after_exposure).then(_reported_source(reported)).otherwise(source)
            disagreements.append((reported != lab_value).fill_null(False).sum().alias(d.item))
        else:
            value, source = reported, _reported_source(reported)
        values.append(value.cast(pl.Boolean).alias(item(d.item)))
        sources.append(source.alias(item(d.item) + SOURCE_SUFFIX))
    return values, sources, disagreements


def activity(
    visits: pl.DataFrame,
    labs: pl.DataFrame,
    subjects: pl.DataFrame,
    descriptors: tuple[Descriptor, ...] | None = None,
    *,
    config: FollowUpConfig | None = None,
    baseline: BaselineConfig | None = None,
) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
    """SLEDAI-2K per visit: the activity table (schemas.followup.Activity) and counts for run.json.

    Args:
        visits: accepted visits (`study_id`, `subject_id`, `visit`, `visit_date`, `item_<name>` Boolean per
            descriptor as reported, null = not assessed; the carried fields of `CARRIED`). An absent
            `item_<name>` or carried column counts as null.
        labs: harmonised labs (see `lab_descriptors`).
        subjects: accepted subjects (`study_id`, `subject_id`, `first_exposure_date`, `day0`); a visit of a subject
            not listed has no exposure and no `days_since_infusion`.
        descriptors: the SLEDAI table (built-in when None).
        config: follow-up settings (defaults when None).
        baseline: complement and anti-dsDNA default cut-offs, shared with the baseline stage.

    Returns:
        One row per visit, in input order, and counts: `disagreements_by_descriptor` (visits where the reported
        item and the lab value are both known and differ, per lab-derivable descriptor, whichever rule then
        decided) and `item_sources` (descriptor values by source, over all visits and descriptors).
    """
    descriptors = descriptors if descriptors is not None else load_descriptors()
    cfg = config or FollowUpConfig()
    derivable = _derivable(descriptors)
    lab = lab_descriptors(visits, labs, descriptors, config=cfg, baseline=baseline)
    anchors = _exposure_anchors(subjects)
    items = {item(d.item): pl.Boolean() for d in descriptors}
    frame = (
        with_optional_columns(visits, {"visit": pl.String(), **items, **CARRIED})
        .hstack(lab.select(item(d) + LAB_SUFFIX for d in derivable))
        .join(anchors, on=KEY, how="left", maintain_order="left")
    )
    values, sources, disagreements = _resolved_items(descriptors, derivable, cfg)
    counts_by = frame.select(disagreements).row(0, named=True) if disagreements else {}
    frame = frame.with_columns(*values, *sources)
    scores = sledai_scores(frame, descriptors)
    per_item = [
        column
        for d in descriptors
        for column in (
            item(d.item),
            item(d.item) + SOURCE_SUFFIX,
            *([item(d.item) + LAB_SUFFIX] if d.item in derivable else []),
        )
    ]
    out = frame.hstack(scores).select(
        *KEY,
        "visit",
        "visit_date",
        (pl.col("visit_date") - pl.col("_day0")).dt.total_days().cast(pl.Int32).alias("days_since_infusion"),
        *(pl.col(s) for s in SCORES),
        *(pl.col(c) for c in per_item),
        *(pl.col(c).cast(t) for c, t in CARRIED.items()),
        *(pl.col(c).cast(t) for c, t in LINEAGE.items() if c in visits.columns),
    )
    found = _source_counts(out)
    counts = {
        "disagreements_by_descriptor": {d: int(counts_by.get(d, 0)) for d in derivable},
        "item_sources": {s: int(found.get(s, 0)) for s in SOURCES},
    }
    return out, counts


def _source_counts(out: pl.DataFrame) -> dict[str, int]:
    """How many descriptor cells of `out` come from each source."""
    cells = out.select(pl.concat_list(pl.col(f"^{ITEM_PREFIX}.*{SOURCE_SUFFIX}$")).alias("s")).explode("s")
    counted = cells.group_by("s").len()
    return {str(k): int(v) for k, v in zip(counted["s"].to_list(), counted["len"].to_list(), strict=True)}
