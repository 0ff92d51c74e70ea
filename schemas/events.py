"""Contracts of the events file (CRS and ICANS assessments, issue 13): the columns as read, and the accepted table.

One row per subject and assessment: the observations the ASTCT 2019 consensus grades CRS and ICANS from (fever,
hypotension and its treatment, oxygen, the ICE score, consciousness, seizures, motor weakness, cerebral edema) and
the grades the site reported. They are named apart from the visits' SLEDAI-2K descriptors (`fever` there,
`temperature_c` here): a treatment toxicity never feeds a SLEDAI item.

`EventCandidate` is the file as read (text), checked row by row by `immunostrat.followup.events.validate_events`;
`Event` is the accepted, typed table it returns.
"""

from __future__ import annotations

import datetime as dt

import pandera.polars as pa
import polars as pl

from immunostrat.schemas.event_columns import (
    CEREBRAL_EDEMA,
    CONSCIOUSNESS,
    EVENT_BOOLEANS,
    EVENT_CATEGORIES,
    EVENT_OPTIONAL,
    EVENT_REQUIRED,
    ICANS_SEIZURE,
    OXYGEN_DEVICES,
)

__all__ = [
    "CEREBRAL_EDEMA",
    "CONSCIOUSNESS",
    "EVENT_BOOLEANS",
    "EVENT_CATEGORIES",
    "EVENT_OPTIONAL",
    "EVENT_REQUIRED",
    "ICANS_SEIZURE",
    "OXYGEN_DEVICES",
    "Event",
    "EventCandidate",
]

_ASSESSED_AT = (
    "Assessment date or date-time, ISO 8601 (YYYY-MM-DD, or YYYY-MM-DDThh:mm[:ss] with an optional offset, read "
    "but not applied: the local date and time as written, like lab `collected_at`); one row per subject and time."
)
_DESCRIPTIONS: dict[str, str] = {
    "study_id": "Study identifier.",
    "subject_id": "Subject identifier within the study.",
    "assessed_at": _ASSESSED_AT,
    "temperature_c": "Highest body temperature since the previous assessment, degrees Celsius.",
    "fever_other_cause": "The fever is attributed to another cause (an infection, ...): yes/no.",
    "anticytokine_or_antipyretic": "Anti-cytokine therapy (tocilizumab, ...) or an antipyretic received at or before "
    "this assessment: yes/no. After it, CRS grading no longer requires fever.",
    "systolic_bp": "Lowest systolic blood pressure, mmHg.",
    "hypotension": "Hypotension present as the site judged it: yes/no (when empty, derivable from `systolic_bp`).",
    "vasopressors": "Number of vasopressors running (vasopressin not counted): a whole number.",
    "vasopressin": "Vasopressin running: yes/no.",
    "oxygen_device": "Oxygen delivery device: " + ", ".join(OXYGEN_DEVICES) + ".",
    "oxygen_flow_l_min": "Oxygen flow, L/min.",
    "ice_score": "Immune effector cell-associated encephalopathy (ICE) score, a whole number 0-10 (10 is normal).",
    "consciousness": "Level of consciousness: " + ", ".join(CONSCIOUSNESS) + ".",
    "icans_seizure": "Seizure: " + ", ".join(ICANS_SEIZURE) + ".",
    "motor_weakness": "Deep focal motor weakness (hemiparesis, paraparesis): yes/no.",
    "cerebral_edema": "Cerebral edema on neuroimaging: " + ", ".join(CEREBRAL_EDEMA) + ".",
    "crs_grade_reported": "CRS grade the site reported (ASTCT 2019), a whole number 0-5.",
    "icans_grade_reported": "ICANS grade the site reported (ASTCT 2019), a whole number 0-5.",
}


class EventCandidate(pa.DataFrameModel):
    """An events row as read (every column text), awaiting validation.

    `study_id`, `subject_id` and `assessed_at` are required: a bad one refuses the row, as do an assessment after
    as_of, a subject not in (or refused from) the subjects file and a conflicting or repeated assessment. A bad
    value in any other column is quarantined as that field only: the assessment is kept with it unknown.
    """

    study_id: str = pa.Field(nullable=True, description=_DESCRIPTIONS["study_id"])
    subject_id: str = pa.Field(nullable=True, description=_DESCRIPTIONS["subject_id"])
    assessed_at: str = pa.Field(nullable=True, description=_DESCRIPTIONS["assessed_at"])
    temperature_c: str = pa.Field(nullable=True, description=_DESCRIPTIONS["temperature_c"])
    fever_other_cause: str = pa.Field(nullable=True, description=_DESCRIPTIONS["fever_other_cause"])
    anticytokine_or_antipyretic: str = pa.Field(nullable=True, description=_DESCRIPTIONS["anticytokine_or_antipyretic"])
    systolic_bp: str = pa.Field(nullable=True, description=_DESCRIPTIONS["systolic_bp"])
    hypotension: str = pa.Field(nullable=True, description=_DESCRIPTIONS["hypotension"])
    vasopressors: str = pa.Field(nullable=True, description=_DESCRIPTIONS["vasopressors"])
    vasopressin: str = pa.Field(nullable=True, description=_DESCRIPTIONS["vasopressin"])
    oxygen_device: str = pa.Field(nullable=True, description=_DESCRIPTIONS["oxygen_device"])
    oxygen_flow_l_min: str = pa.Field(nullable=True, description=_DESCRIPTIONS["oxygen_flow_l_min"])
    ice_score: str = pa.Field(nullable=True, description=_DESCRIPTIONS["ice_score"])
    consciousness: str = pa.Field(nullable=True, description=_DESCRIPTIONS["consciousness"])
    icans_seizure: str = pa.Field(nullable=True, description=_DESCRIPTIONS["icans_seizure"])
    motor_weakness: str = pa.Field(nullable=True, description=_DESCRIPTIONS["motor_weakness"])
    cerebral_edema: str = pa.Field(nullable=True, description=_DESCRIPTIONS["cerebral_edema"])
    crs_grade_reported: str = pa.Field(nullable=True, description=_DESCRIPTIONS["crs_grade_reported"])
    icans_grade_reported: str = pa.Field(nullable=True, description=_DESCRIPTIONS["icans_grade_reported"])
    source_file: str = pa.Field(description="Input file the row came from.")
    source_row: int = pa.Field(ge=1, description="1-based data row in the input file (header excluded).")

    class Config:
        strict = False  # typed helper columns ride along


