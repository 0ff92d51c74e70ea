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

Follow-up (`SynthConfig.followup`, on by default; its own RNG stream, so every table above is unchanged):
`infusion_date` and `discontinued_date` on the subjects, a visits table (screening, months 1, 3, 6, 12,
unscheduled) with the 24 SLEDAI-2K descriptors, and follow-up lab rows at the visit dates. Screening descriptors
sum to the subjects file's `sledai_2k`; after infusion, responders reach drug-free DORIS remission by month 6
and non-responders keep activity, so the endpoint derived from the visits is the latent outcome.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from immunostrat.io import atomic_path

__all__ = [
    "CLINICAL_DESCRIPTORS",
    "ENDPOINT",
    "FOLLOWUP_ANALYTES",
    "FOLLOWUP_SUBJECT_COLUMNS",
    "LABORATORY_DESCRIPTORS",
    "LAB_COLUMNS",
    "MESS_FIELDS",
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
_LYMPHODEPLETION_P = {"thrombocytopenia": 0.3, "leukopenia": 0.4}  # month-1 lab cytopenia the site attributes to drug


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
# Semi-quantitative urinalysis as sites print it: ranges by count band; beyond 50 /HPF "TNTC".
_URINE_BAND_EDGES = np.array([2, 5, 10, 20, 50])
_URINE_BANDS = ("0-2", "3-5", "6-10", "11-20", "21-50", "TNTC")


@dataclass
class SynthFollowUp:
    """The follow-up part of a cohort (`SynthConfig.followup`).

    Attributes:
        visits: one row per visit (`VISIT_COLUMNS`): descriptors and booleans as "true"/"false" text, null when
            not assessed; `pga` and `prednisone_mg_day` Float64, `immunosuppressants` Int64.
        visit_tags: row-aligned with `visits`: `phase` (0 screening; 1..4 the course stage of months 1, 3, 6,
            12, also for unscheduled visits), `days_since_infusion` (null when not infused), `incomplete`.
        labs: native follow-up lab rows, all String (`LAB_COLUMNS`), sorted by subject, date and analyte.
        lab_tags: row-aligned with `labs`: `analyte`, `visit_row` (index into `visits`), `descriptor` (the
            SLEDAI-2K descriptor the row carries, or null), `lab_descriptor` (that descriptor as the visit's
            labs show it: the value lies on its present side; for C3 and C4 the visit's low complement),
            `alt_unit` (kit units included), `alt_code`.
        truth: one row per subject: `infused`, `responded`, `discontinued`, `b_cell_return_day` (days after
            infusion; null when not infused), `screening_sledai_2k` (the weighted sum of the screening
            descriptors, before any cell is left empty), `clinical_sledai_2k_month_6` (null without a month-6
            visit).
    """

    visits: pl.DataFrame
    visit_tags: pl.DataFrame
    labs: pl.DataFrame
    lab_tags: pl.DataFrame
    truth: pl.DataFrame


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

    # The lab side of the lab-derivable descriptors: as reported, except month-1 cytopenias from
    # lymphodepletion (the site excludes the drug cause) and a few contradictions.
    lab_side = present.copy()
    for item, chance in _LYMPHODEPLETION_P.items():  # two descriptors
        lab_side[:, _D[item]] |= (phase == 1) & (rng.random(v) < chance)
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

    labs, lab_tags = _followup_labs(
        rng,
        cfg,
        visit_subj=subj,
        phase=phase,
        label=label,
        since=since,
        lab_side=lab_side,
        hemolytic=hemolytic,
        serology=(dsdna, c3, c4),
        values=values,
        kit=kit,
        kit_var=kit_var,
        egfr=subject_parts["egfr"],
        subject_parts=subject_parts,
        b_return=b_return,
        methods=methods,
        visit_study=visit_study,
        visit_site=site_s.gather(subj),
        visit_subject=visit_subject,
        dates=dates,
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
        }
    )
    subject_columns = {
        "infusion_date": _day_strings(infusion_day).scatter(np.flatnonzero(~infused), None),
        "discontinued_date": _day_strings(disc_day).scatter(np.flatnonzero(~discontinued), None),
    }
    return subject_columns, SynthFollowUp(
        visits=visits, visit_tags=visit_tags, labs=labs, lab_tags=lab_tags, truth=truth
    )


