"""Subjects and their latent baseline: identifiers, biomarkers, the subjects listing, missing analytes, and the
response model's intercept."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from immunostrat.synth.config import SUBJECT_COLUMNS, SynthConfig
from immunostrat.synth.panel import (
    _C3,
    _C4,
    _CD3,
    _CD4,
    _CD8,
    _CD19,
    _DSDNA,
    _EPOCH_2025,
    _FOLLOW_UP_DAYS,
    _IFN,
    _IFN_CUTOFF,
    _IFN_INCLUSIVE,
    _IFN_METHODS,
    _IFN_WEIGHTS,
    _LYM,
    _MEAN_Z,
    _N_CORE,
    _PB,
    _PCT,
    PANEL_ANALYTES,
    _quantise,
)
from immunostrat.synth.strings import _day_strings, _gather


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


class _Dates(NamedTuple):
    """Per subject, as days since 1970-01-01."""

    reference: np.ndarray
    exposure: np.ndarray  # drawn for every subject; not sent where `exposure_missing`
    exposure_missing: np.ndarray  # not yet dosed, or withdrawn before infusion


def _draw_dates(rng: np.random.Generator, cfg: SynthConfig) -> _Dates:
    """Reference dates from 2025-01-01 to leave room for exposure and follow-up before the cut-off; exposure
    14-40 days after, missing for 5 %."""
    n = cfg.n_subjects
    last_ref = int(np.datetime64(cfg.data_cutoff, "D").astype(np.int64)) - _FOLLOW_UP_DAYS
    reference = rng.integers(_EPOCH_2025, last_ref + 1, n, dtype=np.int32)
    exposure = reference + rng.integers(14, 41, n, dtype=np.int32)
    return _Dates(reference, exposure, rng.random(n) < 0.05)


def _subjects(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    ids: tuple[pl.Series, pl.Series, pl.Series],
    dates: _Dates,
    dsdna_ratio: np.ndarray,
    values: np.ndarray,
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Subject listing: demographics, dates and the clinical fields eligibility rules use.

    Also returns the parts the follow-up generator builds on: `clinical_part` (SLEDAI-2K without the two
    serology items), `ln_class` (index into the nephritis classes, 0 = none), `egfr` (before nulls), `age` and
    `female` (for the creatinine of an eGFR, CKD-EPI 2021).
    """
    n = cfg.n_subjects
    study_s, site_s, subject_ids = ids
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
    null["_null_first_exposure_date"] = dates.exposure_missing
    frame = (
        pl.DataFrame(
            {
                "study_id": study_s,
                "subject_id": subject_ids,
                "site_id": site_s,
                "sex": _gather(("F", "M"), (rng.random(n) >= 0.9).astype(np.int64)),
                "age_years": np.clip(np.rint(rng.normal(38.0, 11.0, n)), 14, 82).astype(np.int64),
                "reference_date": _day_strings(dates.reference),
                "first_exposure_date": _day_strings(dates.exposure),
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
