"""Synthetic SLE CAR-T cohorts, with the mess real sites send, for testing immunostrat end to end.

`generate_cohort` draws a cohort of subjects with latent baseline biomarkers, writes them as native-contract
lab rows (every column a string), adds configurable mess (alternative units and codes, censored and
malformed results, duplicates, out-of-window and outside-panel rows, kit units, missing analytes) and samples
a binary outcome from an invented response mechanism. Generation is fully vectorised (numpy + polars):
nothing loops over rows or subjects, so a million subjects take seconds.

Response mechanism (INVENTED FOR TESTING; it is not clinical knowledge and must not be read as one).
With the TRUE baseline values that are written as the in-window baseline lab rows::

    logit p = b0 + 0.35 * log2(anti_dsdna_ratio)          # anti-dsDNA over its positivity cut-off
                 + 0.60 * ifn_signal                        # log2(IFN score / method cut-off)
                 - 0.35 * (c3 - 0.90) / 0.23                # g/L
                 - 0.30 * (c4 - 0.16) / 0.08                # g/L
                 + 0.80 * (log10(cd19_b_cells) - log10(200))  # cells/uL

`b0` is solved on each cohort (Newton's method on the mean probability) so that the mean true probability
equals `SynthConfig.response_rate`. For MEAN_Z, whose scale is additive, `ifn_signal = (score - 2) / 2`.
Outcomes are Bernoulli draws from these probabilities, so `oracle_auroc` is the ceiling any model of the
baseline features can reach (about 0.80 with the defaults). See docs/synthetic.md.

Follow-up (`SynthConfig.followup`, on by default; its own RNG streams, so every table above is unchanged):
`infusion_date` and `discontinued_date` on the subjects, a visits table (screening, months 1, 3, 6, 12,
unscheduled) with the 24 SLEDAI-2K descriptors, follow-up lab rows at the visits and at early (days 0-24) and
monthly blood draws, and CRS/ICANS assessments (`events`, days 0-14). Screening descriptors sum to the subjects
file's `sledai_2k`; after infusion, responders reach drug-free DORIS remission by month 6 and non-responders
keep activity, so the endpoint derived from the visits is the latent outcome. The immune course (cytopenias,
CAR-T expansion, B-cell aplasia below the LLOQ and return, IgG, a renal signal, seroconversion) and the event
rates follow the published figures in follow-up-facts §3-4; docs/synthetic.md states each rate. Choices: the
course only lowers blood counts, so a cytopenia the site reports stays on the lab; eGFR is CKD-EPI 2021 of the
written creatinine, so the two rows agree as a lab's would; the event truth is the ASTCT 2019 grade of the
written fields, and the site's reported grades differ from it only at `event_report_disagreement`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from immunostrat.ingest.atomic import atomic_path
from immunostrat.schemas.event_columns import (
    CEREBRAL_EDEMA,
    CONSCIOUSNESS,
    EVENT_COLUMNS,
    ICANS_SEIZURE,
    OXYGEN_DEVICES,
)

__all__ = [
    "CEREBRAL_EDEMA",
    "CLINICAL_DESCRIPTORS",
    "CONSCIOUSNESS",
    "ENDPOINT",
    "EVENT_COLUMNS",
    "FOLLOWUP_ANALYTES",
    "FOLLOWUP_LAB_COLUMNS",
    "FOLLOWUP_SUBJECT_COLUMNS",
    "ICANS_SEIZURE",
    "LABORATORY_DESCRIPTORS",
    "LAB_COLUMNS",
    "MESS_FIELDS",
    "OXYGEN_DEVICES",
    "PANEL_ANALYTES",
    "RESPONSE_COEFFICIENTS",
    "SLEDAI_WEIGHTS",
    "SUBJECT_COLUMNS",
    "VISIT_BOOLEAN_FIELDS",
    "VISIT_COLUMNS",
    "VISIT_LABELS",
    "SynthCohort",
    "SynthConfig",
    "SynthFollowUp",
    "ckd_epi_2021",
    "creatinine_for_egfr",
    "generate_cohort",
    "oracle_auroc",
    "write_cohort",
]

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


@dataclass
class SynthCohort:
    """A generated cohort.

    Attributes:
        labs: native lab rows, all String (`LAB_COLUMNS`), in random order.
        subjects: one row per subject (`SUBJECT_COLUMNS`); dates are ISO strings.
        outcomes: study_id, subject_id, responded (Boolean), endpoint.
        truth: per subject, the true baseline values (canonical units, as written in the baseline rows),
            `ifn_signal`, `anti_dsdna_ratio`, `missing_analytes`, `linear_predictor`, `response_probability`.
        lab_tags: row-aligned with `labs`: how each row was made (`kind`, `analyte`, mess flags). Not part of
            the native contract; for tests of downstream stages.
        coefficients: the response model's coefficients, including the calibrated `intercept`.
        config: the config the cohort was generated from.
        followup: visits, follow-up labs and their truth (`SynthFollowUp`); None when `config.followup` is
            False. With it, `subjects` also has `FOLLOWUP_SUBJECT_COLUMNS`.
    """

    labs: pl.DataFrame
    subjects: pl.DataFrame
    outcomes: pl.DataFrame
    truth: pl.DataFrame
    lab_tags: pl.DataFrame
    coefficients: dict[str, float]
    config: SynthConfig
    followup: SynthFollowUp | None = None


# --------------------------------------------------------------------------------------------------------
# Reference tables (kept in sync with schemas/reference/*.csv by tests/test_synth.py)


class _Test(NamedTuple):
    name: str  # canonical analyte, or the verbatim code of an outside-panel test
    unit: str  # canonical unit
    quantum: float  # canonical values are rounded to a multiple of this
    dec: int  # decimals written in the canonical unit
    ref_low: float | None
    ref_high: float | None
    alt_unit: str | None
    alt_factor: float  # written value = canonical value * alt_factor
    alt_dec: int
    codes: tuple[str, ...]  # non-canonical codes (schemas/reference/test_codes.csv)
    lo: float  # plausible clip range, canonical unit
    hi: float
    post_factor: float  # multiplier for measurements after CAR-T exposure (B-cell aplasia, seroconversion)


# fmt: off
_TESTS: tuple[_Test, ...] = (
    # name, unit, quantum, dec, ref_low, ref_high, alt_unit, alt_factor, alt_dec, codes, lo, hi, post_factor
    _Test("anti_dsdna", "IU/mL", 0.1, 1, None, 30.0, None, 1.0, 1,
          ("5130-0", "ADSDNA", "DDNAIGAB", "anti-dsDNA", "dsDNA"), 1.0, 10000.0, 0.25),
    _Test("c3", "g/L", 0.01, 2, 0.9, 1.8, "mg/dL", 100.0, 0, ("4485-9", "complement_c3"), 0.15, 3.0, 1.25),
    _Test("c4", "g/L", 0.01, 2, 0.16, 0.50, "mg/dL", 100.0, 0, ("4498-2", "complement_c4"), 0.02, 1.0, 1.4),
    _Test("ifn_score", "", 0.01, 2, None, None, None, 1.0, 2, ("IFNGS",), -10.0, 500.0, 0.5),
    _Test("cd19_b_cells", "cells/uL", 1.0, 0, 100.0, 500.0, "10^9/L", 0.001, 3,
          ("8116-6", "BLYCE", "CD19"), 0.0, 5000.0, 0.01),
    _Test("cd3_t_cells", "cells/uL", 1.0, 0, 700.0, 2100.0, "10^9/L", 0.001, 3,
          ("8122-4", "TLYCE", "CD3"), 0.0, 10000.0, 0.8),
    _Test("cd4_t_cells", "cells/uL", 1.0, 0, 300.0, 1400.0, "10^9/L", 0.001, 3,
          ("24467-3", "TLYH", "CD4"), 0.0, 8000.0, 0.7),
    _Test("cd8_t_cells", "cells/uL", 1.0, 0, 200.0, 900.0, "10^9/L", 0.001, 3,
          ("14135-8", "TLC", "CD8"), 0.0, 8000.0, 1.1),
    _Test("plasmablasts", "cells/uL", 0.1, 1, None, None, "10^9/L", 0.001, 4, (), 0.1, 1000.0, 0.05),
    _Test("lymphocytes", "cells/uL", 10.0, 0, 1000.0, 4000.0, "10^9/L", 0.001, 2,
          ("26474-7", "LYM"), 50.0, 20000.0, 0.8),
    # The percent form also arrives under the absolute test's alias with unit % (units.csv maps it over).
    _Test("cd19_b_cells_pct", "%", 0.1, 1, 6.0, 22.0, None, 1.0, 1, ("8117-4", "BLYCELY", "CD19"),
          0.0, 100.0, 0.01),
    # Outside the panel: sites export whole lab panels; immunostrat must split these off.
    _Test("ALB", "g/L", 1.0, 0, 35.0, 52.0, None, 1.0, 0, (), 5.0, 80.0, 1.0),
    _Test("WBC", "10^9/L", 0.1, 1, 4.0, 11.0, None, 1.0, 1, (), 0.5, 60.0, 1.0),
    _Test("CRP", "mg/L", 0.1, 1, None, 5.0, None, 1.0, 1, (), 0.1, 400.0, 1.0),
    _Test("HGB", "g/L", 1.0, 0, 120.0, 160.0, None, 1.0, 0, (), 40.0, 200.0, 1.0),
    _Test("PLT", "10^9/L", 1.0, 0, 150.0, 400.0, None, 1.0, 0, (), 5.0, 900.0, 1.0),
    _Test("CREAT", "umol/L", 1.0, 0, 45.0, 90.0, None, 1.0, 0, (), 20.0, 900.0, 1.0),
)
# fmt: on
PANEL_ANALYTES: tuple[str, ...] = tuple(t.name for t in _TESTS[:11])
_N_CORE = 10  # anti_dsdna .. lymphocytes: sent for every subject unless missing
_DSDNA, _C3, _C4, _IFN, _CD19, _CD3, _CD4, _CD8, _PB, _LYM, _PCT = range(11)
_OUTSIDE = np.arange(11, len(_TESTS), dtype=np.int8)
# Outside-panel tests: lognormal median and log-sd, canonical unit.
_OUTSIDE_MEDIAN = np.array([38.0, 5.5, 6.0, 118.0, 210.0, 78.0])
_OUTSIDE_LOGSD = np.array([0.12, 0.35, 1.0, 0.12, 0.35, 0.35])

# IFN methods (schemas/reference/ifn_methods.csv): cut-off, inclusive, and the share of subjects measured so.
_IFN_METHODS = ("MEDIAN_FC_21", "MEDIAN_FC_6", "MEAN_Z")
_IFN_CUTOFF = np.array([2.0, 2.466, 2.0])
_IFN_INCLUSIVE = np.array([True, False, True])
_IFN_WEIGHTS = np.array([0.60, 0.35, 0.05])
_MEAN_Z = 2

# Kit-unit variants of anti-dsDNA: (unit, kit upper limit of normal in that unit).
_KITS: tuple[tuple[str, float], ...] = (("U/mL", 20.0), ("U/mL", 25.0), ("U/mL", 100.0), ("AU/mL", 25.0))

# Selection rows use the first ten (by index); follow-up methods are appended, so those indices never move.
_METHODS = (
    "", "ELISA", "CIA", "FEIA", *_IFN_METHODS, "NEPHELOMETRY", "TURBIDIMETRY", "FLOW CYTOMETRY", "CKD-EPI 2021", "QPCR"
)  # fmt: skip
_M_NONE = 0
_M_DSDNA = np.array([1, 2, 3], dtype=np.int8)  # ELISA, CIA, FEIA (kits: ELISA or CIA)
_M_IFN = np.array([4, 5, 6], dtype=np.int8)
_M_COMPLEMENT = np.array([7, 8], dtype=np.int8)
_M_FLOW = 9
_M_CKD_EPI = 10
_M_QPCR = 11

_KINDS = ("baseline", "pre_window", "post_exposure", "outside_panel", "conflicting_duplicate", "duplicate")
_BASE, _PRE, _POST, _OUT, _CONFLICT, _DUP = range(6)
_MALFORMED = ("", "result_text", "result_neg", "result_empty", "unit_unknown", "date_impossible", "date_text")
_CENSOR_OPS = ("", "<", "< ", "<=", ">", "> ", ">=")
_EPOCH_2025 = int(np.datetime64("2025-01-01", "D").astype(np.int64))
_FOLLOW_UP_DAYS = 40 + 180  # latest exposure after the reference date + the last post-exposure row


def _fmt(x: float | None, dec: int) -> str:
    # Reference limits as labs print them: "30", "0.9", "1.8", "0.16" (no float noise, no padding).
    return "" if x is None else f"{round(x, dec):g}"


def _unit_variants() -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Table of (unit, factor, decimals, ref strings) variants and per-test canonical/alt/kit indices.

    Built once from the ~20 entries of the reference tables (not per row).
    """
    rows: list[tuple[str, float, int, str, str, float]] = []
    canonical: list[int] = []
    alternative: list[int] = []
    for t in _TESTS:
        canonical.append(len(rows))
        rows.append(
            (
                t.unit,
                1.0,
                t.dec,
                _fmt(t.ref_low, t.dec),
                _fmt(t.ref_high, t.dec),
                np.nan if t.ref_high is None else t.ref_high,
            )
        )
        if t.alt_unit is None:
            alternative.append(canonical[-1])
            continue
        alternative.append(len(rows))
        lo = None if t.ref_low is None else t.ref_low * t.alt_factor
        hi = None if t.ref_high is None else t.ref_high * t.alt_factor
        rows.append(
            (
                t.alt_unit,
                t.alt_factor,
                t.alt_dec,
                _fmt(lo, t.alt_dec),
                _fmt(hi, t.alt_dec),
                np.nan if hi is None else hi,
            )
        )
    kits: list[int] = []
    for unit, uln in _KITS:
        kits.append(len(rows))
        # Kit units are anti-dsDNA's ratio to its cut-off times the kit's ULN (30 IU/mL maps to the ULN).
        rows.append((unit, uln / 30.0, 1, "", _fmt(uln, 0), uln))
    table = pl.DataFrame(rows, schema=["unit", "factor", "dec", "ref_low", "ref_high", "ref_high_num"], orient="row")
    as_codes = (np.array(canonical, dtype=np.int8), np.array(alternative, dtype=np.int8), np.array(kits, dtype=np.int8))
    return table, *as_codes