def _text_bool(flag: np.ndarray, blank: np.ndarray) -> pl.Series:
    """Booleans as a site's export writes them: "true"/"false", null where not assessed."""
    return _gather(("false", "true"), flag.astype(np.int64)).scatter(np.flatnonzero(blank), None)


def _followup_labs(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    visit_subj: np.ndarray,
    phase: np.ndarray,
    label: np.ndarray,
    since: np.ndarray,
    lab_side: np.ndarray,
    hemolytic: np.ndarray,
    serology: tuple[np.ndarray, np.ndarray, np.ndarray],
    values: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
    egfr: np.ndarray,
    subject_parts: dict[str, np.ndarray],
    b_return: np.ndarray,
    methods: dict[str, np.ndarray],
    visit_study: pl.Series,
    visit_site: pl.Series,
    visit_subject: pl.Series,
    dates: pl.Series,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Native follow-up lab rows at every visit date: a (visit x analyte) grid, then rendered in one pass."""
    v = visit_subj.size
    n = values.shape[0]
    subj = visit_subj
    post = phase > 0
    a = len(_FU_TESTS)
    val = np.zeros((v, a))

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, v)

    def side(item: str) -> np.ndarray:
        return lab_side[:, _D[item]]

    # Values on the side of each SLEDAI threshold that the lab side says (strictly away from the cut-offs).
    val[:, _F["platelets"]] = np.where(
        side("thrombocytopenia"), uniform(40, 95), np.clip(240.0 * np.exp(0.25 * rng.standard_normal(v)), 105, 600)
    )
    wbc = np.where(side("leukopenia"), uniform(1.5, 2.9), np.clip(5.8 * np.exp(0.3 * rng.standard_normal(v)), 3.1, 15))
    val[:, _F["wbc"]] = wbc
    val[:, _F["neutrophils"]] = np.round(wbc, 1) * uniform(0.5, 0.7)
    val[:, _F["hemoglobin"]] = np.where(hemolytic, uniform(75, 95), np.clip(rng.normal(122.0, 12.0, v), 96, 165))
    # Kidney function: the visit's eGFR is the subject's (the subjects file's value at screening) with 5 %
    # log-normal noise after it; creatinine is the value that gives that eGFR by CKD-EPI 2021, and the lab's
    # eGFR is CKD-EPI 2021 of the creatinine as rounded, so the two rows agree as a lab's would.
    egfr_visit = egfr[subj] * np.where(post, np.exp(0.05 * rng.standard_normal(v)), 1.0)
    age, female = subject_parts["age"][subj], subject_parts["female"][subj]
    creatinine = np.rint(creatinine_for_egfr(egfr_visit, age, female) * _CREATININE_UMOL_PER_MG_DL)
    val[:, _F["creatinine"]] = creatinine
    val[:, _F["egfr"]] = ckd_epi_2021(creatinine / _CREATININE_UMOL_PER_MG_DL, age, female)
    val[:, _F["upcr"]] = np.where(side("proteinuria"), uniform(0.7, 4.0), uniform(0.03, 0.35))
    val[:, _F["urine_protein_24h"]] = np.where(side("proteinuria"), uniform(0.7, 5.0), uniform(0.05, 0.35))
    val[:, _F["urine_rbc"]] = np.where(side("hematuria"), rng.integers(6, 61, v), rng.integers(0, 6, v))
    val[:, _F["urine_wbc"]] = np.where(side("pyuria"), rng.integers(6, 61, v), rng.integers(0, 6, v))
    val[:, _F["urine_casts"]] = np.where(side("urinary_casts"), rng.integers(1, 6, v), 0)
    igg_base = np.clip(rng.normal(11.5, 3.0, n), 5.0, 25.0)[subj]
    val[:, _F["igg"]] = np.where(post, igg_base * 0.85 * np.exp(0.05 * rng.standard_normal(v)), igg_base)
    # B cells: aplasia after infusion until the subject's return day, then a climb back over ~4 months.
    cd19_base = values[subj, _CD19]
    ret = b_return[subj]
    recovered = cd19_base * np.minimum(1.0, 0.1 + (since - ret) / 120.0)
    val[:, _F["cd19_b_cells"]] = np.select(
        [~post, since < ret], [cd19_base, rng.integers(0, 3, v)], np.maximum(recovered, 5.0)
    )
    dsdna, c3, c4 = serology
    val[:, _F["anti_dsdna"]], val[:, _F["c3"]], val[:, _F["c4"]] = dsdna, c3, c4
    q = _FU_QUANTUM
    val = np.rint(val / q) * q

    # Which rows exist: 24-hour protein on a quarter of visits, IgG at scheduled visits, a few not sent.
    sent = rng.random((v, a), dtype=np.float32) >= cfg.followup_lab_missing
    sent[:, _F["urine_protein_24h"]] &= rng.random(v) < 0.25
    sent[:, _F["igg"]] &= label != 5
    row_visit, test = np.nonzero(sent)  # row-major: by visit (subject, date), then analyte order
    del sent
    row_visit, test = row_visit.astype(np.int32), test.astype(np.int8)  # narrow: millions of rows
    rows = row_visit.size
    value = val[row_visit, test]
    r_subj = subj[row_visit]

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

    alt_code = (_FU_CODE_COUNT[test] > 0) & (rng.random(rows, dtype=np.float32) < cfg.followup_alt_code)
    code = np.where(alt_code, _FU_CODE_START[test] + (rng.random(rows) * _FU_CODE_COUNT[test]).astype(np.int64), test)
    method = np.full(rows, _M_NONE, np.int8)
    is_dsdna = test == _F["anti_dsdna"]
    method[is_dsdna] = methods["dsdna"][r_subj[is_dsdna]]
    is_compl = (test == _F["c3"]) | (test == _F["c4"])
    method[is_compl] = methods["complement"][r_subj[is_compl]]
    method[test == _F["cd19_b_cells"]] = _M_FLOW
    method[test == _F["egfr"]] = _M_CKD_EPI
    # One collection time per visit: about half the visits carry a time of day.
    visit_time = np.where(rng.random(v) < 0.5, 0, rng.integers(1, len(_TIMES), v))
    collected = dates + _gather(_TIMES, visit_time)

    labs = pl.DataFrame(
        {
            "study_id": visit_study.gather(row_visit),
            "subject_id": visit_subject.gather(row_visit),
            "site_id": visit_site.gather(row_visit),
            "test": _gather(_FU_CODES, code),
            "result": result,
            "unit": _gather(_FU_UNIT, uvar),
            "collected_at": collected.gather(row_visit),
            "method": _gather(_METHODS, method),
            "ref_low": _gather(_FU_REF_LOW, uvar),
            "ref_high": _gather(_FU_REF_HIGH, uvar),
        }
    )
    descriptor_names = [t.descriptor for t in _FU_TESTS]
    carries = np.array([d is not None for d in descriptor_names])
    lab_descriptor_col = np.array([_D[d] if d is not None else 0 for d in descriptor_names])
    lab_descriptor = lab_side[row_visit, lab_descriptor_col[test]]
    lab_tags = pl.DataFrame(
        {
            "analyte": _enum_gather(FOLLOWUP_ANALYTES, test),
            "visit_row": row_visit.astype(np.int64),
            "descriptor": pl.Series(descriptor_names, dtype=pl.String).gather(test),
            "lab_descriptor": pl.Series(lab_descriptor).scatter(np.flatnonzero(~carries[test]), None),
            "alt_unit": alt_unit | kit_row,
            "alt_code": alt_code,
        }
    )
    return labs, lab_tags


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
        tables.update(visits=cohort.followup.visits, labs_followup=cohort.followup.labs)
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
