"""The follow-up part of a cohort: infusion and discontinuation dates, then visits, follow-up labs, CRS/ICANS
events and their truth, each from its own RNG stream."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from immunostrat.synth.config import SynthConfig
from immunostrat.synth.course import _course, _course_truth
from immunostrat.synth.events import _events
from immunostrat.synth.followup_labs import _followup_labs
from immunostrat.synth.results import SynthFollowUp
from immunostrat.synth.sledai import _D, _NON_SEROLOGY, _RENAL_ITEMS, _W
from immunostrat.synth.subjects import _Dates
from immunostrat.synth.visits import (
    _blank_cells,
    _descriptors_after_infusion,
    _draw_infusion,
    _Infusion,
    _lab_side,
    _screening_descriptors,
    _serology,
    _treatment,
    _visit_schedule,
    _visits_frame,
    _VisitSchedule,
)


def _followup(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    ids: tuple[pl.Series, pl.Series, pl.Series],
    dates: _Dates,
    responded: np.ndarray,
    values: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
    subject_parts: dict[str, np.ndarray],
    methods: dict[str, np.ndarray],
) -> tuple[dict[str, pl.Series], SynthFollowUp]:
    """Infusion and discontinuation dates, visits and follow-up labs, drawn from their own RNG stream.

    The steps draw in a fixed order; reordering them changes every cohort. Returns the new subject columns
    (`FOLLOWUP_SUBJECT_COLUMNS`) and the follow-up tables.
    """
    infusion = _draw_infusion(rng, cfg, dates)
    visits = _visit_schedule(rng, cfg, reference_day=dates.reference, infusion=infusion)

    # Descriptors: screening items sum to the subjects file's clinical part; after infusion they persist with
    # a phase- and response-dependent chance; a non-responder always keeps some activity.
    nephritis = subject_parts["ln_class"] > 0
    screen, residual = _screening_descriptors(rng, subject_parts["clinical_part"], nephritis)
    # The immune course and the CRS/ICANS events draw from a third stream, so the visit draws above and below
    # keep their values whatever the course needs.
    course_rng = np.random.default_rng([cfg.seed, 13])
    renal = nephritis | screen[:, [_D[item] for item in _RENAL_ITEMS]].any(axis=1)
    course = _course(course_rng, cfg, responded, renal & infusion.infused)
    present = _descriptors_after_infusion(rng, screen, visits, responded)
    serology = _serology(
        rng, course_rng, visits, responded=responded, course=course, values=values, kit=kit, kit_var=kit_var
    )
    present[:, _D["increased_dna_binding"]] = serology.increased_dna_binding
    present[:, _D["low_complement"]] = serology.low_complement
    treatment = _treatment(rng, visits, responded)
    lab_side = _lab_side(rng, cfg, present)
    incomplete, blank = _blank_cells(rng, cfg, visits.subj.size)
    visit_table, visit_tags = _visits_frame(
        ids, visits, infused=infusion.infused, present=present, treatment=treatment, incomplete=incomplete, blank=blank
    )

    labs, lab_tags = _followup_labs(
        rng,
        cfg,
        visits=visits,
        infusion=infusion,
        lab_side=lab_side,
        hemolytic=treatment["hemolytic_anemia"],
        serology=(serology.dsdna, serology.c3, serology.c4),
        values=values,
        kit=kit,
        kit_var=kit_var,
        subject_parts=subject_parts,
        course=course,
        methods=methods,
        ids=ids,
    )
    events, event_tags, event_truth = _events(course_rng, cfg, infusion=infusion, ids=(ids[0], ids[2]))
    truth = _followup_truth(
        ids,
        visits,
        infusion=infusion,
        responded=responded,
        present=present,
        screening_residual=residual,
        course=course,
        dsdna_positive=serology.positive_subject,
        event_truth=event_truth,
    )
    return infusion.subject_columns(), SynthFollowUp(
        visits=visit_table,
        visit_tags=visit_tags,
        labs=labs,
        lab_tags=lab_tags,
        truth=truth,
        events=events,
        event_tags=event_tags,
    )


def _followup_truth(
    ids: tuple[pl.Series, pl.Series, pl.Series],
    visits: _VisitSchedule,
    *,
    infusion: _Infusion,
    responded: np.ndarray,
    present: np.ndarray,
    screening_residual: np.ndarray,
    course: dict[str, Any],
    dsdna_positive: np.ndarray,
    event_truth: dict[str, pl.Series],
) -> pl.DataFrame:
    """One row per subject: the follow-up's truth (`SynthFollowUp.truth`)."""
    study_s, _, subject_ids = ids
    n = responded.size
    subj, label = visits.subj, visits.label
    infused = infusion.infused
    clinical_points = (present[:, _NON_SEROLOGY] * _W[_NON_SEROLOGY]).sum(axis=1)
    month6 = np.flatnonzero(label == 3)
    screening = np.flatnonzero(label == 0)  # exactly one per subject
    clinical_m6 = pl.Series([None] * n, dtype=pl.Int64).scatter(subj[month6], clinical_points[month6])
    return pl.DataFrame(
        {
            "study_id": study_s,
            "subject_id": subject_ids,
            "infused": infused,
            "responded": responded,
            "discontinued": infusion.discontinued,
            "b_cell_return_day": pl.Series(infusion.b_cell_return_day.astype(np.int64)).scatter(
                np.flatnonzero(~infused), None
            ),
            "screening_sledai_2k": pl.Series(np.zeros(n, np.int64)).scatter(
                subj[screening], (present[screening] * _W).sum(axis=1)
            ),
            "screening_fill_residual": screening_residual,
            "clinical_sledai_2k_month_6": clinical_m6,
            **_course_truth(course, infused=infused, dsdna_positive=dsdna_positive),
            **event_truth,
        }
    )
