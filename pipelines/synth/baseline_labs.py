"""The selection-time lab rows: baseline, out-of-window, outside-panel and duplicate rows with their mess, built as
numeric codes and rendered to the native all-String table in one pass."""

from __future__ import annotations

import numpy as np
import polars as pl

from immunostrat.synth.config import SynthConfig
from immunostrat.synth.panel import (
    _ALT_COUNT,
    _ALT_START,
    _BASE,
    _C3,
    _C4,
    _CD19,
    _CENSOR_OPS,
    _CODES,
    _CONFLICT,
    _DSDNA,
    _DUP,
    _HAS_ALT_UNIT,
    _IFN,
    _KINDS,
    _M_COMPLEMENT,
    _M_DSDNA,
    _M_FLOW,
    _M_IFN,
    _M_NONE,
    _MALFORMED,
    _MEAN_Z,
    _METHODS,
    _N_CORE,
    _OUT,
    _OUTSIDE,
    _OUTSIDE_LOGSD,
    _OUTSIDE_MEDIAN,
    _PB,
    _PCT,
    _POST,
    _POST_FACTOR,
    _PRE,
    _QUANTUM,
    _TESTS,
    _VAR_ALT,
    _VAR_CANON,
    _VAR_DEC,
    _VAR_FACTOR,
    _VAR_REF_HIGH,
    _VARIANTS,
    _quantise,
)
from immunostrat.synth.strings import _P10F, _TIMES, _enum_gather, _format_numbers, _gather


def _coin(rng: np.random.Generator, size: int) -> np.ndarray:
    """Uniform draws for per-row coin flips; float32 halves their memory."""
    return rng.random(size, dtype=np.float32)


