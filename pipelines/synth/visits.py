"""The visits table: visit dates, SLEDAI-2K descriptors at screening and after infusion, serology, treatment and
the cells a site left empty."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import polars as pl

from immunostrat.synth.config import SynthConfig
from immunostrat.synth.panel import _C3, _C4, _DSDNA, _VAR_FACTOR, _VAR_REF_HIGH, _quantise
from immunostrat.synth.sledai import (
    _COMPLEMENT_MULT,
    _D,
    _DRAW_ORDER,
    _DSDNA_MULT,
    _FILL_ORDER,
    _GAP_HI,
    _GAP_LO,
    _GREEDY_ORDER,
    _NON_SEROLOGY,
    _ONE_POINT,
    _ONE_POINT_P,
    _PERSIST,
    _PGA_HI,
    _PGA_LO,
    _PREDNISONE,
    _PREDNISONE_P,
    _SCHEDULE_DAY,
    _SCHEDULE_JITTER,
    _SCREEN_P_ARR,
    _SLEDAI,
    _W,
    VISIT_BOOLEAN_FIELDS,
    VISIT_COLUMNS,
    VISIT_LABELS,
)
from immunostrat.synth.strings import _day_strings, _gather, _text_bool
from immunostrat.synth.subjects import _Dates


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


class _Infusion(NamedTuple):
    """Per subject: infusion and discontinuation (days since 1970-01-01), drawn for every subject."""

    infused: np.ndarray
    day: np.ndarray  # of infusion
    discontinued: np.ndarray  # withdrawal or death on or before the data cut-off
    discontinued_day: np.ndarray
    cutoff: int  # the data cut-off
    b_cell_return_day: np.ndarray  # days after infusion

    @property
    def last_day(self) -> np.ndarray:
        """The last day anything is collected: the cut-off, or the discontinuation before it."""
        return np.where(self.discontinued, np.minimum(self.discontinued_day, self.cutoff), self.cutoff)

    def subject_columns(self) -> dict[str, pl.Series]:
        """The subjects file's `FOLLOWUP_SUBJECT_COLUMNS`: dates as ISO strings, null where none."""
        return {
            "infusion_date": _day_strings(self.day).scatter(np.flatnonzero(~self.infused), None),
            "discontinued_date": _day_strings(self.discontinued_day).scatter(np.flatnonzero(~self.discontinued), None),
        }


def _draw_infusion(rng: np.random.Generator, cfg: SynthConfig, dates: _Dates) -> _Infusion:
    """Infusion 3-5 days after exposure (lymphodepletion), discontinuation at `cfg.discontinuation`, and the day
    B cells return."""
    n = cfg.n_subjects
    cutoff = int(np.datetime64(cfg.data_cutoff, "D").astype(np.int64))
    infused = ~dates.exposure_missing
    infusion_day = dates.exposure + rng.integers(3, 6, n, dtype=np.int32)  # lymphodepletion 3-5 days before
    disc_day = infusion_day + rng.integers(20, 401, n, dtype=np.int32)
    # A discontinuation after the data cut-off has not happened yet as far as the snapshot knows.
    discontinued = infused & (rng.random(n) < cfg.discontinuation) & (disc_day <= cutoff)
    b_return = np.rint(np.clip(rng.normal(110.0, 32.0, n), 45.0, 250.0)).astype(np.int32)
    return _Infusion(infused, infusion_day, discontinued, disc_day, cutoff, b_return)


class _VisitSchedule(NamedTuple):
    """One entry per visit, sorted by subject and day."""

    subj: np.ndarray  # subject index
    day: np.ndarray
    label: np.ndarray  # index into VISIT_LABELS
    phase: np.ndarray  # 0 screening; 1..4 the course stage of months 1, 3, 6, 12 (also for unscheduled visits)
    since: np.ndarray  # days since infusion; 0 when not infused


