"""Typed settings of the follow-up derivations (issue 12): SLEDAI-2K lab rules, lookback, source rules, baselines.

Every threshold here is a published SLEDAI-2K rule (Gladman 2002; facts in follow-up-facts.md §1) or a choice;
the published ones are still configuration, since sources word them differently. Complement and anti-dsDNA
cut-offs are not repeated here: the lab descriptors use the baseline's own (`BaselineConfig`
`anti_dsdna_default_cutoff`, `c3_default_lln`, `c4_default_lln`), so a subject is "positive" by one rule
before and after infusion.
"""

from __future__ import annotations

from pathlib import Path
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


# --- CRS/ICANS (ASTCT 2019) and ICAHT (EHA/EBMT 2023) ---


class CrsIcansConfig(_Model):
    """How CRS and ICANS are graded per assessment (ASTCT 2019, Lee et al. BBMT 2019;25:625) and per subject."""

    fever_celsius_at_least: float = Field(
        default=38.0,
        gt=30,
        description="Fever: temperature at or above this, in degrees Celsius (default 38.0, ASTCT 2019).",
    )
    fever_cause_unrecorded: Literal["unknown", "not_other_cause"] = Field(
        default="unknown",
        description="A fever whose `fever_other_cause` is null: `unknown` (default: whether another cause explains "
        "it was not assessed, so the fever criterion is unknown) or `not_other_cause` (the site records only "
        "attributed fevers, so null means not attributed).",
    )
    hypotension_systolic_below: float = Field(
        default=90.0,
        gt=0,
        description="Hypotension when `hypotension` is null: systolic blood pressure strictly below this, in mmHg "
        "(default 90, the usual adult cut-off; a choice, ASTCT names none).",
    )
    vasopressin_alone_is_vasopressor: bool = Field(
        default=True,
        description="Whether vasopressin without any other vasopressor is 'one vasopressor' (grade 3). Default true: "
        "ASTCT grade 3 is 'a vasopressor with or without vasopressin' and only grade 4 excludes vasopressin from "
        "the count. False grades it as hypotension without vasopressors (grade 2).",
    )
    low_flow_max_l_min: float = Field(
        default=6.0,
        gt=0,
        description="Nasal cannula at or below this flow (L/min) is low-flow (grade 2); above it, high-flow (grade 3). "
        "Default 6 (ASTCT 2019). The flow decides only for `nasal_cannula`; every other device decides itself.",
    )
    ice_min_age_years: float = Field(
        default=12.0,
        ge=0,
        description="Below this age the ICE score is not validated (ASTCT 2019 uses CAPD under 12): the ICE domain is "
        "not assessable (reason ICE_NOT_VALIDATED_UNDER_12) and the other domains still grade. Default 12.",
    )
    ice_when_age_unknown: Literal["use", "not_assessable"] = Field(
        default="use",
        description="The ICE domain for a subject without `age_years`: `use` (default: ICE is the adult tool and the "
        "SLE CAR-T trials enrol adults) or `not_assessable` (reason ICE_AGE_UNKNOWN).",
    )
    grade5_death_within_days: int = Field(
        default=7,
        ge=0,
        description="Grade 5 (death) when `death_date` is at most this many days after the last assessment known to "
        "be grade >= 3, and no later assessment is known below grade 3 (an ongoing event). Default 7 (a choice: the "
        "data do not say what caused the death, so grade 5 is a signal for review, not an attribution).",
    )


