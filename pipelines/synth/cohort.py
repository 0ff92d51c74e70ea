"""`generate_cohort`: draws the cohort part by part, in one fixed order of random draws, and `oracle_auroc`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from immunostrat.synth.baseline_labs import _lab_rows, _render_labs
from immunostrat.synth.config import ENDPOINT, RESPONSE_COEFFICIENTS, SynthConfig
from immunostrat.synth.followup import _followup
from immunostrat.synth.panel import (
    _C3,
    _C4,
    _CD19,
    _DSDNA,
    _IFN_METHODS,
    _VAR_FACTOR,
    _VAR_KIT,
    _VAR_REF_HIGH,
    PANEL_ANALYTES,
)
from immunostrat.synth.results import SynthCohort
from immunostrat.synth.strings import _gather
from immunostrat.synth.subjects import (
    _calibrate_intercept,
    _draw_dates,
    _identifiers,
    _latent_biomarkers,
    _missing_names,
    _subjects,
)


def generate_cohort(config: SynthConfig) -> SynthCohort:
    """Generate a synthetic cohort: messy native lab rows, subjects, outcomes and the truth behind them.

    The steps draw from one RNG in a fixed order (follow-up from streams of its own); reordering them changes
    every cohort.

    Args:
        config: size, seed, population parameters and mess rates.

    Returns:
        The cohort. Deterministic for a given config.
    """
    cfg = config
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_subjects
    ids = _identifiers(rng, cfg)
    study_s, site_s, subject_ids = ids
    dates = _draw_dates(rng, cfg)

    latent = _latent_biomarkers(rng, cfg)
    values = latent["values"]
    kit, kit_var, dsdna_ratio = _kit_units(rng, cfg, values)
    response = _response(rng, cfg, latent=latent, dsdna_ratio=dsdna_ratio)
    responded = response.responded

    after_day = np.where(dates.exposure_missing, dates.reference + 30, dates.exposure)
    rows, miss_subj, miss_test, methods = _lab_rows(
        rng, cfg, latent=latent, ref_day=dates.reference, after_day=after_day, kit=kit, kit_var=kit_var
    )
    labs, lab_tags = _render_labs(rows, study_s, site_s, subject_ids)
    del rows

    subjects, subject_parts = _subjects(rng, cfg, ids=ids, dates=dates, dsdna_ratio=dsdna_ratio, values=values)
    followup = None
    if cfg.followup:
        # Its own RNG stream: every table above stays byte-identical with follow-up on or off.
        new_columns, followup = _followup(
            np.random.default_rng([cfg.seed, 12]),
            cfg,
            ids=ids,
            dates=dates,
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
    truth = _truth(
        (study_s, subject_ids),
        latent=latent,
        kit=kit,
        dsdna_ratio=dsdna_ratio,
        missing_analytes=_missing_names(n, miss_subj, miss_test),
        response=response,
    )
    return SynthCohort(
        labs=labs,
        subjects=subjects,
        outcomes=outcomes,
        truth=truth,
        lab_tags=lab_tags,
        coefficients={"intercept": response.intercept, **RESPONSE_COEFFICIENTS},
        config=cfg,
        followup=followup,
    )


def _kit_units(
    rng: np.random.Generator, cfg: SynthConfig, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per subject: anti-dsDNA in kit units or not, the kit's unit variant, and the true anti-dsDNA ratio.

    Kit units are per subject (one lab, one kit); the truth ratio is taken from the value as written.
    """
    n = cfg.n_subjects
    kit = rng.random(n) < cfg.kit_unit
    kit_var = _VAR_KIT[rng.integers(0, _VAR_KIT.size, n)]
    kit_written = np.rint(values[:, _DSDNA] * _VAR_FACTOR[kit_var] * 10.0) / 10.0
    dsdna_ratio = np.maximum(np.where(kit, kit_written / _VAR_REF_HIGH[kit_var], values[:, _DSDNA] / 30.0), 1e-3)
    return kit, kit_var, dsdna_ratio


class _Response(NamedTuple):
    intercept: float  # b0, calibrated on this cohort
    linear_predictor: np.ndarray  # with the intercept
    probability: np.ndarray
    responded: np.ndarray  # the sampled outcome


def _response(
    rng: np.random.Generator, cfg: SynthConfig, *, latent: dict[str, np.ndarray], dsdna_ratio: np.ndarray
) -> _Response:
    """The latent response (invented, see the package docstring), calibrated to the target response rate."""
    values = latent["values"]
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
    responded = rng.random(cfg.n_subjects) < prob
    return _Response(b0, lp, prob, responded)


def _truth(
    ids: tuple[pl.Series, pl.Series],
    *,
    latent: dict[str, np.ndarray],
    kit: np.ndarray,
    dsdna_ratio: np.ndarray,
    missing_analytes: pl.Series,
    response: _Response,
) -> pl.DataFrame:
    """Per subject, the truth behind the baseline rows and the outcome (`SynthCohort.truth`)."""
    study_s, subject_ids = ids
    values = latent["values"]
    return pl.DataFrame(
        {
            "study_id": study_s,
            "subject_id": subject_ids,
            "ifn_method": _gather(_IFN_METHODS, latent["ifn_method"]),
            "ifn_high": latent["ifn_high"],
            "ifn_signal": latent["ifn_signal"],
            "anti_dsdna_kit_unit": kit,
            "anti_dsdna_ratio": dsdna_ratio,
            **{name: values[:, k] for k, name in enumerate(PANEL_ANALYTES)},
            "missing_analytes": missing_analytes,
            "linear_predictor": response.linear_predictor,
            "response_probability": response.probability,
        }
    )


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
