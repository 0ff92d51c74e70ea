"""Validate: run every row rule through pandera and split rows into accepted and quarantined.

Each rule is a polars expression that is True for a row that passes. All rules are evaluated in one query
(shared sub-expressions run once) into a Boolean column per rule, named by its reason code; each column
carries a pandera check of the same name in the table's schema, validated with `lazy=True` on an eager
frame (so data checks really run and every failure is collected), and the failure cases' row indices
decide the quarantine. A quarantined row keeps its original columns, its primary reason code (the first
failing rule in the order below), every failing code, and a message naming file, row, column, value and
what was expected.

Most rules refuse the row. A rule about an optional field (a subject's age, sex, SLEDAI-2K, ...) instead
sets that field to null and keeps the row: the quarantine then holds a *field record* for it (one per bad
field, its reason code being the field's own) and the row is accepted. A refused row's primary reason is
always a refusing rule; its `reason_codes` also list the bad optional fields.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.errors import SchemaErrors

from immunostrat.followup.urinalysis import RANGE_REVERSED, SEMI_QUANTITATIVE_ANALYTES, WORD_UNMAPPED
from immunostrat.ingest.io import LAB_OPTIONAL, LAB_REQUIRED, SUBJECT_OPTIONAL, SUBJECT_REQUIRED
from immunostrat.schemas.events import EVENT_OPTIONAL, EVENT_REQUIRED
from immunostrat.schemas.inputs import (
    VISIT_OPTIONAL,
    VISIT_REQUIRED,
    LabCandidate,
    OutcomeCandidate,
    SubjectCandidate,
)
from immunostrat.stages.harmonise import _blank_to_null, is_present, parse_iso_date, parse_number, with_parsed

#: The input columns a quarantine row can carry as sent (lab, subject, visit and events files).
QUARANTINE_ORIGINAL_COLUMNS = tuple(
    dict.fromkeys(
        [
            *LAB_REQUIRED,
            *LAB_OPTIONAL,
            *SUBJECT_REQUIRED,
            *SUBJECT_OPTIONAL,
            *VISIT_REQUIRED,
            *VISIT_OPTIONAL,
            *EVENT_REQUIRED,
            *EVENT_OPTIONAL,
        ]
    )
)
#: Which kind of input a quarantine row came from (`input_kind` of quarantine.parquet).
INPUT_KINDS: tuple[str, ...] = ("labs", "subjects", "visits", "outcomes", "events")


class ContractError(Exception):
    """A table failed at the schema level (a missing column or wrong type): not a row problem."""


@dataclass(frozen=True)
class Rule:
    """One row rule. `passes` must be True or False for every row (never null).

    `nulls` names the typed column of an optional field: a failure then sets it to null and keeps the row
    (with a field record in the quarantine) instead of refusing the row.
    """

    code: str
    column: str
    description: str
    passes: pl.Expr
    expected: pl.Expr
    nulls: str | None = None


@dataclass(frozen=True)
class Split:
    """Rows that passed every refusing rule, and the quarantine: refused rows and field records, in file order."""

    accepted: pl.DataFrame
    quarantine: pl.DataFrame


def _text(col: str) -> pl.Expr:
    return pl.col(col).str.strip_chars().fill_null("")


def _filled(col: str) -> pl.Expr:
    """Not empty, for a column that arrives stripped (harmonise strips lab identifiers)."""
    return pl.col(col).fill_null("") != ""


def _lit(text: str) -> pl.Expr:
    return pl.lit(text, pl.String)


# --------------------------------------------------------------------------------------------------
# Rule engine
# --------------------------------------------------------------------------------------------------


def rule_flags(frame: pl.DataFrame, rules: Sequence[Rule]) -> pl.DataFrame:
    """Every rule's pass/fail column, named by its code, from one query (shared sub-expressions run once)."""
    return frame.lazy().select(rule.passes.alias(rule.code) for rule in rules).collect()


def _passes(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key))


def _schema(model: type[pa.DataFrameModel], rules: Sequence[Rule]) -> pa.DataFrameSchema:
    """The model's columns plus one Boolean column per rule, checked by a pandera check named by its code."""
    base = model.to_schema()
    flags = {
        rule.code: pa.Column(pl.Boolean, pa.Check(_passes, name=rule.code, error=rule.description), nullable=True)
        for rule in rules
    }
    return pa.DataFrameSchema(columns={**base.columns, **flags}, strict=False, name=base.name)