def _visit_schedule(
    rng: np.random.Generator, cfg: SynthConfig, *, reference_day: np.ndarray, infusion: _Infusion
) -> _VisitSchedule:
    """Screening for everyone; scheduled (some missed) and unscheduled visits after infusion; none after the cut-off
    or a discontinuation."""
    n = cfg.n_subjects
    inf_idx = np.flatnonzero(infusion.infused).astype(np.int32)
    s_subj = np.repeat(inf_idx, 4)
    s_k = np.tile(np.arange(4), inf_idx.size)
    s_day = infusion.day[s_subj] + _SCHEDULE_DAY[s_k] + rng.integers(-_SCHEDULE_JITTER[s_k], _SCHEDULE_JITTER[s_k] + 1)
    s_keep = rng.random(s_subj.size) >= cfg.missed_visit
    u_subj = inf_idx[rng.random(inf_idx.size) < cfg.unscheduled_visit]
    gap = rng.integers(0, 3, u_subj.size)
    u_day = infusion.day[u_subj] + rng.integers(_GAP_LO[gap], _GAP_HI[gap] + 1)
    subj = np.concatenate([np.arange(n, dtype=np.int32), s_subj[s_keep], u_subj])
    day = np.concatenate([reference_day - rng.integers(0, 8, n), s_day[s_keep], u_day]).astype(np.int32)
    label = np.concatenate([np.zeros(n, np.int8), (s_k[s_keep] + 1).astype(np.int8), np.full(u_subj.size, 5, np.int8)])
    phase = np.concatenate([np.zeros(n, np.int64), s_k[s_keep] + 1, gap + 1])
    keep = (day <= infusion.cutoff) & (~infusion.discontinued[subj] | (day <= infusion.discontinued_day[subj]))
    order = np.flatnonzero(keep)
    order = order[
        np.argsort(subj[order].astype(np.int64) * 100_000 + (day[order] - reference_day.min()), kind="stable")
    ]
    subj, day = subj[order], day[order]
    since = np.where(infusion.infused[subj], day - infusion.day[subj], 0)
    return _VisitSchedule(subj, day, label[order], phase[order], since)


def _descriptors_after_infusion(
    rng: np.random.Generator, screen: np.ndarray, visits: _VisitSchedule, responded: np.ndarray
) -> np.ndarray:
    """Per visit, the non-serology descriptors present: screening items persist with a phase- and
    response-dependent chance; a non-responder always keeps some activity (arthritis or rash)."""
    v = visits.subj.size
    resp = responded[visits.subj]
    present = screen[visits.subj] & (
        rng.random((v, len(_SLEDAI)), dtype=np.float32) < _by_phase(_PERSIST, resp, visits.phase)[:, None]
    )
    quiet = (visits.phase > 0) & ~resp & ~present[:, _NON_SEROLOGY].any(axis=1)
    as_arthritis = rng.random(v) < 0.5
    present[:, _D["arthritis"]] |= quiet & as_arthritis
    present[:, _D["rash"]] |= quiet & ~as_arthritis
    return present


class _Serology(NamedTuple):
    """Per visit: the values the follow-up labs carry, and the serology descriptors they give."""

    dsdna: np.ndarray
    c3: np.ndarray
    c4: np.ndarray
    increased_dna_binding: np.ndarray  # as the subjects file's sledai_2k counts it (kit units by the kit's ULN)
    low_complement: np.ndarray
    positive_subject: np.ndarray  # per subject: anti-dsDNA positive at screening


def _serology(
    rng: np.random.Generator,
    course_rng: np.random.Generator,
    visits: _VisitSchedule,
    *,
    responded: np.ndarray,
    course: dict[str, Any],
    values: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
) -> _Serology:
    """Anti-dsDNA, C3 and C4 at each visit (screening: the baseline truth itself), with seroconversion and relapse."""
    subj, phase = visits.subj, visits.phase
    v = subj.size
    resp = responded[subj]
    post = phase > 0
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
    return _Serology(dsdna, c3, c4, dsdna_ratio >= 1.0, (c3 < 0.9) | (c4 < 0.16), positive_subject)


