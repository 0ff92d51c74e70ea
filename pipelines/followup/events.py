"""The events file: CRS and ICANS assessments, one row per subject and time, read, checked and split like visits.

An event row carries what the ASTCT 2019 consensus grades cytokine release syndrome and ICANS from (temperature,
hypotension and vasopressors, oxygen device and flow, ICE score, consciousness, seizure, motor weakness, cerebral
edema) and the grades the site reported (docs/input.md, *Events*). Everything is three-valued: an empty cell means
*not assessed* (unknown, null), never absent or normal. Grading is not done here; this module only reads.

- `read_events` reads a CSV or Parquet file as text, with `source_file` and `source_row`. A column outside the
  contract refuses the file with a one-line "did you mean" message (a misspelt column would otherwise read as not
  assessed on every row).
- `validate_events` refuses a row (`EVENT_REASON_CODES`, in priority order) for a missing identifier, an
  unreadable `assessed_at` (EVENT_TIME_INVALID), an assessment after as_of (EVENT_AFTER_AS_OF), a subject not in
  or refused from the subjects file (the lab and visit rules, `stages.enrolment.enrolment_rules`), and a repeated
  assessment: rows of one subject and `assessed_at` that say different things all conflict
  (EVENT_DUPLICATE_CONFLICT); rows that say the same thing keep the first (EVENT_DUPLICATE). A bad value in any
  other column is a *field record* (`EVENT_FIELD_CODES`): the row is kept with that field null.
- `event_counts` is the run.json accounting: `rows_read` = `accepted` + `quarantined` (refused rows); field
  records are counted apart.

Choices:
- `assessed_at` is read by the lab dates' parser (`stages.harmonise.parse_iso_date`): an ISO 8601 date or
  date-time; a UTC offset is read but not applied (the local date and time as written, as for `collected_at`), and a
  date alone is midnight. So `2025-03-05` and `2025-03-05T00:00` are the same assessment time.
- Booleans take the visits' words (`sledai.parse_descriptor`, boolean encoding: true/false, 1/0, yes/no, Y/N, any
  case). Categories match their documented values ignoring case and surrounding spaces only: `Nasal Cannula` or
  `nasal-cannula` is a field record, never guessed to be `nasal_cannula`.
- Plausibility limits of temperature, blood pressure, vasopressor count and oxygen flow are configuration
  (`EventsConfig`); the ICE score (whole, 0-10) and reported grades (whole, 0-5) are bounded by their scales.
- Duplicates compare what a row says, typed (`1` and `yes` agree) and, for an unreadable cell, by its text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.config.followup import EventsConfig
from immunostrat.followup.keyed_inputs import (
    check_keyed_header,
    contract_columns,
    duplicate_flags,
    keyed_counts,
    read_keyed_input,
    stripped,
    whole_number,
)
from immunostrat.followup.sledai import parse_descriptor
from immunostrat.ingest.io import InputTable
from immunostrat.schemas.events import (
    EVENT_BOOLEANS,
    EVENT_CATEGORIES,
    EVENT_OPTIONAL,
    EVENT_REQUIRED,
    EventCandidate,
)
from immunostrat.stages.enrolment import enrolment_flags, enrolment_rules, subject_refusals
from immunostrat.stages.harmonise import is_present, parse_iso_date, parse_number, with_parsed
from immunostrat.stages.rules import Rule, Split, apply_rules

__all__ = [
    "EVENT_FIELD_CODES",
    "EVENT_REASON_CODES",
    "event_counts",
    "event_rules",
    "read_events",
    "validate_events",
]

_KEY = ["study_id", "subject_id"]
#: Number columns read as any plain number.
_NUMBERS: tuple[str, ...] = ("temperature_c", "systolic_bp", "oxygen_flow_l_min")
#: Number columns that must be whole numbers.
_WHOLE: tuple[str, ...] = ("vasopressors", "ice_score", "crs_grade_reported", "icans_grade_reported")
#: The field-record code of each optional column.
_FIELD_CODE: dict[str, str] = {
    "temperature_c": "TEMPERATURE_INVALID",
    "fever_other_cause": "FEVER_OTHER_CAUSE_INVALID",
    "anticytokine_or_antipyretic": "ANTICYTOKINE_INVALID",
    "systolic_bp": "SYSTOLIC_BP_INVALID",
    "hypotension": "HYPOTENSION_INVALID",
    "vasopressors": "VASOPRESSORS_INVALID",
    "vasopressin": "VASOPRESSIN_INVALID",
    "oxygen_device": "OXYGEN_DEVICE_INVALID",
    "oxygen_flow_l_min": "OXYGEN_FLOW_INVALID",
    "ice_score": "ICE_SCORE_INVALID",
    "consciousness": "CONSCIOUSNESS_INVALID",
    "icans_seizure": "ICANS_SEIZURE_INVALID",
    "motor_weakness": "MOTOR_WEAKNESS_INVALID",
    "cerebral_edema": "CEREBRAL_EDEMA_INVALID",
    "crs_grade_reported": "CRS_GRADE_REPORTED_INVALID",
    "icans_grade_reported": "ICANS_GRADE_REPORTED_INVALID",
}


#: Why a column outside the contract is refused (the end of the one-line message).
_UNKNOWN_COLUMN = (
    "an events file holds only the documented columns (docs/input.md, Events), because a misspelt column would "
    "otherwise read as not assessed on every row"
)


def read_events(path: str | Path) -> InputTable:
    """Read an events file (CSV or Parquet) with every contract column as text, plus `source_file`/`source_row`.

    A missing optional column is read as all empty (not assessed).

    Raises:
        InputError: the file is missing, empty, unreadable or lacks a required column, or it has a column
            outside the contract (named in the one-line message, with the closest contract column if any).
    """
    return read_keyed_input(path, EVENT_REQUIRED, EVENT_OPTIONAL, kind="events", why=_UNKNOWN_COLUMN)


def check_events_header(path: str | Path) -> None:
    """Launch check of an events file's header (rows unread): a missing required or unknown column stops the run."""
    check_keyed_header(path, EVENT_REQUIRED, EVENT_OPTIONAL, kind="events", why=_UNKNOWN_COLUMN)


