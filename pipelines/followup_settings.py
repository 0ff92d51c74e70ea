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
