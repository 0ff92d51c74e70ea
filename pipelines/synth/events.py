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
from immunostrat.synth.visits import _Infusion

# CRS/ICANS assessments (days since infusion): daily to day 10, then days 12 and 14.
_EVENT_DAYS = (*range(11), 12, 14)


_FEVER_OTHER_CAUSE = 0.03  # per infused subject: one assessment with fever from another cause (not CRS)


def _events(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    infusion: _Infusion,
    ids: tuple[pl.Series, pl.Series],
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, pl.Series]]:
    """CRS and ICANS assessments of infused subjects on `_EVENT_DAYS` (see docs/synthetic.md, "Events").

    The steps draw in a fixed order; reordering them changes every cohort. Returns the events table
    (`EVENT_COLUMNS`), its row-aligned tags (the true ASTCT grades) and per-subject truth (highest grades and
    onset days).
    """
    infused, infusion_day = infusion.infused, infusion.day
    course = _subject_courses(rng, cfg, infused)
    days = np.array(_EVENT_DAYS)
    inf_idx = np.flatnonzero(infused).astype(np.int32)
    subj, t = np.repeat(inf_idx, days.size), np.tile(days, inf_idx.size)
    keep = infusion_day[subj] + t <= infusion.last_day[subj]
    subj, t = subj[keep], t[keep]
    state = _assessment_states(course, subj, t)
    measured = _measurements(rng, state)
    crs_reported, icans_reported = _reported_grades(rng, cfg, state)
    # Not assessed: one of four measurements left empty.
    m = subj.size
    incomplete = rng.random(m) < cfg.event_incomplete
    which = rng.integers(0, 4, m)

    events = _events_frame(
        ids,
        subj=subj,
        assessed_day=infusion_day[subj] + t,
        hour=course["hour"][subj],
        state=state,
        measured=measured,
        site_flags_hypotension=course["site_flags_hypotension"][subj],
        blank_which=np.where(incomplete, which, -1),
        reported=(crs_reported, icans_reported),
    )
    crs_true, icans_true = state["crs_true"], state["icans_true"]
    event_tags = pl.DataFrame(
        {
            "days_since_infusion": t.astype(np.int64),
            "crs_grade": crs_true.astype(np.int64),
            "icans_grade": icans_true,
            "reported_differs": (crs_reported != crs_true) | (icans_reported != icans_true),
            "incomplete": incomplete,
        }
    )
    crs_max, crs_onset = _worst(crs_true, subj=subj, t=t, infused=infused)
    icans_max, icans_onset_day = _worst(icans_true, subj=subj, t=t, infused=infused)
    truth = {
        "crs_max_grade": crs_max,
        "crs_onset_day": crs_onset,
        "icans_max_grade": icans_max,
        "icans_onset_day": icans_onset_day,
    }
    return events, event_tags, truth


def _subject_courses(rng: np.random.Generator, cfg: SynthConfig, infused: np.ndarray) -> dict[str, np.ndarray]:
    """Per subject: the highest CRS grade, its onset day and course; ICANS only after a CRS; a fever from another
    cause; how the site records hypotension; the hour of the assessments."""
    n = infused.size
    u = rng.random(n)
    crs = np.where(u < cfg.crs_grade_2, 2, np.where(u < cfg.crs_grade_2 + cfg.crs_grade_1, 1, 0)) * infused
    out = {"crs": crs, "onset": rng.choice(np.arange(1, 6), n, p=[0.3, 0.3, 0.2, 0.1, 0.1])}
    out["fever_days"] = np.where(crs == 2, rng.integers(2, 4, n), rng.integers(1, 4, n))
    out["grade_2_days"] = rng.integers(1, 3, n)  # from the day after onset; anti-cytokine therapy starts then
    out["hypoxia"] = rng.random(n) < 0.5  # grade 2 by low-flow oxygen, else by hypotension
    out["antipyretic"] = (crs == 1) & (rng.random(n) < 0.3)  # given on the last fever day
    with_crs = cfg.crs_grade_1 + cfg.crs_grade_2
    out["icans"] = (crs > 0) & (rng.random(n) < (cfg.icans_grade_1 / with_crs if with_crs > 0 else 0.0))
    out["icans_onset"] = out["onset"] + rng.integers(1, 4, n)
    out["icans_days"] = rng.integers(1, 3, n)
    out["other_fever"] = infused & (rng.random(n) < _FEVER_OTHER_CAUSE)
    out["other_fever_day"] = rng.choice(np.array(_EVENT_DAYS), n)
    out["site_flags_hypotension"] = rng.random(n) < 0.5  # else the reader derives it from systolic_bp
    out["hour"] = rng.integers(6, 11, n)
    return out


