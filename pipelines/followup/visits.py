"""The visits file: one row per subject and assessment date, read, checked and split like lab rows.

A visit carries the 24 SLEDAI-2K descriptors as the site assessed them, the physician global assessment, the
glucocorticoid dose and a few yes/no treatment and activity fields (docs/input.md, *Visits*). Everything is
three-valued: an empty cell means *not assessed* (unknown, null), never absent.

- `read_visits` reads a CSV or Parquet file as text, with `source_file` and `source_row`. A column outside the
  contract refuses the file (a misspelt descriptor would otherwise read as "not assessed" on every visit).
- `validate_visits` refuses a row for a missing identifier or date, a date after as_of, a subject not in (or
  refused from) the subjects file, and a conflicting or repeated visit. A bad value in any other field is a
  *field record*: the visit is kept with that field unknown, and the quarantine gets one record per bad field,
  as for subjects.
- `visit_counts` is the run.json accounting: `rows_read` = `accepted` + `quarantined` (refused rows); field
  records are counted apart.

Descriptor cells are read with one encoding, `boolean` or `weight` (`VisitsConfig.descriptor_encoding`), and
never guessed between the two. The rule engine is `immunostrat.stages.rules` (`apply_rules`): every rule is
checked through pandera.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.config.run import VisitsConfig
from immunostrat.followup.keyed_inputs import (
    check_keyed_header,
    contract_columns,
    duplicate_flags,
    keyed_counts,
    read_keyed_input,
    stripped,
    whole_number,
)
from immunostrat.followup.sledai import ITEM_PREFIX, Descriptor, load_descriptors, parse_descriptor
from immunostrat.ingest.io import InputTable
from immunostrat.schemas.inputs import VISIT_FLAGS, VISIT_REQUIRED, VisitCandidate
from immunostrat.stages.enrolment import enrolment_flags, enrolment_rules, subject_refusals
from immunostrat.stages.harmonise import is_present, parse_iso_date, parse_number, with_parsed
from immunostrat.stages.rules import Rule, Split, apply_rules

__all__ = [
    "VISIT_FIELD_CODES",
    "VISIT_REASON_CODES",
    "documented_visit_rules",
    "read_visits",
    "validate_visits",
    "visit_columns",
    "visit_counts",
    "visit_rules",
]

_KEY = ["study_id", "subject_id"]
#: Reason codes shared by several columns (one per descriptor, one per yes/no field): inside the rule engine each
#: column's rule is named `<code>:<column>` (rules are keyed by name), and the quarantine shows `<code>`.
_DESCRIPTOR_INVALID = "DESCRIPTOR_INVALID"
_FLAG_INVALID = "FLAG_INVALID"


def visit_columns(descriptors: Sequence[Descriptor] | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) columns of a visits file whose descriptors are `descriptors` (default: built-in)."""
    items = tuple(d.item for d in (descriptors if descriptors is not None else load_descriptors()))
    optional = ("visit", *items, "pga", "prednisone_mg_day", *VISIT_FLAGS, "immunosuppressants")
    return VISIT_REQUIRED, optional


#: Why a column outside the contract is refused (the end of the one-line message).
_UNKNOWN_COLUMN = (
    "a visits file holds only the documented columns (docs/input.md, Visits), because a misspelt descriptor would "
    "otherwise read as not assessed on every visit"
)


def read_visits(path: str | Path, descriptors: Sequence[Descriptor] | None = None) -> InputTable:
    """Read a visits file (CSV or Parquet) with every contract column as text, plus `source_file`/`source_row`.

    A missing optional column is read as all empty (not assessed).

    Raises:
        InputError: the file is missing, empty, unreadable or lacks a required column, or it has a column
            outside the contract (named in the one-line message, with the closest contract column if any).
    """
    required, optional = visit_columns(descriptors)
    return read_keyed_input(path, required, optional, kind="visits", why=_UNKNOWN_COLUMN)


def check_visits_header(path: str | Path, descriptors: Sequence[Descriptor] | None = None) -> None:
    """Launch check of a visits file's header (rows unread): a missing required or unknown column stops the run."""
    required, optional = visit_columns(descriptors)
    check_keyed_header(path, required, optional, kind="visits", why=_UNKNOWN_COLUMN)


