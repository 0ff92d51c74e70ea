"""Reference tables of the follow-up labs (analytes, units, codes, LLOQs, urinalysis bands), their collection
schedule, and the CKD-EPI 2021 equation linking creatinine and eGFR."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from immunostrat.synth.panel import _KITS
from immunostrat.synth.strings import _fmt


class _FuTest(NamedTuple):
    name: str
    quantum: float  # canonical values are rounded to a multiple of this
    units: tuple[tuple[str, float, int, str, str], ...]  # (unit, factor, decimals, ref_low, ref_high); first canonical
    codes: tuple[str, ...]  # aliases and codes (schemas/reference/test_codes.csv of the follow-up panel)
    descriptor: str | None  # the lab-derivable SLEDAI-2K descriptor it carries


_CREATININE_UMOL_PER_MG_DL = 88.42


def ckd_epi_2021(creatinine_mg_dl: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """eGFR (mL/min/1.73m2) by the race-free CKD-EPI 2021 creatinine equation (Inker, NEJM 2021).

    142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age (x 1.012 if female); k = 0.7 (female) or 0.9,
    a = -0.241 (female) or -0.302; Scr in mg/dL.
    """
    kappa, alpha = np.where(female, 0.7, 0.9), np.where(female, -0.241, -0.302)
    ratio = creatinine_mg_dl / kappa
    scale = 142.0 * 0.9938**age * np.where(female, 1.012, 1.0)
    return scale * np.minimum(ratio, 1.0) ** alpha * np.maximum(ratio, 1.0) ** -1.200


def creatinine_for_egfr(egfr: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Serum creatinine (mg/dL) that gives `egfr` by CKD-EPI 2021: the equation solved for Scr."""
    kappa, alpha = np.where(female, 0.7, 0.9), np.where(female, -0.241, -0.302)
    scale = 142.0 * 0.9938**age * np.where(female, 1.012, 1.0)
    relative = egfr / scale  # >= 1 exactly when Scr <= k (the min() branch)
    ratio = np.where(relative >= 1.0, relative ** (1.0 / alpha), relative ** (-1.0 / 1.200))
    return ratio * kappa


_COUNT_UNITS = ("10^9/L", "10*9/L", "G/L", "10^3/uL", "K/uL", "x10E3/uL")


_UPCR_MG_MMOL = 1.0 / 0.00884  # g/g -> mg/mmol (0.5 g/g = 56.6 mg/mmol)


_CREAT_MG_DL = 1.0 / 88.42  # umol/L -> mg/dL