# --------------------------------------------------------------------------------------------------
# Parsing: typed values beside the text
# --------------------------------------------------------------------------------------------------


def _category(col: str, values: Sequence[str]) -> pl.Expr:
    """The documented value a cell names (ignoring case and surrounding spaces), else null."""
    cell = pl.col(col).str.strip_chars().str.to_lowercase()
    return pl.when(cell.is_in(list(values))).then(cell).otherwise(None)


def _parsed() -> dict[str, dict[str, pl.Expr]]:
    """Per input column, the typed columns it yields (evaluated once per distinct value, see `with_parsed`).

    Every optional column gives its typed value `_<col>` (null = unknown) and `_bad_<col>` (present but not
    readable as its type; the range checks are rules).
    """
    date, datetime = parse_iso_date("assessed_at")
    parsed: dict[str, dict[str, pl.Expr]] = {"assessed_at": {"_assessed_date": date, "_assessed_at": datetime}}
    for col in _NUMBERS:
        parsed[col] = {f"_{col}": parse_number(col), f"_bad_{col}": is_present(col) & parse_number(col).is_null()}
    for col in _WHOLE:
        parsed[col] = {f"_{col}": whole_number(col), f"_bad_{col}": is_present(col) & whole_number(col).is_null()}
    for col in EVENT_BOOLEANS:
        value, invalid = parse_descriptor(pl.col(col), 1, "boolean")
        parsed[col] = {f"_{col}": value, f"_bad_{col}": invalid}
    for col, values in EVENT_CATEGORIES.items():
        parsed[col] = {
            f"_{col}": _category(col, values),
            f"_bad_{col}": is_present(col) & _category(col, values).is_null(),
        }
    return parsed


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------


def _lit(text: str) -> pl.Expr:
    return pl.lit(text, pl.String)


def _field_rule(col: str, description: str, passes: pl.Expr, expected: str) -> Rule:
    return Rule(_FIELD_CODE[col], col, description, passes, _lit(expected), nulls=f"_{col}")