def _failures(frame: pl.DataFrame, model: type[pa.DataFrameModel], rules: Sequence[Rule]) -> pl.DataFrame:
    """(index, reason_code) for every failing row and rule, from pandera's failure cases.

    `frame` carries each rule's outcome in a column named by its code (see `rule_flags`): pandera runs the
    checks on those columns, so every rule is evaluated once, in one query, and a failing row costs nothing
    more than its index.
    """
    empty = pl.DataFrame(schema={"index": pl.UInt32, "reason_code": pl.String})
    try:
        _schema(model, rules).validate(frame, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        structural = cases.filter(pl.col("index").is_null())
        if structural.height:
            first = structural.row(0, named=True)
            raise ContractError(
                f"{model.__name__} failed at the schema level: check {first['check']} on column "
                f"{first['column']} ({first['failure_case']})"
            ) from errors
        # A rule's failure cases are reported on its own column, named by its code.
        return (
            cases.filter(pl.col("column").is_in([r.code for r in rules]))
            .select(pl.col("index").cast(pl.UInt32), pl.col("column").alias("reason_code"))
            .unique()
        )
    return empty


def _ranked_failures(failures: pl.DataFrame, rules: Sequence[Rule]) -> pl.DataFrame:
    """Failures with each rule's `_priority`: the rules' order, refusing rules before field rules."""
    ordered = [r.code for r in rules if r.nulls is None] + [r.code for r in rules if r.nulls is not None]
    priority = pl.DataFrame(
        {"reason_code": ordered, "_priority": list(range(len(ordered)))},
        schema={"reason_code": pl.String, "_priority": pl.Int32},
    )
    return failures.join(priority, on="reason_code", how="left").sort("index", "_priority")


def apply_rules(
    frame: pl.DataFrame,
    model: type[pa.DataFrameModel],
    rules: Sequence[Rule],
    *,
    keep: Sequence[str] | None = None,
    flags: pl.DataFrame | None = None,
    annotate: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    input_kind: str,
) -> Split:
    """Validate `frame` against `model` plus `rules`; split off failing rows with reasons and messages.

    `keep` names the columns the accepted rows need downstream (default: all); the helper columns of the
    checks are then never copied for the (many) accepted rows. `flags` holds outcomes already computed for
    some of the rules (see `rule_flags`); the others are computed here. A row failing only field rules
    (`Rule.nulls`) is accepted with those columns null, and each bad field gets a quarantine record of its
    own. `annotate` may add columns to the quarantined rows before the messages are built (the rules'
    `expected` may read them). `input_kind` (one of `INPUT_KINDS`) fills the quarantine's `input_kind` column.
    """
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"unknown input kind {input_kind!r}; expected one of {', '.join(INPUT_KINDS)}")
    known = [] if flags is None else flags.columns
    computed = rule_flags(frame, [r for r in rules if r.code not in known])
    if flags is not None:
        computed = flags.hstack(computed)
    indexed = frame.with_row_index("_idx")
    ranked = _ranked_failures(_failures(frame.hstack(computed.select(r.code for r in rules)), model, rules), rules)
    field_rules = [r for r in rules if r.nulls is not None]
    fields = ranked.clear()
    if field_rules:
        # A row whose first failure (in priority order) is a field rule fails field rules only.
        first = ranked.group_by("index", maintain_order=True).agg(pl.col("reason_code").first())
        kept = first.filter(pl.col("reason_code").is_in([r.code for r in field_rules]))["index"]
        fields = ranked.filter(pl.col("index").is_in(kept.implode()))
        ranked = ranked.filter(~pl.col("index").is_in(kept.implode()))
    reasons = (
        ranked.group_by("index", maintain_order=True)
        .agg(pl.col("reason_code").first(), pl.col("reason_code").alias("reason_codes"), pl.col("_priority").first())
        .rename({"index": "_idx"})
    )
    # A positional mask, not joins: joining the wide frame on a row index gathers every column.
    failing = np.zeros(frame.height, dtype=bool)
    failing[reasons["_idx"].to_numpy()] = True
    mask = pl.Series("_failing", failing)
    # Plain column picks: `select` would copy every picked column into one chunk first.
    accepted = (frame[list(keep)] if keep is not None else frame).filter(~mask)
    if fields.height:
        nulled = [r for r in field_rules if r.nulls in accepted.columns]
        good = computed.select(r.code for r in nulled).filter(~mask)
        # Several rules may guard one field (an unreadable date, a date out of order): any failure nulls it.
        guards: dict[str, list[str]] = {}
        for r in nulled:
            guards.setdefault(str(r.nulls), []).append(f"_ok_{r.code}")
        accepted = accepted.hstack(good.select(pl.all().name.prefix("_ok_"))).with_columns(
            pl.when(pl.all_horizontal(oks)).then(pl.col(column)).otherwise(None).alias(column)
            for column, oks in guards.items()
        )
        accepted = accepted.drop([f"_ok_{r.code}" for r in nulled])
    failed = indexed.filter(mask).join(reasons, on="_idx", how="left", maintain_order="left").with_columns(_field=False)
    if fields.height:
        # One record per bad field: its row, repeated for each field that row got wrong.
        records = indexed.select(pl.all().gather(fields["index"])).hstack(
            fields.select(
                "reason_code", pl.concat_list("reason_code").alias("reason_codes"), "_priority", _field=True
            ).get_columns()
        )
        failed = pl.concat([failed, records])
    if annotate is not None:
        failed = annotate(failed)
    column = pl.lit(None, pl.String)
    value = pl.lit(None, pl.String)
    expected = pl.lit(None, pl.String)
    for rule in reversed(rules):
        hit = pl.col("reason_code") == rule.code
        column = pl.when(hit).then(_lit(rule.column)).otherwise(column)
        shown = f"_raw_{rule.column}" if f"_raw_{rule.column}" in frame.columns else rule.column
        value = pl.when(hit).then(pl.col(shown).cast(pl.String).fill_null("")).otherwise(value)
        expected = pl.when(hit).then(rule.expected).otherwise(expected)
    message = pl.format(
        "{} row {}, column '{}': value '{}' rejected ({}); expected {}",
        "source_file",
        "source_row",
        "column",
        "value",
        "reason_code",
        "_expected",
    )
    kept_note = pl.format("; the row is kept with {} empty", "column")
    quarantine = (
        failed.with_columns(column=column, value=value, _expected=expected)
        .with_columns(message=pl.when("_field").then(pl.concat_str(message, kept_note)).otherwise(message))
        .sort("_idx", "_priority")
    )
    original = [
        pl.col(f"_raw_{c}").alias(c) if f"_raw_{c}" in frame.columns else pl.col(c)
        for c in QUARANTINE_ORIGINAL_COLUMNS
        if c in frame.columns
    ]
    quarantine = quarantine.select(
        "source_file",
        "source_row",
        "reason_code",
        "reason_codes",
        "column",
        "value",
        "message",
        pl.lit(input_kind, pl.String).alias("input_kind"),
        *original,
    )
    return Split(accepted=accepted, quarantine=quarantine)


