"""What a synthetic cohort is asked for: `SynthConfig` (size, seed, population, mess rates) and the column
lists, endpoint and response coefficients every part of the generator shares."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENDPOINT = "DORIS remission at month 6"


LAB_COLUMNS: tuple[str, ...] = (
    "study_id",
    "subject_id",
    "site_id",
    "test",
    "result",
    "unit",
    "collected_at",
    "method",
    "ref_low",
    "ref_high",
)


SUBJECT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "subject_id",
    "site_id",
    "sex",
    "age_years",
    "reference_date",
    "first_exposure_date",
    "sledai_2k",
    "prior_immunosuppressant_failures",
    "lupus_nephritis_class",
    "egfr",
    "active_cns_lupus",
)


MESS_FIELDS: tuple[str, ...] = (
    "alt_unit",
    "alt_code",
    "censored",
    "duplicate",
    "conflicting_duplicate",
    "out_of_window",
    "malformed",
    "kit_unit",
    "outside_panel",
    "missing_analyte",
    "visit_incomplete",
    "lab_contradicts_report",
    "followup_alt_unit",
    "followup_alt_code",
    "followup_lab_missing",
    "event_report_disagreement",
    "event_incomplete",
)


# Invented coefficients of the latent response model (see the module docstring); b0 is calibrated per cohort.
RESPONSE_COEFFICIENTS: dict[str, float] = {
    "log2_anti_dsdna_ratio": 0.35,
    "ifn_signal": 0.60,
    "c3_z": -0.35,
    "c4_z": -0.30,
    "log10_cd19_centred": 0.80,
}


class SynthConfig(BaseModel):
    """Size, seed, population parameters and mess rates of a synthetic cohort.

    Every mess rate is a probability applied independently per row, per subject or per (subject, analyte)
    pair, as each field's description says; 0 switches that kind of mess off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_subjects: int = Field(default=1000, ge=1, le=50_000_000, description="Number of subjects to generate.")
    seed: int = Field(default=0, ge=0, description="Seed of numpy's default_rng; equal configs give equal cohorts.")
    n_studies: int = Field(
        default=3, ge=1, le=99, description="Number of studies; ids are SLE-CART-01, SLE-CART-02, ..."
    )
    sites_per_study: int = Field(
        default=4, ge=1, le=99, description="Sites per study; site ids are SITE-<study><site>."
    )
    response_rate: float = Field(
        default=0.65,
        gt=0.0,
        lt=1.0,
        description="Target mean true response probability (intercept calibrated to it).",
    )
    ifn_high_fraction: float = Field(
        default=0.80,
        ge=0.0,
        le=1.0,
        description="Share of subjects drawn from the IFN-high mode of the IFN signature.",
    )
    cd19_pct_rate: float = Field(
        default=0.30, ge=0.0, le=1.0, description="Share of subjects who also get a cd19_b_cells_pct baseline row."
    )
    data_cutoff: date = Field(
        default=date(2026, 10, 31),
        ge=date(2025, 9, 1),
        description="Trial data snapshot: no row is collected after it. Reference dates run from 2025-01-01 to "
        "220 days before it, leaving room for exposure (+14..40 d) and 180 days of post-exposure rows.",
    )
    baseline_window_days: int = Field(
        default=60, ge=1, le=365, description="Baseline rows are collected 0..this many days before reference_date."
    )
    alt_unit: float = Field(
        default=0.30,
        ge=0.0,
        le=1.0,
        description="Per C3/C4/absolute-count row: reported in mg/dL (C3, C4) or 10^9/L (cell counts).",
    )
    alt_code: float = Field(
        default=0.40,
        ge=0.0,
        le=1.0,
        description="Per row of an analyte with alternative codes: test is a LOINC/CDISC code or alias.",
    )
    censored: float = Field(
        default=0.03,
        ge=0.0,
        le=1.0,
        description="Per anti-dsDNA row: result censored as '<10', '< 10', '<=15', '>800'.",
    )
    duplicate: float = Field(default=0.01, ge=0.0, le=1.0, description="Per row: an exact duplicate row is appended.")
    conflicting_duplicate: float = Field(
        default=0.003,
        ge=0.0,
        le=1.0,
        description="Per baseline row: a twin with the same subject/test/collected_at/method, different result.",
    )
    out_of_window: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Per baseline row: an extra measurement far before the window (2/3) or after exposure (1/3).",
    )
    malformed: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Per row: one field malformed (result 'abc'/'NEG'/'', unit 'furlongs', date '2025-02-30' "
        "or 'yesterday').",
    )
    kit_unit: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Per subject: anti-dsDNA reported in kit units (U/mL, AU/mL) with the kit's ref_high.",
    )
    outside_panel: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Per baseline row: an extra row of a non-panel test (ALB, WBC, CRP...).",
    )
    missing_analyte: float = Field(
        default=0.03, ge=0.0, le=1.0, description="Per (subject, core panel analyte): the baseline row is not sent."
    )

    followup: bool = Field(
        default=True,
        description="Also generate the follow-up: infusion_date and discontinued_date on the subjects, the visits "
        "table and the follow-up labs (labs_followup). False gives the cohort exactly as before follow-up existed.",
    )
    discontinuation: float = Field(
        default=0.04,
        ge=0.0,
        le=1.0,
        description="Per infused subject: withdrawal or death 20-400 days after infusion (discontinued_date; no "
        "visit after it). One falling after data_cutoff has not happened yet and is not written.",
    )
    missed_visit: float = Field(
        default=0.03, ge=0.0, le=1.0, description="Per scheduled visit after infusion (months 1, 3, 6, 12): missed."
    )
    unscheduled_visit: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Per infused subject: one unscheduled visit, in a gap between scheduled windows (days 40-75, "
        "105-160 or 200-340 after infusion).",
    )
    visit_incomplete: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Per visit: one to three of 27 cells (the 24 descriptors, pga, prednisone_mg_day, "
        "immunosuppressants) left empty, i.e. not assessed.",
    )
    lab_contradicts_report: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Per (visit, lab-derivable descriptor other than serology): the follow-up lab lies on the other "
        "side of the SLEDAI-2K threshold from the site's report (e.g. hematuria the site put down to infection).",
    )
    followup_alt_unit: float = Field(
        default=0.30,
        ge=0.0,
        le=1.0,
        description="Per follow-up lab row of an analyte with other units: written in one of them (uniformly).",
    )
    followup_alt_code: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="Per follow-up lab row of an analyte with aliases: test is an alias or LOINC/CDISC code.",
    )
    followup_lab_missing: float = Field(
        default=0.02, ge=0.0, le=1.0, description="Per (visit, follow-up analyte): the lab row is not sent."
    )

    crs_grade_1: float = Field(
        default=0.667,
        ge=0.0,
        le=1.0,
        description="Per infused subject: cytokine release syndrome of highest grade 1 (fever >= 38 C without "
        "hypotension or hypoxia). Default: Mueller 2024, 10 of 15 SLE patients.",
    )
    crs_grade_2: float = Field(
        default=0.067,
        ge=0.0,
        le=1.0,
        description="Per infused subject: CRS of highest grade 2 (hypotension without vasopressors, or low-flow "
        "oxygen). Default: Mueller 2024, 1 of 15. crs_grade_1 + crs_grade_2 must not exceed 1; no grade 3 or more.",
    )
    icans_grade_1: float = Field(
        default=0.067,
        ge=0.0,
        le=1.0,
        description="Per infused subject: ICANS grade 1 (ICE score 7-9), after a CRS. Default: Mueller 2024, 1 of "
        "15. At most crs_grade_1 + crs_grade_2.",
    )
    renal_signal: float = Field(
        default=0.20,
        ge=0.0,
        le=1.0,
        description="Per infused subject with renal involvement at screening (a nephritis class or a renal "
        "descriptor): creatinine 1.6-2.3 x its level from day 6-15 for 5-17 days, during B-cell aplasia (a "
        "LICATS kidney signal; Hagen 2025: kidney in 22 % of 39 patients with autoimmune disease).",
    )
    event_report_disagreement: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Per CRS or ICANS assessment with a true grade above 0: the site's reported grade is one grade "
        "off. At the same rate per assessment with a fever from another cause (true CRS grade 0): the site reports "
        "CRS grade 1.",
    )
    event_incomplete: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Per CRS/ICANS assessment: one of temperature_c, systolic_bp, oxygen_device, ice_score is "
        "left empty (not assessed).",
    )

    @model_validator(mode="after")
    def _event_rates_fit(self) -> SynthConfig:
        if self.crs_grade_1 + self.crs_grade_2 > 1.0:
            raise ValueError("crs_grade_1 + crs_grade_2 must not exceed 1")
        if self.icans_grade_1 > self.crs_grade_1 + self.crs_grade_2:
            raise ValueError("icans_grade_1 must not exceed crs_grade_1 + crs_grade_2 (ICANS follows a CRS here)")
        return self

    def clean(self) -> SynthConfig:
        """Return a copy of this config with every mess rate set to 0."""
        return self.model_copy(update=dict.fromkeys(MESS_FIELDS, 0.0))
