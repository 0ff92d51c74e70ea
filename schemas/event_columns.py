"""The columns and categories of an events file (CRS / ICANS assessments), as plain data.

Kept apart from the pandera contracts in `immunostrat.schemas.events` so that what only needs the column names
(the synthetic generator, launch checks of a file's header) does not import pandera.
"""

from __future__ import annotations

__all__ = [
    "CEREBRAL_EDEMA",
    "CONSCIOUSNESS",
    "EVENT_BOOLEANS",
    "EVENT_CATEGORIES",
    "EVENT_COLUMNS",
    "EVENT_OPTIONAL",
    "EVENT_REQUIRED",
    "ICANS_SEIZURE",
    "OXYGEN_DEVICES",
]

#: Required columns of an events file.
EVENT_REQUIRED: tuple[str, ...] = ("study_id", "subject_id", "assessed_at")
#: Oxygen delivery, the ASTCT hypoxia rows' devices (low-flow nasal cannula and blow-by: grade 2; high-flow nasal
#: cannula, facemask, non-rebreather, Venturi: grade 3; CPAP, BiPAP, mechanical ventilation: grade 4).
OXYGEN_DEVICES: tuple[str, ...] = (
    "none",
    "nasal_cannula",
    "blow_by",
    "high_flow_nasal_cannula",
    "facemask",
    "non_rebreather",
    "venturi",
    "cpap",
    "bipap",
    "mechanical_ventilation",
)
#: Depressed level of consciousness, the ASTCT ICANS domain's levels, least to most depressed.
CONSCIOUSNESS: tuple[str, ...] = (
    "awake",
    "awakens_spontaneously",
    "awakens_to_voice",
    "awakens_to_touch",
    "unarousable",
)
#: Seizure, the ASTCT ICANS domain's levels.
ICANS_SEIZURE: tuple[str, ...] = ("none", "rapidly_resolving", "prolonged_or_repetitive")
#: Cerebral edema on neuroimaging, the ASTCT ICANS domain's levels.
CEREBRAL_EDEMA: tuple[str, ...] = ("none", "focal", "diffuse")
#: Category columns and their values (matched ignoring case and surrounding spaces; anything else is never guessed).
EVENT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "oxygen_device": OXYGEN_DEVICES,
    "consciousness": CONSCIOUSNESS,
    "icans_seizure": ICANS_SEIZURE,
    "cerebral_edema": CEREBRAL_EDEMA,
}
#: Yes/no columns (true/false, 1/0, yes/no, Y/N; any case).
EVENT_BOOLEANS: tuple[str, ...] = (
    "fever_other_cause",
    "anticytokine_or_antipyretic",
    "hypotension",
    "vasopressin",
    "motor_weakness",
)
#: Optional columns of an events file, in the documented order; a missing one reads as all empty (not assessed).
EVENT_OPTIONAL: tuple[str, ...] = (
    "temperature_c",
    "fever_other_cause",
    "anticytokine_or_antipyretic",
    "systolic_bp",
    "hypotension",
    "vasopressors",
    "vasopressin",
    "oxygen_device",
    "oxygen_flow_l_min",
    "ice_score",
    "consciousness",
    "icans_seizure",
    "motor_weakness",
    "cerebral_edema",
    "crs_grade_reported",
    "icans_grade_reported",
)
#: Every column of an events file, in the documented order.
EVENT_COLUMNS: tuple[str, ...] = (*EVENT_REQUIRED, *EVENT_OPTIONAL)
