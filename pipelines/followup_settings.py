"""Typed settings of the follow-up derivations (issue 12): SLEDAI-2K lab rules, lookback, source rules, baselines.

Every threshold here is a published SLEDAI-2K rule (Gladman 2002; facts in follow-up-facts.md §1) or a choice;
the published ones are still configuration, since sources word them differently. Complement and anti-dsDNA
cut-offs are not repeated here: the lab descriptors use the baseline's own (`BaselineConfig`
`anti_dsdna_default_cutoff`, `c3_default_lln`, `c4_default_lln`), so a subject is "positive" by one rule
before and after infusion.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Disagreement = Literal["prefer_reported", "prefer_lab", "present_if_either"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FollowUpConfig(_Model):
    """How SLEDAI-2K descriptors are derived per visit from labs and reported items, and how baselines are chosen."""

    lookback_days: int = Field(
        default=10,
        ge=0,
        le=30,
        description="A lab descriptor counts when a qualifying lab row is dated on the visit day or up to this many "
        "days before it (default 10, SLEDAI-2K as published by Gladman 2002; 30 is the validated variant of Touma "
        "2010). Labs after the visit never count.",
    )
    platelets_below: float = Field(
        default=100.0,
        gt=0,
        description="Thrombocytopenia: platelets strictly below this, in 10^9/L (default 100; exactly 100 is absent).",
    )
    wbc_below: float = Field(
        default=3.0, gt=0, description="Leukopenia: white cells strictly below this, in 10^9/L (default 3.0)."
    )
    urine_rbc_above: float = Field(
        default=5.0,
        ge=0,
        description="Hematuria: urine red cells strictly above this per high-power field (default 5).",
    )
    urine_wbc_above: float = Field(
        default=5.0, ge=0, description="Pyuria: urine white cells strictly above this per high-power field (default 5)."
    )
    urine_casts_above: float = Field(
        default=0.0,
        ge=0,
        description="Urinary casts: red-cell or heme-granular casts strictly above this per low-power field "
        "(default 0: any such cast).",
    )
    urine_protein_24h_above: float = Field(
        default=0.5, ge=0, description="Proteinuria: 24-hour urine protein strictly above this, in g/24h (default 0.5)."
    )
    upcr_above: float = Field(
        default=0.5,
        ge=0,
        description="Proteinuria when no 24-hour urine protein is dated in the lookback window: urine "
        "protein/creatinine ratio strictly above this, in g/g (default 0.5, the usual surrogate; uncertain [U]).",
    )
    low_complement_absent_needs: Literal["c3_or_c4", "c3_and_c4"] = Field(
        default="c3_or_c4",
        description="When low complement is absent: `c3_or_c4` (default; at least one C3 or C4 in the window and "
        "every C3/C4 there known not low, as a clinician scores the complement that was measured) or `c3_and_c4` "
        "(both measured, none low; otherwise unknown). Any low C3 or C4 makes it present either way.",
    )
    disagreement: Disagreement = Field(
        default="prefer_reported",
        description="Which value a laboratory descriptor takes when the site's reported item and the lab-derived "
        "value are both known and differ: `prefer_reported` (default: the site can apply SLEDAI's exclusions - "
        "infection, stones, drugs - that a lab rule cannot), `prefer_lab`, or `present_if_either`. Either one alone "
        "is used when the other is unknown. Disagreements are counted per descriptor.",
    )
    hematology_after_exposure: Literal["reported", "lab"] = Field(
        default="reported",
        description="Thrombocytopenia and leukopenia at visits on or after first exposure (first_exposure_date, else "
        "day 0): `reported` (default: only the site's reported item counts, since cytopenias from lymphodepletion "
        "are a drug cause SLEDAI excludes; the lab value is kept beside) or `lab` (the `disagreement` rule as before "
        "exposure).",
    )
    selection_sledai_precedence: Literal["subjects", "visits"] = Field(
        default="subjects",
        description="Selection baseline SLEDAI-2K when both the subjects file and the selection baseline visit give "
        "one: `subjects` (default: the value the site screened on) or `visits` (the value derived from the visit's "
        "descriptors). The other fills a gap; disagreements are counted.",
    )
    treatment_baseline_window_days: int = Field(
        default=90,
        ge=0,
        description="Treatment baseline: the last visit before first exposure (first_exposure_date, else day 0) and "
        "at most this many days before it (default 90). Subjects with none have no treatment baseline.",
    )


# --- immune course (issue 13: B-cell aplasia and return, CAR-T peak, serology, IgG, flares, LICATS) ---


class ImmuneCourseConfig(_Model):
    """Thresholds and windows of the per-subject immune course (`immunostrat.followup.immune_course`).

    Facts and sources: follow-up-facts.md §3 (immune course, IgG replacement, SELENA flare index) and §4 (LICATS);
    docs/immune_course.md gives the rules. anti-dsDNA positivity and complement limits are not repeated here: the
    activity table's lab rules decide them (`BaselineConfig` cut-offs), so "positive" means one thing before and
    after infusion.
    """

    b_cell_aplasia_below: float = Field(
        default=1.0,
        gt=0,
        description="B-cell aplasia: CD19+ B cells strictly below the row's assay LLOQ (`lloq`) or, for a row without "
        "one, below this, in cells/uL (default 1.0: of the order of a high-sensitivity flow LLOQ - trials use the "
        "assay LLOQ, 0.441 cells/uL in NOBILITY; the oncology cut-off < 20 cells/uL is uncertain [U] and would call "
        "partial depletion aplasia). A censored `<x` is below any threshold >= x.",
    )
    b_cell_return_at_least: float | None = Field(
        default=None,
        gt=0,
        description="B-cell return: CD19+ B cells at or above this, in cells/uL. Default null: the row's own aplasia "
        "threshold (its LLOQ, else `b_cell_aplasia_below`), i.e. B cells measurable again - 'reappeared' as "
        "Mackensen 2022 reports it (110 +/- 32 days); set e.g. 20 for a stricter 'recovered'.",
    )
    b_cell_return_consecutive: int = Field(
        default=2,
        ge=1,
        description="B-cell return needs this many consecutive measurement days at or above the return threshold; "
        "the return day is the first of them (default 2: a single high value between lows is not a return).",
    )
    igg_replacement_below: float = Field(
        default=4.0,
        gt=0,
        description="`igg_below_replacement_threshold`: IgG nadir strictly below this, in g/L (default 4.0 = 400 "
        "mg/dL: Hill et al. Blood Rev 2019 consider replacement at <= 400 mg/dL, AAAAI 2022 at < 400 mg/dL with "
        "recurrent infections; follow-up-facts §3). Operator choice.",
    )
    flare_comparator: Literal["previous_visit", "treatment_baseline"] = Field(
        default="previous_visit",
        description="What a post-infusion visit's SLEDAI-2K is compared with for a flare: `previous_visit` "
        "(default; the visit before it, any date, as the SELENA flare index compares with the previous visit) or "
        "`treatment_baseline` (the treatment-baseline visit).",
    )
    flare_rise_at_least: int = Field(
        default=3,
        ge=1,
        description="A flare: SLEDAI-2K at least this much above the comparator (default 3: SELENA flare index, "
        "mild/moderate flare; follow-up-facts §3).",
    )
    severe_flare_above: int = Field(
        default=12,
        ge=0,
        description="A flare is severe when the visit's SLEDAI-2K is strictly above this (default 12: SELENA flare "
        "index severe flare); otherwise mild_moderate.",
    )
    complement_pair_within_days: int = Field(
        default=0,
        ge=0,
        description="Complement normalization needs C3 and C4 both at or above their lower limits; their latest "
        "results on a day count together when no more than this many days apart (default 0: the same collection "
        "date, as C3 and C4 are ordered together).",
    )
    licats_creatinine_ratio: float = Field(
        default=1.5,
        gt=1,
        description="LICATS renal signal: creatinine at or above this multiple of the treatment-baseline creatinine "
        "(default 1.5: 'creatinine >= 50 % above baseline', Hagen et al. Lancet Rheumatol 2025; follow-up-facts "
        "§4).",
    )
    licats_upcr_rise: float = Field(
        default=0.5,
        gt=0,
        description="LICATS renal signal: UPCR at or above (1 + this) x the treatment-baseline UPCR (default 0.5, "
        "a 50 % rise, mirroring the creatinine criterion; the source only says 'a raised UPCR' [U]).",
    )
    licats_upcr_at_least: float | None = Field(
        default=0.5,
        ge=0,
        description="A UPCR rise also needs the UPCR at or above this, in g/g (default 0.5, the SLEDAI-2K "
        "proteinuria cut-off, so that 0.05 -> 0.08 g/g is not a signal) [U, a choice]; null: no floor.",
    )
    licats_window_days: int = Field(
        default=30,
        ge=1,
        description="LICATS renal signal: looked for from day 1 to this day after infusion, while B cells have not "
        "returned (default 30: LICATS median onset day 10, median duration 11 days, half within 2 weeks; Hagen "
        "et al. 2025).",
    )


# --- events input ---


class EventsConfig(_Model):
    """Plausibility limits of the events file's measurements (issue 13, *Events*).

    A value outside its limits is a field record: the assessment is kept with that measurement unknown. The
    limits are choices (wide physiological bounds that catch a wrong unit or a typo), not clinical thresholds; the
    ICE score (0-10) and the grades (0-5) are bounded by their scales and are not configurable.
    """

    temperature_c_min: float = Field(
        default=25.0,
        description="Lowest plausible `temperature_c`, degrees Celsius (default 25; a Fahrenheit 98.6 "
        "is caught by the maximum).",
    )
    temperature_c_max: float = Field(default=45.0, description="Highest plausible `temperature_c` (default 45).")
    systolic_bp_min: float = Field(default=30.0, ge=0, description="Lowest plausible `systolic_bp`, mmHg (default 30).")
    systolic_bp_max: float = Field(
        default=300.0, gt=0, description="Highest plausible `systolic_bp`, mmHg (default 300)."
    )
    max_vasopressors: int = Field(
        default=10, ge=0, description="Most vasopressors running at once (`vasopressors`, a whole number; default 10)."
    )
    max_oxygen_flow_l_min: float = Field(
        default=100.0, gt=0, description="Highest plausible `oxygen_flow_l_min`, L/min (default 100)."
    )