# --------------------------------------------------------------------------------------------------
# Parsing: typed values beside the text
# --------------------------------------------------------------------------------------------------


def _parsed(descriptors: Sequence[Descriptor], encoding: Any) -> dict[str, dict[str, pl.Expr]]:
    """Per input column, the typed columns it yields (evaluated once per distinct value, see `with_parsed`).

    Descriptor and yes/no cells give a value (null = unknown) and `_bad_<col>` (present but not readable); number
    cells give the number and `_present_<col>`.
    """
    date, _ = parse_iso_date("visit_date")
    parsed: dict[str, dict[str, pl.Expr]] = {"visit_date": {"_visit_date": date}}
    for d in descriptors:
        value, invalid = parse_descriptor(pl.col(d.item), d.weight, encoding)
        parsed[d.item] = {f"_{ITEM_PREFIX}{d.item}": value, f"_bad_{d.item}": invalid}
    for flag in VISIT_FLAGS:
        # The yes/no fields take the words the boolean descriptors take (true/false, 1/0, yes/no, Y/N).
        value, invalid = parse_descriptor(pl.col(flag), 1, "boolean")
        parsed[flag] = {f"_{flag}": value, f"_bad_{flag}": invalid}
    parsed["pga"] = {"_pga": parse_number("pga"), "_present_pga": is_present("pga")}
    parsed["prednisone_mg_day"] = {
        "_prednisone_mg_day": parse_number("prednisone_mg_day"),
        "_present_prednisone_mg_day": is_present("prednisone_mg_day"),
    }
    parsed["immunosuppressants"] = {
        "_immunosuppressants": whole_number("immunosuppressants"),
        "_present_immunosuppressants": is_present("immunosuppressants"),
    }
    return parsed


def _number_ok(col: str, low: float, high: float) -> pl.Expr:
    """True where the number cell is empty, or a number in [low, high]."""
    return ~pl.col(f"_present_{col}") | pl.col(f"_{col}").is_between(low, high).fill_null(False)


# --------------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------------


def _lit(text: str) -> pl.Expr:
    return pl.lit(text, pl.String)


def visit_rules(as_of: dt.date, config: VisitsConfig, descriptors: Sequence[Descriptor]) -> list[Rule]:
    """The row rules of a visits file, in priority order (the frame is built by `validate_visits`).
    A declarative rule table, kept whole so that the rules read as one list.

    The rules up to VISIT_DUPLICATE refuse the row; the rest are field rules (`Rule.nulls`): the visit is kept
    with that field unknown. A rule about one of several descriptor or yes/no columns is named
    `<code>:<column>`; the quarantine reports `<code>`.
    """
    encoding = config.descriptor_encoding
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
            "VISIT_DATE_INVALID",
            "visit_date",
            "visit_date is empty or not an ISO 8601 date",
            pl.col("_visit_date").is_not_null(),
            _lit("an ISO 8601 date YYYY-MM-DD (a date-time counts as its date)"),
        ),
        Rule(
            "VISIT_AFTER_AS_OF",
            "visit_date",
            "the visit date is after the run's as_of date",
            (pl.col("_visit_date") <= pl.lit(as_of)).fill_null(True),
            _lit(f"a date on or before the run's as_of date {as_of.isoformat()}"),
        ),
        *enrolment_rules(),
        Rule(
            "VISIT_DUPLICATE_CONFLICT",
            "visit_date",
            "another row gives different values for the same subject and visit date",
            ~pl.col("_dup_conflict"),
            pl.format("one row per (study_id, subject_id, visit_date); rows {} disagree", "_dup_rows"),
        ),
        Rule(
            "VISIT_DUPLICATE",
            "visit_date",
            "the row repeats an earlier row of the same subject and visit date exactly",
            ~pl.col("_dup_repeat"),
            pl.format("one row per (study_id, subject_id, visit_date); this repeats row {}", "_dup_first_row"),
        ),
    ]
    for d in descriptors:
        expected = (
            boolean_words
            if encoding == "boolean"
            else f"0 or {d.weight} (the descriptor's SLEDAI-2K weight; descriptor_encoding is weight), or empty"
        )
        rules.append(
            Rule(
                f"{_DESCRIPTOR_INVALID}:{d.item}",
                d.item,
                "a SLEDAI-2K descriptor cell is not a value of the configured encoding",
                ~pl.col(f"_bad_{d.item}"),
                _lit(expected),
                nulls=f"_{ITEM_PREFIX}{d.item}",
            )
        )
    rules += [
        Rule(
            "PGA_INVALID",
            "pga",
            "pga is not a physician global assessment from 0 to 3",
            _number_ok("pga", 0.0, 3.0),
            _lit("a number from 0 to 3, or empty"),
            nulls="_pga",
        ),
        Rule(
            "PREDNISONE_INVALID",
            "prednisone_mg_day",
            "prednisone_mg_day is not a plausible daily dose",
            _number_ok("prednisone_mg_day", 0.0, config.max_prednisone_mg_day),
            _lit(f"a number of mg/day from 0 to {config.max_prednisone_mg_day:g} (prednisolone-equivalent), or empty"),
            nulls="_prednisone_mg_day",
        ),
    ]
    rules += [
        Rule(
            f"{_FLAG_INVALID}:{flag}",
            flag,
            "a yes/no field is not a yes/no value",
            ~pl.col(f"_bad_{flag}"),
            _lit(boolean_words),
            nulls=f"_{flag}",
        )
        for flag in VISIT_FLAGS
    ]
    rules.append(
        Rule(
            "IMMUNOSUPPRESSANTS_INVALID",
            "immunosuppressants",
            "immunosuppressants is not a count of ongoing therapies",
            _number_ok("immunosuppressants", 0, config.max_immunosuppressants),
            _lit(f"a whole number from 0 to {config.max_immunosuppressants}, or empty"),
            nulls="_immunosuppressants",
        )
    )
    return rules


