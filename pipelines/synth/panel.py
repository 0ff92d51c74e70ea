"""Reference tables of the selection panel (analytes, units, codes, methods, IFN methods, kits), kept in sync with
schemas/reference/*.csv by tests/test_synth.py, and the rounding a lab applies to them."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from immunostrat.synth.strings import _fmt


class _Test(NamedTuple):
    name: str  # canonical analyte, or the verbatim code of an outside-panel test
    unit: str  # canonical unit
    quantum: float  # canonical values are rounded to a multiple of this
    dec: int  # decimals written in the canonical unit
    ref_low: float | None
    ref_high: float | None
    alt_unit: str | None
    alt_factor: float  # written value = canonical value * alt_factor
    alt_dec: int
    codes: tuple[str, ...]  # non-canonical codes (schemas/reference/test_codes.csv)
    lo: float  # plausible clip range, canonical unit
    hi: float
    post_factor: float  # multiplier for measurements after CAR-T exposure (B-cell aplasia, seroconversion)


# fmt: off
_TESTS: tuple[_Test, ...] = (
    # name, unit, quantum, dec, ref_low, ref_high, alt_unit, alt_factor, alt_dec, codes, lo, hi, post_factor
    _Test("anti_dsdna", "IU/mL", 0.1, 1, None, 30.0, None, 1.0, 1,
          ("5130-0", "ADSDNA", "DDNAIGAB", "anti-dsDNA", "dsDNA"), 1.0, 10000.0, 0.25),
    _Test("c3", "g/L", 0.01, 2, 0.9, 1.8, "mg/dL", 100.0, 0, ("4485-9", "complement_c3"), 0.15, 3.0, 1.25),
    _Test("c4", "g/L", 0.01, 2, 0.16, 0.50, "mg/dL", 100.0, 0, ("4498-2", "complement_c4"), 0.02, 1.0, 1.4),
    _Test("ifn_score", "", 0.01, 2, None, None, None, 1.0, 2, ("IFNGS",), -10.0, 500.0, 0.5),
    _Test("cd19_b_cells", "cells/uL", 1.0, 0, 100.0, 500.0, "10^9/L", 0.001, 3,
          ("8116-6", "BLYCE", "CD19"), 0.0, 5000.0, 0.01),
    _Test("cd3_t_cells", "cells/uL", 1.0, 0, 700.0, 2100.0, "10^9/L", 0.001, 3,
          ("8122-4", "TLYCE", "CD3"), 0.0, 10000.0, 0.8),
    _Test("cd4_t_cells", "cells/uL", 1.0, 0, 300.0, 1400.0, "10^9/L", 0.001, 3,
          ("24467-3", "TLYH", "CD4"), 0.0, 8000.0, 0.7),
    _Test("cd8_t_cells", "cells/uL", 1.0, 0, 200.0, 900.0, "10^9/L", 0.001, 3,
          ("14135-8", "TLC", "CD8"), 0.0, 8000.0, 1.1),
    _Test("plasmablasts", "cells/uL", 0.1, 1, None, None, "10^9/L", 0.001, 4, (), 0.1, 1000.0, 0.05),
    _Test("lymphocytes", "cells/uL", 10.0, 0, 1000.0, 4000.0, "10^9/L", 0.001, 2,
          ("26474-7", "LYM"), 50.0, 20000.0, 0.8),
    # The percent form also arrives under the absolute test's alias with unit % (units.csv maps it over).
    _Test("cd19_b_cells_pct", "%", 0.1, 1, 6.0, 22.0, None, 1.0, 1, ("8117-4", "BLYCELY", "CD19"),
          0.0, 100.0, 0.01),
    # Outside the panel: sites export whole lab panels; immunostrat must split these off.
    _Test("ALB", "g/L", 1.0, 0, 35.0, 52.0, None, 1.0, 0, (), 5.0, 80.0, 1.0),
    _Test("WBC", "10^9/L", 0.1, 1, 4.0, 11.0, None, 1.0, 1, (), 0.5, 60.0, 1.0),
    _Test("CRP", "mg/L", 0.1, 1, None, 5.0, None, 1.0, 1, (), 0.1, 400.0, 1.0),
    _Test("HGB", "g/L", 1.0, 0, 120.0, 160.0, None, 1.0, 0, (), 40.0, 200.0, 1.0),
    _Test("PLT", "10^9/L", 1.0, 0, 150.0, 400.0, None, 1.0, 0, (), 5.0, 900.0, 1.0),
    _Test("CREAT", "umol/L", 1.0, 0, 45.0, 90.0, None, 1.0, 0, (), 20.0, 900.0, 1.0),
)


# fmt: on
PANEL_ANALYTES: tuple[str, ...] = tuple(t.name for t in _TESTS[:11])


_N_CORE = 10  # anti_dsdna .. lymphocytes: sent for every subject unless missing


_DSDNA, _C3, _C4, _IFN, _CD19, _CD3, _CD4, _CD8, _PB, _LYM, _PCT = range(11)


_OUTSIDE = np.arange(11, len(_TESTS), dtype=np.int8)


# Outside-panel tests: lognormal median and log-sd, canonical unit.
_OUTSIDE_MEDIAN = np.array([38.0, 5.5, 6.0, 118.0, 210.0, 78.0])


_OUTSIDE_LOGSD = np.array([0.12, 0.35, 1.0, 0.12, 0.35, 0.35])


# IFN methods (schemas/reference/ifn_methods.csv): cut-off, inclusive, and the share of subjects measured so.
_IFN_METHODS = ("MEDIAN_FC_21", "MEDIAN_FC_6", "MEAN_Z")


_IFN_CUTOFF = np.array([2.0, 2.466, 2.0])


_IFN_INCLUSIVE = np.array([True, False, True])


_IFN_WEIGHTS = np.array([0.60, 0.35, 0.05])


_MEAN_Z = 2


# Kit-unit variants of anti-dsDNA: (unit, kit upper limit of normal in that unit).
_KITS: tuple[tuple[str, float], ...] = (("U/mL", 20.0), ("U/mL", 25.0), ("U/mL", 100.0), ("AU/mL", 25.0))


# Selection rows use the first ten (by index); follow-up methods are appended, so those indices never move.
_METHODS = (
    "", "ELISA", "CIA", "FEIA", *_IFN_METHODS, "NEPHELOMETRY", "TURBIDIMETRY", "FLOW CYTOMETRY", "CKD-EPI 2021", "QPCR"
)  # fmt: skip


_M_NONE = 0


_M_DSDNA = np.array([1, 2, 3], dtype=np.int8)  # ELISA, CIA, FEIA (kits: ELISA or CIA)


_M_IFN = np.array([4, 5, 6], dtype=np.int8)


_M_COMPLEMENT = np.array([7, 8], dtype=np.int8)


_M_FLOW = 9


_M_CKD_EPI = 10


_M_QPCR = 11


_KINDS = ("baseline", "pre_window", "post_exposure", "outside_panel", "conflicting_duplicate", "duplicate")


_BASE, _PRE, _POST, _OUT, _CONFLICT, _DUP = range(6)


_MALFORMED = ("", "result_text", "result_neg", "result_empty", "unit_unknown", "date_impossible", "date_text")


_CENSOR_OPS = ("", "<", "< ", "<=", ">", "> ", ">=")


_EPOCH_2025 = int(np.datetime64("2025-01-01", "D").astype(np.int64))


_FOLLOW_UP_DAYS = 40 + 180  # latest exposure after the reference date + the last post-exposure row


def _unit_variants() -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Table of (unit, factor, decimals, ref strings) variants and per-test canonical/alt/kit indices.

    Built once from the ~20 entries of the reference tables (not per row).
    """
    rows: list[tuple[str, float, int, str, str, float]] = []
    canonical: list[int] = []
    alternative: list[int] = []
    for t in _TESTS:
        canonical.append(len(rows))
        rows.append(
            (
                t.unit,
                1.0,
                t.dec,
                _fmt(t.ref_low, t.dec),
                _fmt(t.ref_high, t.dec),
                np.nan if t.ref_high is None else t.ref_high,
            )
        )
        if t.alt_unit is None:
            alternative.append(canonical[-1])
            continue
        alternative.append(len(rows))
        lo = None if t.ref_low is None else t.ref_low * t.alt_factor
        hi = None if t.ref_high is None else t.ref_high * t.alt_factor
        rows.append(
            (
                t.alt_unit,
                t.alt_factor,
                t.alt_dec,
                _fmt(lo, t.alt_dec),
                _fmt(hi, t.alt_dec),
                np.nan if hi is None else hi,
            )
        )
    kits: list[int] = []
    for unit, uln in _KITS:
        kits.append(len(rows))
        # Kit units are anti-dsDNA's ratio to its cut-off times the kit's ULN (30 IU/mL maps to the ULN).
        rows.append((unit, uln / 30.0, 1, "", _fmt(uln, 0), uln))
    table = pl.DataFrame(rows, schema=["unit", "factor", "dec", "ref_low", "ref_high", "ref_high_num"], orient="row")
    as_codes = (np.array(canonical, dtype=np.int8), np.array(alternative, dtype=np.int8), np.array(kits, dtype=np.int8))
    return table, *as_codes