_UNKNOWN = " Null when not assessed, or when the cell was quarantined as a field."


class Event(pa.DataFrameModel):
    """One accepted CRS/ICANS assessment, typed (`validate_events(...).accepted`); null means not assessed."""

    study_id: str = pa.Field(str_length={"min_value": 1}, description="Study identifier, trimmed.")
    subject_id: str = pa.Field(str_length={"min_value": 1}, description="Subject identifier within the study, trimmed.")
    assessed_at: pl.Datetime("us") = pa.Field(  # type: ignore[valid-type]
        description="Assessment date-time as written, local time (any UTC offset is read but not applied, as for lab "
        "`collected_at`); a date-only value at midnight."
    )
    assessed_date: dt.date = pa.Field(description="Calendar date of `assessed_at`: days since infusion count from it.")
    temperature_c: float = pa.Field(
        nullable=True, description=_DESCRIPTIONS["temperature_c"] + _UNKNOWN, metadata={"unit": "degrees Celsius"}
    )
    fever_other_cause: bool = pa.Field(nullable=True, description=_DESCRIPTIONS["fever_other_cause"] + _UNKNOWN)
    anticytokine_or_antipyretic: bool = pa.Field(
        nullable=True, description=_DESCRIPTIONS["anticytokine_or_antipyretic"] + _UNKNOWN
    )
    systolic_bp: float = pa.Field(
        nullable=True, description=_DESCRIPTIONS["systolic_bp"] + _UNKNOWN, metadata={"unit": "mmHg"}
    )
    hypotension: bool = pa.Field(nullable=True, description=_DESCRIPTIONS["hypotension"] + _UNKNOWN)
    vasopressors: int = pa.Field(
        nullable=True, ge=0, description=_DESCRIPTIONS["vasopressors"] + _UNKNOWN, metadata={"unit": "count"}
    )
    vasopressin: bool = pa.Field(nullable=True, description=_DESCRIPTIONS["vasopressin"] + _UNKNOWN)
    oxygen_device: str = pa.Field(
        nullable=True, isin=list(OXYGEN_DEVICES), description=_DESCRIPTIONS["oxygen_device"] + _UNKNOWN
    )
    oxygen_flow_l_min: float = pa.Field(
        nullable=True, ge=0, description=_DESCRIPTIONS["oxygen_flow_l_min"] + _UNKNOWN, metadata={"unit": "L/min"}
    )
    ice_score: int = pa.Field(
        nullable=True,
        in_range={"min_value": 0, "max_value": 10},
        description=_DESCRIPTIONS["ice_score"] + _UNKNOWN,
        metadata={"unit": "points"},
    )
    consciousness: str = pa.Field(
        nullable=True, isin=list(CONSCIOUSNESS), description=_DESCRIPTIONS["consciousness"] + _UNKNOWN
    )
    icans_seizure: str = pa.Field(
        nullable=True, isin=list(ICANS_SEIZURE), description=_DESCRIPTIONS["icans_seizure"] + _UNKNOWN
    )
    motor_weakness: bool = pa.Field(nullable=True, description=_DESCRIPTIONS["motor_weakness"] + _UNKNOWN)
    cerebral_edema: str = pa.Field(
        nullable=True, isin=list(CEREBRAL_EDEMA), description=_DESCRIPTIONS["cerebral_edema"] + _UNKNOWN
    )
    crs_grade_reported: int = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 5}, description=_DESCRIPTIONS["crs_grade_reported"]
    )
    icans_grade_reported: int = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 5}, description=_DESCRIPTIONS["icans_grade_reported"]
    )
    source_file: str = pa.Field(str_length={"min_value": 1}, description="Input file the row came from, as given.")
    source_row: int = pa.Field(ge=1, description="1-based data row in `source_file` (header excluded).")

    @pa.dataframe_check(name="assessed_date_matches", error="`assessed_date` is the date of `assessed_at`")
    @classmethod
    def _assessed_date_matches(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("assessed_at").dt.date().eq_missing(pl.col("assessed_date")))

    class Config:
        title = "events (accepted)"
        strict = True
        unique = ("study_id", "subject_id", "assessed_at")