def _public(code: str) -> str:
    """The reason code a rule's quarantine records carry (`DESCRIPTOR_INVALID:rash` -> `DESCRIPTOR_INVALID`)."""
    return code.split(":", 1)[0]


def documented_visit_rules() -> list[Rule]:
    """One rule per visits reason code, as the docs list them (the shared codes once, their column generic)."""
    found: dict[str, Rule] = {}
    for rule in visit_rules(dt.date(2000, 1, 1), VisitsConfig(), load_descriptors()):
        code = _public(rule.code)
        if code in found:
            continue
        column = {_DESCRIPTOR_INVALID: "<descriptor>", _FLAG_INVALID: "<yes/no field>"}.get(code, rule.column)
        found[code] = Rule(code, column, rule.description, rule.passes, rule.expected, rule.nulls)
    return list(found.values())


#: Every reason code a visits quarantine record can carry, in priority order.
VISIT_REASON_CODES: tuple[str, ...] = tuple(r.code for r in documented_visit_rules())
#: Reason codes of field records (the visit was kept with that field unknown).
VISIT_FIELD_CODES: tuple[str, ...] = tuple(r.code for r in documented_visit_rules() if r.nulls is not None)


# --------------------------------------------------------------------------------------------------
# Enrolment and duplicates
# --------------------------------------------------------------------------------------------------


def _content(descriptors: Sequence[Descriptor]) -> list[pl.Expr]:
    """What a visit says, typed (so `1` and `true` agree); an unreadable cell by its text (so two differ)."""
    content = [stripped("visit").fill_null("")]
    for col in (*(d.item for d in descriptors), *VISIT_FLAGS):
        typed = f"_{ITEM_PREFIX}{col}" if col not in VISIT_FLAGS else f"_{col}"
        content += [pl.col(typed), pl.when(pl.col(f"_bad_{col}")).then(stripped(col))]
    for col in ("pga", "prednisone_mg_day", "immunosuppressants"):
        content += [pl.col(f"_{col}"), pl.when(pl.col(f"_{col}").is_null()).then(stripped(col))]
    return content