# --------------------------------------------------------------------------------------------------
# Lab rules
# --------------------------------------------------------------------------------------------------

_DUP_KEY = ["study_id", "subject_id", "analyte", "collected_at_parsed", "method"]
#: What `harmonised_table` reads from accepted lab rows.
ACCEPTED_LAB_COLUMNS = (
    "study_id",
    "subject_id",
    "site_id",
    "analyte",
    "value",
    "value_high",
    "unit_canonical",
    "censoring",
    "ref_low_value",
    "ref_high_value",
    "lloq_value",
    "method",
    "collected_at_parsed",
    "collected_date",
    "test",
    "result",
    "unit",
    "source_file",
    "source_row",
)


_SUBJECT_KEY = ["study_id", "subject_id"]


def enrolment_rules() -> list[Rule]:
    """A row's subject is an accepted subject (lab and visit rows): rules on the `_enrolled`, `_refused` and
    `_refusal` columns, in priority order."""
    return [
        Rule(
            "SUBJECT_NOT_ENROLLED",
            "subject_id",
            "the subject is not in the subjects file",
            pl.col("_enrolled") | pl.col("_refused"),
            _lit("a (study_id, subject_id) present in the subjects file"),
        ),
        Rule(
            "SUBJECT_REFUSED",
            "subject_id",
            "the subject's row of the subjects file was refused",
            pl.col("_enrolled") | ~pl.col("_refused"),
            pl.format("a subject accepted from the subjects file, but {}", "_refusal"),
        ),
    ]