class IcahtConfig(_Model):
    """How ICAHT (EHA/EBMT consensus, Rejeski et al., Blood 2023;142:865) and its platelet companion are graded.

    Thresholds follow follow-up-facts.md §4 (the ANC split is verified; the values are from an open implementation,
    uncertain [U] against the paper), so each is configuration. Neutrophils and platelets in 10^9/L.
    """

    anc_early_at_most: float = Field(
        default=0.5,
        gt=0,
        description="Early ICAHT: a day counts when its ANC daily minimum is at or below this (default 0.5 = 500/uL).",
    )
    anc_profound_at_most: float = Field(
        default=0.1,
        gt=0,
        description="Early ICAHT profound neutropenia: ANC daily minimum at or below this (default 0.1 = 100/uL); 7-13 "
        "such days give grade 3, 14 or more grade 4.",
    )
    anc_late_at_most: tuple[float, float, float, float] = Field(
        default=(1.5, 1.0, 0.5, 0.1),
        description="Late ICAHT (days after `early_last_day` up to `late_last_day`): ANC at or below these give grades "
        "1, 2, 3, 4 (default 1.5, 1.0, 0.5, 0.1 = 1500, 1000, 500, 100/uL), on at least `late_min_measurements` days.",
    )
    platelet_early_below: tuple[float, float] = Field(
        default=(50.0, 20.0),
        description="Early platelet ICAHT: days with a daily minimum strictly below the first value (default 50): 1-6 "
        "grade 1, >= 7 grade 2; below the second (default 20): 1-13 grade 3, >= 14 grade 4 (T-ICAHT).",
    )
    platelet_late_below: tuple[float, float, float] = Field(
        default=(100.0, 50.0, 20.0),
        description="Late platelet ICAHT: below the first (default 100) grade 1, the second (50) grade 2, on at least "
        "`platelet_late_min_measurements` days; below the third (20) for 1-13 days grade 3, >= 14 days grade 4.",
    )
    early_last_day: int = Field(
        default=30,
        ge=0,
        description="Last day of the early phase (default 30): early grades come from episodes starting on days 0 to "
        "this day, counted to the episode's end.",
    )
    late_last_day: int = Field(
        default=100,
        ge=1,
        description="Last day of the late phase and the cap of every episode's duration (default 100).",
    )
    join_gap_days: int = Field(
        default=3,
        ge=1,
        description="Two episodes are one unless at least this many consecutive days between them are not below the "
        "threshold (default 3: ANC > 500/uL for 3 days ends an episode, as the open implementation).",
    )
    interpolate_gap_days: int = Field(
        default=7,
        ge=0,
        description="Unmeasured days between two consecutive measurements that are both below the threshold count as "
        "below when the measurements are at most this many days apart (default 7, as the open implementation); "
        "every other unmeasured day counts as not below.",
    )
    late_min_measurements: int = Field(
        default=2,
        ge=1,
        description="Late ICAHT is not transient: a late grade needs at least this many measurement days at or below "
        "its threshold (default 2, [U]).",
    )
    platelet_late_min_measurements: int = Field(
        default=1,
        ge=1,
        description="Late platelet grades 1 and 2 need at least this many measurement days below the threshold "
        "(default 1: 'any' platelet count below, as follow-up-facts §4 words it).",
    )


# --- CTCAE lab grades ---


class LabGradesConfig(_Model):
    """CTCAE v5 laboratory toxicity grading (immunostrat.followup.lab_grades; docs/toxicity.md)."""

    criteria_file: Path | None = Field(
        default=None,
        description="A user's criteria table (CSV, the columns of pipelines/protocols/ctcae_v5_lab_criteria.csv); "
        "None (default): the shipped NCI CTCAE v5.0 table alone.",
    )
    criteria_mode: Literal["extend", "replace"] = Field(
        default="extend",
        description="How `criteria_file` combines with the shipped table: `extend` (default: the user's terms "
        "replace the shipped rows of the same term, new terms are added) or `replace` (the user's table alone).",
    )
    baseline_window_days: int = Field(
        default=30,
        ge=0,
        description="Treatment baseline of a lab analyte: the last value at most this many days before first "
        "exposure (first_exposure_date, else day 0); default 30, a choice (recent enough to describe the subject "
        "at treatment start).",
    )
    baseline_includes_exposure_day: bool = Field(
        default=True,
        description="Whether a value dated on the first-exposure day can be the treatment baseline (default true: "
        "the ADaM convention, last value on or before the first dose date, since samples that day are drawn "
        "before dosing).",
    )
    ratio_decimals: int = Field(
        default=6,
        ge=0,
        le=12,
        description="Decimal places a ratio to a limit (value / LLN, ULN or baseline) is rounded to, halves away "
        "from zero, before it meets the criterion's multiplier (default 6: removes binary artefacts, so 1.2/0.8 "
        "counts as exactly 1.5, and is far finer than any lab reports).",
    )
    missing_baseline: Literal["unknown", "not_applicable"] = Field(
        default="unknown",
        description="A baseline-multiple criterion (creatinine > 1.5 x baseline) when the subject has no exact "
        "treatment baseline value: `unknown` (default: the criterion may hold, so a grade it could raise is not "
        "gradable, NO_BASELINE) or `not_applicable` (the criterion is false, as admiral does).",
    )
    emergent_from_day: int = Field(
        default=1,
        description="First day since infusion that counts as post-infusion for the worst treatment-emergent grade "
        "(default 1: samples on day 0 are usually drawn before the infusion).",
    )
    unknown_baseline_grade: Literal["unknown", "emergent"] = Field(
        default="unknown",
        description="A post-infusion grade >= 1 when the subject's baseline grade for that term is unknown: "
        "`unknown` (default: whether it is treatment-emergent is not known) or `emergent` (counted as emergent, "
        "i.e. the baseline taken as normal).",
    )