def _public_codes(quarantine: pl.DataFrame) -> pl.DataFrame:
    """Rename the per-column rule names (`DESCRIPTOR_INVALID:rash`) to their reason code, in codes and messages."""
    # The greedy prefix finds the code's last mention: the value, quoted before it, may hold any text.
    shown = r"(?s)^(.*) rejected \(([A-Z_]+):[^)]*\); expected "
    return quarantine.with_columns(
        reason_code=pl.col("reason_code").str.replace(r":.*$", ""),
        reason_codes=pl.col("reason_codes")
        .list.eval(pl.element().str.replace(r":.*$", ""))
        .list.unique(maintain_order=True),
        message=pl.when(pl.col("reason_code").str.contains(":", literal=True))
        .then(pl.col("message").str.replace(shown, "${1} rejected (${2}); expected "))
        .otherwise(pl.col("message")),
    )


def validate_visits(
    raw: pl.DataFrame,
    subjects: pl.DataFrame | None,
    as_of: dt.date,
    config: VisitsConfig,
    descriptors: Sequence[Descriptor],
    *,
    refused: pl.DataFrame | None = None,
) -> Split:
    """Split a visits file into accepted visits (typed) and quarantine (refused rows and field records).

    Args:
        raw: the file as text (`read_visits(...).frame`); a missing optional column reads as not assessed.
        subjects: valid subjects (`validate_subjects(...).accepted`); None skips the enrolment rules.
        as_of: the run's as_of date; a later visit date is quarantined.
        config: the descriptor encoding and plausibility limits.
        descriptors: the SLEDAI-2K descriptor table (`load_descriptors`).
        refused: the subjects file's quarantine: visits of a refused subject are SUBJECT_REFUSED (the message
            names the subject's row and reason) rather than SUBJECT_NOT_ENROLLED.

    Returns:
        `accepted`: `study_id`, `subject_id` (trimmed), `visit` (trimmed, null when empty), `visit_date` (Date),
        `item_<descriptor>` (Boolean, null = not assessed) per descriptor, `pga`, `prednisone_mg_day` (Float64),
        the yes/no fields (Boolean), `immunosuppressants` (Int64), `source_file`, `source_row`. `quarantine`: the
        quarantine table's layout with `input_kind` "visits"; see `visit_counts` for the accounting.
    """
    required, optional = visit_columns(descriptors)
    frame = contract_columns(raw, [*required, *optional])
    frame = with_parsed(frame, _parsed(descriptors, config.descriptor_encoding))
    refusals = subject_refusals(refused)
    frame = frame.hstack(enrolment_flags(frame, subjects, refusals).get_columns())
    frame = frame.hstack(duplicate_flags(frame, "_visit_date", _content(descriptors)).get_columns())
    items = [f"_{ITEM_PREFIX}{d.item}" for d in descriptors]
    typed = ["_visit_date", *items, "_pga", "_prednisone_mg_day", *(f"_{f}" for f in VISIT_FLAGS)]
    keep = [*_KEY, "visit", *typed, "_immunosuppressants", "source_file", "source_row"]
    split = apply_rules(frame, VisitCandidate, visit_rules(as_of, config, descriptors), keep=keep, input_kind="visits")
    blank = stripped("visit")
    accepted = split.accepted.select(
        *(stripped(c).alias(c) for c in _KEY),
        pl.when(blank != "").then(blank).alias("visit"),
        pl.col("_visit_date").alias("visit_date"),
        *(pl.col(f"_{ITEM_PREFIX}{d.item}").alias(ITEM_PREFIX + d.item) for d in descriptors),
        pl.col("_pga").cast(pl.Float64).alias("pga"),
        pl.col("_prednisone_mg_day").cast(pl.Float64).alias("prednisone_mg_day"),
        *(pl.col(f"_{f}").alias(f) for f in VISIT_FLAGS),
        pl.col("_immunosuppressants").cast(pl.Int64).alias("immunosuppressants"),
        "source_file",
        "source_row",
    )
    return Split(accepted=accepted, quarantine=_public_codes(split.quarantine))


def visit_counts(rows_read: int, split: Split) -> dict[str, Any]:
    """The visits accounting for run.json (`keyed_counts`): refused rows and field records counted apart."""
    return keyed_counts(rows_read, split, VISIT_FIELD_CODES)