def enrolment_flags(frame: pl.DataFrame, subjects: pl.DataFrame | None, refusals: pl.DataFrame) -> pl.DataFrame:
    """`_enrolled`, `_refused` and `_refusal` (why, in words) per row of a subject-keyed input (visits, events),
    from the valid and the refused subjects; the columns `enrolment_rules` read. Identifiers are compared
    stripped, as lab rows are. No subjects file: every row counts as enrolled."""
    if subjects is None:
        return pl.DataFrame(
            {
                "_enrolled": pl.repeat(True, frame.height, eager=True),
                "_refused": pl.repeat(False, frame.height, eager=True),
                "_refusal": pl.repeat(None, frame.height, dtype=pl.String, eager=True),
            }
        )
    keys = frame.select(pl.col(c).str.strip_chars().alias(c) for c in _SUBJECT_KEY)
    enrolled = (
        subjects.select(pl.col(c).str.strip_chars().alias(c) for c in _SUBJECT_KEY)
        .unique()
        .with_columns(_enrolled=pl.lit(True))
    )
    refused = refusals.unique(_SUBJECT_KEY, keep="first").with_columns(_refused=pl.lit(True))
    return (
        keys.join(enrolled, on=_SUBJECT_KEY, how="left", nulls_equal=False, maintain_order="left")
        .join(refused, on=_SUBJECT_KEY, how="left", nulls_equal=False, maintain_order="left")
        .select(pl.col("_enrolled").fill_null(False), pl.col("_refused").fill_null(False), "_refusal")
    )