def _treatment(rng: np.random.Generator, visits: _VisitSchedule, responded: np.ndarray) -> dict[str, np.ndarray]:
    """Per visit: `pga`, `prednisone`, `immunosuppressants` and the `VISIT_BOOLEAN_FIELDS`."""
    n = responded.size
    subj, phase = visits.subj, visits.phase
    v = subj.size
    resp = responded[subj]
    post = phase > 0
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
    failure_day = np.where(rng.random(n) < 0.25, rng.integers(60, 301, n), 100_000)[subj]
    failure = post & ~resp & (visits.since >= failure_day)
    investigational = failure & (rng.random(n) < 0.2)[subj]
    antimalarial = (rng.random(n) < 0.75)[subj]
    hemolytic = (rng.random(n) < 0.03)[subj] & (~post | (~resp & (rng.random(v) < 0.5)))
    gi = (rng.random(n) < 0.02)[subj] & (~post | (~resp & (rng.random(v) < 0.5)))
    return {
        "pga": pga,
        "prednisone": prednisone,
        "immunosuppressants": immunosuppressants,
        "antimalarial": antimalarial,
        "hemolytic_anemia": hemolytic,
        "gi_activity": gi,
        "other_investigational_drug": investigational,
        "treatment_failure": failure,
    }


def _lab_side(rng: np.random.Generator, cfg: SynthConfig, present: np.ndarray) -> np.ndarray:
    """The lab side of the lab-derivable descriptors: as reported, except a few contradictions.

    (Cytopenias after infusion come on top, from the immune course in _followup_labs; the site excludes the drug
    cause.)
    """
    v = present.shape[0]
    lab_side = present.copy()
    for item in ("urinary_casts", "hematuria", "proteinuria", "pyuria", "thrombocytopenia", "leukopenia"):
        lab_side[:, _D[item]] ^= rng.random(v) < cfg.lab_contradicts_report
    return lab_side


def _blank_cells(rng: np.random.Generator, cfg: SynthConfig, v: int) -> tuple[np.ndarray, np.ndarray]:
    """Not assessed: on an incomplete visit, one to three of 27 cells (24 descriptors, pga, prednisone,
    immunosuppressants) are left empty. Returns the incomplete visits and the (visits, 27) blank mask."""
    incomplete = rng.random(v) < cfg.visit_incomplete
    blank_rank = np.argsort(rng.random((v, 27), dtype=np.float32), axis=1)
    n_blank = rng.integers(1, 4, v)
    blank = np.zeros((v, 27), dtype=bool)
    np.put_along_axis(blank, blank_rank, np.arange(27)[None, :] < n_blank[:, None], axis=1)
    blank &= incomplete[:, None]
    return incomplete, blank


def _visits_frame(
    ids: tuple[pl.Series, pl.Series, pl.Series],
    visits: _VisitSchedule,
    *,
    infused: np.ndarray,
    present: np.ndarray,
    treatment: dict[str, np.ndarray],
    incomplete: np.ndarray,
    blank: np.ndarray,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The visits table (`VISIT_COLUMNS`) as a site exports it, and its row-aligned tags."""
    study_s, _, subject_ids = ids
    subj = visits.subj
    v = subj.size
    cols: dict[str, pl.Series | np.ndarray] = {
        "study_id": study_s.gather(subj),
        "subject_id": subject_ids.gather(subj),
        "visit": _gather(VISIT_LABELS, visits.label),
        "visit_date": _day_strings(visits.day),
    }
    for item, k in _D.items():  # 24 descriptors
        cols[item] = _text_bool(present[:, k], blank[:, k])
    cols["pga"] = pl.Series(treatment["pga"]).scatter(np.flatnonzero(blank[:, 24]), None)
    cols["prednisone_mg_day"] = pl.Series(treatment["prednisone"]).scatter(np.flatnonzero(blank[:, 25]), None)
    for name in VISIT_BOOLEAN_FIELDS:
        cols[name] = _text_bool(treatment[name], np.zeros(v, dtype=bool))
    cols["immunosuppressants"] = pl.Series(treatment["immunosuppressants"].astype(np.int64)).scatter(
        np.flatnonzero(blank[:, 26]), None
    )
    tags = pl.DataFrame(
        {
            "phase": visits.phase.astype(np.int8),
            "days_since_infusion": pl.Series(visits.since.astype(np.int64)).scatter(
                np.flatnonzero(~infused[subj]), None
            ),
            "incomplete": incomplete,
        }
    )
    return pl.DataFrame(cols).select(VISIT_COLUMNS), tags
