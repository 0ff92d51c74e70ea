"""CRS and ICANS assessments of infused subjects (ASTCT 2019 grades), the site's reported grades and the truth."""

from __future__ import annotations

import numpy as np
import polars as pl

from immunostrat.schemas.event_columns import (
    CEREBRAL_EDEMA,
    CONSCIOUSNESS,
    ICANS_SEIZURE,
    OXYGEN_DEVICES,
)
from immunostrat.synth.config import SynthConfig
from immunostrat.synth.strings import _day_strings, _gather, _text_bool

# CRS/ICANS assessments (days since infusion): daily to day 10, then days 12 and 14.
_EVENT_DAYS = (*range(11), 12, 14)


_FEVER_OTHER_CAUSE = 0.03  # per infused subject: one assessment with fever from another cause (not CRS)


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