def lab_rules(as_of: dt.date, ifn_methods: Sequence[str]) -> list[Rule]:
    """The row rules for harmonised lab candidates, in priority order.

    A declarative rule table, kept whole so that the rules read as one list.
    """
    value = pl.col("value")
    high = pl.col("value_high")
    problem = pl.col("_result_problem")
    is_count = pl.coalesce("analyte", "analyte_reported").is_in(SEMI_QUANTITATIVE_ANALYTES).fill_null(False)
    count_forms = ", ".join(SEMI_QUANTITATIVE_ANALYTES)
    return [
        Rule(
            "TEST_MISSING",
            "test",
            "the test is empty",
            pl.col("analyte_reported").is_not_null(),
            _lit("a test name or code (canonical analyte, LOINC, CDISC LBTESTCD or a configured alias)"),
        ),
        Rule(
            "STUDY_ID_MISSING",
            "study_id",
            "study_id is empty",
            _filled("study_id"),
            _lit("a study identifier"),
        ),
        Rule(
            "SUBJECT_ID_MISSING",
            "subject_id",
            "subject_id is empty",
            _filled("subject_id"),
            _lit("a subject identifier"),
        ),
        Rule(
            "RESULT_MISSING",
            "result",
            "the result is empty",
            pl.col("_present_result"),
            _lit("a numeric result, optionally censored (<10, >800)"),
        ),
        Rule(
            "RESULT_RANGE_REVERSED",
            "result",
            "the result is a range whose lower bound is above its upper bound",
            (problem != RANGE_REVERSED).fill_null(True),
            _lit("a range low-high with low <= high (e.g. 3-5 per field)"),
        ),
        Rule(
            "RESULT_WORD_UNMAPPED",
            "result",
            "the result is a word that has no configured reading",
            (problem != WORD_UNMAPPED).fill_null(True),
            pl.format(
                "a count for {}: a number, a range (3-5), <x or >x, or TNTC; words are never guessed: map this "
                "one to an interval in harmonise.urine_count_words (e.g. few: [1, 5])",
                pl.coalesce("analyte", "analyte_reported"),
            ),
        ),
        Rule(
            "RESULT_NOT_NUMERIC",
            "result",
            "the result is not a number or a censored number",
            ~pl.col("_present_result")
            | pl.col("value_reported").is_not_null()
            | problem.is_in([RANGE_REVERSED, WORD_UNMAPPED]).fill_null(False),
            pl.when(is_count)
            .then(_lit(f"a count ({count_forms}): a number, a range (3-5), <x or >x, TNTC, or a mapped word"))
            .otherwise(_lit("a number, optionally censored (<10, >800, <=, >=); text results are not quantitative")),
        ),
        Rule(
            "UNIT_UNKNOWN",
            "unit",
            "the unit is not known for this analyte",
            pl.col("analyte_reported").is_null() | pl.col("analyte").is_not_null(),
            pl.format("a unit known for {}: {}", "analyte_reported", "allowed_units"),
        ),
        Rule(
            "UNIT_NEEDS_UPPER_LIMIT",
            "ref_high",
            "a kit-specific unit cannot be converted without the lab's upper limit",
            (pl.col("conversion") != "per_upper_limit").fill_null(True)
            | (pl.col("ref_high_reported") > 0).fill_null(False),
            pl.format(
                "a reference upper limit > 0: {} in '{}' is kit-specific, not convertible to IU/mL, and is "
                "expressed as a multiple of the lab's own upper limit",
                "analyte_reported",
                "unit",
            ),
        ),
        Rule(
            "IFN_METHOD_UNKNOWN",
            "method",
            "an IFN score names no method, or a method without a known cut-off",
            (pl.col("analyte") != "ifn_score").fill_null(True)
            | pl.col("method").is_in(list(ifn_methods)).fill_null(False),
            _lit(
                "an IFN-signature method with a known cut-off ("
                + ", ".join(ifn_methods)
                + "); scores from different methods are on different scales and are never pooled"
            ),
        ),
        Rule(
            "REF_LOW_INVALID",
            "ref_low",
            "ref_low is not a finite, non-negative number",
            ~pl.col("_present_ref_low")
            | (pl.col("ref_low_reported").is_finite() & (pl.col("ref_low_reported") >= 0)).fill_null(False),
            _lit("a plain, finite number >= 0, or empty"),
        ),
        Rule(
            "REF_HIGH_INVALID",
            "ref_high",
            "ref_high is not a finite, positive number",
            ~pl.col("_present_ref_high")
            | (pl.col("ref_high_reported").is_finite() & (pl.col("ref_high_reported") > 0)).fill_null(False),
            _lit("a plain, finite number > 0, or empty"),
        ),
        Rule(
            "REF_RANGE_INVERTED",
            "ref_low",
            "ref_low is above ref_high",
            (pl.col("ref_low_reported") <= pl.col("ref_high_reported")).fill_null(True),
            pl.format("ref_low not above ref_high ({})", "ref_high"),
        ),
        Rule(
            "LLOQ_INVALID",
            "lloq",
            "lloq is not a finite, non-negative number",
            # Refuses the row, as a bad ref_low does: a limit that cannot be read says the row's metadata is wrong,
            # and keeping the value without it would let a below-LLOQ result pass as a measured one.
            ~pl.col("_present_lloq")
            | (pl.col("lloq_reported").is_finite() & (pl.col("lloq_reported") >= 0)).fill_null(False),
            _lit("a plain, finite number >= 0 in the row's unit (the assay's lower limit of quantification), or empty"),
        ),
        Rule(
            "DATE_MISSING",
            "collected_at",
            "collected_at is empty",
            pl.col("_present_collected_at"),
            _lit("an ISO 8601 collection date"),
        ),
        Rule(
            "DATE_INVALID",
            "collected_at",
            "collected_at is not a valid ISO 8601 date",
            ~pl.col("_present_collected_at") | pl.col("collected_date").is_not_null(),
            _lit(
                "an ISO 8601 date YYYY-MM-DD or date-time YYYY-MM-DDThh:mm[:ss][Z|+hh:mm]; "
                "partial dates are not accepted"
            ),
        ),
        Rule(
            "DATE_AFTER_AS_OF",
            "collected_at",
            "the collection date is after the run's as_of date",
            (pl.col("collected_date") <= pl.lit(as_of)).fill_null(True),
            _lit(f"a date on or before the run's as_of date {as_of.isoformat()}"),
        ),
        Rule(
            "VALUE_NOT_FINITE",
            "result",
            "the result is not finite",
            value.is_finite().fill_null(True) & high.is_finite().fill_null(True),
            _lit("a finite number"),
        ),
        Rule(
            "VALUE_OUT_OF_RANGE",
            "result",
            "the value is outside the plausible range for the analyte",
            (~value.is_finite()).fill_null(True)
            | (
                value.is_between(pl.col("plausible_min"), pl.col("plausible_max")).fill_null(True)
                & high.is_between(pl.col("plausible_min"), pl.col("plausible_max")).fill_null(True)
            ),
            pl.format(
                "a plausible {} between {} and {} {} (this row converts to {} {})",
                "analyte",
                "plausible_min",
                "plausible_max",
                "unit_canonical",
                "value",
                "unit_canonical",
            ),
        ),
        *enrolment_rules(),
        Rule(
            "DUPLICATE_CONFLICT",
            "result",
            "another row reports a different result for the same measurement",
            ~pl.col("_dup_conflict"),
            pl.format(
                "one result per subject, analyte, collection time and method; rows {} of {} disagree",
                "_dup_rows",
                "_dup_first_file",
            ),
        ),
        Rule(
            "DUPLICATE_ROW",
            "result",
            "the row repeats an earlier row exactly",
            ~pl.col("_dup_repeat"),
            pl.format("no repeated measurements; this repeats {} row {}", "_dup_first_file", "_dup_first_row"),
        ),
    ]


