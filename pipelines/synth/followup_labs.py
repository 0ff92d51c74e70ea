"""Follow-up lab rows: the collections (visits and blood draws), each analyte's value along the immune course,
and the rows rendered as a site writes them (units, codes, LLOQ censoring, methods)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import polars as pl

from immunostrat.synth.config import SynthConfig
from immunostrat.synth.course import _car_t_cells, _ramp, _toward
from immunostrat.synth.followup_panel import (
    _CAR_T_LAST_VISIT_DAY,
    _CD19_RETURN_FLOOR,
    _CREATININE_UMOL_PER_MG_DL,
    _EARLY_DAYS,
    _F,
    _FU_CODE_COUNT,
    _FU_CODE_START,
    _FU_CODES,
    _FU_DEC,
    _FU_FACTOR,
    _FU_KIT_START,
    _FU_LLOQ,
    _FU_LLOQ_CANONICAL,
    _FU_QUANTUM,
    _FU_REF_HIGH,
    _FU_REF_LOW,
    _FU_TESTS,
    _FU_UNIT,
    _FU_UNIT_COUNT,
    _FU_UNIT_START,
    _MONTHLY_DAYS,
    _MONTHLY_JITTER,
    _SLOT_ANALYTES,
    _URINE_BAND_EDGES,
    _URINE_BANDS,
    FOLLOWUP_ANALYTES,
    ckd_epi_2021,
    creatinine_for_egfr,
)
from immunostrat.synth.panel import _CD4, _CD19, _LYM, _M_CKD_EPI, _M_FLOW, _M_NONE, _M_QPCR, _METHODS, _VAR_KIT
from immunostrat.synth.sledai import _D
from immunostrat.synth.strings import _P10F, _TIMES, _day_strings, _enum_gather, _format_numbers, _gather
from immunostrat.synth.visits import _Infusion, _VisitSchedule


def _collections(rng: np.random.Generator, visits: _VisitSchedule, infusion: _Infusion) -> dict[str, np.ndarray]:
    """Every lab collection, sorted by subject and day: the visits plus the early and monthly draws of infused
    subjects (none after the cut-off or discontinuation, none on a day the subject has a visit).

    Returns `subj`, `day`, `slot` (row of _SLOT_ANALYTES) and `visit` (index into the visits, -1 for a draw).
    """
    visit_subj, visit_day, infusion_day = visits.subj, visits.day, infusion.day
    early, monthly = np.array(_EARLY_DAYS), np.array(_MONTHLY_DAYS)
    inf_idx = np.flatnonzero(infusion.infused).astype(np.int32)
    e_subj, e_k = np.repeat(inf_idx, early.size), np.tile(np.arange(early.size), inf_idx.size)
    m_subj, m_k = np.repeat(inf_idx, monthly.size), np.tile(np.arange(monthly.size), inf_idx.size)
    jitter = rng.integers(-_MONTHLY_JITTER, _MONTHLY_JITTER + 1, m_subj.size)
    d_subj = np.concatenate([e_subj, m_subj])
    d_day = np.concatenate([infusion_day[e_subj] + early[e_k], infusion_day[m_subj] + monthly[m_k] + jitter])
    d_slot = np.concatenate([2 + e_k, 2 + early.size + m_k])

    def key(subj: np.ndarray, day: np.ndarray) -> np.ndarray:
        return subj.astype(np.int64) * 1_000_000 + day.astype(np.int64)

    keep = (d_day <= infusion.last_day[d_subj]) & ~np.isin(key(d_subj, d_day), key(visit_subj, visit_day))
    subj = np.concatenate([visit_subj, d_subj[keep]]).astype(np.int32)
    day = np.concatenate([visit_day, d_day[keep]]).astype(np.int32)
    slot = np.concatenate([np.where(visits.phase == 0, 0, 1), d_slot[keep]]).astype(np.int16)
    visit = np.concatenate([np.arange(visit_subj.size), np.full(int(keep.sum()), -1)]).astype(np.int32)
    order = np.argsort(key(subj, day), kind="stable")
    return {"subj": subj[order], "day": day[order], "slot": slot[order], "visit": visit[order]}


class _Draws:
    """What the value steps share for every collection: who and when, the course, and one RNG drawn in call order."""

    def __init__(
        self,
        rng: np.random.Generator,
        coll: dict[str, np.ndarray],
        *,
        infusion: _Infusion,
        course: dict[str, Any],
        lab_side: np.ndarray,
    ) -> None:
        self.rng = rng
        self.s = coll["subj"]
        self.c = self.s.size
        self.is_visit = coll["visit"] >= 0
        self.vr = np.maximum(coll["visit"], 0)  # the collection's visit (0 for a draw: mask with is_visit)
        self.on = infusion.infused[self.s] & (coll["slot"] != 0)  # the course applies: after the screening visit
        self.t = np.where(self.on, coll["day"] - infusion.day[self.s], -1000).astype(np.float64)
        self.p = course
        self.lab_side = lab_side

    def side(self, item: str) -> np.ndarray:
        """Whether the collection's visit reports descriptor `item` on the lab side (never for a draw)."""
        return self.lab_side[self.vr, _D[item]] & self.is_visit

    def uniform(self, lo: float, hi: float) -> np.ndarray:
        """One uniform draw per collection."""
        return self.rng.uniform(lo, hi, self.c)

    def noise(self, sd: float) -> np.ndarray:
        """One log-normal factor per collection."""
        return np.exp(sd * self.rng.standard_normal(self.c))