def _lab_rows(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    latent: dict[str, np.ndarray],
    ref_day: np.ndarray,
    after_day: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Build every lab row as compact numeric codes (rendered to strings later, in one pass).

    The steps below draw from `rng` in a fixed order; reordering them changes every cohort.

    Returns:
        Per-row arrays in output order (sorted by subject, then date), the (subject, test) pairs of the
        baseline rows dropped as missing, and each subject's anti-dsDNA and complement method codes.
    """
    subj, test, value, day = _baseline_slots(rng, cfg, values=latent["values"], ref_day=ref_day)
    x_subj, x_test, x_val, x_day, post = _out_of_window_rows(
        rng, cfg, slots=(subj, test, value), ifn_method=latent["ifn_method"], ref_day=ref_day, after_day=after_day
    )
    missing = (test < _N_CORE) & (_coin(rng, subj.size) < cfg.missing_analyte)
    miss_subj, miss_test = subj[missing], test[missing]
    keep = ~missing
    subj, test, value, day = subj[keep], test[keep], value[keep], day[keep]
    o_subj, o_test, o_val, o_day = _outside_panel_rows(rng, cfg, subj=subj, ref_day=ref_day)

    kind = np.concatenate(
        [
            np.full(subj.size, _BASE, np.int8),
            np.where(post, _POST, _PRE).astype(np.int8),
            np.full(o_subj.size, _OUT, np.int8),
        ]
    )
    subj = np.concatenate([subj, x_subj, o_subj])
    test = np.concatenate([test, x_test, o_test])
    value = np.concatenate([value, x_val, o_val])
    day = np.concatenate([day, x_day, o_day])
    r, methods = _presentation(
        rng, cfg, subj=subj, test=test, ifn_method=latent["ifn_method"], kit=kit, kit_var=kit_var
    )
    r["day"] = day
    r, value, clean = _with_conflicting_twins(rng, cfg, r=r, kind=kind, value=value)
    r.update(_written_results(rng, cfg, r=r, value=value, clean=clean))
    return _in_site_order(rng, cfg, r), miss_subj, miss_test, methods


def _baseline_slots(
    rng: np.random.Generator, cfg: SynthConfig, *, values: np.ndarray, ref_day: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Baseline rows (subject, test, value, day): the core panel for every subject, the percent form for some."""
    n = cfg.n_subjects
    pct_subj = np.flatnonzero(_coin(rng, n) < cfg.cd19_pct_rate).astype(np.int32)
    subj = np.concatenate([np.repeat(np.arange(n, dtype=np.int32), _N_CORE), pct_subj])
    test = np.concatenate([np.tile(np.arange(_N_CORE, dtype=np.int8), n), np.full(pct_subj.size, _PCT, np.int8)])
    day = ref_day[subj] - rng.integers(0, cfg.baseline_window_days + 1, subj.size, dtype=np.int32)
    return subj, test, values[subj, test], day


def _out_of_window_rows(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    slots: tuple[np.ndarray, np.ndarray, np.ndarray],
    ifn_method: np.ndarray,
    ref_day: np.ndarray,
    after_day: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Extra measurements far before the window or after exposure: (subject, test, value, day, after exposure).

    They come from every baseline slot, even ones later dropped as missing (a trap: an old measurement must
    not stand in for a missing baseline). After exposure, values move as after CAR-T (B-cell aplasia, falling
    anti-dsDNA); before the window they are the same subject, noisier.
    """
    subj, test, value = slots
    win = cfg.baseline_window_days
    src = np.flatnonzero(_coin(rng, subj.size) < cfg.out_of_window)
    post = _coin(rng, src.size) < 1.0 / 3.0
    x_subj, x_test, x_val = subj[src], test[src], value[src]
    is_mean_z = (x_test == _IFN) & (ifn_method[x_subj] == _MEAN_Z)
    noise = rng.standard_normal(src.size)
    mult = np.where(post, _POST_FACTOR[x_test] * np.exp(0.2 * noise), np.exp(0.3 * noise))
    x_val = _quantise(np.where(is_mean_z, x_val - 2.0 * post + 0.6 * noise, x_val * mult), x_test)
    x_day = np.where(
        post,
        after_day[x_subj] + rng.integers(1, 181, src.size, dtype=np.int32),
        ref_day[x_subj] - rng.integers(win + 30, 731, src.size, dtype=np.int32),
    )
    return x_subj, x_test, x_val, x_day, post


def _outside_panel_rows(
    rng: np.random.Generator, cfg: SynthConfig, *, subj: np.ndarray, ref_day: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Outside-panel rows (subject, test, value, day): sites export whole lab panels; these sit in the window."""
    o_src = np.flatnonzero(_coin(rng, subj.size) < cfg.outside_panel)
    o_k = rng.integers(0, _OUTSIDE.size, o_src.size)
    o_test = _OUTSIDE[o_k]
    o_val = _quantise(_OUTSIDE_MEDIAN[o_k] * np.exp(_OUTSIDE_LOGSD[o_k] * rng.standard_normal(o_src.size)), o_test)
    o_subj = subj[o_src]
    o_day = ref_day[o_subj] - rng.integers(0, cfg.baseline_window_days + 1, o_src.size, dtype=np.int32)
    return o_subj, o_test, o_val, o_day


def _presentation(
    rng: np.random.Generator,
    cfg: SynthConfig,
    *,
    subj: np.ndarray,
    test: np.ndarray,
    ifn_method: np.ndarray,
    kit: np.ndarray,
    kit_var: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per row: unit variant, test code, method and time of day; and each subject's anti-dsDNA/complement method."""
    n = cfg.n_subjects
    rows = subj.size
    alt_unit = _HAS_ALT_UNIT[test] & (_coin(rng, rows) < cfg.alt_unit)
    is_dsdna = test == _DSDNA
    kit_row = is_dsdna & kit[subj]
    uvar = np.where(kit_row, kit_var[subj], np.where(alt_unit, _VAR_ALT[test], _VAR_CANON[test]))
    alt_code = (_ALT_COUNT[test] > 0) & (_coin(rng, rows) < cfg.alt_code)
    code = np.where(alt_code, _ALT_START[test] + (_coin(rng, rows) * _ALT_COUNT[test]).astype(np.int8), test)
    # Methods belong to the subject's lab, so they are drawn per subject (kits: ELISA or CIA only).
    m_dsdna = np.where(kit, rng.choice(_M_DSDNA[:2], n), rng.choice(_M_DSDNA, n)).astype(np.int8)
    m_ifn = _M_IFN[ifn_method].astype(np.int8)
    m_compl = rng.choice(_M_COMPLEMENT, n).astype(np.int8)
    method = np.full(rows, _M_NONE, np.int8)
    method[is_dsdna] = m_dsdna[subj[is_dsdna]]
    is_ifn = test == _IFN
    method[is_ifn] = m_ifn[subj[is_ifn]]
    is_compl = (test == _C3) | (test == _C4)
    method[is_compl] = m_compl[subj[is_compl]]
    method[((test >= _CD19) & (test <= _PB)) | (test == _PCT)] = _M_FLOW
    time_idx = np.where(_coin(rng, rows) < 0.5, 0, rng.integers(1, len(_TIMES), rows, dtype=np.int16))
    r = {
        "subj": subj,
        "test": test,
        "uvar": uvar,
        "code": code,
        "method": method,
        "time_idx": time_idx,
        "alt_unit": alt_unit,
        "alt_code": alt_code,
        "kit_row": kit_row,
    }
    return r, {"dsdna": m_dsdna, "complement": m_compl}


def _with_conflicting_twins(
    rng: np.random.Generator, cfg: SynthConfig, *, r: dict[str, np.ndarray], kind: np.ndarray, value: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Append conflicting duplicates: a twin with the same subject/test/collected_at/method, another result.

    Sources and twins stay clean (no censoring or malformation) so that the conflict is unambiguous. Returns
    the columns with the twins and `kind` appended, the values, and the clean mask.
    """
    rows = value.size
    test = r["test"]
    c_src = np.flatnonzero((kind == _BASE) & (_coin(rng, rows) < cfg.conflicting_duplicate))
    c_val = _quantise(
        value[c_src] * np.exp(rng.choice([-1.0, 1.0], c_src.size) * rng.uniform(0.15, 0.6, c_src.size)),
        test[c_src],
    )
    c_val = np.where(c_val == value[c_src], value[c_src] + _QUANTUM[test[c_src]], c_val)  # rounding ate it
    clean = np.zeros(rows + c_src.size, dtype=bool)
    clean[c_src] = True
    clean[rows:] = True
    twins = {k: np.concatenate([a, a[c_src]]) for k, a in r.items()}  # ten columns, not rows
    twins["kind"] = np.concatenate([kind, np.full(c_src.size, _CONFLICT, np.int8)])
    return twins, np.concatenate([value, c_val]), clean


def _written_results(
    rng: np.random.Generator, cfg: SynthConfig, *, r: dict[str, np.ndarray], value: np.ndarray, clean: np.ndarray
) -> dict[str, np.ndarray]:
    """The value written in the row's unit, with censoring (anti-dsDNA only) and malformation."""
    rows = value.size
    uvar = r["uvar"]
    dec = _VAR_DEC[uvar]
    written = np.rint(value * _VAR_FACTOR[uvar] * _P10F[dec]) / _P10F[dec]
    censored = (r["test"] == _DSDNA) & ~clean & (_coin(rng, rows) < cfg.censored)
    cens = np.flatnonzero(censored)
    w = written[cens]
    below = w < _VAR_REF_HIGH[uvar[cens]]
    # Bounds a lab would print, always on the right side of the true value: "<10", "<15", ">30", ">800".
    lower = np.maximum(10.0, 5.0 * np.floor(w / 5.0) + 5.0)
    upper = np.where(w >= 100.0, 100.0 * (np.ceil(w / 100.0) - 1.0), 10.0 * (np.ceil(w / 10.0) - 1.0))
    upper = np.where(w > 800.0, 800.0, upper)
    written[cens] = np.where(below, lower, upper)
    dec[cens] = 0
    op = np.zeros(rows, np.int8)
    op[cens] = np.where(below, rng.integers(1, 4, cens.size), rng.integers(4, 7, cens.size))
    malformed = np.where(
        ~clean & (_coin(rng, rows) < cfg.malformed), rng.integers(1, len(_MALFORMED), rows, dtype=np.int8), 0
    ).astype(np.int8)
    return {"written": written, "dec": dec, "op": op, "censored": censored, "malformed": malformed}


def _in_site_order(rng: np.random.Generator, cfg: SynthConfig, r: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Append exact duplicates, then order as a site export: by subject, then date (ties in random order)."""
    rows = r["subj"].size
    dup = np.flatnonzero(_coin(rng, rows) < cfg.duplicate)
    src_row = np.concatenate([np.arange(rows), dup])
    d0 = int(r["day"].min())
    span = int(r["day"].max()) - d0 + 1
    key = (r["subj"][src_row].astype(np.int64) * span + (r["day"][src_row] - d0)) * 1024
    key += rng.integers(0, 1024, src_row.size)
    perm = np.argsort(key)  # the blocks are each sorted by subject already, so gathers stay near-sequential
    order = src_row[perm]
    out = {k: a[order] for k, a in r.items()}  # sixteen columns, not rows
    out["kind"] = np.where(perm >= rows, _DUP, out["kind"]).astype(np.int8)
    return out


def _render_labs(
    r: dict[str, np.ndarray], study_s: pl.Series, site_s: pl.Series, subject_ids: pl.Series
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Turn the coded rows into the native all-String lab table, plus the row-aligned tags."""
    result = _format_numbers(r["written"], r["dec"])
    cens = np.flatnonzero(r["op"])
    result.scatter(cens, _gather(_CENSOR_OPS, r["op"][cens]) + result.gather(cens))
    bad = r["malformed"]
    bad_result = np.flatnonzero((bad >= 1) & (bad <= 3))
    result.scatter(bad_result, _gather(("", "abc", "NEG", ""), bad[bad_result]))
    unit = _gather(_VARIANTS["unit"], r["uvar"])
    unit.scatter(np.flatnonzero(bad == 4), "furlongs")

    # collected_at from a (date x time-of-day) lookup of a few hundred thousand strings: one gather per row.
    d0 = int(r["day"].min())
    span = int(r["day"].max()) - d0 + 1
    dates = pl.Series(np.arange(d0, d0 + span).astype("datetime64[D]")).cast(pl.String)
    n_times = len(_TIMES)
    stamps = dates.gather(np.repeat(np.arange(span), n_times)) + _gather(_TIMES, np.tile(np.arange(n_times), span))
    day_idx = (r["day"] - d0).astype(np.int64)
    collected_at = stamps.gather(day_idx * n_times + r["time_idx"])
    bad_date = np.flatnonzero(bad == 5)  # an impossible calendar date in the row's own year
    collected_at.scatter(bad_date, dates.gather(day_idx[bad_date]).str.slice(0, 4) + "-02-30")
    collected_at.scatter(np.flatnonzero(bad == 6), "yesterday")

    subj = r["subj"]
    labs = pl.DataFrame(
        {
            "study_id": study_s.gather(subj),
            "subject_id": subject_ids.gather(subj),
            "site_id": site_s.gather(subj),
            "test": _gather(_CODES, r["code"]),
            "result": result,
            "unit": unit,
            "collected_at": collected_at,
            "method": _gather(_METHODS, r["method"]),
            "ref_low": _gather(_VARIANTS["ref_low"], r["uvar"]),
            "ref_high": _gather(_VARIANTS["ref_high"], r["uvar"]),
        }
    )
    # Tags are Enums: gathering their small physical codes is cheap, and they compare like strings.
    lab_tags = pl.DataFrame(
        {
            "kind": _enum_gather(_KINDS, r["kind"]),
            "analyte": _enum_gather([t.name for t in _TESTS], r["test"]),
            "alt_unit": r["alt_unit"],
            "alt_code": r["alt_code"],
            "kit_unit": r["kit_row"],
            "censored": r["censored"],
            "malformed": pl.Series([None, *_MALFORMED[1:]], dtype=pl.Enum(_MALFORMED[1:])).gather(bad),
        }
    )
    return labs, lab_tags
