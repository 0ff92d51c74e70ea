"""The follow-up part of a cohort: infusion and discontinuation dates, then visits, follow-up labs, CRS/ICANS
events and their truth, each from its own RNG stream."""

from __future__ import annotations

import numpy as np
import polars as pl

from immunostrat.synth.config import SynthConfig
from immunostrat.synth.course import _course, _course_truth
from immunostrat.synth.events import _events
from immunostrat.synth.followup_labs import _followup_labs
from immunostrat.synth.panel import _C3, _C4, _DSDNA, _VAR_FACTOR, _VAR_REF_HIGH, _quantise
from immunostrat.synth.results import SynthFollowUp
from immunostrat.synth.sledai import (
    _COMPLEMENT_MULT,
    _D,
    _DSDNA_MULT,
    _GAP_HI,
    _GAP_LO,
    _NON_SEROLOGY,
    _PERSIST,
    _PGA_HI,
    _PGA_LO,
    _PREDNISONE,
    _PREDNISONE_P,
    _RENAL_ITEMS,
    _SCHEDULE_DAY,
    _SCHEDULE_JITTER,
    _SLEDAI,
    _W,
    VISIT_BOOLEAN_FIELDS,
    VISIT_COLUMNS,
    VISIT_LABELS,
)
from immunostrat.synth.strings import _day_strings, _gather, _text_bool
from immunostrat.synth.visits import _by_phase, _screening_descriptors


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
