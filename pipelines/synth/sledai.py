"""SLEDAI-2K descriptors and the visit tables' columns, with the screening and post-infusion course tables that
decide which descriptors a visit shows."""

from __future__ import annotations

import numpy as np

from immunostrat.synth.config import LAB_COLUMNS

# SLEDAI-2K descriptors in the order of schemas/reference/sledai_2k.csv (kept in sync by
# tests/test_synth_followup.py): item, weight, kind.
_SLEDAI: tuple[tuple[str, int, str], ...] = (
    ("seizure", 8, "clinical"),
    ("psychosis", 8, "clinical"),
    ("organic_brain_syndrome", 8, "clinical"),
    ("visual_disturbance", 8, "clinical"),
    ("cranial_nerve_disorder", 8, "clinical"),
    ("lupus_headache", 8, "clinical"),
    ("cva", 8, "clinical"),
    ("vasculitis", 8, "clinical"),
    ("arthritis", 4, "clinical"),
    ("myositis", 4, "clinical"),
    ("urinary_casts", 4, "laboratory"),
    ("hematuria", 4, "laboratory"),
    ("proteinuria", 4, "laboratory"),
    ("pyuria", 4, "laboratory"),
    ("rash", 2, "clinical"),
    ("alopecia", 2, "clinical"),
    ("mucosal_ulcers", 2, "clinical"),
    ("pleurisy", 2, "clinical"),
    ("pericarditis", 2, "clinical"),
    ("low_complement", 2, "serology"),
    ("increased_dna_binding", 2, "serology"),
    ("fever", 1, "clinical"),
    ("thrombocytopenia", 1, "laboratory"),
    ("leukopenia", 1, "laboratory"),
)


SLEDAI_WEIGHTS: dict[str, int] = {item: weight for item, weight, _ in _SLEDAI}


CLINICAL_DESCRIPTORS: tuple[str, ...] = tuple(item for item, _, kind in _SLEDAI if kind == "clinical")


LABORATORY_DESCRIPTORS: tuple[str, ...] = tuple(item for item, _, kind in _SLEDAI if kind != "clinical")


VISIT_LABELS: tuple[str, ...] = ("SCREENING", "MONTH_1", "MONTH_3", "MONTH_6", "MONTH_12", "UNSCHEDULED")


VISIT_BOOLEAN_FIELDS: tuple[str, ...] = (
    "antimalarial",
    "hemolytic_anemia",
    "gi_activity",
    "other_investigational_drug",
    "treatment_failure",
)


VISIT_COLUMNS: tuple[str, ...] = (
    "study_id",
    "subject_id",
    "visit",
    "visit_date",
    *CLINICAL_DESCRIPTORS,
    *LABORATORY_DESCRIPTORS,
    "pga",
    "prednisone_mg_day",
    *VISIT_BOOLEAN_FIELDS,
    "immunosuppressants",
)


FOLLOWUP_SUBJECT_COLUMNS: tuple[str, ...] = ("infusion_date", "discontinued_date")


# Follow-up lab rows: the native lab columns plus `lloq` (the assay's lower limit of quantification, in the row's
# unit; empty where the assay has none). Readers keep columns outside their contract as extra columns.
FOLLOWUP_LAB_COLUMNS: tuple[str, ...] = (*LAB_COLUMNS, "lloq")


_D = {item: k for k, (item, _, _) in enumerate(_SLEDAI)}


_W = np.array([w for _, w, _ in _SLEDAI], dtype=np.int64)


_SEROLOGY = np.array([_D["low_complement"], _D["increased_dna_binding"]])


_NON_SEROLOGY = np.array([k for k, (_, _, kind) in enumerate(_SLEDAI) if kind != "serology"])