def _assessment_states(course: dict[str, np.ndarray], subj: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """Per assessment (subject, day since infusion): what is going on, and the true ASTCT 2019 grades."""
    g, o = course["crs"][subj], course["onset"][subj]
    grade_2 = (g == 2) & (t >= o + 1) & (t < o + 1 + course["grade_2_days"][subj])
    fever_days = course["fever_days"][subj]
    treated_from = np.where(g == 2, o + 1, np.where(course["antipyretic"][subj], o + fever_days - 1, 10_000))
    # Fever on the CRS days, except a second grade-2 day, when anti-cytokine therapy has masked it.
    fever = (g > 0) & (t >= o) & (t < o + fever_days) & ~(grade_2 & (t > o + 1))
    other = course["other_fever"][subj] & (t == course["other_fever_day"][subj]) & ~fever & ~grade_2
    low_bp = grade_2 & ~course["hypoxia"][subj]
    on_oxygen = grade_2 & course["hypoxia"][subj]
    icans_onset = course["icans_onset"][subj]
    icans_day = course["icans"][subj] & (t >= icans_onset) & (t < icans_onset + course["icans_days"][subj])
    return {
        "treated": t >= treated_from,
        "fever": fever,
        "other_fever": other,
        "low_bp": low_bp,
        "on_oxygen": on_oxygen,
        # ASTCT 2019: grade 2 = hypotension without vasopressors or low-flow oxygen (fever not required once
        # treated); grade 1 = fever >= 38 C not attributable to another cause.
        "crs_true": np.where(low_bp | on_oxygen, 2, np.where(fever, 1, 0)),
        "icans_day": icans_day,
        "icans_true": icans_day.astype(np.int64),
    }


def _measurements(rng: np.random.Generator, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per assessment: temperature, systolic pressure, oxygen device and flow, ICE score, consciousness."""
    m = state["fever"].size
    hot = state["fever"] | state["other_fever"]
    icans_day = state["icans_day"]
    return {
        "temperature": np.round(np.where(hot, rng.uniform(38.0, 39.6, m), rng.uniform(36.2, 37.7, m)), 1),
        "systolic": np.where(state["low_bp"], rng.integers(78, 90, m), rng.integers(100, 141, m)),
        # none, nasal_cannula, blow_by
        "device": np.where(state["on_oxygen"], np.where(rng.random(m) < 0.8, 1, 2), 0),
        "flow": rng.integers(1, 5, m).astype(np.float64),  # L/min, low flow
        "ice": np.where(icans_day, rng.integers(7, 10, m), 10),
        "consciousness": np.where(icans_day & (rng.random(m) < 0.5), 1, 0),  # awakens spontaneously, else awake
    }


def _reported_grades(
    rng: np.random.Generator, cfg: SynthConfig, state: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The site's CRS and ICANS grades: the truth, one grade off at `event_report_disagreement` of the assessments
    with a true grade above 0 or a fever from another cause (which a site may still call CRS grade 1)."""
    crs_true, icans_true = state["crs_true"], state["icans_true"]
    m = crs_true.size
    off = rng.random(m) < cfg.event_report_disagreement
    down = rng.random(m) < 0.5
    crs_reported = np.where(
        off & (crs_true == 2),
        1,
        np.where(off & (crs_true == 1), np.where(down, 0, 2), np.where(off & state["other_fever"], 1, crs_true)),
    )
    icans_reported = np.where(off & (icans_true == 1), np.where(down, 0, 2), icans_true)
    return crs_reported, icans_reported


def _events_frame(
    ids: tuple[pl.Series, pl.Series],
    *,
    subj: np.ndarray,
    assessed_day: np.ndarray,
    hour: np.ndarray,
    state: dict[str, np.ndarray],
    measured: dict[str, np.ndarray],
    site_flags_hypotension: np.ndarray,
    blank_which: np.ndarray,
    reported: tuple[np.ndarray, np.ndarray],
) -> pl.DataFrame:
    """The events table (`EVENT_COLUMNS`) as a site exports it; `blank_which` per assessment: which measurement
    was not assessed (0 temperature, 1 blood pressure, 2 oxygen device, 3 ICE score; -1 none)."""
    study_s, subject_ids = ids
    m = subj.size
    device = measured["device"]
    systolic = measured["systolic"]
    assessed = _day_strings(assessed_day) + "T" + pl.Series(hour).cast(pl.String).str.zfill(2) + ":00:00"
    blank = [np.flatnonzero(blank_which == k) for k in range(4)]
    no_flow = np.flatnonzero((device != 1) | (blank_which == 2))  # no cannula, or device not recorded
    none = np.zeros(m, dtype=bool)
    crs_reported, icans_reported = reported
    return pl.DataFrame(
        {
            "study_id": study_s.gather(subj),
            "subject_id": subject_ids.gather(subj),
            "assessed_at": assessed,
            "temperature_c": pl.Series(measured["temperature"]).scatter(blank[0], None),
            "fever_other_cause": _text_bool(state["other_fever"], none),
            "anticytokine_or_antipyretic": _text_bool(state["treated"], none),
            "systolic_bp": pl.Series(systolic.astype(np.int64)).scatter(blank[1], None),
            "hypotension": _text_bool(systolic < 90, ~site_flags_hypotension).scatter(blank[1], None),
            "vasopressors": pl.Series(np.zeros(m, dtype=np.int64)),
            "vasopressin": _text_bool(none, none),
            "oxygen_device": _gather(OXYGEN_DEVICES, device).scatter(blank[2], None),
            "oxygen_flow_l_min": pl.Series(measured["flow"]).scatter(no_flow, None),
            "ice_score": pl.Series(measured["ice"].astype(np.int64)).scatter(blank[3], None),
            "consciousness": _gather(CONSCIOUSNESS, measured["consciousness"]),
            "icans_seizure": _gather(ICANS_SEIZURE, np.zeros(m, dtype=np.int64)),
            "motor_weakness": _text_bool(none, none),
            "cerebral_edema": _gather(CEREBRAL_EDEMA, np.zeros(m, dtype=np.int64)),
            "crs_grade_reported": crs_reported.astype(np.int64),
            "icans_grade_reported": icans_reported.astype(np.int64),
        }
    )


def _worst(grade: np.ndarray, *, subj: np.ndarray, t: np.ndarray, infused: np.ndarray) -> tuple[pl.Series, pl.Series]:
    """Per subject: the highest grade over the assessments (null if not infused) and the first day above 0
    (null if none)."""
    n = infused.size
    highest = np.zeros(n, dtype=np.int64)
    np.maximum.at(highest, subj, grade)
    first = np.full(n, 10_000, dtype=np.int64)
    np.minimum.at(first, subj, np.where(grade > 0, t, 10_000))
    not_infused = np.flatnonzero(~infused)
    return (
        pl.Series(highest).scatter(not_infused, None),
        pl.Series(first).scatter(np.flatnonzero(first == 10_000), None),
    )