_VARIANTS, _VAR_CANON, _VAR_ALT, _VAR_KIT = _unit_variants()


_VAR_FACTOR = _VARIANTS["factor"].to_numpy()


_VAR_DEC = _VARIANTS["dec"].to_numpy().astype(np.int8)


_VAR_REF_HIGH = _VARIANTS["ref_high_num"].to_numpy()


# Codes: index 0.._N_TESTS-1 are the canonical names; alternatives follow, contiguous per test.
_CODES: list[str] = [t.name for t in _TESTS] + [code for t in _TESTS for code in t.codes]


_ALT_COUNT = np.array([len(t.codes) for t in _TESTS], dtype=np.int8)


_ALT_START = (len(_TESTS) + np.cumsum(_ALT_COUNT) - _ALT_COUNT).astype(np.int8)


_HAS_ALT_UNIT = np.array([t.alt_unit is not None for t in _TESTS])


_QUANTUM = np.array([t.quantum for t in _TESTS])


_LO = np.array([t.lo for t in _TESTS])


_HI = np.array([t.hi for t in _TESTS])


_POST_FACTOR = np.array([t.post_factor for t in _TESTS])


def _quantise(value: np.ndarray, test: np.ndarray | int) -> np.ndarray:
    """Round canonical values to their reporting quantum and plausible range (what a lab would write)."""
    q = _QUANTUM[test]
    return np.rint(np.clip(value, _LO[test], _HI[test]) / q) * q
