"""Follow-up lab rows: the collections (visits and blood draws), each analyte's value along the immune course,
and the rows rendered as a site writes them (units, codes, LLOQ censoring, methods)."""

from __future__ import annotations

from typing import Any

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


def _collections(
    rng: np.random.Generator,
    *,
    visit_subj: np.ndarray,
    visit_day: np.ndarray,
    phase: np.ndarray,
    infused: np.ndarray,
    infusion_day: np.ndarray,
    last_day: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every lab collection, sorted by subject and day: the visits plus the early and monthly draws of infused
    subjects (none after the cut-off or discontinuation, none on a day the subject has a visit).

    Returns `subj`, `day`, `slot` (row of _SLOT_ANALYTES) and `visit` (index into the visits, -1 for a draw).
    """
    early, monthly = np.array(_EARLY_DAYS), np.array(_MONTHLY_DAYS)
    inf_idx = np.flatnonzero(infused).astype(np.int32)
    e_subj, e_k = np.repeat(inf_idx, early.size), np.tile(np.arange(early.size), inf_idx.size)
    m_subj, m_k = np.repeat(inf_idx, monthly.size), np.tile(np.arange(monthly.size), inf_idx.size)
    jitter = rng.integers(-_MONTHLY_JITTER, _MONTHLY_JITTER + 1, m_subj.size)
    d_subj = np.concatenate([e_subj, m_subj])
    d_day = np.concatenate([infusion_day[e_subj] + early[e_k], infusion_day[m_subj] + monthly[m_k] + jitter])
    d_slot = np.concatenate([2 + e_k, 2 + early.size + m_k])

    def key(subj: np.ndarray, day: np.ndarray) -> np.ndarray:
        return subj.astype(np.int64) * 1_000_000 + day.astype(np.int64)

    keep = (d_day <= last_day[d_subj]) & ~np.isin(key(d_subj, d_day), key(visit_subj, visit_day))
    subj = np.concatenate([visit_subj, d_subj[keep]]).astype(np.int32)
    day = np.concatenate([visit_day, d_day[keep]]).astype(np.int32)
    slot = np.concatenate([np.where(phase == 0, 0, 1), d_slot[keep]]).astype(np.int16)
    visit = np.concatenate([np.arange(visit_subj.size), np.full(int(keep.sum()), -1)]).astype(np.int32)
    order = np.argsort(key(subj, day), kind="stable")
    return {"subj": subj[order], "day": day[order], "slot": slot[order], "visit": visit[order]}


def _followup_labs(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    visit_subj: np.ndarray,
    visit_day: np.ndarray,
    phase: np.ndarray,
    label: np.ndarray,
    lab_side: np.ndarray,
    hemolytic: np.ndarray,
    serology: tuple[np.ndarray, np.ndarray, np.ndarray],
    values: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
    subject_parts: dict[str, np.ndarray],
    b_return: np.ndarray,
    course: dict[str, Any],
    infused: np.ndarray,
    infusion_day: np.ndarray,
    last_day: np.ndarray,
    methods: dict[str, np.ndarray],
    ids: tuple[pl.Series, pl.Series, pl.Series],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Native follow-up lab rows: per collection (visit or draw) the analytes of its slot, rendered in one pass.

    Values are computed per collection (one array per analyte), then gathered into the (collection x analyte)
    rows that exist. See docs/synthetic.md ("Follow-up labs", "Immune course").
    """
    n = values.shape[0]
    coll = _collections(
        rng,
        visit_subj=visit_subj,
        visit_day=visit_day,
        phase=phase,
        infused=infused,
        infusion_day=infusion_day,
        last_day=last_day,
    )
    s, c_visit = coll["subj"], coll["visit"]
    c = s.size
    is_visit = c_visit >= 0
    vr = np.maximum(c_visit, 0)
    on = infused[s] & (coll["slot"] != 0)  # the course applies: infused, after the screening visit
    t = np.where(on, coll["day"] - infusion_day[s], -1000).astype(np.float64)
    p = course

    def side(item: str) -> np.ndarray:
        return lab_side[vr, _D[item]] & is_visit

    def uniform(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, c)

    def noise(sd: float) -> np.ndarray:
        return np.exp(sd * rng.standard_normal(c))

    # Usual levels per subject (with a little day-to-day noise), then the SLE side each reported cytopenia
    # needs, then the course: log-linear toward each nadir (all factors <= 1, so a reported cytopenia stays).
    plt_level = np.clip(240.0 * np.exp(0.25 * rng.standard_normal(n)), 110.0, 600.0)
    wbc_level = np.clip(5.8 * np.exp(0.3 * rng.standard_normal(n)), 3.3, 15.0)
    anc_share = np.asarray(rng.uniform(0.5, 0.7, n))
    hgb_level = np.clip(rng.normal(122.0, 12.0, n), 100.0, 165.0)
    igg_level = np.clip(rng.normal(11.5, 3.0, n), 5.0, 25.0)
    val: dict[str, np.ndarray] = {}
    plt = np.where(side("thrombocytopenia"), uniform(40, 95), np.maximum(plt_level[s] * noise(0.08), 105.0))
    depth = _ramp(t, -2.0, p["plt_bottom"][s], p["plt_plateau"][s], p["plt_recover"][s])
    val["platelets"] = _toward(plt, p["plt_nadir"][s] * noise(0.1), depth)
    wbc = np.where(side("leukopenia"), uniform(1.5, 2.9), np.maximum(wbc_level[s] * noise(0.08), 3.1))
    anc_usual = wbc * anc_share[s]
    depth = _ramp(t, -3.0, p["anc_bottom"][s], p["anc_plateau"][s], p["anc_recover"][s])
    late = (t >= p["anc_late_start"][s]) & (t < p["anc_late_start"][s] + p["anc_late_days"][s])
    anc = _toward(anc_usual, p["anc_nadir"][s] * noise(0.1), depth) * np.where(late, p["anc_late_factor"][s], 1.0)
    lym_usual = values[s, _LYM] * np.where(is_visit & ~on, 1.0, noise(0.1))
    # Lymphodepletion from day -4, deepest days 0-7, then recovery; CAR-T cells are lymphocytes too.
    lym_depth = np.clip((t + 4.0) / 4.0, 0.0, 1.0) * np.exp(-np.maximum(t - 7.0, 0.0) / p["lym_tau"][s])
    lym_model = _toward(lym_usual, p["lym_nadir"][s], lym_depth)
    car_t = _car_t_cells(t, p["car_t_peak"][s], p["car_t_peak_day"][s], p["car_t_half_life"][s]) * noise(0.15)
    other = (wbc - anc_usual) * np.clip(0.4 + 0.6 * lym_model / lym_usual, 0.4, 1.0)  # lymphocytes, monocytes...
    val["wbc"] = anc + other + car_t / 1000.0
    val["neutrophils"] = anc
    val["lymphocytes"] = np.minimum(lym_model + car_t, 950.0 * other + car_t)
    cd4_depth = np.clip((t + 4.0) / 4.0, 0.0, 1.0) * np.exp(-np.maximum(t - 7.0, 0.0) / p["cd4_tau"][s])
    cd4 = _toward(values[s, _CD4] * np.where(is_visit & ~on, 1.0, noise(0.1)), p["cd4_nadir"][s], cd4_depth)
    val["cd4_t_cells"] = np.minimum(cd4, 0.9 * val["lymphocytes"])
    hgb = np.where(hemolytic[vr] & is_visit, uniform(75, 95), hgb_level[s] + 4.0 * rng.standard_normal(c))
    val["hemoglobin"] = hgb * (1.0 - _ramp(t, 0.0, 14.0, 10.0, 35.0) * (1.0 - p["hgb_factor"][s]))

    # Kidney function: the collection's eGFR is the subject's (the subjects file's at screening) with 5 %
    # log-normal noise after it; creatinine gives that eGFR by CKD-EPI 2021, raised during a renal signal; the
    # lab's eGFR is CKD-EPI 2021 of the creatinine as rounded, so the two rows agree as a lab's would.
    egfr_now = subject_parts["egfr"][s] * np.where(on, noise(0.05), 1.0)
    age, female = subject_parts["age"][s], subject_parts["female"][s]
    signal = p["renal_signal"][s] & (t >= p["renal_onset"][s]) & (t < p["renal_onset"][s] + p["renal_days"][s])
    creatinine = creatinine_for_egfr(egfr_now, age, female) * _CREATININE_UMOL_PER_MG_DL
    creatinine = np.rint(creatinine * np.where(signal, p["renal_factor"][s], 1.0))
    val["creatinine"] = creatinine
    val["egfr"] = ckd_epi_2021(creatinine / _CREATININE_UMOL_PER_MG_DL, age, female)

    # Urine and serology: visits only (the rows' sides as reported, see _followup).
    val["upcr"] = np.where(side("proteinuria"), uniform(0.7, 4.0), uniform(0.03, 0.35))
    val["urine_protein_24h"] = np.where(side("proteinuria"), uniform(0.7, 5.0), uniform(0.05, 0.35))
    val["urine_rbc"] = np.where(side("hematuria"), rng.integers(6, 61, c), rng.integers(0, 6, c))
    val["urine_wbc"] = np.where(side("pyuria"), rng.integers(6, 61, c), rng.integers(0, 6, c))
    val["urine_casts"] = np.where(side("urinary_casts"), rng.integers(1, 6, c), 0)
    dsdna, c3, c4 = serology
    val["anti_dsdna"], val["c3"], val["c4"] = dsdna[vr], c3[vr], c4[vr]

    # IgG falls toward 1 - igg_drop of its level over about a month, recovering slowly from 2 months after
    # B cells return. B cells: partly depleted before aplasia, below the LLOQ (or 0-2 cells/uL where the lab
    # has none) until the return day, then back to the screening level over about five months.
    ret = b_return[s].astype(np.float64)
    fall = (1.0 - np.exp(-np.maximum(t, 0.0) / 30.0)) * np.where(t > ret + 60.0, np.exp(-(t - ret - 60.0) / 150.0), 1.0)
    val["igg"] = igg_level[s] * (1.0 - p["igg_drop"][s] * fall) * np.where(on, noise(0.03), 1.0)
    cd19 = values[s, _CD19]
    aplasia = np.where(p["has_lloq"][s], 0.0, rng.integers(0, 3, c))
    recovered = np.maximum(cd19 * np.minimum(1.0, 0.02 + (t - ret) / 150.0) * noise(0.1), _CD19_RETURN_FLOOR)
    val["cd19_b_cells"] = np.select(
        [~on, t < p["aplasia_day"][s], t < ret], [cd19, cd19 * 0.3 * noise(0.2), aplasia], recovered
    )
    val["car_t_cells"] = car_t
    val["car_t_copies"] = car_t * p["copies_per_cell"][s] * noise(0.3)

    # Which rows exist: the slot's analytes, then the rules the slot table cannot say, then a few not sent.
    sent = _SLOT_ANALYTES[coll["slot"]] & (
        rng.random((c, len(_FU_TESTS)), dtype=np.float32) >= cfg.followup_lab_missing
    )
    since = coll["day"] - infusion_day[s]
    for name in ("car_t_cells", "car_t_copies"):  # two analytes
        sent[:, _F[name]] &= on & (since <= _CAR_T_LAST_VISIT_DAY)
    sent[:, _F["car_t_copies"]] &= p["qpcr"][s]
    sent[:, _F["urine_protein_24h"]] &= rng.random(c) < 0.25
    sent[:, _F["igg"]] &= ~is_visit | (label[vr] != 5)
    row_coll, test = np.nonzero(sent)  # row-major: by collection (subject, date), then analyte order
    del sent
    row_coll, test = row_coll.astype(np.int32), test.astype(np.int8)  # narrow: millions of rows
    rows = row_coll.size
    value = np.zeros(rows)
    for k, name in enumerate(FOLLOWUP_ANALYTES):  # one pass per analyte, not per row
        at = np.flatnonzero(test == k)
        value[at] = val[name][row_coll[at]]
    del val
    value = np.rint(value / _FU_QUANTUM[test]) * _FU_QUANTUM[test]
    r_subj = s[row_coll]

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
    # The assay's LLOQ on each of its rows; a value below it is written censored, "<" and the limit.
    has_lloq = ~np.isnan(_FU_LLOQ_CANONICAL[uvar]) & ((test != _F["cd19_b_cells"]) | p["has_lloq"][r_subj])
    below_lloq = has_lloq & (value < np.nan_to_num(_FU_LLOQ_CANONICAL[uvar]))
    below = np.flatnonzero(below_lloq)
    lloq = _gather(_FU_LLOQ, uvar).scatter(np.flatnonzero(~has_lloq), None)
    result.scatter(below, "<" + lloq.gather(below))

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
    # One collection time per collection: about half carry a time of day.
    coll_time = np.where(rng.random(c) < 0.5, 0, rng.integers(1, len(_TIMES), c))
    collected = _day_strings(coll["day"]) + _gather(_TIMES, coll_time)
    study_s, site_s, subject_ids = ids

    labs = pl.DataFrame(
        {
            "study_id": study_s.gather(r_subj),
            "subject_id": subject_ids.gather(r_subj),
            "site_id": site_s.gather(r_subj),
            "test": _gather(_FU_CODES, code),
            "result": result,
            "unit": _gather(_FU_UNIT, uvar),
            "collected_at": collected.gather(row_coll),
            "method": _gather(_METHODS, method),
            "ref_low": _gather(_FU_REF_LOW, uvar),
            "ref_high": _gather(_FU_REF_HIGH, uvar),
            "lloq": lloq,
        }
    )
    descriptor_names = [t.descriptor for t in _FU_TESTS]
    carries = np.array([d is not None for d in descriptor_names])
    lab_descriptor_col = np.array([_D[d] if d is not None else 0 for d in descriptor_names])
    row_visit = c_visit[row_coll]
    lab_descriptor = lab_side[np.maximum(row_visit, 0), lab_descriptor_col[test]]
    # Platelets and WBC carry the course too: their descriptor is what the value shows.
    lab_descriptor = np.select(
        [test == _F["platelets"], test == _F["wbc"]], [value < 100.0, value < 3.0 - 1e-9], lab_descriptor
    )
    row_since = np.where(infused[r_subj], coll["day"][row_coll] - infusion_day[r_subj], 0)
    lab_tags = pl.DataFrame(
        {
            "analyte": _enum_gather(FOLLOWUP_ANALYTES, test),
            "visit_row": pl.Series(row_visit.astype(np.int64)).scatter(np.flatnonzero(row_visit < 0), None),
            "days_since_infusion": pl.Series(row_since.astype(np.int64)).scatter(
                np.flatnonzero(~infused[r_subj]), None
            ),
            "descriptor": pl.Series(descriptor_names, dtype=pl.String).gather(test),
            "lab_descriptor": pl.Series(lab_descriptor).scatter(np.flatnonzero(~carries[test]), None),
            "below_lloq": below_lloq,
            "alt_unit": alt_unit | kit_row,
            "alt_code": alt_code,
        }
    )
    return labs, lab_tags