# Screening: chance that a descriptor is drawn (without / with lupus nephritis in the subjects file), before the
# top-up that makes the descriptors sum to the subject's SLEDAI-2K. Tuned so that the observed screening
# prevalences are those stated in docs/synthetic.md; CNS items are rare (active CNS lupus excludes).
_SCREEN_P: dict[str, tuple[float, float]] = {
    "seizure": (0.003, 0.003),
    "psychosis": (0.003, 0.003),
    "organic_brain_syndrome": (0.003, 0.003),
    "visual_disturbance": (0.003, 0.003),
    "cranial_nerve_disorder": (0.003, 0.003),
    "lupus_headache": (0.005, 0.005),
    "cva": (0.003, 0.003),
    "vasculitis": (0.05, 0.05),
    "arthritis": (0.55, 0.45),
    "myositis": (0.04, 0.04),
    "urinary_casts": (0.01, 0.15),
    "hematuria": (0.03, 0.35),
    "proteinuria": (0.03, 0.60),
    "pyuria": (0.02, 0.20),
    "rash": (0.45, 0.35),
    "alopecia": (0.35, 0.30),
    "mucosal_ulcers": (0.30, 0.25),
    "pleurisy": (0.08, 0.08),
    "pericarditis": (0.05, 0.05),
    "fever": (0.05, 0.05),
    "thrombocytopenia": (0.08, 0.08),
    "leukopenia": (0.15, 0.15),
}


# Draw order: heavy items first so that they only enter when they fit; the 1-point items last.
_DRAW_ORDER = np.array(sorted((_D[item] for item in _SCREEN_P), key=lambda k: (-_W[k], k)))


_SCREEN_P_ARR = np.zeros((24, 2))


for _item, _p in _SCREEN_P.items():  # 22 table entries
    _SCREEN_P_ARR[_D[_item]] = _p


# Top-up order: common items first, then the other non-CNS items, so that any remainder up to 30 points is
# filled exactly (the 1-point items settle odd remainders).
_FILL_ORDER = np.array(
    [
        _D[item]
        for item in (
            "arthritis",
            "rash",
            "alopecia",
            "mucosal_ulcers",
            "myositis",
            "proteinuria",
            "hematuria",
            "pyuria",
            "urinary_casts",
            "pleurisy",
            "pericarditis",
        )
    ]
)


_GREEDY_ORDER = np.array(
    [*sorted(_FILL_ORDER, key=lambda k: -_W[k]), _D["leukopenia"], _D["thrombocytopenia"], _D["fever"]]
)


# Odd remainders: one of the 1-point items, with these chances.
_ONE_POINT = np.array([_D["leukopenia"], _D["thrombocytopenia"], _D["fever"]])


_ONE_POINT_P = np.array([0.5, 0.3, 0.2])


# Course after infusion, by [responded (0 = no, 1 = yes), phase (0 screening, 1..4 months 1, 3, 6, 12)].
_PERSIST = np.array([[1.0, 0.7, 0.6, 0.6, 0.6], [1.0, 0.5, 0.15, 0.0, 0.0]])  # a screening item still present


_PGA_LO = np.array([[1.0, 0.8, 0.8, 0.8, 0.8], [1.0, 0.5, 0.1, 0.0, 0.0]])


_PGA_HI = np.array([[2.6, 2.5, 2.5, 2.5, 2.5], [2.6, 1.2, 0.8, 0.4, 0.4]])


_DSDNA_MULT = np.array([[1.0, 0.85, 0.8, 0.8, 0.8], [1.0, 0.5, 0.25, 0.2, 0.2]])


_COMPLEMENT_MULT = np.array([[1.0, 1.0, 1.05, 1.05, 1.05], [1.0, 1.1, 1.25, 1.3, 1.3]])


_SCHEDULE_DAY = np.array([30, 90, 180, 365])  # months 1, 3, 6, 12 after infusion


_SCHEDULE_JITTER = np.array([3, 7, 7, 14])  # +- days around the target


_GAP_LO = np.array([40, 105, 200])  # unscheduled visits fall between scheduled windows


_GAP_HI = np.array([75, 160, 340])


_PREDNISONE = np.array([5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 30.0])


_PREDNISONE_P = np.array([0.10, 0.15, 0.25, 0.10, 0.15, 0.15, 0.10])


_RENAL_ITEMS = ("urinary_casts", "hematuria", "proteinuria", "pyuria")