def _in_range(col: str, low: float, high: float) -> pl.Expr:
    """True where the cell is empty, or readable and in [low, high]."""
    return ~pl.col(f"_bad_{col}") & (pl.col(f"_{col}").is_between(low, high) | pl.col(f"_{col}").is_null())


def event_rules(as_of: dt.date, config: EventsConfig) -> list[Rule]:
    """The row rules of an events file, in priority order (the frame is built by `validate_events`).
    A declarative rule table, kept whole so that the rules read as one list.

    The rules up to EVENT_DUPLICATE refuse the row; the rest are field rules (`Rule.nulls`): the assessment is
    kept with that field unknown.
    """
    boolean_words = "true or false (1/0, yes/no, Y/N; any case), or empty"
    rules = [
        Rule("STUDY_ID_MISSING", "study_id", "study_id is empty", is_present("study_id"), _lit("a study identifier")),
        Rule(
            "SUBJECT_ID_MISSING",
            "subject_id",
            "subject_id is empty",
            is_present("subject_id"),
            _lit("a subject identifier"),
        ),
        Rule(
            "EVENT_TIME_INVALID",
            "assessed_at",
            "assessed_at is empty or not an ISO 8601 date or date-time",
            pl.col("_assessed_at").is_not_null(),
            _lit(
                "an ISO 8601 date YYYY-MM-DD or date-time YYYY-MM-DDThh:mm[:ss][Z|+hh:mm]; partial dates are not "
                "accepted"
            ),
        ),
        Rule(
            "EVENT_AFTER_AS_OF",
            "assessed_at",
            "the assessment date is after the run's as_of date",
            (pl.col("_assessed_date") <= pl.lit(as_of)).fill_null(True),
            _lit(f"a date on or before the run's as_of date {as_of.isoformat()}"),
        ),
        *enrolment_rules(),
        Rule(
            "EVENT_DUPLICATE_CONFLICT",
            "assessed_at",
            "another row gives different values for the same subject and assessment time",
            ~pl.col("_dup_conflict"),
            pl.format("one row per (study_id, subject_id, assessed_at); rows {} disagree", "_dup_rows"),
        ),
        Rule(
            "EVENT_DUPLICATE",
            "assessed_at",
            "the row repeats an earlier row of the same subject and assessment time exactly",
            ~pl.col("_dup_repeat"),
            pl.format("one row per (study_id, subject_id, assessed_at); this repeats row {}", "_dup_first_row"),
        ),
        _field_rule(
            "temperature_c",
            "temperature_c is not a plausible body temperature",
            _in_range("temperature_c", config.temperature_c_min, config.temperature_c_max),
            f"a number of degrees Celsius from {config.temperature_c_min:g} to {config.temperature_c_max:g}, or empty",
        ),
        _field_rule(
            "systolic_bp",
            "systolic_bp is not a plausible systolic blood pressure",
            _in_range("systolic_bp", config.systolic_bp_min, config.systolic_bp_max),
            f"a number of mmHg from {config.systolic_bp_min:g} to {config.systolic_bp_max:g}, or empty",
        ),
        _field_rule(
            "vasopressors",
            "vasopressors is not a count of vasopressors",
            _in_range("vasopressors", 0, config.max_vasopressors),
            f"a whole number from 0 to {config.max_vasopressors} (vasopressin not counted), or empty",
        ),
        _field_rule(
            "oxygen_flow_l_min",
            "oxygen_flow_l_min is not a plausible oxygen flow",
            _in_range("oxygen_flow_l_min", 0, config.max_oxygen_flow_l_min),
            f"a number of L/min from 0 to {config.max_oxygen_flow_l_min:g}, or empty",
        ),
        _field_rule(
            "ice_score",
            "ice_score is not an ICE score",
            _in_range("ice_score", 0, 10),
            "a whole number from 0 to 10, or empty",
        ),
        *(
            _field_rule(
                col,
                f"{col} is not an ASTCT grade",
                _in_range(col, 0, 5),
                "a whole number from 0 to 5, or empty",
            )
            for col in ("crs_grade_reported", "icans_grade_reported")
        ),
        *(
            _field_rule(col, f"{col} is not a yes/no value", ~pl.col(f"_bad_{col}"), boolean_words)
            for col in EVENT_BOOLEANS
        ),
        *(
            _field_rule(
                col,
                f"{col} is not one of its documented values",
                ~pl.col(f"_bad_{col}"),
                "one of " + ", ".join(values) + " (any case), or empty; other words are never guessed",
            )
            for col, values in EVENT_CATEGORIES.items()
        ),
    ]
    return rules