# fmt: off
_FU_TESTS: tuple[_FuTest, ...] = (
    _FuTest("platelets", 1.0, tuple((u, 1.0, 0, "150", "400") for u in _COUNT_UNITS), ("PLAT", "777-3"),
            "thrombocytopenia"),
    _FuTest("wbc", 0.1, tuple((u, 1.0, 1, "4.0", "11.0") for u in _COUNT_UNITS), ("6690-2", "leukocytes"),
            "leukopenia"),
    _FuTest("neutrophils", 0.01, tuple((u, 1.0, 2, "1.80", "7.50") for u in _COUNT_UNITS), ("ANC", "NEUT"), None),
    _FuTest("lymphocytes", 10.0, (("cells/uL", 1.0, 0, "1000", "4000"), ("10^9/L", 0.001, 2, "1.00", "4.00")),
            ("26474-7", "LYM"), None),
    _FuTest("cd4_t_cells", 1.0, (("cells/uL", 1.0, 0, "300", "1400"), ("10^9/L", 0.001, 3, "0.300", "1.400")),
            ("24467-3", "CD4"), None),
    _FuTest("hemoglobin", 1.0, (("g/L", 1.0, 0, "120", "160"), ("g/dL", 0.1, 1, "12.0", "16.0")), ("HGB", "718-7"),
            None),
    _FuTest("creatinine", 1.0, (("umol/L", 1.0, 0, "45", "90"), ("mg/dL", _CREAT_MG_DL, 2, "0.51", "1.02")),
            ("CREAT", "2160-0"), None),
    # eGFR as labs report it beside creatinine: CKD-EPI 2021 (race-free), whole numbers, the equation in `method`.
    _FuTest("egfr", 1.0, (("mL/min/1.73m2", 1.0, 0, "90", ""),), (), None),
    _FuTest("upcr", 0.01, (("g/g", 1.0, 2, "", "0.20"), ("mg/mmol", _UPCR_MG_MMOL, 1, "", "22.6"),
                           ("mg/g", 1000.0, 0, "", "200")), ("PROTCRT", "2890-2"), "proteinuria"),
    _FuTest("urine_protein_24h", 0.01, (("g/24h", 1.0, 2, "", "0.15"),), (), "proteinuria"),
    _FuTest("urine_rbc", 1.0, (("/HPF", 1.0, 0, "0", "2"),), ("13945-1",), "hematuria"),
    _FuTest("urine_wbc", 1.0, (("/HPF", 1.0, 0, "0", "5"),), ("5821-4",), "pyuria"),
    _FuTest("urine_casts", 1.0, (("/LPF", 1.0, 0, "", ""),), ("RBC casts",), "urinary_casts"),
    _FuTest("igg", 0.1, (("g/L", 1.0, 1, "7.0", "16.0"), ("mg/dL", 100.0, 0, "700", "1600")), ("IGG", "2465-3"),
            None),
    _FuTest("cd19_b_cells", 1.0, (("cells/uL", 1.0, 0, "100", "500"), ("10^9/L", 0.001, 3, "0.1", "0.5")),
            ("8116-6", "BLYCE"), None),
    _FuTest("car_t_cells", 0.1, (("cells/uL", 1.0, 1, "", ""),), (), None),
    _FuTest("car_t_copies", 1.0, (("copies/ug DNA", 1.0, 0, "", ""), ("copies/µg DNA", 1.0, 0, "", "")), (), None),
    _FuTest("anti_dsdna", 0.1, (("IU/mL", 1.0, 1, "", "30"),), ("5130-0", "ADSDNA"), "increased_dna_binding"),
    _FuTest("c3", 0.01, (("g/L", 1.0, 2, "0.9", "1.8"), ("mg/dL", 100.0, 0, "90", "180")), ("4485-9",),
            "low_complement"),
    _FuTest("c4", 0.01, (("g/L", 1.0, 2, "0.16", "0.5"), ("mg/dL", 100.0, 0, "16", "50")), ("4498-2",),
            "low_complement"),
)


# fmt: on
FOLLOWUP_ANALYTES: tuple[str, ...] = tuple(t.name for t in _FU_TESTS)


_F = {t.name: k for k, t in enumerate(_FU_TESTS)}


# Anti-dsDNA kit units follow, as in the baseline rows.
_FU_UNIT_ROWS = [u for t in _FU_TESTS for u in t.units] + [
    (unit, uln / 30.0, 1, "", _fmt(uln, 0)) for unit, uln in _KITS
]


_FU_UNIT = [u[0] for u in _FU_UNIT_ROWS]


_FU_FACTOR = np.array([u[1] for u in _FU_UNIT_ROWS])


_FU_DEC = np.array([u[2] for u in _FU_UNIT_ROWS], dtype=np.int8)


_FU_REF_LOW = [u[3] for u in _FU_UNIT_ROWS]


_FU_REF_HIGH = [u[4] for u in _FU_UNIT_ROWS]


_FU_UNIT_COUNT = np.array([len(t.units) for t in _FU_TESTS], dtype=np.int16)


_FU_UNIT_START = (np.cumsum(_FU_UNIT_COUNT) - _FU_UNIT_COUNT).astype(np.int16)


_FU_KIT_START = int(_FU_UNIT_COUNT.sum())


_FU_CODES = [t.name for t in _FU_TESTS] + [c for t in _FU_TESTS for c in t.codes]


_FU_CODE_COUNT = np.array([len(t.codes) for t in _FU_TESTS], dtype=np.int16)


_FU_CODE_START = (len(_FU_TESTS) + np.cumsum(_FU_CODE_COUNT) - _FU_CODE_COUNT).astype(np.int16)


_FU_QUANTUM = np.array([t.quantum for t in _FU_TESTS])