def _repeated(values: pl.Series) -> pl.Series:
    """`values.is_duplicated()` for integers, by sorting: at millions of rows a sort beats a hash table."""
    ordered = values.sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    return values.is_in(repeated.implode())


def _with_duplicate_flags(frame: pl.DataFrame, basic_ok: pl.Series) -> pl.DataFrame:
    """Flag conflicting and repeated measurements among rows that pass every other rule (`basic_ok`).

    Duplicates are rare, so rows are first narrowed to those whose key hash occurs more than once (a cheap
    pass); the exact group analysis then runs on that small subset only. Hash collisions can only widen the
    subset, never change a flag, because the analysis groups on the exact key. The flags come back as
    columns stacked beside the wide frame (joined on a bare row position, never the wide frame itself).
    """
    # An interval's upper bound is part of the result: "3-5" and "3-8" disagree.
    narrow = frame[[*_DUP_KEY, "value", "value_high", "censoring", "source_file", "source_row"]].with_row_index("_pos")
    maybe = narrow.filter(basic_ok & _repeated(narrow[_DUP_KEY].hash_rows()))
    analysed = (
        maybe.select("_pos", *_DUP_KEY, "value", "value_high", "censoring", "source_file", "source_row")
        .with_columns(
            _n_versions=pl.struct("value", "value_high", "censoring").n_unique().over(_DUP_KEY),
            _first_pos=pl.col("_pos").min().over(_DUP_KEY),
            _dup_first_file=pl.col("source_file").first().over(_DUP_KEY),
            _dup_first_row=pl.col("source_row").first().over(_DUP_KEY),
            # Name every row of a conflicting group in its message.
            _dup_rows=pl.col("source_row").sort().cast(pl.String).str.join(", ").over(_DUP_KEY),
        )
        .with_columns(
            _dup_conflict=pl.col("_n_versions") > 1,
            _dup_repeat=(pl.col("_n_versions") == 1) & (pl.col("_pos") != pl.col("_first_pos")),
        )
        .filter(pl.col("_dup_conflict") | pl.col("_dup_repeat"))
        .select("_pos", "_dup_conflict", "_dup_repeat", "_dup_first_file", "_dup_first_row", "_dup_rows")
    )
    flags = (
        narrow.select("_pos")
        .join(analysed, on="_pos", how="left", maintain_order="left")
        .select(
            pl.col("_dup_conflict").fill_null(False),
            pl.col("_dup_repeat").fill_null(False),
            "_dup_first_file",
            "_dup_first_row",
            "_dup_rows",
        )
    )
    return frame.hstack(flags)


def _enrolment(candidates: pl.DataFrame, enrolled: pl.DataFrame, refused: pl.DataFrame) -> list[pl.Series]:
    """`_enrolled` and `_refused`: whether each row's (study_id, subject_id) is an accepted or a refused subject.

    A subject's rows usually arrive together, so each run of equal identifiers is looked up once (a join
    of the run starts, not of every row) and the answer spread back over its run. Without runs this is
    one lookup per row, as a plain join would be.
    """
    ids = ["study_id", "subject_id"]
    run = candidates.select(pl.struct(ids).rle_id()).to_series()
    starts = candidates[ids].filter((run != run.shift(1)).fill_null(True))
    flags = []
    for name, subjects in (("_enrolled", enrolled), ("_refused", refused)):
        keys = subjects.select(ids).unique().with_columns(pl.lit(True).alias(name))
        found = starts.join(keys, on=ids, how="left", nulls_equal=False, maintain_order="left")[name]
        flags.append(found.fill_null(False).rechunk().gather(run))
    return flags


def subject_refusals(quarantine: pl.DataFrame | None) -> pl.DataFrame:
    """(study_id, subject_id, _refusal) of every subject the subjects file refused, and why, in words.

    From the subjects file's quarantine (`validate_subjects(...).quarantine`; field records are not
    refusals). Identifiers are stripped, as lab rows match them. `_refusal` reads, e.g., "subject SLE-01/017
    was refused (subjects.csv row 18: REFERENCE_DATE_INVALID, reference_date '2025-02-30')"; a subject refused
    on several rows (SUBJECT_CONFLICT) names each.
    """
    empty = pl.DataFrame(schema={"study_id": pl.String, "subject_id": pl.String, "_refusal": pl.String})
    if quarantine is None or quarantine.height == 0 or "subject_id" not in quarantine.columns:
        return empty
    key = [_text("study_id").alias("study_id"), _text("subject_id").alias("subject_id")]
    where = pl.format("{} row {}: {}, {} '{}'", "source_file", "source_row", "reason_code", "column", "value")
    return (
        quarantine.filter(~pl.col("reason_code").is_in(SUBJECT_FIELD_CODES))
        .select(*key, where.alias("_where"))
        .filter((pl.col("study_id") != "") & (pl.col("subject_id") != ""))
        .group_by("study_id", "subject_id", maintain_order=True)
        .agg(pl.col("_where").str.join("; "))
        .select(
            "study_id",
            "subject_id",
            pl.format("subject {}/{} was refused ({})", "study_id", "subject_id", "_where").alias("_refusal"),
        )
    )