def _followup_labs(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    visits: _VisitSchedule,
    infusion: _Infusion,
    lab_side: np.ndarray,
    hemolytic: np.ndarray,
    serology: tuple[np.ndarray, np.ndarray, np.ndarray],
    values: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
    subject_parts: dict[str, np.ndarray],
    course: dict[str, Any],
    methods: dict[str, np.ndarray],
    ids: tuple[pl.Series, pl.Series, pl.Series],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Native follow-up lab rows: per collection (visit or draw) the analytes of its slot, rendered in one pass.

    Values are computed per collection (one array per analyte), then gathered into the (collection x analyte)
    rows that exist. The steps draw in a fixed order; reordering them changes every cohort. See
    docs/synthetic.md ("Follow-up labs", "Immune course").
    """
    coll = _collections(rng, visits, infusion)
    d = _Draws(rng, coll, infusion=infusion, course=course, lab_side=lab_side)
    levels = _usual_levels(rng, values.shape[0])
    val = _blood_counts(d, levels, values, hemolytic)
    val.update(_kidney(d, subject_parts))
    val.update(_urine_and_serology(d, serology))
    val.update(_b_cells_and_igg(d, levels, values, infusion.b_cell_return_day, car_t=val["car_t_cells"]))

    row_coll, test = _sent_rows(rng, cfg, d, slot=coll["slot"], visit_label=visits.label)
    value = np.zeros(row_coll.size)
    for k, name in enumerate(FOLLOWUP_ANALYTES):  # one pass per analyte, not per row
        at = np.flatnonzero(test == k)
        value[at] = val[name][row_coll[at]]
    del val
    value = np.rint(value / _FU_QUANTUM[test]) * _FU_QUANTUM[test]
    r_subj = d.s[row_coll]
    written = _written_results(
        rng, cfg, test=test, value=value, r_subj=r_subj, kit=kit, kit_var=kit_var, has_lloq=course["has_lloq"]
    )
    code, alt_code, method = _codes_and_methods(rng, cfg, test=test, r_subj=r_subj, methods=methods)
    # One collection time per collection: about half carry a time of day.
    coll_time = np.where(rng.random(d.c) < 0.5, 0, rng.integers(1, len(_TIMES), d.c))
    collected = _day_strings(coll["day"]) + _gather(_TIMES, coll_time)
    study_s, site_s, subject_ids = ids
    labs = pl.DataFrame(
        {
            "study_id": study_s.gather(r_subj),
            "subject_id": subject_ids.gather(r_subj),
            "site_id": site_s.gather(r_subj),
            "test": _gather(_FU_CODES, code),
            "result": written.result,
            "unit": _gather(_FU_UNIT, written.uvar),
            "collected_at": collected.gather(row_coll),
            "method": _gather(_METHODS, method),
            "ref_low": _gather(_FU_REF_LOW, written.uvar),
            "ref_high": _gather(_FU_REF_HIGH, written.uvar),
            "lloq": written.lloq,
        }
    )
    row_since = np.where(infusion.infused[r_subj], coll["day"][row_coll] - infusion.day[r_subj], 0)
    lab_tags = _lab_tags(
        test=test,
        value=value,
        row_visit=coll["visit"][row_coll],
        row_since=row_since,
        row_infused=infusion.infused[r_subj],
        lab_side=lab_side,
        written=written,
        alt_code=alt_code,
    )
    return labs, lab_tags


def _usual_levels(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per subject, the usual level of the values the course moves (noise comes per collection on top)."""
    return {
        "platelets": np.clip(240.0 * np.exp(0.25 * rng.standard_normal(n)), 110.0, 600.0),
        "wbc": np.clip(5.8 * np.exp(0.3 * rng.standard_normal(n)), 3.3, 15.0),
        "anc_share": np.asarray(rng.uniform(0.5, 0.7, n)),
        "hemoglobin": np.clip(rng.normal(122.0, 12.0, n), 100.0, 165.0),
        "igg": np.clip(rng.normal(11.5, 3.0, n), 5.0, 25.0),
    }


def _blood_counts(
    d: _Draws, levels: dict[str, np.ndarray], values: np.ndarray, hemolytic: np.ndarray
) -> dict[str, np.ndarray]:
    """Platelets, WBC, neutrophils, lymphocytes, CD4, hemoglobin and CAR-T cells per collection.

    Usual levels per subject (with a little day-to-day noise), then the SLE side each reported cytopenia needs,
    then the course: log-linear toward each nadir (all factors <= 1, so a reported cytopenia stays).
    """
    s, t, p, on, is_visit = d.s, d.t, d.p, d.on, d.is_visit
    val: dict[str, np.ndarray] = {}
    plt = np.where(
        d.side("thrombocytopenia"), d.uniform(40, 95), np.maximum(levels["platelets"][s] * d.noise(0.08), 105.0)
    )
    depth = _ramp(t, -2.0, p["plt_bottom"][s], p["plt_plateau"][s], p["plt_recover"][s])
    val["platelets"] = _toward(plt, p["plt_nadir"][s] * d.noise(0.1), depth)
    wbc = np.where(d.side("leukopenia"), d.uniform(1.5, 2.9), np.maximum(levels["wbc"][s] * d.noise(0.08), 3.1))
    anc_usual = wbc * levels["anc_share"][s]
    depth = _ramp(t, -3.0, p["anc_bottom"][s], p["anc_plateau"][s], p["anc_recover"][s])
    late = (t >= p["anc_late_start"][s]) & (t < p["anc_late_start"][s] + p["anc_late_days"][s])
    anc = _toward(anc_usual, p["anc_nadir"][s] * d.noise(0.1), depth) * np.where(late, p["anc_late_factor"][s], 1.0)
    lym_usual = values[s, _LYM] * np.where(is_visit & ~on, 1.0, d.noise(0.1))
    # Lymphodepletion from day -4, deepest days 0-7, then recovery; CAR-T cells are lymphocytes too.
    lym_depth = np.clip((t + 4.0) / 4.0, 0.0, 1.0) * np.exp(-np.maximum(t - 7.0, 0.0) / p["lym_tau"][s])
    lym_model = _toward(lym_usual, p["lym_nadir"][s], lym_depth)
    car_t = _car_t_cells(t, p["car_t_peak"][s], p["car_t_peak_day"][s], p["car_t_half_life"][s]) * d.noise(0.15)
    other = (wbc - anc_usual) * np.clip(0.4 + 0.6 * lym_model / lym_usual, 0.4, 1.0)  # lymphocytes, monocytes...
    val["wbc"] = anc + other + car_t / 1000.0
    val["neutrophils"] = anc
    val["lymphocytes"] = np.minimum(lym_model + car_t, 950.0 * other + car_t)
    cd4_depth = np.clip((t + 4.0) / 4.0, 0.0, 1.0) * np.exp(-np.maximum(t - 7.0, 0.0) / p["cd4_tau"][s])
    cd4 = _toward(values[s, _CD4] * np.where(is_visit & ~on, 1.0, d.noise(0.1)), p["cd4_nadir"][s], cd4_depth)
    val["cd4_t_cells"] = np.minimum(cd4, 0.9 * val["lymphocytes"])
    hgb = np.where(
        hemolytic[d.vr] & is_visit, d.uniform(75, 95), levels["hemoglobin"][s] + 4.0 * d.rng.standard_normal(d.c)
    )
    val["hemoglobin"] = hgb * (1.0 - _ramp(t, 0.0, 14.0, 10.0, 35.0) * (1.0 - p["hgb_factor"][s]))
    val["car_t_cells"] = car_t
    return val


def _kidney(d: _Draws, subject_parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Creatinine and eGFR per collection.

    The collection's eGFR is the subject's (the subjects file's at screening) with 5 % log-normal noise after it;
    creatinine gives that eGFR by CKD-EPI 2021, raised during a renal signal; the lab's eGFR is CKD-EPI 2021 of
    the creatinine as rounded, so the two rows agree as a lab's would.
    """
    s, t, p = d.s, d.t, d.p
    egfr_now = subject_parts["egfr"][s] * np.where(d.on, d.noise(0.05), 1.0)
    age, female = subject_parts["age"][s], subject_parts["female"][s]
    signal = p["renal_signal"][s] & (t >= p["renal_onset"][s]) & (t < p["renal_onset"][s] + p["renal_days"][s])
    creatinine = creatinine_for_egfr(egfr_now, age, female) * _CREATININE_UMOL_PER_MG_DL
    creatinine = np.rint(creatinine * np.where(signal, p["renal_factor"][s], 1.0))
    return {"creatinine": creatinine, "egfr": ckd_epi_2021(creatinine / _CREATININE_UMOL_PER_MG_DL, age, female)}


def _urine_and_serology(d: _Draws, serology: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """Urine and serology: visits only (the rows' sides as reported, see visits._lab_side)."""
    rng, c = d.rng, d.c
    val = {
        "upcr": np.where(d.side("proteinuria"), d.uniform(0.7, 4.0), d.uniform(0.03, 0.35)),
        "urine_protein_24h": np.where(d.side("proteinuria"), d.uniform(0.7, 5.0), d.uniform(0.05, 0.35)),
        "urine_rbc": np.where(d.side("hematuria"), rng.integers(6, 61, c), rng.integers(0, 6, c)),
        "urine_wbc": np.where(d.side("pyuria"), rng.integers(6, 61, c), rng.integers(0, 6, c)),
        "urine_casts": np.where(d.side("urinary_casts"), rng.integers(1, 6, c), 0),
    }
    dsdna, c3, c4 = serology
    val["anti_dsdna"], val["c3"], val["c4"] = dsdna[d.vr], c3[d.vr], c4[d.vr]
    return val


def _b_cells_and_igg(
    d: _Draws, levels: dict[str, np.ndarray], values: np.ndarray, b_return: np.ndarray, *, car_t: np.ndarray
) -> dict[str, np.ndarray]:
    """IgG, CD19 B cells and CAR transgene copies per collection.

    IgG falls toward 1 - igg_drop of its level over about a month, recovering slowly from 2 months after B cells
    return. B cells: partly depleted before aplasia, below the LLOQ (or 0-2 cells/uL where the lab has none)
    until the return day, then back to the screening level over about five months.
    """
    s, t, p, on = d.s, d.t, d.p, d.on
    ret = b_return[s].astype(np.float64)
    fall = (1.0 - np.exp(-np.maximum(t, 0.0) / 30.0)) * np.where(t > ret + 60.0, np.exp(-(t - ret - 60.0) / 150.0), 1.0)
    igg = levels["igg"][s] * (1.0 - p["igg_drop"][s] * fall) * np.where(on, d.noise(0.03), 1.0)
    cd19 = values[s, _CD19]
    aplasia = np.where(p["has_lloq"][s], 0.0, d.rng.integers(0, 3, d.c))
    recovered = np.maximum(cd19 * np.minimum(1.0, 0.02 + (t - ret) / 150.0) * d.noise(0.1), _CD19_RETURN_FLOOR)
    cd19_b_cells = np.select(
        [~on, t < p["aplasia_day"][s], t < ret], [cd19, cd19 * 0.3 * d.noise(0.2), aplasia], recovered
    )
    copies = car_t * p["copies_per_cell"][s] * d.noise(0.3)
    return {"igg": igg, "cd19_b_cells": cd19_b_cells, "car_t_copies": copies}


def _sent_rows(
    rng: np.random.Generator, cfg: SynthConfig, d: _Draws, *, slot: np.ndarray, visit_label: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows exist, as (collection, analyte) pairs by collection then analyte order: the slot's analytes,
    then the rules the slot table cannot say, then a few not sent."""
    sent = _SLOT_ANALYTES[slot] & (rng.random((d.c, len(_FU_TESTS)), dtype=np.float32) >= cfg.followup_lab_missing)
    for name in ("car_t_cells", "car_t_copies"):  # two analytes
        sent[:, _F[name]] &= d.on & (d.t <= _CAR_T_LAST_VISIT_DAY)
    sent[:, _F["car_t_copies"]] &= d.p["qpcr"][d.s]
    sent[:, _F["urine_protein_24h"]] &= rng.random(d.c) < 0.25
    sent[:, _F["igg"]] &= ~d.is_visit | (visit_label[d.vr] != 5)
    row_coll, test = np.nonzero(sent)  # row-major: by collection (subject, date), then analyte order
    return row_coll.astype(np.int32), test.astype(np.int8)  # narrow: millions of rows


class _Written(NamedTuple):
    uvar: np.ndarray  # unit variant (index into _FU_UNIT)
    result: pl.Series
    lloq: pl.Series  # the assay's LLOQ in the row's unit, null where none
    below_lloq: np.ndarray
    alt_unit: np.ndarray  # written in another unit than the canonical one (kit units included)


def _written_results(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    test: np.ndarray,
    value: np.ndarray,
    r_subj: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
    has_lloq: np.ndarray,
) -> _Written:
    """Each row's unit and result text: kit subjects' anti-dsDNA in their kit unit, otherwise canonical or an
    alternative; urine sediment partly as bands; values below the assay's LLOQ censored."""
    rows = test.size
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
    row_has_lloq = ~np.isnan(_FU_LLOQ_CANONICAL[uvar]) & ((test != _F["cd19_b_cells"]) | has_lloq[r_subj])
    below_lloq = row_has_lloq & (value < np.nan_to_num(_FU_LLOQ_CANONICAL[uvar]))
    below = np.flatnonzero(below_lloq)
    lloq = _gather(_FU_LLOQ, uvar).scatter(np.flatnonzero(~row_has_lloq), None)
    result.scatter(below, "<" + lloq.gather(below))
    return _Written(uvar, result, lloq, below_lloq, alt_unit | kit_row)


def _codes_and_methods(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    test: np.ndarray,
    r_subj: np.ndarray,
    methods: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's test code (an alias at `followup_alt_code`), whether it is an alias, and its method code."""
    rows = test.size
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
    return code, alt_code, method


def _lab_tags(
    *,
    test: np.ndarray,
    value: np.ndarray,
    row_visit: np.ndarray,
    row_since: np.ndarray,
    row_infused: np.ndarray,
    lab_side: np.ndarray,
    written: _Written,
    alt_code: np.ndarray,
) -> pl.DataFrame:
    """Row-aligned tags of the follow-up labs (`SynthFollowUp.lab_tags`)."""
    descriptor_names = [t.descriptor for t in _FU_TESTS]
    carries = np.array([d is not None for d in descriptor_names])
    lab_descriptor_col = np.array([_D[d] if d is not None else 0 for d in descriptor_names])
    lab_descriptor = lab_side[np.maximum(row_visit, 0), lab_descriptor_col[test]]
    # Platelets and WBC carry the course too: their descriptor is what the value shows.
    lab_descriptor = np.select(
        [test == _F["platelets"], test == _F["wbc"]], [value < 100.0, value < 3.0 - 1e-9], lab_descriptor
    )
    return pl.DataFrame(
        {
            "analyte": _enum_gather(FOLLOWUP_ANALYTES, test),
            "visit_row": pl.Series(row_visit.astype(np.int64)).scatter(np.flatnonzero(row_visit < 0), None),
            "days_since_infusion": pl.Series(row_since.astype(np.int64)).scatter(np.flatnonzero(~row_infused), None),
            "descriptor": pl.Series(descriptor_names, dtype=pl.String).gather(test),
            "lab_descriptor": pl.Series(lab_descriptor).scatter(np.flatnonzero(~carries[test]), None),
            "below_lloq": written.below_lloq,
            "alt_unit": written.alt_unit,
            "alt_code": alt_code,
        }
    )