# Lower limits of quantification, per (analyte, unit) as the lab prints them (the `lloq` column, in the row's
# unit). CD19: high-sensitivity flow, 0.441 cells/uL (NOBILITY); CAR-T flow 1 cells/uL and qPCR 20 copies/ug DNA
# are invented for the synthetic data (no published figure was at hand).
_LLOQ_TEXT = {
    ("cd19_b_cells", "cells/uL"): "0.441",
    ("cd19_b_cells", "10^9/L"): "0.000441",
    ("car_t_cells", "cells/uL"): "1",
    ("car_t_copies", "copies/ug DNA"): "20",
    ("car_t_copies", "copies/µg DNA"): "20",
}


_FU_UNIT_ANALYTE = [t.name for t in _FU_TESTS for _ in t.units] + ["anti_dsdna"] * len(_KITS)


_FU_LLOQ = [_LLOQ_TEXT.get((a, u), "") for a, u in zip(_FU_UNIT_ANALYTE, _FU_UNIT, strict=True)]


# The same limit in the canonical unit (NaN: no LLOQ), to decide which values are below it.
_FU_LLOQ_CANONICAL = np.array([float(x) / f if x else np.nan for x, f in zip(_FU_LLOQ, _FU_FACTOR, strict=True)])


# Semi-quantitative urinalysis as sites print it: ranges by count band; beyond 50 /HPF "TNTC".
_URINE_BAND_EDGES = np.array([2, 5, 10, 20, 50])


_URINE_BANDS = ("0-2", "3-5", "6-10", "11-20", "21-50", "TNTC")


# Lab collections besides the visits, for infused subjects (days since infusion): dense early draws while
# neutrophils and platelets are lowest and CAR-T cells expand, then monthly ones between the scheduled visits.
_EARLY_DAYS = (0, 2, 4, 7, 10, 14, 17, 21, 24)


_MONTHLY_DAYS = (60, 120, 150, 210, 240, 270, 300, 330)  # +- _MONTHLY_JITTER


_MONTHLY_JITTER = 3


_ALL_EARLY, _ALL_MONTHLY = frozenset(_EARLY_DAYS), frozenset(_MONTHLY_DAYS)


_BLOOD_COUNT = frozenset(("platelets", "wbc", "neutrophils", "lymphocytes", "hemoglobin", "creatinine", "egfr"))


# Which analytes a collection holds: (at screening, at visits after infusion, early days, monthly days).
# Further rules in _followup_labs: CAR-T only up to day 200 and qPCR only for subjects whose site runs it, IgG
# not at unscheduled visits, 24-hour urine protein at a quarter of visits.
# Lymphocytes and CD4 are selection-panel analytes: the selection labs carry their screening values already.
_LAB_SCHEDULE: dict[str, tuple[bool, bool, frozenset[int], frozenset[int]]] = {
    **{name: (True, True, _ALL_EARLY, _ALL_MONTHLY) for name in _BLOOD_COUNT},
    "lymphocytes": (False, True, _ALL_EARLY, _ALL_MONTHLY),
    "cd4_t_cells": (False, True, frozenset((7, 14, 21)), frozenset((120, 240))),
    "cd19_b_cells": (True, True, frozenset((4, 7, 14, 21)), _ALL_MONTHLY),
    "car_t_cells": (False, True, _ALL_EARLY - {0}, frozenset((60,))),
    "car_t_copies": (False, True, frozenset((4, 7, 10, 14, 21)), frozenset((60,))),
}


_VISIT_ONLY = (True, True, frozenset[int](), frozenset[int]())


def _in_slot(name: str, slot: int) -> bool:
    """Whether a collection of `slot` holds analyte `name` (slots: 0 screening visit, 1 visit after infusion,
    2.. the early days, then the monthly days)."""
    at_screening, at_visit, early, monthly = _LAB_SCHEDULE.get(name, _VISIT_ONLY)
    if slot < 2:
        return at_visit if slot else at_screening
    if slot < 2 + len(_EARLY_DAYS):
        return _EARLY_DAYS[slot - 2] in early
    return _MONTHLY_DAYS[slot - 2 - len(_EARLY_DAYS)] in monthly


_SLOT_ANALYTES = np.array(
    [[_in_slot(t.name, slot) for t in _FU_TESTS] for slot in range(2 + len(_EARLY_DAYS) + len(_MONTHLY_DAYS))]
)


_CAR_T_LAST_VISIT_DAY = 200


_CD19_RETURN_FLOOR = 5.0  # cells/uL: the first values after the return day are at least this