_VARIANTS, _VAR_CANON, _VAR_ALT, _VAR_KIT = _unit_variants()
_VAR_FACTOR = _VARIANTS["factor"].to_numpy()
_VAR_DEC = _VARIANTS["dec"].to_numpy().astype(np.int8)
_P10I = 10 ** np.arange(8, dtype=np.int64)
_P10F = _P10I.astype(np.float64)
_VAR_REF_HIGH = _VARIANTS["ref_high_num"].to_numpy()

# Codes: index 0.._N_TESTS-1 are the canonical names; alternatives follow, contiguous per test.
_CODES: list[str] = [t.name for t in _TESTS] + [code for t in _TESTS for code in t.codes]
_ALT_COUNT = np.array([len(t.codes) for t in _TESTS], dtype=np.int8)
_ALT_START = (len(_TESTS) + np.cumsum(_ALT_COUNT) - _ALT_COUNT).astype(np.int8)
_HAS_ALT_UNIT = np.array([t.alt_unit is not None for t in _TESTS])
_QUANTUM = np.array([t.quantum for t in _TESTS])
_LO = np.array([t.lo for t in _TESTS])
_HI = np.array([t.hi for t in _TESTS])
_POST_FACTOR = np.array([t.post_factor for t in _TESTS])
_TIMES = ("", *(f"T{h:02d}:{m:02d}:00" for h in range(7, 18) for m in range(0, 60, 5)))


def _quantise(value: np.ndarray, test: np.ndarray | int) -> np.ndarray:
    """Round canonical values to their reporting quantum and plausible range (what a lab would write)."""
    q = _QUANTUM[test]
    return np.rint(np.clip(value, _LO[test], _HI[test]) / q) * q


def _gather(table: tuple[str, ...] | list[str] | pl.Series, idx: np.ndarray) -> pl.Series:
    """Vectorised lookup of strings by integer index (a polars gather, not a Python loop)."""
    s = table if isinstance(table, pl.Series) else pl.Series(list(table), dtype=pl.String)
    return s.gather(idx)


def _enum_gather(categories: tuple[str, ...] | list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(categories), dtype=pl.Enum(list(categories))).gather(idx)


# --------------------------------------------------------------------------------------------------------
# Subjects and latent biomarkers


def _latent_biomarkers(rng: np.random.Generator, cfg: SynthConfig) -> dict[str, np.ndarray]:
    """Draw per-subject baseline biomarkers in canonical units, already rounded as labs report them.

    Distributions follow the published numbers collected in the project's SLE domain notes (the Toronto
    IFN-high vs IFN-low table; adult flow-cytometry reference ranges), see docs/synthetic.md. A shared
    latent serological activity `s` correlates anti-dsDNA (up), C3/C4 (down) and plasmablasts (up), as in
    active SLE.
    """
    n = cfg.n_subjects
    ifn_mode_high = rng.random(n) < cfg.ifn_high_fraction
    s = rng.standard_normal(n)
    e = rng.standard_normal((n, 5))

    # IFN: bimodal signal in log2 units of the method's cut-off, with a gap around the cut-off.
    signal = np.where(ifn_mode_high, rng.gamma(3.0, 0.45, n), -rng.gamma(2.0, 0.3, n)).clip(-4.0, 6.0)
    method = rng.choice(len(_IFN_METHODS), size=n, p=_IFN_WEIGHTS)
    cutoff = _IFN_CUTOFF[method]
    score = np.where(method == _MEAN_Z, cutoff + 2.0 * signal, cutoff * np.exp2(signal))
    score = _quantise(score, _IFN)
    # Truth derives from the rounded score, so it agrees with what the rows say.
    signal = np.where(method == _MEAN_Z, (score - cutoff) / 2.0, np.log2(np.maximum(score, 0.01) / cutoff))
    ifn_high = np.where(_IFN_INCLUSIVE[method], score >= cutoff, score > cutoff)

    # anti-dsDNA: lognormal; P(>=30 IU/mL) ~50 % in IFN-high, ~25 % in IFN-low (Toronto 50.7 % vs 23.5 %).
    sd_log = 1.4
    offset = np.where(ifn_high, 0.0, -0.674 * sd_log)
    dsdna = _quantise(30.0 * np.exp(offset + sd_log * (0.6 * s + 0.8 * e[:, 0])), _DSDNA)

    # C3 normal, C4 lognormal (mean/sd from Toronto: C3 0.90 (0.23) vs 1.05 (0.24); C4 0.18 (0.09) vs 0.21 (0.08)).
    c3 = np.where(ifn_high, 0.90, 1.05) + np.where(ifn_high, 0.23, 0.24) * (-0.4 * s + 0.917 * e[:, 1])
    c4_mean, c4_sd = np.where(ifn_high, 0.18, 0.21), np.where(ifn_high, 0.09, 0.08)
    c4_sig = np.sqrt(np.log1p((c4_sd / c4_mean) ** 2))
    c4 = c4_mean * np.exp(-0.5 * c4_sig**2 + c4_sig * (-0.4 * s + 0.917 * e[:, 2]))

    # Lymphocytes lower in IFN-high (mean 1.10 vs 1.41 x10^9/L); T/B/NK shares from a Dirichlet.
    lym_mean = np.where(ifn_high, 1100.0, 1410.0)
    lym = _quantise(lym_mean * np.exp(-0.08 + 0.4 * (-0.2 * s + 0.98 * e[:, 3])), _LYM)
    shares = rng.dirichlet([14.0, 3.0, 3.0], size=n)  # T, B, NK: means 0.70, 0.15, 0.15
    cd3 = lym * shares[:, 0]
    cd4_share = rng.beta(6.0, 4.0, n)  # CD4 share of CD4+CD8 (CD4/CD8 ~1.5)
    cd4 = 0.93 * cd3 * cd4_share
    cd8 = 0.93 * cd3 * (1.0 - cd4_share)
    cd19 = np.maximum(_quantise(lym * shares[:, 1], _CD19), 1.0)
    pb = _quantise(5.0 * np.exp(0.8 * (0.5 * s + 0.866 * e[:, 4])), _PB)

    values = np.column_stack(
        [
            dsdna,
            _quantise(c3, _C3),
            _quantise(c4, _C4),
            score,
            cd19,
            _quantise(cd3, _CD3),
            _quantise(cd4, _CD4),
            _quantise(cd8, _CD8),
            pb,
            lym,
            _quantise(100.0 * cd19 / lym, _PCT),
        ]
    )
    return {"values": values, "ifn_method": method, "ifn_signal": signal, "ifn_high": ifn_high}


def _calibrate_intercept(lp: np.ndarray, target: float) -> float:
    """Solve mean(sigmoid(b0 + lp)) = target by Newton's method (vectorised over subjects)."""
    b0 = float(np.log(target / (1.0 - target)) - lp.mean())
    for _ in range(30):  # iterations of the solver, not a loop over subjects
        p = 1.0 / (1.0 + np.exp(-(b0 + lp)))
        grad = float((p * (1.0 - p)).mean())
        step = (float(p.mean()) - target) / max(grad, 1e-12)
        b0 -= step
        if abs(step) < 1e-10:
            break
    return b0


# --------------------------------------------------------------------------------------------------------
# Lab rows


