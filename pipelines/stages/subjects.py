"""Subjects and outcomes: parse the subjects file's fields, its row rules, and split subjects and outcomes files.

A subject row is refused for a missing identifier, an unreadable reference or first-exposure date, or a
conflicting or repeated subject; a bad optional field (sex, age, SLEDAI-2K, follow-up dates, ...) is set to
null and the subject kept, with a field record in the quarantine (see `immunostrat.stages.rules`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from immunostrat.ingest.io import SUBJECT_OPTIONAL, SUBJECT_REQUIRED
from immunostrat.schemas.inputs import OutcomeCandidate, SubjectCandidate
from immunostrat.stages.harmonise import _blank_to_null, is_present, parse_iso_date, parse_number, with_parsed
from immunostrat.stages.rules import Rule, Split, apply_rules, count_by, is_repeated, string, text

_SEX = {
    "F": "F",
    "FEMALE": "F",
    "M": "M",
    "MALE": "M",
    "U": "U",
    "UNKNOWN": "U",
    "UNDIFFERENTIATED": "UNDIFFERENTIATED",
}
_TRUE = ["TRUE", "T", "YES", "Y", "1"]
_FALSE = ["FALSE", "F", "NO", "N", "0"]
_LN_CLASS = r"^(NONE|I|II|III|IV|V|VI|III\+V|IV\+V)$"


def _integer(col: str) -> pl.Expr:
    number = parse_number(col)
    return pl.when(number == number.round(0)).then(number.cast(pl.Int64, strict=False)).otherwise(None)


def parse_subjects(raw: pl.DataFrame) -> pl.DataFrame:
    """Typed subject fields beside the raw strings (null where the text cannot be read).

    Each field is parsed once per distinct value (they repeat heavily), and optional fields also get a
    `_present_<col>` flag (the field is not blank) for their rules.
    """
    ref_date, _ = parse_iso_date("reference_date")
    exposure, _ = parse_iso_date("first_exposure_date")
    infusion, _ = parse_iso_date("infusion_date")
    discontinued, _ = parse_iso_date("discontinued_date")
    death, _ = parse_iso_date("death_date")
    retreatment, _ = parse_iso_date("retreatment_date")
    ivig_start, _ = parse_iso_date("ivig_start_date")
    cns = text("active_cns_lupus").str.to_uppercase()
    ln_class = text("lupus_nephritis_class").str.to_uppercase()
    optional = {
        "first_exposure_date": {"_first_exposure_date": exposure},
        "infusion_date": {"_infusion_date": infusion},
        "discontinued_date": {"_discontinued_date": discontinued},
        "death_date": {"_death_date": death},
        "retreatment_date": {"_retreatment_date": retreatment},
        "ivig_start_date": {"_ivig_start_date": ivig_start},
        "sex": {"_sex": text("sex").str.to_uppercase().replace_strict(_SEX, default=None)},
        "age_years": {"_age_years": parse_number("age_years")},
        "sledai_2k": {"_sledai_2k": _integer("sledai_2k")},
        "prior_immunosuppressant_failures": {"_prior_failures": _integer("prior_immunosuppressant_failures")},
        "egfr": {"_egfr": parse_number("egfr")},
        "active_cns_lupus": {
            "_cns": pl.when(cns.is_in(_TRUE)).then(True).when(cns.is_in(_FALSE)).then(False).otherwise(None)
        },
        "lupus_nephritis_class": {
            "_ln_class": pl.when(ln_class.str.contains(_LN_CLASS)).then(ln_class).otherwise(None)
        },
    }
    return with_parsed(
        raw,
        {
            "reference_date": {"_reference_date": ref_date},
            **{col: {**parsed, f"_present_{col}": is_present(col)} for col, parsed in optional.items()},
        },
    )


def _optional(col: str, parsed: str, ok: pl.Expr | None = None) -> pl.Expr:
    good = pl.col(parsed).is_not_null() if ok is None else (pl.col(parsed).is_not_null() & ok.fill_null(False))
    return ~pl.col(f"_present_{col}") | good


def _identifier_rules() -> list[Rule]:
    """The study and subject identifiers are present (subjects and outcomes files)."""
    return [
        Rule("STUDY_ID_MISSING", "study_id", "study_id is empty", is_present("study_id"), string("a study identifier")),
        Rule(
            "SUBJECT_ID_MISSING",
            "subject_id",
            "subject_id is empty",
            is_present("subject_id"),
            string("a subject identifier"),
        ),
    ]


def subject_rules() -> list[Rule]:
    """Row rules for the subjects file, in priority order.
    A declarative rule table, kept whole so that the rules read as one list.

    The rules up to SUBJECT_DUPLICATE refuse the subject. The rest are about optional fields: a bad value
    is set to null (`Rule.nulls`) and the subject kept, so criteria that need it are not assessable, never
    failed, and the subject's lab rows still count. `first_exposure_date` is optional too, but refuses the
    subject when unreadable: an empty one means "not exposed yet", so nulling a bad one would let
    post-infusion measurements into the baseline. An unreadable `infusion_date` or `discontinued_date` is a field
    record like the other optional fields; so is an infusion before first exposure (the infusion date is dropped
    and day 0 falls back to `first_exposure_date`). `death_date`, `retreatment_date` and `ivig_start_date` are
    read the same way; a re-treatment before day 0 is a field record too (RETREATMENT_BEFORE_DAY0): the subject is
    kept with no re-treatment date rather than with a course censored before it began.
    """
    return [
        *_identifier_rules(),
        Rule(
            "REFERENCE_DATE_INVALID",
            "reference_date",
            "reference_date is missing or not an ISO 8601 date",
            pl.col("_reference_date").is_not_null(),
            string("an ISO 8601 date YYYY-MM-DD"),
        ),
        Rule(
            "FIRST_EXPOSURE_DATE_INVALID",
            "first_exposure_date",
            "first_exposure_date is not an ISO 8601 date",
            _optional("first_exposure_date", "_first_exposure_date"),
            string("an ISO 8601 date YYYY-MM-DD or empty"),
        ),
        Rule(
            "SUBJECT_CONFLICT",
            "subject_id",
            "the subject appears more than once with different values",
            ~pl.col("_conflict"),
            string("one row per (study_id, subject_id)"),
        ),
        Rule(
            "SUBJECT_DUPLICATE",
            "subject_id",
            "the subject row repeats an earlier row exactly",
            ~pl.col("_repeat"),
            string("one row per (study_id, subject_id)"),
        ),
        Rule(
            "SEX_INVALID",
            "sex",
            "sex is not a CDISC SEX value",
            _optional("sex", "_sex"),
            string("F, M, U or UNDIFFERENTIATED (or Female/Male/Unknown), or empty"),
            nulls="_sex",
        ),
        Rule(
            "AGE_INVALID",
            "age_years",
            "age_years is not a plausible age",
            _optional("age_years", "_age_years", pl.col("_age_years").is_between(0, 120)),
            string("a number of years between 0 and 120, or empty"),
            nulls="_age_years",
        ),
        Rule(
            "SLEDAI_INVALID",
            "sledai_2k",
            "sledai_2k is not a SLEDAI-2K score",
            _optional("sledai_2k", "_sledai_2k", pl.col("_sledai_2k").is_between(0, 105)),
            string("a whole number between 0 and 105, or empty"),
            nulls="_sledai_2k",
        ),
        Rule(
            "PRIOR_FAILURES_INVALID",
            "prior_immunosuppressant_failures",
            "the count of failed therapies is invalid",
            _optional(
                "prior_immunosuppressant_failures",
                "_prior_failures",
                pl.col("_prior_failures").is_between(0, 50),
            ),
            string("a whole number between 0 and 50, or empty"),
            nulls="_prior_failures",
        ),
        Rule(
            "EGFR_INVALID",
            "egfr",
            "egfr is not a plausible eGFR",
            _optional("egfr", "_egfr", pl.col("_egfr").is_between(0, 300)),
            string("a number between 0 and 300 mL/min/1.73 m2, or empty"),
            nulls="_egfr",
        ),
        Rule(
            "CNS_FLAG_INVALID",
            "active_cns_lupus",
            "active_cns_lupus is not a yes/no value",
            _optional("active_cns_lupus", "_cns"),
            string("true or false (yes/no, y/n, 1/0), or empty"),
            nulls="_cns",
        ),
        Rule(
            "LN_CLASS_INVALID",
            "lupus_nephritis_class",
            "lupus_nephritis_class is not an ISN/RPS class",
            _optional("lupus_nephritis_class", "_ln_class"),
            string("NONE, I, II, III, IV, V, VI, III+V or IV+V, or empty"),
            nulls="_ln_class",
        ),
        Rule(
            "INFUSION_DATE_INVALID",
            "infusion_date",
            "infusion_date is not an ISO 8601 date",
            _optional("infusion_date", "_infusion_date"),
            string("an ISO 8601 date YYYY-MM-DD or empty"),
            nulls="_infusion_date",
        ),
        Rule(
            "INFUSION_BEFORE_FIRST_EXPOSURE",
            "infusion_date",
            "infusion_date is before first_exposure_date",
            # Lymphodepletion (first exposure) comes before the infusion, or on the same day.
            (pl.col("_infusion_date") >= pl.col("_first_exposure_date")).fill_null(True),
            pl.format("a date on or after first_exposure_date {}", pl.col("first_exposure_date").str.strip_chars()),
            nulls="_infusion_date",
        ),
        Rule(
            "DISCONTINUED_DATE_INVALID",
            "discontinued_date",
            "discontinued_date is not an ISO 8601 date",
            _optional("discontinued_date", "_discontinued_date"),
            string("an ISO 8601 date YYYY-MM-DD or empty"),
            nulls="_discontinued_date",
        ),
        Rule(
            "DEATH_DATE_INVALID",
            "death_date",
            "death_date is not an ISO 8601 date",
            _optional("death_date", "_death_date"),
            string("an ISO 8601 date YYYY-MM-DD or empty"),
            nulls="_death_date",
        ),
        Rule(
            "RETREATMENT_DATE_INVALID",
            "retreatment_date",
            "retreatment_date is not an ISO 8601 date",
            _optional("retreatment_date", "_retreatment_date"),
            string("an ISO 8601 date YYYY-MM-DD or empty"),
            nulls="_retreatment_date",
        ),
        Rule(
            "RETREATMENT_BEFORE_DAY0",
            "retreatment_date",
            "retreatment_date is before day 0",
            # Re-treatment censors the course that day 0 starts; one before it is a data error, not a censoring.
            # Day 0 is the infusion date as accepted (a dropped infusion date falls back to first exposure).
            (pl.col("_retreatment_date") >= pl.col("_day0")).fill_null(True),
            pl.format("a date on or after day 0 {}", pl.col("_day0").cast(pl.String)),
            nulls="_retreatment_date",
        ),
        Rule(
            "IVIG_START_DATE_INVALID",
            "ivig_start_date",
            "ivig_start_date is not an ISO 8601 date",
            _optional("ivig_start_date", "_ivig_start_date"),
            string("an ISO 8601 date YYYY-MM-DD or empty"),
            nulls="_ivig_start_date",
        ),
    ]


#: Follow-up columns of accepted subjects that the selection half (strata.parquet) does not carry.
SUBJECT_FOLLOW_UP_COLUMNS: tuple[str, ...] = (
    "infusion_date",
    "discontinued_date",
    "death_date",
    "retreatment_date",
    "ivig_start_date",
    "day0",
    "day0_source",
)

#: Reason codes of the subjects' optional fields: a quarantine record with one of them is a field record (the
#: subject row itself was accepted with that field empty), not a refused row.
SUBJECT_FIELD_CODES: tuple[str, ...] = tuple(r.code for r in subject_rules() if r.nulls is not None)


def subject_quarantine_counts(quarantine: pl.DataFrame) -> dict[str, Any]:
    """Accounting of a subjects file's quarantine: refused rows and field records, counted apart.

    Every subject row read ends in exactly one place, so `rows_read` = `accepted` + `quarantined`, where
    `quarantined` counts refused rows only. A subject accepted with a bad optional field set to null is
    counted in `accepted`; each such field is one of `fields_quarantined` (a row can have several).
    """
    field = (
        quarantine["reason_code"].is_in(SUBJECT_FIELD_CODES)
        if quarantine.height
        else pl.Series("reason_code", [], pl.Boolean)
    )
    refused, fields = quarantine.filter(~field), quarantine.filter(field)
    return {
        "quarantined": refused.height,
        "quarantined_by_reason": count_by(refused, "reason_code"),
        "fields_quarantined": fields.height,
        "fields_quarantined_by_reason": count_by(fields, "reason_code"),
    }


def _subject_duplicate_flags(raw: pl.DataFrame) -> pl.DataFrame:
    """`_conflict` and `_repeat` for subjects listed more than once (identifiers compared stripped).

    As for lab duplicates, only rows whose key hash repeats are analysed (on the exact key), and the flags
    come back by row position.
    """
    contract = [*SUBJECT_REQUIRED, *SUBJECT_OPTIONAL]
    # Compare as the accepted table will hold them (stripped), or " P1" and "P1" would both be accepted.
    key = [text("study_id"), text("subject_id")]
    rows = raw.select(contract).with_row_index("_pos")
    analysed = (
        rows.filter(is_repeated(raw.select(key).hash_rows()))
        .with_columns(
            _n_versions=pl.struct([text(c) for c in contract]).n_unique().over(key),
            _first_pos=pl.col("_pos").min().over(key),
        )
        .select(
            "_pos",
            _conflict=pl.col("_n_versions") > 1,
            _repeat=(pl.col("_n_versions") == 1) & (pl.col("_pos") != pl.col("_first_pos")),
        )
    )
    return (
        rows.select("_pos")
        .join(analysed, on="_pos", how="left", maintain_order="left")
        .select(pl.col("_conflict").fill_null(False), pl.col("_repeat").fill_null(False))
    )


def validate_subjects(raw: pl.DataFrame) -> Split:
    """Split a subjects file into valid subjects (with typed columns) and quarantine.

    The quarantine holds the refused rows, then one field record per bad optional field of an accepted row
    (its subject is in `accepted` with that field null); see `subject_quarantine_counts` for the accounting.
    Accepted subjects also get `day0` (the infusion date, else the first exposure date, else null) and
    `day0_source` (which of the two it is; null with day0), and the optional follow-up dates `death_date`,
    `retreatment_date` and `ivig_start_date` (Date, null when empty or quarantined as a field).
    """
    frame = parse_subjects(raw).hstack(_subject_duplicate_flags(raw))
    # Day 0 as `day0` will be (for RETREATMENT_BEFORE_DAY0): an infusion before first exposure is dropped first.
    infusion_kept = (pl.col("_infusion_date") >= pl.col("_first_exposure_date")).fill_null(True)
    frame = frame.with_columns(
        _day0=pl.coalesce(pl.when(infusion_kept).then(pl.col("_infusion_date")), pl.col("_first_exposure_date"))
    )
    split = apply_rules(frame, SubjectCandidate, subject_rules(), input_kind="subjects")
    typed = split.accepted.select(
        pl.col("study_id").str.strip_chars(),
        pl.col("subject_id").str.strip_chars(),
        _blank_to_null("site_id"),
        pl.col("_sex").alias("sex"),
        pl.col("_age_years").alias("age_years"),
        pl.col("_reference_date").alias("reference_date"),
        pl.col("_first_exposure_date").alias("first_exposure_date"),
        pl.col("_infusion_date").alias("infusion_date"),
        pl.col("_discontinued_date").alias("discontinued_date"),
        pl.col("_death_date").alias("death_date"),
        pl.col("_retreatment_date").alias("retreatment_date"),
        pl.col("_ivig_start_date").alias("ivig_start_date"),
        pl.coalesce("_infusion_date", "_first_exposure_date").alias("day0"),
        pl.when(pl.col("_infusion_date").is_not_null())
        .then(string("infusion_date"))
        .when(pl.col("_first_exposure_date").is_not_null())
        .then(string("first_exposure_date"))
        .alias("day0_source"),
        pl.col("_sledai_2k").alias("sledai_2k"),
        pl.col("_prior_failures").alias("prior_immunosuppressant_failures"),
        pl.col("_ln_class").alias("lupus_nephritis_class"),
        pl.col("_egfr").alias("egfr"),
        pl.col("_cns").alias("active_cns_lupus"),
        "source_file",
        "source_row",
    )
    return Split(accepted=typed, quarantine=split.quarantine)


# --------------------------------------------------------------------------------------------------
# Outcome rules (training)
# --------------------------------------------------------------------------------------------------


def validate_outcomes(raw: pl.DataFrame) -> Split:
    """Split an outcomes file into valid (study_id, subject_id, responded, endpoint) rows and quarantine."""
    flag = text("responded").str.to_uppercase()
    key = [text("study_id"), text("subject_id")]
    frame = raw.with_columns(
        _responded=pl.when(flag.is_in(_TRUE)).then(True).when(flag.is_in(_FALSE)).then(False).otherwise(None),
        _n=pl.len().over(key),
    )
    rules = [
        *_identifier_rules(),
        Rule(
            "RESPONDED_INVALID",
            "responded",
            "responded is not true or false",
            pl.col("_responded").is_not_null(),
            string("true or false (yes/no, y/n, 1/0)"),
        ),
        Rule(
            "OUTCOME_DUPLICATE",
            "subject_id",
            "the subject has more than one outcome row",
            pl.col("_n") == 1,
            string("one outcome row per (study_id, subject_id)"),
        ),
    ]
    split = apply_rules(frame, OutcomeCandidate, rules, input_kind="outcomes")
    typed = split.accepted.select(
        pl.col("study_id").str.strip_chars(),
        pl.col("subject_id").str.strip_chars(),
        pl.col("_responded").alias("responded"),
        pl.col("endpoint"),
    )
    return Split(accepted=typed, quarantine=split.quarantine)