def validate_labs(
    candidates: pl.DataFrame,
    as_of: dt.date,
    ifn_methods: Sequence[str],
    enrolled: pl.DataFrame | None = None,
    refused: pl.DataFrame | None = None,
) -> Split:
    """Split harmonised lab candidates into accepted rows and quarantine.

    Args:
        candidates: output of `harmonise_labs` (stripped identifiers, `_present_<col>` flags, typed columns).
        as_of: the run's as_of date; later collection dates are quarantined.
        ifn_methods: IFN-signature methods with a known cut-off (upper-case).
        enrolled: (study_id, subject_id) of valid subjects; None to skip the enrolment rules.
        refused: the subjects file's quarantine (`validate_subjects(...).quarantine`), read with `enrolled`:
            the rows of a subject refused there are SUBJECT_REFUSED, and their message names the subject's
            row and reason. Without it every subject missing from `enrolled` is SUBJECT_NOT_ENROLLED.
    """
    refusals = subject_refusals(refused)
    if enrolled is None:
        frame = candidates.with_columns(_enrolled=pl.lit(True), _refused=pl.lit(False))
    else:
        frame = candidates.hstack(_enrolment(candidates, enrolled, refusals))
    rules = lab_rules(as_of, ifn_methods)
    flags = rule_flags(frame, [r for r in rules if not r.code.startswith("DUPLICATE_")])
    frame = _with_duplicate_flags(frame, flags.select(pl.all_horizontal(pl.all())).to_series())

    def why_refused(failed: pl.DataFrame) -> pl.DataFrame:
        return failed.join(refusals, on=["study_id", "subject_id"], how="left", maintain_order="left")

    return apply_rules(
        frame, LabCandidate, rules, keep=ACCEPTED_LAB_COLUMNS, flags=flags, annotate=why_refused, input_kind="labs"
    )