_DOCUMENTED = event_rules(dt.date(2000, 1, 1), EventsConfig())
#: Every reason code an events quarantine record can carry, in priority order.
EVENT_REASON_CODES: tuple[str, ...] = tuple(r.code for r in _DOCUMENTED)
#: Reason codes of field records (the assessment was kept with that field unknown).
EVENT_FIELD_CODES: tuple[str, ...] = tuple(r.code for r in _DOCUMENTED if r.nulls is not None)


# --------------------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------------------


def _content() -> list[pl.Expr]:
    """What a row says, typed (so `1` and `yes` agree); an unreadable cell by its text (so two differ)."""
    content: list[pl.Expr] = []
    for col in EVENT_OPTIONAL:
        content += [pl.col(f"_{col}"), pl.when(pl.col(f"_bad_{col}")).then(stripped(col))]
    return content


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def validate_events(
    raw: pl.DataFrame,
    subjects: pl.DataFrame | None,
    as_of: dt.date,
    *,
    refused: pl.DataFrame | None = None,
    config: EventsConfig | None = None,
) -> Split:
    """Split an events file into accepted assessments (typed) and quarantine (refused rows and field records).

    Args:
        raw: the file as text (`read_events(...).frame`); a missing optional column reads as not assessed.
        subjects: valid subjects (`validate_subjects(...).accepted`); None skips the enrolment rules.
        as_of: the run's as_of date; a later assessment date is quarantined.
        refused: the subjects file's quarantine: events of a refused subject are SUBJECT_REFUSED (the message
            names the subject's row and reason) rather than SUBJECT_NOT_ENROLLED.
        config: plausibility limits (default `EventsConfig()`).

    Returns:
        `accepted`: the `immunostrat.schemas.events.Event` table (identifiers trimmed, `assessed_at` Datetime,
        `assessed_date` Date, typed fields, null = not assessed, `source_file`, `source_row`). `quarantine`: the
        quarantine table's layout with `input_kind` "events"; see `event_counts` for the accounting.
    """
    cfg = config or EventsConfig()
    frame = contract_columns(raw, [*EVENT_REQUIRED, *EVENT_OPTIONAL])
    frame = with_parsed(frame, _parsed())
    frame = frame.hstack(enrolment_flags(frame, subjects, subject_refusals(refused)).get_columns())
    frame = frame.hstack(duplicate_flags(frame, "_assessed_at", _content()).get_columns())
    typed = [f"_{c}" for c in EVENT_OPTIONAL]
    keep = [*_KEY, "_assessed_at", "_assessed_date", *typed, "source_file", "source_row"]
    split = apply_rules(frame, EventCandidate, event_rules(as_of, cfg), keep=keep, input_kind="events")
    accepted = split.accepted.select(
        *(stripped(c).alias(c) for c in _KEY),
        pl.col("_assessed_at").alias("assessed_at"),
        pl.col("_assessed_date").alias("assessed_date"),
        *(_typed(c) for c in EVENT_OPTIONAL),
        "source_file",
        "source_row",
    )
    return Split(accepted=accepted, quarantine=split.quarantine)


def _typed(col: str) -> pl.Expr:
    """An accepted column in its output type (numbers as Float64 or Int64, yes/no as Boolean, categories as text)."""
    value = pl.col(f"_{col}")
    if col in _NUMBERS:
        value = value.cast(pl.Float64)
    elif col in _WHOLE:
        value = value.cast(pl.Int64)
    elif col in EVENT_CATEGORIES:
        value = value.cast(pl.String)
    else:
        value = value.cast(pl.Boolean)
    return value.alias(col)


def event_counts(rows_read: int, split: Split) -> dict[str, Any]:
    """The events accounting for run.json (`keyed_counts`): refused rows and field records counted apart."""
    return keyed_counts(rows_read, split, EVENT_FIELD_CODES)
