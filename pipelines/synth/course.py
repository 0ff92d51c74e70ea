"""The post-infusion immune course: per-subject parameters (cytopenias, CAR-T expansion, B-cell aplasia, IgG, a
renal signal, seroconversion), the curves built from them, and their per-subject truth."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from immunostrat.synth.config import SynthConfig

_SEROCONVERSION = 0.85  # responders positive at screening: anti-dsDNA negative from the month-3 stage


_SEROLOGICAL_RELAPSE = 0.30  # non-responders positive at screening: negative at months 1-3, positive again later


_LATE_NEUTROPENIA = 0.10  # a second, late ANC dip (days 40-80), as in biphasic ICAHT


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