# --------------------------------------------------------------------------------------------------
# Subject rules
# --------------------------------------------------------------------------------------------------

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
    cns = _text("active_cns_lupus").str.to_uppercase()
    ln_class = _text("lupus_nephritis_class").str.to_uppercase()
    optional = {
        "first_exposure_date": {"_first_exposure_date": exposure},
        "infusion_date": {"_infusion_date": infusion},
        "discontinued_date": {"_discontinued_date": discontinued},
        "death_date": {"_death_date": death},
        "retreatment_date": {"_retreatment_date": retreatment},
        "ivig_start_date": {"_ivig_start_date": ivig_start},
        "sex": {"_sex": _text("sex").str.to_uppercase().replace_strict(_SEX, default=None)},
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
        Rule("STUDY_ID_MISSING", "study_id", "study_id is empty", is_present("study_id"), _lit("a study identifier")),
        Rule(
            "SUBJECT_ID_MISSING",
            "subject_id",
            "subject_id is empty",
            is_present("subject_id"),
            _lit("a subject identifier"),
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
            _lit("an ISO 8601 date YYYY-MM-DD"),
        ),
        Rule(
            "FIRST_EXPOSURE_DATE_INVALID",
            "first_exposure_date",
            "first_exposure_date is not an ISO 8601 date",
            _optional("first_exposure_date", "_first_exposure_date"),
            _lit("an ISO 8601 date YYYY-MM-DD or empty"),
        ),
        Rule(
            "SUBJECT_CONFLICT",
            "subject_id",
            "the subject appears more than once with different values",
            ~pl.col("_conflict"),
            _lit("one row per (study_id, subject_id)"),
        ),
        Rule(
            "SUBJECT_DUPLICATE",
            "subject_id",
            "the subject row repeats an earlier row exactly",
            ~pl.col("_repeat"),
            _lit("one row per (study_id, subject_id)"),
        ),
        Rule(
            "SEX_INVALID",
            "sex",
            "sex is not a CDISC SEX value",
            _optional("sex", "_sex"),
            _lit("F, M, U or UNDIFFERENTIATED (or Female/Male/Unknown), or empty"),
            nulls="_sex",
        ),
        Rule(
            "AGE_INVALID",
            "age_years",
            "age_years is not a plausible age",
            _optional("age_years", "_age_years", pl.col("_age_years").is_between(0, 120)),
            _lit("a number of years between 0 and 120, or empty"),
            nulls="_age_years",
        ),
        Rule(
            "SLEDAI_INVALID",
            "sledai_2k",
            "sledai_2k is not a SLEDAI-2K score",
            _optional("sledai_2k", "_sledai_2k", pl.col("_sledai_2k").is_between(0, 105)),
            _lit("a whole number between 0 and 105, or empty"),
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
            _lit("a whole number between 0 and 50, or empty"),
            nulls="_prior_failures",
        ),
        Rule(
            "EGFR_INVALID",
            "egfr",
            "egfr is not a plausible eGFR",
            _optional("egfr", "_egfr", pl.col("_egfr").is_between(0, 300)),
            _lit("a number between 0 and 300 mL/min/1.73 m2, or empty"),
            nulls="_egfr",
        ),
        Rule(
            "CNS_FLAG_INVALID",
            "active_cns_lupus",
            "active_cns_lupus is not a yes/no value",
            _optional("active_cns_lupus", "_cns"),
            _lit("true or false (yes/no, y/n, 1/0), or empty"),
            nulls="_cns",
        ),
        Rule(
            "LN_CLASS_INVALID",
            "lupus_nephritis_class",
            "lupus_nephritis_class is not an ISN/RPS class",
            _optional("lupus_nephritis_class", "_ln_class"),
            _lit("NONE, I, II, III, IV, V, VI, III+V or IV+V, or empty"),
            nulls="_ln_class",
        ),
        Rule(
            "INFUSION_DATE_INVALID",
            "infusion_date",
            "infusion_date is not an ISO 8601 date",
            _optional("infusion_date", "_infusion_date"),
            _lit("an ISO 8601 date YYYY-MM-DD or empty"),
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
            _lit("an ISO 8601 date YYYY-MM-DD or empty"),
            nulls="_discontinued_date",
        ),
        Rule(
            "DEATH_DATE_INVALID",
            "death_date",
            "death_date is not an ISO 8601 date",
            _optional("death_date", "_death_date"),
            _lit("an ISO 8601 date YYYY-MM-DD or empty"),
            nulls="_death_date",
        ),
        Rule(
            "RETREATMENT_DATE_INVALID",
            "retreatment_date",
            "retreatment_date is not an ISO 8601 date",
            _optional("retreatment_date", "_retreatment_date"),
            _lit("an ISO 8601 date YYYY-MM-DD or empty"),
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
            _lit("an ISO 8601 date YYYY-MM-DD or empty"),
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


def count_by(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """A frequency table of `column`: most frequent first, ties by name (every `*_by_*` count of a run)."""
    if frame.height == 0:
        return {}
    counts = frame.group_by(column).len().sort("len", column, descending=[True, False])
    return {str(k): int(v) for k, v in zip(counts[column].to_list(), counts["len"].to_list(), strict=True)}


def _subject_duplicate_flags(raw: pl.DataFrame) -> pl.DataFrame:
    """`_conflict` and `_repeat` for subjects listed more than once (identifiers compared stripped).

    As for lab duplicates, only rows whose key hash repeats are analysed (on the exact key), and the flags
    come back by row position.
    """
    contract = [*SUBJECT_REQUIRED, *SUBJECT_OPTIONAL]
    # Compare as the accepted table will hold them (stripped), or " P1" and "P1" would both be accepted.
    key = [_text("study_id"), _text("subject_id")]
    rows = raw.select(contract).with_row_index("_pos")
    analysed = (
        rows.filter(_repeated(raw.select(key).hash_rows()))
        .with_columns(
            _n_versions=pl.struct([_text(c) for c in contract]).n_unique().over(key),
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
        .then(_lit("infusion_date"))
        .when(pl.col("_first_exposure_date").is_not_null())
        .then(_lit("first_exposure_date"))
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
    flag = _text("responded").str.to_uppercase()
    key = [_text("study_id"), _text("subject_id")]
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
            _lit("true or false (yes/no, y/n, 1/0)"),
        ),
        Rule(
            "OUTCOME_DUPLICATE",
            "subject_id",
            "the subject has more than one outcome row",
            pl.col("_n") == 1,
            _lit("one outcome row per (study_id, subject_id)"),
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