def _format_numbers(value: np.ndarray, dec: np.ndarray) -> pl.Series:
    """Format numbers with exactly `dec` decimals (per row) via scaled integers: exact, no float repr noise.

    Integer parts are cast in one pass; fractions and signs are only built for the rows that need them.
    """
    p10 = _P10I[dec]
    scaled = np.rint(value * p10).astype(np.int64)
    neg = np.flatnonzero(scaled < 0)
    np.abs(scaled, out=scaled)
    out = pl.Series(scaled // p10).cast(pl.String)
    frac = np.flatnonzero(dec > 0)
    p = p10[frac]
    # a % p + p has exactly dec + 1 digits, so dropping its leading "1" zero-pads the fraction.
    out.scatter(frac, out.gather(frac) + "." + pl.Series(scaled[frac] % p + p).cast(pl.String).str.slice(1))
    out.scatter(neg, "-" + out.gather(neg))
    return out


def _identifiers(rng: np.random.Generator, cfg: SynthConfig) -> tuple[pl.Series, pl.Series, pl.Series]:
    """Per subject: study id, site id and a subject id that embeds the site number ("101-000042")."""
    n = cfg.n_subjects
    study = rng.integers(0, cfg.n_studies, n)
    site = study * cfg.sites_per_study + rng.integers(0, cfg.sites_per_study, n)
    study_names = [f"SLE-CART-{k + 1:02d}" for k in range(cfg.n_studies)]
    site_names = [
        f"SITE-{k // cfg.sites_per_study + 1}{k % cfg.sites_per_study + 1:02d}"
        for k in range(cfg.n_studies * cfg.sites_per_study)
    ]
    width = max(6, len(str(n - 1)))
    site_s = _gather(site_names, site)
    # Zero-padding by adding 10**width and dropping the leading "1": vectorised, no per-subject f-strings.
    serial = pl.Series(np.arange(n, dtype=np.int64) + 10**width).cast(pl.String).str.slice(1)
    subject_ids = site_s.str.slice(5) + "-" + serial
    return _gather(study_names, study), site_s, subject_ids


def _lab_rows(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    latent: dict[str, np.ndarray],
    ref_day: np.ndarray,
    after_day: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Build every lab row as compact numeric codes (rendered to strings later, in one pass).

    Returns:
        Per-row arrays in output order (sorted by subject, then date), the (subject, test) pairs of the
        baseline rows dropped as missing, and each subject's anti-dsDNA and complement method codes.
    """
    n = cfg.n_subjects
    win = cfg.baseline_window_days
    values = latent["values"]

    def draw(size: int) -> np.ndarray:
        return rng.random(size, dtype=np.float32)  # float32 halves the memory of the per-row coin flips

    # Baseline rows: the core panel for every subject, the percent form for some.
    pct_subj = np.flatnonzero(draw(n) < cfg.cd19_pct_rate).astype(np.int32)
    subj = np.concatenate([np.repeat(np.arange(n, dtype=np.int32), _N_CORE), pct_subj])
    test = np.concatenate([np.tile(np.arange(_N_CORE, dtype=np.int8), n), np.full(pct_subj.size, _PCT, np.int8)])
    value = values[subj, test]
    day = ref_day[subj] - rng.integers(0, win + 1, subj.size, dtype=np.int32)

    # Out-of-window extras come from every baseline slot, even ones later dropped as missing (a trap: an
    # old measurement must not stand in for a missing baseline). After exposure, values move as after
    # CAR-T (B-cell aplasia, falling anti-dsDNA); before the window they are the same subject, noisier.
    src = np.flatnonzero(draw(subj.size) < cfg.out_of_window)
    post = draw(src.size) < 1.0 / 3.0
    x_subj, x_test, x_val = subj[src], test[src], value[src]
    is_mean_z = (x_test == _IFN) & (latent["ifn_method"][x_subj] == _MEAN_Z)
    noise = rng.standard_normal(src.size)
    mult = np.where(post, _POST_FACTOR[x_test] * np.exp(0.2 * noise), np.exp(0.3 * noise))
    x_val = _quantise(np.where(is_mean_z, x_val - 2.0 * post + 0.6 * noise, x_val * mult), x_test)
    x_day = np.where(
        post,
        after_day[x_subj] + rng.integers(1, 181, src.size, dtype=np.int32),
        ref_day[x_subj] - rng.integers(win + 30, 731, src.size, dtype=np.int32),
    )

    missing = (test < _N_CORE) & (draw(subj.size) < cfg.missing_analyte)
    miss_subj, miss_test = subj[missing], test[missing]
    keep = ~missing
    subj, test, value, day = subj[keep], test[keep], value[keep], day[keep]

    # Outside-panel rows: sites export whole lab panels; these sit in the baseline window.
    o_src = np.flatnonzero(draw(subj.size) < cfg.outside_panel)
    o_k = rng.integers(0, _OUTSIDE.size, o_src.size)
    o_test = _OUTSIDE[o_k]
    o_val = _quantise(_OUTSIDE_MEDIAN[o_k] * np.exp(_OUTSIDE_LOGSD[o_k] * rng.standard_normal(o_src.size)), o_test)
    o_subj = subj[o_src]
    o_day = ref_day[o_subj] - rng.integers(0, win + 1, o_src.size, dtype=np.int32)

    kind = np.concatenate(
        [
            np.full(subj.size, _BASE, np.int8),
            np.where(post, _POST, _PRE).astype(np.int8),
            np.full(o_src.size, _OUT, np.int8),
        ]
    )
    subj = np.concatenate([subj, x_subj, o_subj])
    test = np.concatenate([test, x_test, o_test])
    value = np.concatenate([value, x_val, o_val])
    day = np.concatenate([day, x_day, o_day])
    rows = subj.size

    # Presentation: unit variant, test code, method, time of day.
    alt_unit = _HAS_ALT_UNIT[test] & (draw(rows) < cfg.alt_unit)
    is_dsdna = test == _DSDNA
    kit_row = is_dsdna & kit[subj]
    uvar = np.where(kit_row, kit_var[subj], np.where(alt_unit, _VAR_ALT[test], _VAR_CANON[test]))
    alt_code = (_ALT_COUNT[test] > 0) & (draw(rows) < cfg.alt_code)
    code = np.where(alt_code, _ALT_START[test] + (draw(rows) * _ALT_COUNT[test]).astype(np.int8), test)
    # Methods belong to the subject's lab, so they are drawn per subject (kits: ELISA or CIA only).
    m_dsdna = np.where(kit, rng.choice(_M_DSDNA[:2], n), rng.choice(_M_DSDNA, n)).astype(np.int8)
    m_ifn = _M_IFN[latent["ifn_method"]].astype(np.int8)
    m_compl = rng.choice(_M_COMPLEMENT, n).astype(np.int8)
    method = np.full(rows, _M_NONE, np.int8)
    method[is_dsdna] = m_dsdna[subj[is_dsdna]]
    is_ifn = test == _IFN
    method[is_ifn] = m_ifn[subj[is_ifn]]
    is_compl = (test == _C3) | (test == _C4)
    method[is_compl] = m_compl[subj[is_compl]]
    method[((test >= _CD19) & (test <= _PB)) | (test == _PCT)] = _M_FLOW
    time_idx = np.where(draw(rows) < 0.5, 0, rng.integers(1, len(_TIMES), rows, dtype=np.int16))

    # Conflicting duplicates: a twin with the same subject/test/collected_at/method, another result. Sources
    # and twins stay clean (no censoring or malformation) so that the conflict is unambiguous.
    c_src = np.flatnonzero((kind == _BASE) & (draw(rows) < cfg.conflicting_duplicate))
    c_val = _quantise(
        value[c_src] * np.exp(rng.choice([-1.0, 1.0], c_src.size) * rng.uniform(0.15, 0.6, c_src.size)),
        test[c_src],
    )
    c_val = np.where(c_val == value[c_src], value[c_src] + _QUANTUM[test[c_src]], c_val)  # rounding ate it
    clean = np.zeros(rows + c_src.size, dtype=bool)
    clean[c_src] = True
    clean[rows:] = True
    r: dict[str, np.ndarray] = {
        "subj": subj,
        "test": test,
        "day": day,
        "uvar": uvar,
        "code": code,
        "method": method,
        "time_idx": time_idx,
        "alt_unit": alt_unit,
        "alt_code": alt_code,
        "kit_row": kit_row,
    }
    r = {k: np.concatenate([a, a[c_src]]) for k, a in r.items()}  # ten columns, not rows
    r["kind"] = np.concatenate([kind, np.full(c_src.size, _CONFLICT, np.int8)])
    value = np.concatenate([value, c_val])
    rows = value.size

    # Written value in the row's unit; censoring (anti-dsDNA only) and malformation.
    uvar = r["uvar"]
    dec = _VAR_DEC[uvar]
    written = np.rint(value * _VAR_FACTOR[uvar] * _P10F[dec]) / _P10F[dec]
    censored = (r["test"] == _DSDNA) & ~clean & (draw(rows) < cfg.censored)
    cens = np.flatnonzero(censored)
    w = written[cens]
    below = w < _VAR_REF_HIGH[uvar[cens]]
    # Bounds a lab would print, always on the right side of the true value: "<10", "<15", ">30", ">800".
    lower = np.maximum(10.0, 5.0 * np.floor(w / 5.0) + 5.0)
    upper = np.where(w >= 100.0, 100.0 * (np.ceil(w / 100.0) - 1.0), 10.0 * (np.ceil(w / 10.0) - 1.0))
    upper = np.where(w > 800.0, 800.0, upper)
    written[cens] = np.where(below, lower, upper)
    dec[cens] = 0
    op = np.zeros(rows, np.int8)
    op[cens] = np.where(below, rng.integers(1, 4, cens.size), rng.integers(4, 7, cens.size))
    malformed = np.where(
        ~clean & (draw(rows) < cfg.malformed), rng.integers(1, len(_MALFORMED), rows, dtype=np.int8), 0
    ).astype(np.int8)
    r.update(written=written, dec=dec, op=op, censored=censored, malformed=malformed)

    # Exact duplicates, then order as a site export: by subject, then date (ties in random order).
    dup = np.flatnonzero(draw(rows) < cfg.duplicate)
    src_row = np.concatenate([np.arange(rows), dup])
    d0 = int(r["day"].min())
    span = int(r["day"].max()) - d0 + 1
    key = (r["subj"][src_row].astype(np.int64) * span + (r["day"][src_row] - d0)) * 1024
    key += rng.integers(0, 1024, src_row.size)
    perm = np.argsort(key)  # the blocks are each sorted by subject already, so gathers stay near-sequential
    order = src_row[perm]
    out = {k: a[order] for k, a in r.items()}  # sixteen columns, not rows
    out["kind"] = np.where(perm >= rows, _DUP, out["kind"]).astype(np.int8)
    return out, miss_subj, miss_test, {"dsdna": m_dsdna, "complement": m_compl}


def _render_labs(
    r: dict[str, np.ndarray], study_s: pl.Series, site_s: pl.Series, subject_ids: pl.Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Turn the coded rows into the native all-String lab table, plus the row-aligned tags."""
    result = _format_numbers(r["written"], r["dec"])
    cens = np.flatnonzero(r["op"])
    result.scatter(cens, _gather(_CENSOR_OPS, r["op"][cens]) + result.gather(cens))
    bad = r["malformed"]
    bad_result = np.flatnonzero((bad >= 1) & (bad <= 3))
    result.scatter(bad_result, _gather(("", "abc", "NEG", ""), bad[bad_result]))
    unit = _gather(_VARIANTS["unit"], r["uvar"])
    unit.scatter(np.flatnonzero(bad == 4), "furlongs")

    # collected_at from a (date x time-of-day) lookup of a few hundred thousand strings: one gather per row.
    d0 = int(r["day"].min())
    span = int(r["day"].max()) - d0 + 1
    dates = pl.Series(np.arange(d0, d0 + span).astype("datetime64[D]")).cast(pl.String)
    n_times = len(_TIMES)
    stamps = dates.gather(np.repeat(np.arange(span), n_times)) + _gather(_TIMES, np.tile(np.arange(n_times), span))
    day_idx = (r["day"] - d0).astype(np.int64)
    collected_at = stamps.gather(day_idx * n_times + r["time_idx"])
    bad_date = np.flatnonzero(bad == 5)  # an impossible calendar date in the row's own year
    collected_at.scatter(bad_date, dates.gather(day_idx[bad_date]).str.slice(0, 4) + "-02-30")
    collected_at.scatter(np.flatnonzero(bad == 6), "yesterday")

    subj = r["subj"]
    labs = pl.DataFrame(
        {
            "study_id": study_s.gather(subj),
            "subject_id": subject_ids.gather(subj),
            "site_id": site_s.gather(subj),
            "test": _gather(_CODES, r["code"]),
            "result": result,
            "unit": unit,
            "collected_at": collected_at,
            "method": _gather(_METHODS, r["method"]),
            "ref_low": _gather(_VARIANTS["ref_low"], r["uvar"]),
            "ref_high": _gather(_VARIANTS["ref_high"], r["uvar"]),
        }
    )
    # Tags are Enums: gathering their small physical codes is cheap, and they compare like strings.
    lab_tags = pl.DataFrame(
        {
            "kind": _enum_gather(_KINDS, r["kind"]),
            "analyte": _enum_gather([t.name for t in _TESTS], r["test"]),
            "alt_unit": r["alt_unit"],
            "alt_code": r["alt_code"],
            "kit_unit": r["kit_row"],
            "censored": r["censored"],
            "malformed": pl.Series([None, *_MALFORMED[1:]], dtype=pl.Enum(_MALFORMED[1:])).gather(bad),
        }
    )
    return labs, lab_tags


def generate_cohort(config: SynthConfig) -> SynthCohort:
    """Generate a synthetic cohort: messy native lab rows, subjects, outcomes and the truth behind them.

    Args:
        config: size, seed, population parameters and mess rates.

    Returns:
        The cohort. Deterministic for a given config.
    """
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_subjects
    study_s, site_s, subject_ids = _identifiers(rng, cfg)
    last_ref = int(np.datetime64(cfg.data_cutoff, "D").astype(np.int64)) - _FOLLOW_UP_DAYS
    ref_day = rng.integers(_EPOCH_2025, last_ref + 1, n, dtype=np.int32)
    exposure_day = ref_day + rng.integers(14, 41, n, dtype=np.int32)
    exposure_missing = rng.random(n) < 0.05  # not yet dosed, or withdrawn before infusion

    latent = _latent_biomarkers(rng, cfg)
    values = latent["values"]

    # Kit units are per subject (one lab, one kit); the truth ratio is taken from the value as written.
    kit = rng.random(n) < cfg.kit_unit
    kit_var = _VAR_KIT[rng.integers(0, _VAR_KIT.size, n)]
    kit_written = np.rint(values[:, _DSDNA] * _VAR_FACTOR[kit_var] * 10.0) / 10.0
    dsdna_ratio = np.maximum(np.where(kit, kit_written / _VAR_REF_HIGH[kit_var], values[:, _DSDNA] / 30.0), 1e-3)

    # Latent response (invented, see the module docstring), calibrated to the target response rate.
    co = RESPONSE_COEFFICIENTS
    lp = (
        co["log2_anti_dsdna_ratio"] * np.log2(dsdna_ratio)
        + co["ifn_signal"] * latent["ifn_signal"]
        + co["c3_z"] * (values[:, _C3] - 0.90) / 0.23
        + co["c4_z"] * (values[:, _C4] - 0.16) / 0.08
        + co["log10_cd19_centred"] * (np.log10(values[:, _CD19]) - np.log10(200.0))
    )
    b0 = _calibrate_intercept(lp, cfg.response_rate)
    lp = b0 + lp
    prob = 1.0 / (1.0 + np.exp(-lp))
    responded = rng.random(n) < prob

    after_day = np.where(exposure_missing, ref_day + 30, exposure_day)
    rows, miss_subj, miss_test, methods = _lab_rows(
        rng, cfg, latent=latent, ref_day=ref_day, after_day=after_day, kit=kit, kit_var=kit_var
    )
    labs, lab_tags = _render_labs(rows, study_s, site_s, subject_ids)
    del rows

    subjects, subject_parts = _subjects(
        rng,
        cfg,
        study_s=study_s,
        site_s=site_s,
        subject_ids=subject_ids,
        ref_day=ref_day,
        exposure_day=exposure_day,
        exposure_missing=exposure_missing,
        dsdna_ratio=dsdna_ratio,
        values=values,
    )
    followup = None
    if cfg.followup:
        # Its own RNG stream: every table above stays byte-identical with follow-up on or off.
        new_columns, followup = _followup(
            np.random.default_rng([cfg.seed, 12]),
            cfg,
            study_s=study_s,
            site_s=site_s,
            subject_ids=subject_ids,
            ref_day=ref_day,
            exposure_day=exposure_day,
            exposure_missing=exposure_missing,
            responded=responded,
            values=values,
            kit=kit,
            kit_var=kit_var,
            subject_parts=subject_parts,
            methods=methods,
        )
        subjects = subjects.with_columns(**new_columns)
    outcomes = pl.DataFrame(
        {
            "study_id": study_s,
            "subject_id": subject_ids,
            "responded": responded,
            "endpoint": pl.Series([ENDPOINT]).gather(np.zeros(n, dtype=np.int64)),
        }
    )

    truth = pl.DataFrame(
        {
            "study_id": study_s,
            "subject_id": subject_ids,
            "ifn_method": _gather(_IFN_METHODS, latent["ifn_method"]),
            "ifn_high": latent["ifn_high"],
            "ifn_signal": latent["ifn_signal"],
            "anti_dsdna_kit_unit": kit,
            "anti_dsdna_ratio": dsdna_ratio,
            **{name: values[:, k] for k, name in enumerate(PANEL_ANALYTES)},
            "missing_analytes": _missing_names(n, miss_subj, miss_test),
            "linear_predictor": lp,
            "response_probability": prob,
        }
    )
    return SynthCohort(
        labs=labs,
        subjects=subjects,
        outcomes=outcomes,
        truth=truth,
        lab_tags=lab_tags,
        coefficients={"intercept": b0, **co},
        config=cfg,
        followup=followup,
    )


def _subjects(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    study_s: pl.Series,
    site_s: pl.Series,
    subject_ids: pl.Series,
    ref_day: np.ndarray,
    exposure_day: np.ndarray,
    exposure_missing: np.ndarray,
    dsdna_ratio: np.ndarray,
    values: np.ndarray,
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Subject listing: demographics, dates and the clinical fields eligibility rules use.

    Also returns the parts the follow-up generator builds on: `clinical_part` (SLEDAI-2K without the two
    serology items), `ln_class` (index into the nephritis classes, 0 = none), `egfr` (before nulls), `age` and
    `female` (for the creatinine of an eGFR, CKD-EPI 2021).
    """
    n = cfg.n_subjects
    # SLEDAI-2K: a clinical part plus the serology items (2 points each), so it tracks the labs a little.
    low_complement = (values[:, _C3] < 0.9) | (values[:, _C4] < 0.16)
    clinical_part = np.clip(np.rint(rng.normal(9.0, 3.5, n)), 0, 30)
    sledai = clinical_part + 2 * (dsdna_ratio >= 1.0) + 2 * low_complement
    ln_class = rng.choice(6, n, p=[0.45, 0.10, 0.22, 0.08, 0.05, 0.10])
    egfr = np.round(np.clip(rng.normal(88.0, 25.0, n) - 18.0 * (ln_class > 0), 8.0, 150.0), 1)
    # A few optional values are not sent (null), as in real subject listings.
    optional = (
        "sledai_2k",
        "prior_immunosuppressant_failures",
        "lupus_nephritis_class",
        "egfr",
        "active_cns_lupus",
        "first_exposure_date",
    )
    null_rate = np.array([0.01, 0.01, 0.02, 0.02, 0.01, 0.0])
    null = {f"_null_{c}": rng.random(n) < p for c, p in zip(optional, null_rate, strict=True)}
    null["_null_first_exposure_date"] = exposure_missing
    frame = (
        pl.DataFrame(
            {
                "study_id": study_s,
                "subject_id": subject_ids,
                "site_id": site_s,
                "sex": _gather(("F", "M"), (rng.random(n) >= 0.9).astype(np.int64)),
                "age_years": np.clip(np.rint(rng.normal(38.0, 11.0, n)), 14, 82).astype(np.int64),
                "reference_date": _day_strings(ref_day),
                "first_exposure_date": _day_strings(exposure_day),
                "sledai_2k": sledai.astype(np.int64),
                "prior_immunosuppressant_failures": rng.choice(6, n, p=[0.04, 0.08, 0.36, 0.28, 0.14, 0.10]),
                "lupus_nephritis_class": _gather(("", "III", "IV", "V", "III+V", "IV+V"), ln_class),
                "egfr": egfr,
                "active_cns_lupus": rng.random(n) < 0.03,
                **null,
            }
        )
        .with_columns(
            pl.col("prior_immunosuppressant_failures").cast(pl.Int64),
        )
        .with_columns(*(pl.when(pl.col(f"_null_{c}")).then(None).otherwise(pl.col(c)).alias(c) for c in optional))
        .select(SUBJECT_COLUMNS)
    )
    parts = {
        "clinical_part": clinical_part.astype(np.int64),
        "ln_class": ln_class,
        "egfr": egfr,
        "age": frame["age_years"].to_numpy(),  # never null
        "female": (frame["sex"] == "F").to_numpy(),
    }
    return frame, parts


def _missing_names(n: int, miss_subj: np.ndarray, miss_test: np.ndarray) -> pl.Series:
    """Per subject, the comma-joined core analytes without a baseline row ("" when none), in panel order.

    Each subject's set is a 10-bit mask; only the few distinct masks are turned into strings.
    """
    mask = np.bincount(miss_subj, weights=np.left_shift(1, miss_test.astype(np.int64)), minlength=n)
    uniq, inverse = np.unique(mask.astype(np.int64), return_inverse=True)
    bits = (uniq[:, None] >> np.arange(_N_CORE)) & 1
    which, analyte = np.nonzero(bits)  # row-major: analytes come out in panel order
    names = (
        pl.DataFrame({"m": which, "a": _gather(PANEL_ANALYTES, analyte)})
        .group_by("m", maintain_order=True)
        .agg(pl.col("a").str.join(","))
    )
    lookup = pl.Series([""] * uniq.size, dtype=pl.String)
    lookup.scatter(names["m"].to_numpy(), names["a"])
    return lookup.gather(inverse)


def _day_strings(days: np.ndarray) -> pl.Series:
    return pl.Series(days.astype("datetime64[D]")).cast(pl.String)


# --------------------------------------------------------------------------------------------------------
# Follow-up: infusion, visits with SLEDAI-2K descriptors, follow-up labs (see docs/synthetic.md, "Follow-up")

# SLEDAI-2K descriptors in the order of schemas/reference/sledai_2k.csv (kept in sync by
# tests/test_synth_followup.py): item, weight, kind.
_SLEDAI: tuple[tuple[str, int, str], ...] = (
    ("seizure", 8, "clinical"),
    ("psychosis", 8, "clinical"),
    ("organic_brain_syndrome", 8, "clinical"),
    ("visual_disturbance", 8, "clinical"),
    ("cranial_nerve_disorder", 8, "clinical"),
    ("lupus_headache", 8, "clinical"),
    ("cva", 8, "clinical"),
    ("vasculitis", 8, "clinical"),
    ("arthritis", 4, "clinical"),
    ("myositis", 4, "clinical"),
    ("urinary_casts", 4, "laboratory"),
    ("hematuria", 4, "laboratory"),
    ("proteinuria", 4, "laboratory"),
    ("pyuria", 4, "laboratory"),
    ("rash", 2, "clinical"),
    ("alopecia", 2, "clinical"),
    ("mucosal_ulcers", 2, "clinical"),
    ("pleurisy", 2, "clinical"),
    ("pericarditis", 2, "clinical"),
    ("low_complement", 2, "serology"),
    ("increased_dna_binding", 2, "serology"),
    ("fever", 1, "clinical"),
    ("thrombocytopenia", 1, "laboratory"),
    ("leukopenia", 1, "laboratory"),
)
SLEDAI_WEIGHTS: dict[str, int] = {item: weight for item, weight, _ in _SLEDAI}
CLINICAL_DESCRIPTORS: tuple[str, ...] = tuple(item for item, _, kind in _SLEDAI if kind == "clinical")
LABORATORY_DESCRIPTORS: tuple[str, ...] = tuple(item for item, _, kind in _SLEDAI if kind != "clinical")
VISIT_LABELS: tuple[str, ...] = ("SCREENING", "MONTH_1", "MONTH_3", "MONTH_6", "MONTH_12", "UNSCHEDULED")
VISIT_BOOLEAN_FIELDS: tuple[str, ...] = (
    "antimalarial",
    "hemolytic_anemia",
    "gi_activity",
    "other_investigational_drug",
    "treatment_failure",
)
VISIT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "subject_id",
    "visit",
    "visit_date",
    *CLINICAL_DESCRIPTORS,
    *LABORATORY_DESCRIPTORS,
    "pga",
    "prednisone_mg_day",
    *VISIT_BOOLEAN_FIELDS,
    "immunosuppressants",
)
FOLLOWUP_SUBJECT_COLUMNS: tuple[str, ...] = ("infusion_date", "discontinued_date")
# Follow-up lab rows: the native lab columns plus `lloq` (the assay's lower limit of quantification, in the row's
# unit; empty where the assay has none). Readers keep columns outside their contract as extra columns.
FOLLOWUP_LAB_COLUMNS: tuple[str, ...] = (*LAB_COLUMNS, "lloq")
_D = {item: k for k, (item, _, _) in enumerate(_SLEDAI)}
_W = np.array([w for _, w, _ in _SLEDAI], dtype=np.int64)
_SEROLOGY = np.array([_D["low_complement"], _D["increased_dna_binding"]])
_NON_SEROLOGY = np.array([k for k, (_, _, kind) in enumerate(_SLEDAI) if kind != "serology"])
# Screening: chance that a descriptor is drawn (without / with lupus nephritis in the subjects file), before the
# top-up that makes the descriptors sum to the subject's SLEDAI-2K. Tuned so that the observed screening
# prevalences are those stated in docs/synthetic.md; CNS items are rare (active CNS lupus excludes).
_SCREEN_P: dict[str, tuple[float, float]] = {
    "seizure": (0.003, 0.003),
    "psychosis": (0.003, 0.003),
    "organic_brain_syndrome": (0.003, 0.003),
    "visual_disturbance": (0.003, 0.003),
    "cranial_nerve_disorder": (0.003, 0.003),
    "lupus_headache": (0.005, 0.005),
    "cva": (0.003, 0.003),
    "vasculitis": (0.05, 0.05),
    "arthritis": (0.55, 0.45),
    "myositis": (0.04, 0.04),
    "urinary_casts": (0.01, 0.15),
    "hematuria": (0.03, 0.35),
    "proteinuria": (0.03, 0.60),
    "pyuria": (0.02, 0.20),
    "rash": (0.45, 0.35),
    "alopecia": (0.35, 0.30),
    "mucosal_ulcers": (0.30, 0.25),
    "pleurisy": (0.08, 0.08),
    "pericarditis": (0.05, 0.05),
    "fever": (0.05, 0.05),
    "thrombocytopenia": (0.08, 0.08),
    "leukopenia": (0.15, 0.15),
}
# Draw order: heavy items first so that they only enter when they fit; the 1-point items last.
_DRAW_ORDER = np.array(sorted((_D[item] for item in _SCREEN_P), key=lambda k: (-_W[k], k)))
_SCREEN_P_ARR = np.zeros((24, 2))
for _item, _p in _SCREEN_P.items():  # 22 table entries
    _SCREEN_P_ARR[_D[_item]] = _p
# Top-up order: common items first, then the other non-CNS items, so that any remainder up to 30 points is
# filled exactly (the 1-point items settle odd remainders).
_FILL_ORDER = np.array(
    [
        _D[item]
        for item in (
            "arthritis",
            "rash",
            "alopecia",
            "mucosal_ulcers",
            "myositis",
            "proteinuria",
            "hematuria",
            "pyuria",
            "urinary_casts",
            "pleurisy",
            "pericarditis",
        )
    ]
)
_GREEDY_ORDER = np.array(
    [*sorted(_FILL_ORDER, key=lambda k: -_W[k]), _D["leukopenia"], _D["thrombocytopenia"], _D["fever"]]
)
# Odd remainders: one of the 1-point items, with these chances.
_ONE_POINT = np.array([_D["leukopenia"], _D["thrombocytopenia"], _D["fever"]])
_ONE_POINT_P = np.array([0.5, 0.3, 0.2])
# Course after infusion, by [responded (0 = no, 1 = yes), phase (0 screening, 1..4 months 1, 3, 6, 12)].
_PERSIST = np.array([[1.0, 0.7, 0.6, 0.6, 0.6], [1.0, 0.5, 0.15, 0.0, 0.0]])  # a screening item still present
_PGA_LO = np.array([[1.0, 0.8, 0.8, 0.8, 0.8], [1.0, 0.5, 0.1, 0.0, 0.0]])
_PGA_HI = np.array([[2.6, 2.5, 2.5, 2.5, 2.5], [2.6, 1.2, 0.8, 0.4, 0.4]])
_DSDNA_MULT = np.array([[1.0, 0.85, 0.8, 0.8, 0.8], [1.0, 0.5, 0.25, 0.2, 0.2]])
_COMPLEMENT_MULT = np.array([[1.0, 1.0, 1.05, 1.05, 1.05], [1.0, 1.1, 1.25, 1.3, 1.3]])
_SCHEDULE_DAY = np.array([30, 90, 180, 365])  # months 1, 3, 6, 12 after infusion
_SCHEDULE_JITTER = np.array([3, 7, 7, 14])  # +- days around the target
_GAP_LO = np.array([40, 105, 200])  # unscheduled visits fall between scheduled windows
_GAP_HI = np.array([75, 160, 340])
_PREDNISONE = np.array([5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 30.0])
_PREDNISONE_P = np.array([0.10, 0.15, 0.25, 0.10, 0.15, 0.15, 0.10])


class _FuTest(NamedTuple):
    name: str
    quantum: float  # canonical values are rounded to a multiple of this
    units: tuple[tuple[str, float, int, str, str], ...]  # (unit, factor, decimals, ref_low, ref_high); first canonical
    codes: tuple[str, ...]  # aliases and codes (schemas/reference/test_codes.csv of the follow-up panel)
    descriptor: str | None  # the lab-derivable SLEDAI-2K descriptor it carries


_CREATININE_UMOL_PER_MG_DL = 88.42


def ckd_epi_2021(creatinine_mg_dl: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """eGFR (mL/min/1.73m2) by the race-free CKD-EPI 2021 creatinine equation (Inker, NEJM 2021).

    142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age (x 1.012 if female); k = 0.7 (female) or 0.9,
    a = -0.241 (female) or -0.302; Scr in mg/dL.
    """
    kappa, alpha = np.where(female, 0.7, 0.9), np.where(female, -0.241, -0.302)
    ratio = creatinine_mg_dl / kappa
    scale = 142.0 * 0.9938**age * np.where(female, 1.012, 1.0)
    return scale * np.minimum(ratio, 1.0) ** alpha * np.maximum(ratio, 1.0) ** -1.200


def creatinine_for_egfr(egfr: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Serum creatinine (mg/dL) that gives `egfr` by CKD-EPI 2021: the equation solved for Scr."""
    kappa, alpha = np.where(female, 0.7, 0.9), np.where(female, -0.241, -0.302)
    scale = 142.0 * 0.9938**age * np.where(female, 1.012, 1.0)
    relative = egfr / scale  # >= 1 exactly when Scr <= k (the min() branch)
    ratio = np.where(relative >= 1.0, relative ** (1.0 / alpha), relative ** (-1.0 / 1.200))
    return ratio * kappa


_COUNT_UNITS = ("10^9/L", "10*9/L", "G/L", "10^3/uL", "K/uL", "x10E3/uL")
_UPCR_MG_MMOL = 1.0 / 0.00884  # g/g -> mg/mmol (0.5 g/g = 56.6 mg/mmol)
_CREAT_MG_DL = 1.0 / 88.42  # umol/L -> mg/dL

# fmt: off
_FU_TESTS: tuple[_FuTest, ...] = (
    _FuTest("platelets", 1.0, tuple((u, 1.0, 0, "150", "400") for u in _COUNT_UNITS), ("PLAT", "777-3"),
            "thrombocytopenia"),
    _FuTest("wbc", 0.1, tuple((u, 1.0, 1, "4.0", "11.0") for u in _COUNT_UNITS), ("6690-2", "leukocytes"),
            "leukopenia"),
    _FuTest("neutrophils", 0.01, tuple((u, 1.0, 2, "1.80", "7.50") for u in _COUNT_UNITS), ("ANC", "NEUT"), None),
    _FuTest("lymphocytes", 10.0, (("cells/uL", 1.0, 0, "1000", "4000"), ("10^9/L", 0.001, 2, "1.00", "4.00")),
            ("26474-7", "LYM"), None),
    _FuTest("cd4_t_cells", 1.0, (("cells/uL", 1.0, 0, "300", "1400"), ("10^9/L", 0.001, 3, "0.300", "1.400")),
            ("24467-3", "CD4"), None),
    _FuTest("hemoglobin", 1.0, (("g/L", 1.0, 0, "120", "160"), ("g/dL", 0.1, 1, "12.0", "16.0")), ("HGB", "718-7"),
            None),
    _FuTest("creatinine", 1.0, (("umol/L", 1.0, 0, "45", "90"), ("mg/dL", _CREAT_MG_DL, 2, "0.51", "1.02")),
            ("CREAT", "2160-0"), None),
    # eGFR as labs report it beside creatinine: CKD-EPI 2021 (race-free), whole numbers, the equation in `method`.
    _FuTest("egfr", 1.0, (("mL/min/1.73m2", 1.0, 0, "90", ""),), (), None),
    _FuTest("upcr", 0.01, (("g/g", 1.0, 2, "", "0.20"), ("mg/mmol", _UPCR_MG_MMOL, 1, "", "22.6"),
                           ("mg/g", 1000.0, 0, "", "200")), ("PROTCRT", "2890-2"), "proteinuria"),
    _FuTest("urine_protein_24h", 0.01, (("g/24h", 1.0, 2, "", "0.15"),), (), "proteinuria"),
    _FuTest("urine_rbc", 1.0, (("/HPF", 1.0, 0, "0", "2"),), ("13945-1",), "hematuria"),
    _FuTest("urine_wbc", 1.0, (("/HPF", 1.0, 0, "0", "5"),), ("5821-4",), "pyuria"),
    _FuTest("urine_casts", 1.0, (("/LPF", 1.0, 0, "", ""),), ("RBC casts",), "urinary_casts"),
    _FuTest("igg", 0.1, (("g/L", 1.0, 1, "7.0", "16.0"), ("mg/dL", 100.0, 0, "700", "1600")), ("IGG", "2465-3"),
            None),
    _FuTest("cd19_b_cells", 1.0, (("cells/uL", 1.0, 0, "100", "500"), ("10^9/L", 0.001, 3, "0.1", "0.5")),
            ("8116-6", "BLYCE"), None),
    _FuTest("car_t_cells", 0.1, (("cells/uL", 1.0, 1, "", ""),), (), None),
    _FuTest("car_t_copies", 1.0, (("copies/ug DNA", 1.0, 0, "", ""), ("copies/µg DNA", 1.0, 0, "", "")), (), None),
    _FuTest("anti_dsdna", 0.1, (("IU/mL", 1.0, 1, "", "30"),), ("5130-0", "ADSDNA"), "increased_dna_binding"),
    _FuTest("c3", 0.01, (("g/L", 1.0, 2, "0.9", "1.8"), ("mg/dL", 100.0, 0, "90", "180")), ("4485-9",),
            "low_complement"),
    _FuTest("c4", 0.01, (("g/L", 1.0, 2, "0.16", "0.5"), ("mg/dL", 100.0, 0, "16", "50")), ("4498-2",),
            "low_complement"),
)
# fmt: on
FOLLOWUP_ANALYTES: tuple[str, ...] = tuple(t.name for t in _FU_TESTS)
_F = {t.name: k for k, t in enumerate(_FU_TESTS)}
# Anti-dsDNA kit units follow, as in the baseline rows.
_FU_UNIT_ROWS = [u for t in _FU_TESTS for u in t.units] + [
    (unit, uln / 30.0, 1, "", _fmt(uln, 0)) for unit, uln in _KITS
]
_FU_UNIT = [u[0] for u in _FU_UNIT_ROWS]
_FU_FACTOR = np.array([u[1] for u in _FU_UNIT_ROWS])
_FU_DEC = np.array([u[2] for u in _FU_UNIT_ROWS], dtype=np.int8)
_FU_REF_LOW = [u[3] for u in _FU_UNIT_ROWS]
_FU_REF_HIGH = [u[4] for u in _FU_UNIT_ROWS]
_FU_UNIT_COUNT = np.array([len(t.units) for t in _FU_TESTS], dtype=np.int16)
_FU_UNIT_START = (np.cumsum(_FU_UNIT_COUNT) - _FU_UNIT_COUNT).astype(np.int16)
_FU_KIT_START = int(_FU_UNIT_COUNT.sum())
_FU_CODES = [t.name for t in _FU_TESTS] + [c for t in _FU_TESTS for c in t.codes]
_FU_CODE_COUNT = np.array([len(t.codes) for t in _FU_TESTS], dtype=np.int16)
_FU_CODE_START = (len(_FU_TESTS) + np.cumsum(_FU_CODE_COUNT) - _FU_CODE_COUNT).astype(np.int16)
_FU_QUANTUM = np.array([t.quantum for t in _FU_TESTS])
# Lower limits of quantification, per (analyte, unit) as the lab prints them (the `lloq` column, in the row's
# unit). CD19: high-sensitivity flow, 0.441 cells/uL (NOBILITY); CAR-T flow 1 cells/uL and qPCR 20 copies/ug DNA
# are invented for the synthetic data (no published figure was at hand).
_LLOQ_TEXT = {
    ("cd19_b_cells", "cells/uL"): "0.441",
    ("cd19_b_cells", "10^9/L"): "0.000441",
    ("car_t_cells", "cells/uL"): "1",
    ("car_t_copies", "copies/ug DNA"): "20",
    ("car_t_copies", "copies/µg DNA"): "20",
}
_FU_UNIT_ANALYTE = [t.name for t in _FU_TESTS for _ in t.units] + ["anti_dsdna"] * len(_KITS)
_FU_LLOQ = [_LLOQ_TEXT.get((a, u), "") for a, u in zip(_FU_UNIT_ANALYTE, _FU_UNIT, strict=True)]
# The same limit in the canonical unit (NaN: no LLOQ), to decide which values are below it.
_FU_LLOQ_CANONICAL = np.array([float(x) / f if x else np.nan for x, f in zip(_FU_LLOQ, _FU_FACTOR, strict=True)])
# Semi-quantitative urinalysis as sites print it: ranges by count band; beyond 50 /HPF "TNTC".
_URINE_BAND_EDGES = np.array([2, 5, 10, 20, 50])
_URINE_BANDS = ("0-2", "3-5", "6-10", "11-20", "21-50", "TNTC")

# Lab collections besides the visits, for infused subjects (days since infusion): dense early draws while
# neutrophils and platelets are lowest and CAR-T cells expand, then monthly ones between the scheduled visits.
_EARLY_DAYS = (0, 2, 4, 7, 10, 14, 17, 21, 24)
_MONTHLY_DAYS = (60, 120, 150, 210, 240, 270, 300, 330)  # +- _MONTHLY_JITTER
_MONTHLY_JITTER = 3
_ALL_EARLY, _ALL_MONTHLY = frozenset(_EARLY_DAYS), frozenset(_MONTHLY_DAYS)
_BLOOD_COUNT = frozenset(("platelets", "wbc", "neutrophils", "lymphocytes", "hemoglobin", "creatinine", "egfr"))
# Which analytes a collection holds: (at screening, at visits after infusion, early days, monthly days).
# Further rules in _followup_labs: CAR-T only up to day 200 and qPCR only for subjects whose site runs it, IgG
# not at unscheduled visits, 24-hour urine protein at a quarter of visits.
# Lymphocytes and CD4 are selection-panel analytes: the selection labs carry their screening values already.
_LAB_SCHEDULE: dict[str, tuple[bool, bool, frozenset[int], frozenset[int]]] = {
    **{name: (True, True, _ALL_EARLY, _ALL_MONTHLY) for name in _BLOOD_COUNT},
    "lymphocytes": (False, True, _ALL_EARLY, _ALL_MONTHLY),
    "cd4_t_cells": (False, True, frozenset((7, 14, 21)), frozenset((120, 240))),
    "cd19_b_cells": (True, True, frozenset((4, 7, 14, 21)), _ALL_MONTHLY),
    "car_t_cells": (False, True, _ALL_EARLY - {0}, frozenset((60,))),
    "car_t_copies": (False, True, frozenset((4, 7, 10, 14, 21)), frozenset((60,))),
}
_VISIT_ONLY = (True, True, frozenset[int](), frozenset[int]())


def _in_slot(name: str, slot: int) -> bool:
    """Whether a collection of `slot` holds analyte `name` (slots: 0 screening visit, 1 visit after infusion,
    2.. the early days, then the monthly days)."""
    at_screening, at_visit, early, monthly = _LAB_SCHEDULE.get(name, _VISIT_ONLY)
    if slot < 2:
        return at_visit if slot else at_screening
    if slot < 2 + len(_EARLY_DAYS):
        return _EARLY_DAYS[slot - 2] in early
    return _MONTHLY_DAYS[slot - 2 - len(_EARLY_DAYS)] in monthly


_SLOT_ANALYTES = np.array(
    [[_in_slot(t.name, slot) for t in _FU_TESTS] for slot in range(2 + len(_EARLY_DAYS) + len(_MONTHLY_DAYS))]
)
_CAR_T_LAST_VISIT_DAY = 200
_CD19_RETURN_FLOOR = 5.0  # cells/uL: the first values after the return day are at least this
_SEROCONVERSION = 0.85  # responders positive at screening: anti-dsDNA negative from the month-3 stage
_SEROLOGICAL_RELAPSE = 0.30  # non-responders positive at screening: negative at months 1-3, positive again later
_LATE_NEUTROPENIA = 0.10  # a second, late ANC dip (days 40-80), as in biphasic ICAHT
_RENAL_ITEMS = ("urinary_casts", "hematuria", "proteinuria", "pyuria")
# CRS/ICANS assessments (days since infusion): daily to day 10, then days 12 and 14.
_EVENT_DAYS = (*range(11), 12, 14)
_FEVER_OTHER_CAUSE = 0.03  # per infused subject: one assessment with fever from another cause (not CRS)


def _course(rng: np.random.Generator, cfg: SynthConfig, responded: np.ndarray, renal: np.ndarray) -> dict[str, Any]:
    """Per-subject parameters of the post-infusion immune course (see docs/synthetic.md, "Immune course").

    Every entry is an array over subjects (drawn for all, used for the infused); `renal` marks the subjects
    who may get a renal signal.
    """
    n = responded.size

    def lognormal(median: float, sd: float, lo: float, hi: float) -> np.ndarray:
        return np.clip(np.exp(rng.normal(np.log(median), sd, n)), lo, hi)

    return {
        # Neutrophils fall from day -3 (lymphodepletion) to an absolute nadir, stay there, then recover.
        "anc_nadir": lognormal(0.4, 0.8, 0.02, 1.5),  # 10^9/L
        "anc_bottom": rng.integers(4, 9, n),  # day the nadir is reached
        "anc_plateau": np.clip(np.rint(lognormal(4.0, 0.7, 0.0, 45.0)), 0, 45),  # days at the nadir
        "anc_recover": rng.integers(4, 11, n),  # days back to the usual level
        "anc_late_start": np.where(rng.random(n) < _LATE_NEUTROPENIA, rng.integers(40, 61, n), 100_000),
        "anc_late_days": rng.integers(10, 21, n),
        "anc_late_factor": rng.uniform(0.25, 0.6, n),
        "plt_nadir": lognormal(110.0, 0.5, 8.0, 400.0),  # 10^9/L
        "plt_bottom": rng.integers(7, 15, n),
        "plt_plateau": rng.integers(0, 8, n),
        "plt_recover": rng.integers(7, 15, n),
        "hgb_factor": rng.uniform(0.80, 0.97, n),  # hemoglobin at its lowest (days 14-24), x its level
        "lym_nadir": lognormal(150.0, 0.6, 10.0, 1000.0),  # cells/uL, days 0-7
        "lym_tau": rng.uniform(30.0, 90.0, n),  # days: recovery time constant
        "cd4_nadir": lognormal(60.0, 0.6, 5.0, 500.0),
        "cd4_tau": rng.uniform(90.0, 240.0, n),
        "car_t_peak": lognormal(40.0, 0.9, 2.0, 2000.0),  # cells/uL
        "car_t_peak_day": rng.integers(7, 15, n),
        "car_t_half_life": rng.uniform(5.0, 12.0, n),  # days, after the peak
        "qpcr": rng.random(n) < 0.5,  # the site also measures CAR transgene copies
        "copies_per_cell": lognormal(300.0, 0.3, 50.0, 2000.0),
        "aplasia_day": rng.integers(2, 6, n),  # first day CD19 B cells are below the LLOQ
        "has_lloq": rng.random(n) < 0.85,  # high-sensitivity flow with an LLOQ; else plain counts
        "igg_drop": np.clip(rng.normal(0.35, 0.18, n), 0.0, 0.8),  # fraction of IgG lost at the lowest
        "renal_signal": renal & (rng.random(n) < cfg.renal_signal),
        "renal_onset": rng.integers(6, 16, n),
        "renal_days": rng.integers(5, 18, n),
        "renal_factor": rng.uniform(1.6, 2.3, n),
        "seroconverts": responded & (rng.random(n) < _SEROCONVERSION),
        "serological_relapse": ~responded & (rng.random(n) < _SEROLOGICAL_RELAPSE),
    }


def _ramp(
    t: np.ndarray,
    start: np.ndarray | float,
    bottom: np.ndarray | float,
    plateau: np.ndarray | float,
    recover: np.ndarray | float,
) -> np.ndarray:
    """A trapezoid in [0, 1]: 0 before `start`, 1 from `bottom` for `plateau` days, back to 0 over `recover`."""
    down = np.clip((t - start) / np.maximum(bottom - start, 1), 0.0, 1.0)
    up = np.clip(1.0 - (t - bottom - plateau) / np.maximum(recover, 1), 0.0, 1.0)
    return np.minimum(down, up)


def _toward(level: np.ndarray, nadir: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Log-linear mix of a usual `level` and a `nadir` (never above the level): depth 0 -> level, 1 -> nadir."""
    return np.exp((1.0 - depth) * np.log(level) + depth * np.log(np.minimum(nadir, level)))


def _car_t_cells(t: np.ndarray, peak: np.ndarray, peak_day: np.ndarray, half_life: np.ndarray) -> np.ndarray:
    """CAR-T cells/uL on day t: log-linear rise from 0.3 on day 1 to the peak, then exponential decay; 0 before."""
    rise = np.exp(np.log(0.3) + (np.log(peak) - np.log(0.3)) * np.clip((t - 1.0) / (peak_day - 1.0), 0.0, 1.0))
    fall = peak * np.exp2(-np.maximum(t - peak_day, 0.0) / half_life)
    return np.where(t < 1.0, 0.0, np.where(t <= peak_day, rise, fall))


@dataclass
class SynthFollowUp:
    """The follow-up part of a cohort (`SynthConfig.followup`).

    Attributes:
        visits: one row per visit (`VISIT_COLUMNS`): descriptors and booleans as "true"/"false" text, null when
            not assessed; `pga` and `prednisone_mg_day` Float64, `immunosuppressants` Int64.
        visit_tags: row-aligned with `visits`: `phase` (0 screening; 1..4 the course stage of months 1, 3, 6,
            12, also for unscheduled visits), `days_since_infusion` (null when not infused), `incomplete`.
        labs: native follow-up lab rows, all String (`FOLLOWUP_LAB_COLUMNS`: the lab columns plus `lloq`),
            sorted by subject, date and analyte; from visits and from blood draws between them.
        lab_tags: row-aligned with `labs`: `analyte`, `visit_row` (index into `visits`; null for a draw),
            `days_since_infusion` (null when not infused), `descriptor` (the SLEDAI-2K descriptor the row
            carries, or null), `lab_descriptor` (that descriptor as the row shows it: the value lies on its
            present side; for C3 and C4 the visit's low complement), `below_lloq`, `alt_unit` (kit units
            included), `alt_code`.
        truth: one row per subject: `infused`, `responded`, `discontinued`, `b_cell_return_day` (days after
            infusion; null when not infused), `screening_sledai_2k` (the weighted sum of the screening
            descriptors, before any cell is left empty), `clinical_sledai_2k_month_6` (null without a month-6
            visit), the immune course's model values (`b_cell_aplasia_day`, `car_t_peak_day`, `car_t_peak`,
            `anc_nadir`, `anc_nadir_days`, `platelet_nadir`, `igg_drop`, `renal_signal_day`, `seroconverted`,
            `serological_relapse`) and the events' (`crs_max_grade`, `crs_onset_day`, `icans_max_grade`,
            `icans_onset_day`).
        events: CRS/ICANS assessments of infused subjects (`EVENT_COLUMNS`): flags as "true"/"false" text,
            numbers typed, null when not assessed.
        event_tags: row-aligned with `events`: `days_since_infusion`, `crs_grade` and `icans_grade` (the true
            ASTCT 2019 grades), `reported_differs`, `incomplete`.
    """

    visits: pl.DataFrame
    visit_tags: pl.DataFrame
    labs: pl.DataFrame
    lab_tags: pl.DataFrame
    truth: pl.DataFrame
    events: pl.DataFrame
    event_tags: pl.DataFrame


def _screening_descriptors(
    rng: np.random.Generator, clinical_part: np.ndarray, nephritis: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per subject, the 22 non-serology descriptors present at screening, summing to `clinical_part` points.

    Descriptors are drawn with the `_SCREEN_P` chances where they still fit, then topped up (`_FILL_ORDER`) to
    the exact total. Returns the (n, 24) presence matrix (serology columns false) and the points left over
    (0 for every subject unless the total cannot be reached).
    """
    n = clinical_part.size
    left = clinical_part.astype(np.int64).copy()
    present = np.zeros((n, len(_SLEDAI)), dtype=bool)
    u = rng.random((n, len(_SLEDAI)), dtype=np.float32)
    chance = _SCREEN_P_ARR[:, 1][None, :] * nephritis[:, None] + _SCREEN_P_ARR[:, 0][None, :] * ~nephritis[:, None]
    for k in _DRAW_ORDER:  # 22 descriptors, not subjects
        take = (u[:, k] < chance[:, k]) & (_W[k] <= left)
        if k == _DRAW_ORDER[-1]:  # keep one 1-point item free, so an odd remainder can always be settled
            take &= ~(present[:, _ONE_POINT].sum(axis=1) == _ONE_POINT.size - 1)
        present[:, k] = take
        left -= _W[k] * take
    for k in _FILL_ORDER:  # 11 descriptors
        take = ~present[:, k] & (_W[k] <= left)
        present[:, k] |= take
        left -= _W[k] * take
    # An odd remainder goes to a 1-point item chosen at random (else one item would carry every odd total).
    first = _ONE_POINT[np.searchsorted(np.cumsum(_ONE_POINT_P), rng.random(n))]
    rows = np.arange(n)
    take = ~present[rows, first] & (left >= 1)
    present[rows, first] |= take
    left -= take
    for k in _ONE_POINT:  # three descriptors
        take = ~present[:, k] & (left >= 1)
        present[:, k] |= take
        left -= take
    # Rarely (about 1 in 100,000) the draws leave a remainder no free item fits: redo those subjects greedily
    # (non-CNS items by descending weight), which always reaches any total up to 37 exactly.
    redo = np.flatnonzero(left > 0)
    present[redo] = False
    left[redo] = clinical_part[redo]
    for k in _GREEDY_ORDER:  # 14 descriptors
        take = left[redo] >= _W[k]
        present[redo, k] = take
        left[redo] -= _W[k] * take
    return present, left


def _by_phase(table: np.ndarray, responded: np.ndarray, phase: np.ndarray) -> np.ndarray:
    return table[responded.astype(np.int64), phase]


def _followup(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    study_s: pl.Series,
    site_s: pl.Series,
    subject_ids: pl.Series,
    ref_day: np.ndarray,
    exposure_day: np.ndarray,
    exposure_missing: np.ndarray,
    responded: np.ndarray,
    values: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
    subject_parts: dict[str, np.ndarray],
    methods: dict[str, np.ndarray],
) -> tuple[dict[str, pl.Series], SynthFollowUp]:
    """Infusion and discontinuation dates, visits and follow-up labs, drawn from their own RNG stream.

    Returns the new subject columns (`FOLLOWUP_SUBJECT_COLUMNS`) and the follow-up tables.
    """
    n = cfg.n_subjects
    cutoff = int(np.datetime64(cfg.data_cutoff, "D").astype(np.int64))
    infused = ~exposure_missing
    infusion_day = exposure_day + rng.integers(3, 6, n, dtype=np.int32)  # lymphodepletion 3-5 days before
    disc_day = infusion_day + rng.integers(20, 401, n, dtype=np.int32)
    # A discontinuation after the data cut-off has not happened yet as far as the snapshot knows.
    discontinued = infused & (rng.random(n) < cfg.discontinuation) & (disc_day <= cutoff)
    b_return = np.rint(np.clip(rng.normal(110.0, 32.0, n), 45.0, 250.0)).astype(np.int32)

    # Visits: screening for everyone; scheduled and unscheduled ones after infusion.
    inf_idx = np.flatnonzero(infused).astype(np.int32)
    s_subj = np.repeat(inf_idx, 4)
    s_k = np.tile(np.arange(4), inf_idx.size)
    s_day = infusion_day[s_subj] + _SCHEDULE_DAY[s_k] + rng.integers(-_SCHEDULE_JITTER[s_k], _SCHEDULE_JITTER[s_k] + 1)
    s_keep = rng.random(s_subj.size) >= cfg.missed_visit
    u_subj = inf_idx[rng.random(inf_idx.size) < cfg.unscheduled_visit]
    gap = rng.integers(0, 3, u_subj.size)
    u_day = infusion_day[u_subj] + rng.integers(_GAP_LO[gap], _GAP_HI[gap] + 1)
    subj = np.concatenate([np.arange(n, dtype=np.int32), s_subj[s_keep], u_subj])
    day = np.concatenate([ref_day - rng.integers(0, 8, n), s_day[s_keep], u_day]).astype(np.int32)
    label = np.concatenate([np.zeros(n, np.int8), (s_k[s_keep] + 1).astype(np.int8), np.full(u_subj.size, 5, np.int8)])
    phase = np.concatenate([np.zeros(n, np.int64), s_k[s_keep] + 1, gap + 1])
    keep = (day <= cutoff) & (~discontinued[subj] | (day <= disc_day[subj]))
    order = np.flatnonzero(keep)
    order = order[np.argsort(subj[order].astype(np.int64) * 100_000 + (day[order] - ref_day.min()), kind="stable")]
    subj, day, label, phase = subj[order], day[order], label[order], phase[order]
    v = subj.size
    resp = responded[subj]
    post = phase > 0

    # Descriptors: screening items sum to the subjects file's clinical part; after infusion they persist with
    # a phase- and response-dependent chance; a non-responder always keeps some activity.
    nephritis = subject_parts["ln_class"] > 0
    screen, residual = _screening_descriptors(rng, subject_parts["clinical_part"], nephritis)
    # The immune course and the CRS/ICANS events draw from a third stream, so the visit draws above and below
    # keep their values whatever the course needs.
    course_rng = np.random.default_rng([cfg.seed, 13])
    renal = nephritis | screen[:, [_D[item] for item in _RENAL_ITEMS]].any(axis=1)
    course = _course(course_rng, cfg, responded, renal & infused)
    present = screen[subj] & (
        rng.random((v, len(_SLEDAI)), dtype=np.float32) < _by_phase(_PERSIST, resp, phase)[:, None]
    )
    quiet = post & ~resp & ~present[:, _NON_SEROLOGY].any(axis=1)
    as_arthritis = rng.random(v) < 0.5
    present[:, _D["arthritis"]] |= quiet & as_arthritis
    present[:, _D["rash"]] |= quiet & ~as_arthritis

    # Serology from the values the follow-up labs carry (screening: the baseline truth itself).
    noise = np.where(post[:, None], np.exp(0.15 * rng.standard_normal((v, 3))), 1.0)
    dsdna = _quantise(values[subj, _DSDNA] * _by_phase(_DSDNA_MULT, resp, phase) * noise[:, 0], _DSDNA)
    dsdna = np.where(post & ~kit[subj] & (dsdna == 30.0), 30.1, dsdna)  # off the cut-off: no >/>= ambiguity
    # Seroconversion (responders) and serological relapse (some non-responders) of subjects positive at
    # screening: negative is 30-90 % of the cut-off, positive again 1.5-4 x it (never below the usual course).
    base_kit = np.rint(values[:, _DSDNA] * _VAR_FACTOR[kit_var] * 10.0) / 10.0
    positive_subject = np.where(kit, base_kit / _VAR_REF_HIGH[kit_var], values[:, _DSDNA] / 30.0) >= 1.0
    positive = positive_subject[subj]
    negative_value = _quantise(30.0 * course_rng.uniform(0.3, 0.9, v), _DSDNA)
    relapse_value = _quantise(30.0 * course_rng.uniform(1.5, 4.0, v), _DSDNA)
    relapse = course["serological_relapse"][subj] & positive
    to_negative = (course["seroconverts"][subj] & positive & (phase >= 2)) | (relapse & ((phase == 1) | (phase == 2)))
    dsdna = np.where(to_negative, negative_value, dsdna)
    dsdna = np.where(relapse & (phase >= 3), np.maximum(dsdna, relapse_value), dsdna)
    c_mult = _by_phase(_COMPLEMENT_MULT, resp, phase)
    c3 = _quantise(values[subj, _C3] * c_mult * noise[:, 1], _C3)
    c4 = _quantise(values[subj, _C4] * c_mult * noise[:, 2], _C4)
    kit_v = kit_var[subj]
    kit_written = np.rint(dsdna * _VAR_FACTOR[kit_v] * 10.0) / 10.0
    dsdna_ratio = np.where(kit[subj], kit_written / _VAR_REF_HIGH[kit_v], dsdna / 30.0)
    present[:, _D["increased_dna_binding"]] = dsdna_ratio >= 1.0  # as the subjects file's sledai_2k counts it
    present[:, _D["low_complement"]] = (c3 < 0.9) | (c4 < 0.16)

    # Treatment fields.
    pga = np.round(rng.uniform(_by_phase(_PGA_LO, resp, phase), _by_phase(_PGA_HI, resp, phase)), 1)
    pred_screen = rng.choice(_PREDNISONE, n, p=_PREDNISONE_P)[subj]
    pred_taper = np.round(pred_screen / 2.0 / 2.5) * 2.5
    pred_m3 = np.where(rng.random(v) < 0.6, 0.0, rng.choice([2.5, 5.0], v))
    pred_ongoing = rng.choice([5.0, 7.5, 10.0, 15.0, 20.0], v)
    prednisone = np.select(
        [phase == 0, resp & (phase == 1), resp & (phase == 2), resp, phase == 1],
        [pred_screen, pred_taper, pred_m3, 0.0, pred_screen],
        pred_ongoing,
    )
    is_screen = rng.choice(4, n, p=[0.15, 0.45, 0.30, 0.10])[subj]
    immunosuppressants = np.select(
        [phase == 0, resp | (phase == 1)], [is_screen, 0], (rng.random(v) < 0.5).astype(np.int64)
    )
    since = np.where(infused[subj], day - infusion_day[subj], 0)
    failure_day = np.where(rng.random(n) < 0.25, rng.integers(60, 301, n), 100_000)[subj]
    failure = post & ~resp & (since >= failure_day)
    investigational = failure & (rng.random(n) < 0.2)[subj]
    antimalarial = (rng.random(n) < 0.75)[subj]
    hemolytic = (rng.random(n) < 0.03)[subj] & (~post | (~resp & (rng.random(v) < 0.5)))
    gi = (rng.random(n) < 0.02)[subj] & (~post | (~resp & (rng.random(v) < 0.5)))

    # The lab side of the lab-derivable descriptors: as reported, except a few contradictions. (Cytopenias
    # after infusion come on top, from the immune course in _followup_labs; the site excludes the drug cause.)
    lab_side = present.copy()
    for item in ("urinary_casts", "hematuria", "proteinuria", "pyuria", "thrombocytopenia", "leukopenia"):
        lab_side[:, _D[item]] ^= rng.random(v) < cfg.lab_contradicts_report

    # Not assessed: on an incomplete visit, one to three of 27 cells (24 descriptors, pga, prednisone,
    # immunosuppressants) are left empty.
    incomplete = rng.random(v) < cfg.visit_incomplete
    blank_rank = np.argsort(rng.random((v, 27), dtype=np.float32), axis=1)
    n_blank = rng.integers(1, 4, v)
    blank = np.zeros((v, 27), dtype=bool)
    np.put_along_axis(blank, blank_rank, np.arange(27)[None, :] < n_blank[:, None], axis=1)
    blank &= incomplete[:, None]

    dates = _day_strings(day)
    visit_study, visit_subject = study_s.gather(subj), subject_ids.gather(subj)
    cols: dict[str, pl.Series | np.ndarray] = {
        "study_id": visit_study,
        "subject_id": visit_subject,
        "visit": _gather(VISIT_LABELS, label),
        "visit_date": dates,
    }
    for item, k in _D.items():  # 24 descriptors
        cols[item] = _text_bool(present[:, k], blank[:, k])
    cols["pga"] = pl.Series(pga).scatter(np.flatnonzero(blank[:, 24]), None)
    cols["prednisone_mg_day"] = pl.Series(prednisone).scatter(np.flatnonzero(blank[:, 25]), None)
    for name, flag in zip(VISIT_BOOLEAN_FIELDS, (antimalarial, hemolytic, gi, investigational, failure), strict=True):
        cols[name] = _text_bool(flag, np.zeros(v, dtype=bool))
    cols["immunosuppressants"] = pl.Series(immunosuppressants.astype(np.int64)).scatter(
        np.flatnonzero(blank[:, 26]), None
    )
    visits = pl.DataFrame(cols).select(VISIT_COLUMNS)
    visit_tags = pl.DataFrame(
        {
            "phase": phase.astype(np.int8),
            "days_since_infusion": pl.Series(since.astype(np.int64)).scatter(np.flatnonzero(~infused[subj]), None),
            "incomplete": incomplete,
        }
    )

    last_day = np.where(discontinued, np.minimum(disc_day, cutoff), cutoff)
    labs, lab_tags = _followup_labs(
        rng,
        cfg,
        visit_subj=subj,
        visit_day=day,
        phase=phase,
        label=label,
        lab_side=lab_side,
        hemolytic=hemolytic,
        serology=(dsdna, c3, c4),
        values=values,
        kit=kit,
        kit_var=kit_var,
        subject_parts=subject_parts,
        b_return=b_return,
        course=course,
        infused=infused,
        infusion_day=infusion_day,
        last_day=last_day,
        methods=methods,
        ids=(study_s, site_s, subject_ids),
    )
    events, event_tags, event_truth = _events(
        course_rng, cfg, infused=infused, infusion_day=infusion_day, last_day=last_day, ids=(study_s, subject_ids)
    )

    clinical_points = (present[:, _NON_SEROLOGY] * _W[_NON_SEROLOGY]).sum(axis=1)
    month6 = np.flatnonzero(label == 3)
    screening = np.flatnonzero(label == 0)  # exactly one per subject
    clinical_m6 = pl.Series([None] * n, dtype=pl.Int64).scatter(subj[month6], clinical_points[month6])
    truth = pl.DataFrame(
        {
            "study_id": study_s,
            "subject_id": subject_ids,
            "infused": infused,
            "responded": responded,
            "discontinued": discontinued,
            "b_cell_return_day": pl.Series(b_return.astype(np.int64)).scatter(np.flatnonzero(~infused), None),
            "screening_sledai_2k": pl.Series(np.zeros(n, np.int64)).scatter(
                subj[screening], (present[screening] * _W).sum(axis=1)
            ),
            "screening_fill_residual": residual,
            "clinical_sledai_2k_month_6": clinical_m6,
            **_course_truth(course, infused=infused, dsdna_positive=positive_subject),
            **event_truth,
        }
    )
    subject_columns = {
        "infusion_date": _day_strings(infusion_day).scatter(np.flatnonzero(~infused), None),
        "discontinued_date": _day_strings(disc_day).scatter(np.flatnonzero(~discontinued), None),
    }
    return subject_columns, SynthFollowUp(
        visits=visits,
        visit_tags=visit_tags,
        labs=labs,
        lab_tags=lab_tags,
        truth=truth,
        events=events,
        event_tags=event_tags,
    )


def _text_bool(flag: np.ndarray, blank: np.ndarray) -> pl.Series:
    """Booleans as a site's export writes them: "true"/"false", null where not assessed."""
    return _gather(("false", "true"), flag.astype(np.int64)).scatter(np.flatnonzero(blank), None)


def _course_truth(course: dict[str, Any], *, infused: np.ndarray, dsdna_positive: np.ndarray) -> dict[str, pl.Series]:
    """Per-subject truth of the immune course (model values, before sampling and rounding); null if not infused."""
    not_infused = np.flatnonzero(~infused)

    def col(values: np.ndarray, dtype: type[pl.DataType] = pl.Float64) -> pl.Series:
        return pl.Series(values).cast(dtype).scatter(not_infused, None)

    signal = course["renal_signal"]
    return {
        "b_cell_aplasia_day": col(course["aplasia_day"], pl.Int64),
        "car_t_peak_day": col(course["car_t_peak_day"], pl.Int64),
        "car_t_peak": col(course["car_t_peak"]),
        "anc_nadir": col(course["anc_nadir"]),
        "anc_nadir_days": col(course["anc_plateau"], pl.Int64),
        "platelet_nadir": col(course["plt_nadir"]),
        "igg_drop": col(course["igg_drop"]),
        "renal_signal_day": col(np.where(signal, course["renal_onset"], 0), pl.Int64).scatter(
            np.flatnonzero(~signal), None
        ),
        "seroconverted": col(course["seroconverts"] & dsdna_positive, pl.Boolean),
        "serological_relapse": col(course["serological_relapse"] & dsdna_positive, pl.Boolean),
    }


def _collections(
    rng: np.random.Generator,
    *,
    visit_subj: np.ndarray,
    visit_day: np.ndarray,
    phase: np.ndarray,
    infused: np.ndarray,
    infusion_day: np.ndarray,
    last_day: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every lab collection, sorted by subject and day: the visits plus the early and monthly draws of infused
    subjects (none after the cut-off or discontinuation, none on a day the subject has a visit).

    Returns `subj`, `day`, `slot` (row of _SLOT_ANALYTES) and `visit` (index into the visits, -1 for a draw).
    """
    early, monthly = np.array(_EARLY_DAYS), np.array(_MONTHLY_DAYS)
    inf_idx = np.flatnonzero(infused).astype(np.int32)
    e_subj, e_k = np.repeat(inf_idx, early.size), np.tile(np.arange(early.size), inf_idx.size)
    m_subj, m_k = np.repeat(inf_idx, monthly.size), np.tile(np.arange(monthly.size), inf_idx.size)
    jitter = rng.integers(-_MONTHLY_JITTER, _MONTHLY_JITTER + 1, m_subj.size)
    d_subj = np.concatenate([e_subj, m_subj])
    d_day = np.concatenate([infusion_day[e_subj] + early[e_k], infusion_day[m_subj] + monthly[m_k] + jitter])
    d_slot = np.concatenate([2 + e_k, 2 + early.size + m_k])

    def key(subj: np.ndarray, day: np.ndarray) -> np.ndarray:
        return subj.astype(np.int64) * 1_000_000 + day.astype(np.int64)

    keep = (d_day <= last_day[d_subj]) & ~np.isin(key(d_subj, d_day), key(visit_subj, visit_day))
    subj = np.concatenate([visit_subj, d_subj[keep]]).astype(np.int32)
    day = np.concatenate([visit_day, d_day[keep]]).astype(np.int32)
    slot = np.concatenate([np.where(phase == 0, 0, 1), d_slot[keep]]).astype(np.int16)
    visit = np.concatenate([np.arange(visit_subj.size), np.full(int(keep.sum()), -1)]).astype(np.int32)
    order = np.argsort(key(subj, day), kind="stable")
    return {"subj": subj[order], "day": day[order], "slot": slot[order], "visit": visit[order]}


def _followup_labs(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    visit_subj: np.ndarray,
    visit_day: np.ndarray,
    phase: np.ndarray,
    label: np.ndarray,
    lab_side: np.ndarray,
    hemolytic: np.ndarray,
    serology: tuple[np.ndarray, np.ndarray, np.ndarray],
    values: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
    subject_parts: dict[str, np.ndarray],
    b_return: np.ndarray,
    course: dict[str, Any],
    infused: np.ndarray,
    infusion_day: np.ndarray,
    last_day: np.ndarray,
    methods: dict[str, np.ndarray],
    ids: tuple[pl.Series, pl.Series, pl.Series],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Native follow-up lab rows: per collection (visit or draw) the analytes of its slot, rendered in one pass.

    Values are computed per collection (one array per analyte), then gathered into the (collection x analyte)
    rows that exist. See docs/synthetic.md ("Follow-up labs", "Immune course").
    """
    n = values.shape[0]
    coll = _collections(
        rng,
        visit_subj=visit_subj,
        visit_day=visit_day,
        phase=phase,
        infused=infused,
        infusion_day=infusion_day,
        last_day=last_day,
    )
    s, c_visit = coll["subj"], coll["visit"]
    c = s.size
    is_visit = c_visit >= 0
    vr = np.maximum(c_visit, 0)
    on = infused[s] & (coll["slot"] != 0)  # the course applies: infused, after the screening visit
    t = np.where(on, coll["day"] - infusion_day[s], -1000).astype(np.float64)
    p = course

    def side(item: str) -> np.ndarray:
        return lab_side[vr, _D[item]] & is_visit

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, c)

    def noise(sd: float) -> np.ndarray:
        return np.exp(sd * rng.standard_normal(c))

    # Usual levels per subject (with a little day-to-day noise), then the SLE side each reported cytopenia
    # needs, then the course: log-linear toward each nadir (all factors <= 1, so a reported cytopenia stays).
    plt_level = np.clip(240.0 * np.exp(0.25 * rng.standard_normal(n)), 110.0, 600.0)
    wbc_level = np.clip(5.8 * np.exp(0.3 * rng.standard_normal(n)), 3.3, 15.0)
    anc_share = np.asarray(rng.uniform(0.5, 0.7, n))
    hgb_level = np.clip(rng.normal(122.0, 12.0, n), 100.0, 165.0)
    igg_level = np.clip(rng.normal(11.5, 3.0, n), 5.0, 25.0)
    val: dict[str, np.ndarray] = {}
    plt = np.where(side("thrombocytopenia"), uniform(40, 95), np.maximum(plt_level[s] * noise(0.08), 105.0))
    depth = _ramp(t, -2.0, p["plt_bottom"][s], p["plt_plateau"][s], p["plt_recover"][s])
    val["platelets"] = _toward(plt, p["plt_nadir"][s] * noise(0.1), depth)
    wbc = np.where(side("leukopenia"), uniform(1.5, 2.9), np.maximum(wbc_level[s] * noise(0.08), 3.1))
    anc_usual = wbc * anc_share[s]
    depth = _ramp(t, -3.0, p["anc_bottom"][s], p["anc_plateau"][s], p["anc_recover"][s])
    late = (t >= p["anc_late_start"][s]) & (t < p["anc_late_start"][s] + p["anc_late_days"][s])
    anc = _toward(anc_usual, p["anc_nadir"][s] * noise(0.1), depth) * np.where(late, p["anc_late_factor"][s], 1.0)
    lym_usual = values[s, _LYM] * np.where(is_visit & ~on, 1.0, noise(0.1))
    # Lymphodepletion from day -4, deepest days 0-7, then recovery; CAR-T cells are lymphocytes too.
    lym_depth = np.clip((t + 4.0) / 4.0, 0.0, 1.0) * np.exp(-np.maximum(t - 7.0, 0.0) / p["lym_tau"][s])
    lym_model = _toward(lym_usual, p["lym_nadir"][s], lym_depth)
    car_t = _car_t_cells(t, p["car_t_peak"][s], p["car_t_peak_day"][s], p["car_t_half_life"][s]) * noise(0.15)
    other = (wbc - anc_usual) * np.clip(0.4 + 0.6 * lym_model / lym_usual, 0.4, 1.0)  # lymphocytes, monocytes...
    val["wbc"] = anc + other + car_t / 1000.0
    val["neutrophils"] = anc
    val["lymphocytes"] = np.minimum(lym_model + car_t, 950.0 * other + car_t)
    cd4_depth = np.clip((t + 4.0) / 4.0, 0.0, 1.0) * np.exp(-np.maximum(t - 7.0, 0.0) / p["cd4_tau"][s])
    cd4 = _toward(values[s, _CD4] * np.where(is_visit & ~on, 1.0, noise(0.1)), p["cd4_nadir"][s], cd4_depth)
    val["cd4_t_cells"] = np.minimum(cd4, 0.9 * val["lymphocytes"])
    hgb = np.where(hemolytic[vr] & is_visit, uniform(75, 95), hgb_level[s] + 4.0 * rng.standard_normal(c))
    val["hemoglobin"] = hgb * (1.0 - _ramp(t, 0.0, 14.0, 10.0, 35.0) * (1.0 - p["hgb_factor"][s]))

    # Kidney function: the collection's eGFR is the subject's (the subjects file's at screening) with 5 %
    # log-normal noise after it; creatinine gives that eGFR by CKD-EPI 2021, raised during a renal signal; the
    # lab's eGFR is CKD-EPI 2021 of the creatinine as rounded, so the two rows agree as a lab's would.
    egfr_now = subject_parts["egfr"][s] * np.where(on, noise(0.05), 1.0)
    age, female = subject_parts["age"][s], subject_parts["female"][s]
    signal = p["renal_signal"][s] & (t >= p["renal_onset"][s]) & (t < p["renal_onset"][s] + p["renal_days"][s])
    creatinine = creatinine_for_egfr(egfr_now, age, female) * _CREATININE_UMOL_PER_MG_DL
    creatinine = np.rint(creatinine * np.where(signal, p["renal_factor"][s], 1.0))
    val["creatinine"] = creatinine
    val["egfr"] = ckd_epi_2021(creatinine / _CREATININE_UMOL_PER_MG_DL, age, female)

    # Urine and serology: visits only (the rows' sides as reported, see _followup).
    val["upcr"] = np.where(side("proteinuria"), uniform(0.7, 4.0), uniform(0.03, 0.35))
    val["urine_protein_24h"] = np.where(side("proteinuria"), uniform(0.7, 5.0), uniform(0.05, 0.35))
    val["urine_rbc"] = np.where(side("hematuria"), rng.integers(6, 61, c), rng.integers(0, 6, c))
    val["urine_wbc"] = np.where(side("pyuria"), rng.integers(6, 61, c), rng.integers(0, 6, c))
    val["urine_casts"] = np.where(side("urinary_casts"), rng.integers(1, 6, c), 0)
    dsdna, c3, c4 = serology
    val["anti_dsdna"], val["c3"], val["c4"] = dsdna[vr], c3[vr], c4[vr]

    # IgG falls toward 1 - igg_drop of its level over about a month, recovering slowly from 2 months after
    # B cells return. B cells: partly depleted before aplasia, below the LLOQ (or 0-2 cells/uL where the lab
    # has none) until the return day, then back to the screening level over about five months.
    ret = b_return[s].astype(np.float64)
    fall = (1.0 - np.exp(-np.maximum(t, 0.0) / 30.0)) * np.where(t > ret + 60.0, np.exp(-(t - ret - 60.0) / 150.0), 1.0)
    val["igg"] = igg_level[s] * (1.0 - p["igg_drop"][s] * fall) * np.where(on, noise(0.03), 1.0)
    cd19 = values[s, _CD19]
    aplasia = np.where(p["has_lloq"][s], 0.0, rng.integers(0, 3, c))
    recovered = np.maximum(cd19 * np.minimum(1.0, 0.02 + (t - ret) / 150.0) * noise(0.1), _CD19_RETURN_FLOOR)
    val["cd19_b_cells"] = np.select(
        [~on, t < p["aplasia_day"][s], t < ret], [cd19, cd19 * 0.3 * noise(0.2), aplasia], recovered
    )
    val["car_t_cells"] = car_t
    val["car_t_copies"] = car_t * p["copies_per_cell"][s] * noise(0.3)

    # Which rows exist: the slot's analytes, then the rules the slot table cannot say, then a few not sent.
    sent = _SLOT_ANALYTES[coll["slot"]] & (
        rng.random((c, len(_FU_TESTS)), dtype=np.float32) >= cfg.followup_lab_missing
    )
    since = coll["day"] - infusion_day[s]
    for name in ("car_t_cells", "car_t_copies"):  # two analytes
        sent[:, _F[name]] &= on & (since <= _CAR_T_LAST_VISIT_DAY)
    sent[:, _F["car_t_copies"]] &= p["qpcr"][s]
    sent[:, _F["urine_protein_24h"]] &= rng.random(c) < 0.25
    sent[:, _F["igg"]] &= ~is_visit | (label[vr] != 5)
    row_coll, test = np.nonzero(sent)  # row-major: by collection (subject, date), then analyte order
    del sent
    row_coll, test = row_coll.astype(np.int32), test.astype(np.int8)  # narrow: millions of rows
    rows = row_coll.size
    value = np.zeros(rows)
    for k, name in enumerate(FOLLOWUP_ANALYTES):  # one pass per analyte, not per row
        at = np.flatnonzero(test == k)
        value[at] = val[name][row_coll[at]]
    del val
    value = np.rint(value / _FU_QUANTUM[test]) * _FU_QUANTUM[test]
    r_subj = s[row_coll]

    # Unit variant: kit subjects' anti-dsDNA in their kit unit; otherwise canonical or an alternative.
    alt_unit = (_FU_UNIT_COUNT[test] > 1) & (rng.random(rows, dtype=np.float32) < cfg.followup_alt_unit)
    pick = (rng.random(rows, dtype=np.float32) * (_FU_UNIT_COUNT[test] - 1)).astype(np.int16)
    uvar = np.where(alt_unit, _FU_UNIT_START[test] + 1 + pick, _FU_UNIT_START[test]).astype(np.int16)
    del pick
    kit_row = (test == _F["anti_dsdna"]) & kit[r_subj]
    uvar = np.where(kit_row, _FU_KIT_START + np.searchsorted(_VAR_KIT, kit_var[r_subj]), uvar)
    dec = _FU_DEC[uvar]
    written = np.rint(value * _FU_FACTOR[uvar] * _P10F[dec]) / _P10F[dec]
    result = _format_numbers(written, dec)
    # Semi-quantitative urine sediment on 40 % of those rows (counts above 50 /HPF print as "TNTC").
    urine = np.flatnonzero(
        ((test == _F["urine_rbc"]) | (test == _F["urine_wbc"])) & (rng.random(rows, dtype=np.float32) < 0.4)
    )
    result.scatter(urine, _gather(_URINE_BANDS, np.searchsorted(_URINE_BAND_EDGES, value[urine])))
    # The assay's LLOQ on each of its rows; a value below it is written censored, "<" and the limit.
    has_lloq = ~np.isnan(_FU_LLOQ_CANONICAL[uvar]) & ((test != _F["cd19_b_cells"]) | p["has_lloq"][r_subj])
    below_lloq = has_lloq & (value < np.nan_to_num(_FU_LLOQ_CANONICAL[uvar]))
    below = np.flatnonzero(below_lloq)
    lloq = _gather(_FU_LLOQ, uvar).scatter(np.flatnonzero(~has_lloq), None)
    result.scatter(below, "<" + lloq.gather(below))

    alt_code = (_FU_CODE_COUNT[test] > 0) & (rng.random(rows, dtype=np.float32) < cfg.followup_alt_code)
    code = np.where(alt_code, _FU_CODE_START[test] + (rng.random(rows) * _FU_CODE_COUNT[test]).astype(np.int64), test)
    method = np.full(rows, _M_NONE, np.int8)
    is_dsdna = test == _F["anti_dsdna"]
    method[is_dsdna] = methods["dsdna"][r_subj[is_dsdna]]
    is_compl = (test == _F["c3"]) | (test == _F["c4"])
    method[is_compl] = methods["complement"][r_subj[is_compl]]
    for name, code_ in (("cd4_t_cells", _M_FLOW), ("cd19_b_cells", _M_FLOW), ("car_t_cells", _M_FLOW)):
        method[test == _F[name]] = code_
    method[test == _F["egfr"]] = _M_CKD_EPI
    method[test == _F["car_t_copies"]] = _M_QPCR
    # One collection time per collection: about half carry a time of day.
    coll_time = np.where(rng.random(c) < 0.5, 0, rng.integers(1, len(_TIMES), c))
    collected = _day_strings(coll["day"]) + _gather(_TIMES, coll_time)
    study_s, site_s, subject_ids = ids

    labs = pl.DataFrame(
        {
            "study_id": study_s.gather(r_subj),
            "subject_id": subject_ids.gather(r_subj),
            "site_id": site_s.gather(r_subj),
            "test": _gather(_FU_CODES, code),
            "result": result,
            "unit": _gather(_FU_UNIT, uvar),
            "collected_at": collected.gather(row_coll),
            "method": _gather(_METHODS, method),
            "ref_low": _gather(_FU_REF_LOW, uvar),
            "ref_high": _gather(_FU_REF_HIGH, uvar),
            "lloq": lloq,
        }
    )
    descriptor_names = [t.descriptor for t in _FU_TESTS]
    carries = np.array([d is not None for d in descriptor_names])
    lab_descriptor_col = np.array([_D[d] if d is not None else 0 for d in descriptor_names])
    row_visit = c_visit[row_coll]
    lab_descriptor = lab_side[np.maximum(row_visit, 0), lab_descriptor_col[test]]
    # Platelets and WBC carry the course too: their descriptor is what the value shows.
    lab_descriptor = np.select(
        [test == _F["platelets"], test == _F["wbc"]], [value < 100.0, value < 3.0 - 1e-9], lab_descriptor
    )
    row_since = np.where(infused[r_subj], coll["day"][row_coll] - infusion_day[r_subj], 0)
    lab_tags = pl.DataFrame(
        {
            "analyte": _enum_gather(FOLLOWUP_ANALYTES, test),
            "visit_row": pl.Series(row_visit.astype(np.int64)).scatter(np.flatnonzero(row_visit < 0), None),
            "days_since_infusion": pl.Series(row_since.astype(np.int64)).scatter(
                np.flatnonzero(~infused[r_subj]), None
            ),
            "descriptor": pl.Series(descriptor_names, dtype=pl.String).gather(test),
            "lab_descriptor": pl.Series(lab_descriptor).scatter(np.flatnonzero(~carries[test]), None),
            "below_lloq": below_lloq,
            "alt_unit": alt_unit | kit_row,
            "alt_code": alt_code,
        }
    )
    return labs, lab_tags


def _events(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    infused: np.ndarray,
    infusion_day: np.ndarray,
    last_day: np.ndarray,
    ids: tuple[pl.Series, pl.Series],
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, pl.Series]]:
    """CRS and ICANS assessments of infused subjects on `_EVENT_DAYS` (see docs/synthetic.md, "Events").

    Returns the events table (`EVENT_COLUMNS`), its row-aligned tags (the true ASTCT grades) and per-subject
    truth (highest grades and onset days).
    """
    n = infused.size
    study_s, subject_ids = ids
    # Per subject: the highest CRS grade, its onset day and course; ICANS only after a CRS.
    u = rng.random(n)
    crs = np.where(u < cfg.crs_grade_2, 2, np.where(u < cfg.crs_grade_2 + cfg.crs_grade_1, 1, 0)) * infused
    onset = rng.choice(np.arange(1, 6), n, p=[0.3, 0.3, 0.2, 0.1, 0.1])
    fever_days = np.where(crs == 2, rng.integers(2, 4, n), rng.integers(1, 4, n))
    grade_2_days = rng.integers(1, 3, n)  # from the day after onset; anti-cytokine therapy starts then
    hypoxia = rng.random(n) < 0.5  # grade 2 by low-flow oxygen, else by hypotension
    antipyretic = (crs == 1) & (rng.random(n) < 0.3)  # given on the last fever day
    with_crs = cfg.crs_grade_1 + cfg.crs_grade_2
    icans = (crs > 0) & (rng.random(n) < (cfg.icans_grade_1 / with_crs if with_crs > 0 else 0.0))
    icans_onset = onset + rng.integers(1, 4, n)
    icans_days = rng.integers(1, 3, n)
    other_fever = infused & (rng.random(n) < _FEVER_OTHER_CAUSE)
    other_fever_day = rng.choice(np.array(_EVENT_DAYS), n)
    site_flags_hypotension = rng.random(n) < 0.5  # else the reader derives it from systolic_bp
    hour = rng.integers(6, 11, n)

    days = np.array(_EVENT_DAYS)
    inf_idx = np.flatnonzero(infused).astype(np.int32)
    subj, t = np.repeat(inf_idx, days.size), np.tile(days, inf_idx.size)
    keep = infusion_day[subj] + t <= last_day[subj]
    subj, t = subj[keep], t[keep]
    m = subj.size
    g, o = crs[subj], onset[subj]
    grade_2 = (g == 2) & (t >= o + 1) & (t < o + 1 + grade_2_days[subj])
    treated_from = np.where(g == 2, o + 1, np.where(antipyretic[subj], o + fever_days[subj] - 1, 10_000))
    treated = t >= treated_from
    # Fever on the CRS days, except a second grade-2 day, when anti-cytokine therapy has masked it.
    fever = (g > 0) & (t >= o) & (t < o + fever_days[subj]) & ~(grade_2 & (t > o + 1))
    other = other_fever[subj] & (t == other_fever_day[subj]) & ~fever & ~grade_2
    low_bp = grade_2 & ~hypoxia[subj]
    on_oxygen = grade_2 & hypoxia[subj]
    # ASTCT 2019: grade 2 = hypotension without vasopressors or low-flow oxygen (fever not required once
    # treated); grade 1 = fever >= 38 C not attributable to another cause.
    crs_true = np.where(low_bp | on_oxygen, 2, np.where(fever, 1, 0))
    icans_day = icans[subj] & (t >= icans_onset[subj]) & (t < icans_onset[subj] + icans_days[subj])
    icans_true = icans_day.astype(np.int64)

    temperature = np.round(np.where(fever | other, rng.uniform(38.0, 39.6, m), rng.uniform(36.2, 37.7, m)), 1)
    systolic = np.where(low_bp, rng.integers(78, 90, m), rng.integers(100, 141, m))
    device = np.where(on_oxygen, np.where(rng.random(m) < 0.8, 1, 2), 0)  # none, nasal_cannula, blow_by
    flow = rng.integers(1, 5, m).astype(np.float64)  # L/min, low flow
    ice = np.where(icans_day, rng.integers(7, 10, m), 10)
    consciousness = np.where(icans_day & (rng.random(m) < 0.5), 1, 0)  # awakens spontaneously, else awake

    # The site's grades: the truth, one grade off at `event_report_disagreement` of the assessments with a
    # true grade above 0 or a fever from another cause (which a site may still call CRS grade 1).
    off = rng.random(m) < cfg.event_report_disagreement
    down = rng.random(m) < 0.5
    crs_reported = np.where(
        off & (crs_true == 2),
        1,
        np.where(off & (crs_true == 1), np.where(down, 0, 2), np.where(off & other, 1, crs_true)),
    )
    icans_reported = np.where(off & (icans_true == 1), np.where(down, 0, 2), icans_true)
    # Not assessed: one of four measurements left empty.
    incomplete = rng.random(m) < cfg.event_incomplete
    which = rng.integers(0, 4, m)
    blank = [np.flatnonzero(incomplete & (which == k)) for k in range(4)]

    assessed = (
        _day_strings(infusion_day[subj] + t) + "T" + pl.Series(hour[subj]).cast(pl.String).str.zfill(2) + ":00:00"
    )
    no_flow = np.flatnonzero((device != 1) | (incomplete & (which == 2)))  # no cannula, or device not recorded
    events = pl.DataFrame(
        {
            "study_id": study_s.gather(subj),
            "subject_id": subject_ids.gather(subj),
            "assessed_at": assessed,
            "temperature_c": pl.Series(temperature).scatter(blank[0], None),
            "fever_other_cause": _text_bool(other, np.zeros(m, dtype=bool)),
            "anticytokine_or_antipyretic": _text_bool(treated, np.zeros(m, dtype=bool)),
            "systolic_bp": pl.Series(systolic.astype(np.int64)).scatter(blank[1], None),
            "hypotension": _text_bool(systolic < 90, ~site_flags_hypotension[subj]).scatter(blank[1], None),
            "vasopressors": pl.Series(np.zeros(m, dtype=np.int64)),
            "vasopressin": _text_bool(np.zeros(m, dtype=bool), np.zeros(m, dtype=bool)),
            "oxygen_device": _gather(OXYGEN_DEVICES, device).scatter(blank[2], None),
            "oxygen_flow_l_min": pl.Series(flow).scatter(no_flow, None),
            "ice_score": pl.Series(ice.astype(np.int64)).scatter(blank[3], None),
            "consciousness": _gather(CONSCIOUSNESS, consciousness),
            "icans_seizure": _gather(ICANS_SEIZURE, np.zeros(m, dtype=np.int64)),
            "motor_weakness": _text_bool(np.zeros(m, dtype=bool), np.zeros(m, dtype=bool)),
            "cerebral_edema": _gather(CEREBRAL_EDEMA, np.zeros(m, dtype=np.int64)),
            "crs_grade_reported": crs_reported.astype(np.int64),
            "icans_grade_reported": icans_reported.astype(np.int64),
        }
    )
    event_tags = pl.DataFrame(
        {
            "days_since_infusion": t.astype(np.int64),
            "crs_grade": crs_true.astype(np.int64),
            "icans_grade": icans_true,
            "reported_differs": (crs_reported != crs_true) | (icans_reported != icans_true),
            "incomplete": incomplete,
        }
    )

    def worst(grade: np.ndarray) -> tuple[pl.Series, pl.Series]:
        highest = np.zeros(n, dtype=np.int64)
        np.maximum.at(highest, subj, grade)
        first = np.full(n, 10_000, dtype=np.int64)
        np.minimum.at(first, subj, np.where(grade > 0, t, 10_000))
        not_infused = np.flatnonzero(~infused)
        return (
            pl.Series(highest).scatter(not_infused, None),
            pl.Series(first).scatter(np.flatnonzero(first == 10_000), None),
        )

    crs_max, crs_onset = worst(crs_true)
    icans_max, icans_onset_day = worst(icans_true)
    truth = {
        "crs_max_grade": crs_max,
        "crs_onset_day": crs_onset,
        "icans_max_grade": icans_max,
        "icans_onset_day": icans_onset_day,
    }
    return events, event_tags, truth


def oracle_auroc(cohort: SynthCohort) -> float:
    """AUROC of the true response probabilities against the sampled outcomes: the best any model can do.

    Args:
        cohort: a generated cohort (needs both outcomes).

    Returns:
        The AUROC (sklearn.metrics.roc_auc_score).
    """
    from sklearn.metrics import roc_auc_score  # lazy: keeps `import immunostrat.synth` light

    joined = cohort.outcomes.join(cohort.truth, on=["study_id", "subject_id"], how="inner")
    return float(roc_auc_score(joined["responded"].to_numpy(), joined["response_probability"].to_numpy()))


def write_cohort(
    cohort: SynthCohort,
    out_dir: str | os.PathLike[str],
    fmt: Literal["parquet", "csv"] = "parquet",
    *,
    include_truth: bool = False,
) -> dict[str, Path]:
    """Write labs, subjects and outcomes (and optionally truth) atomically as <name>.<fmt> in out_dir.

    A cohort with follow-up also gets `visits` and `labs_followup` (and, with `include_truth`,
    `followup_truth`); `labs` holds the selection-time rows only, so earlier runs on it stay unchanged.

    Each file is written to a temporary file in the same directory and then moved into place with
    os.replace, so readers never see a half-written file. CSV keeps "" distinct from null, so lab rows read
    back with ``pl.read_csv(path, infer_schema=False)`` equal the generated strings.

    Args:
        cohort: the cohort to write.
        out_dir: target directory (created if needed).
        fmt: "parquet" or "csv".
        include_truth: also write truth.<fmt> (kept separate so it is not handed to a pipeline by accident).

    Returns:
        Mapping of table name ("labs", "subjects", "outcomes"[, "visits", "labs_followup"][, "truth"
        [, "followup_truth"]]) to the written path.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"labs": cohort.labs, "subjects": cohort.subjects, "outcomes": cohort.outcomes}
    if cohort.followup is not None:
        tables.update(visits=cohort.followup.visits, labs_followup=cohort.followup.labs, events=cohort.followup.events)
    if include_truth:
        tables["truth"] = cohort.truth
        if cohort.followup is not None:
            tables["followup_truth"] = cohort.followup.truth
    written: dict[str, Path] = {}
    for name, frame in tables.items():  # three to seven files, not rows
        target = out / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            if fmt == "parquet":
                frame.write_parquet(tmp)
            else:
                frame.write_csv(tmp)
        written[name] = target
    return written
