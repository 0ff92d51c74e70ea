"""The row-rule engine: evaluate a table's rules in one plan, validate with pandera, split accepted from quarantined.

Each rule is a polars expression that is True for a row that passes. All rules of a table are evaluated in one
query (shared sub-expressions run once) into a Boolean column per rule, named by its reason code. pandera
validates the table against its contract (`immunostrat.schemas.inputs`) plus one Boolean column, `_row_rules`
(every rule passes on this row), checked by one pandera check: pandera's cost per check is paid once per table,
not once per rule, and its failure cases' row indices decide the quarantine. Each failing row's reason codes
are then read from its rule columns. A quarantined row keeps its original columns, its primary reason code (the
first failing rule in the rules' order), every failing code, and a message naming file, row, column, value and
what was expected; that readable report is built only when some row fails.

Most rules refuse the row. A rule about an optional field (a subject's age, sex, SLEDAI-2K, ...) instead sets
that field to null and keeps the row: the quarantine then holds a *field record* for it (one per bad field, its
reason code being the field's own) and the row is accepted. A refused row's primary reason is always a refusing
rule; its `reason_codes` also list the bad optional fields.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData
from pandera.errors import SchemaErrors

from immunostrat.ingest.io import LAB_OPTIONAL, LAB_REQUIRED, SUBJECT_OPTIONAL, SUBJECT_REQUIRED
from immunostrat.schemas.events import EVENT_OPTIONAL, EVENT_REQUIRED
from immunostrat.schemas.inputs import VISIT_OPTIONAL, VISIT_REQUIRED

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
#: The column pandera checks: True where every rule passes (null counts as passing, as a null rule outcome does).
ROW_RULES = "_row_rules"


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


def text(col: str) -> pl.Expr:
    """A text column stripped, with null read as empty."""
    return pl.col(col).str.strip_chars().fill_null("")


def filled(col: str) -> pl.Expr:
    """Not empty, for a column that arrives stripped (harmonise strips lab identifiers)."""
    return pl.col(col).fill_null("") != ""


def string(value: str) -> pl.Expr:
    """A String literal (expected-value texts)."""
    return pl.lit(value, pl.String)


def is_repeated(values: pl.Series) -> pl.Series:
    """`values.is_duplicated()` for integers, by sorting: at millions of rows a sort beats a hash table."""
    ordered = values.sort()
    repeated = ordered.filter(ordered == ordered.shift(1)).unique()
    return values.is_in(repeated.implode())


def count_by(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """A frequency table of `column`: most frequent first, ties by name (every `*_by_*` count of a run)."""
    if frame.height == 0:
        return {}
    counts = frame.group_by(column).len().sort("len", column, descending=[True, False])
    return {str(k): int(v) for k, v in zip(counts[column].to_list(), counts["len"].to_list(), strict=True)}


# --------------------------------------------------------------------------------------------------
# Evaluating and validating
# --------------------------------------------------------------------------------------------------


def rule_flags(frame: pl.DataFrame, rules: Sequence[Rule]) -> pl.DataFrame:
    """Every rule's pass/fail column, named by its code, from one query (shared sub-expressions run once)."""
    return frame.lazy().select(rule.passes.alias(rule.code) for rule in rules).collect()


def _all_flags(frame: pl.DataFrame, rules: Sequence[Rule], known: pl.DataFrame | None) -> pl.DataFrame:
    """One column per rule, in the rules' order, plus `ROW_RULES`: the rules `known` lacks evaluated in one plan."""
    given = [] if known is None else known.columns
    missing = [r for r in rules if r.code not in given]
    plans = [frame.lazy().select(r.passes.alias(r.code) for r in missing)] if missing else []
    if known is not None:
        plans.insert(0, known.lazy())
    codes = [r.code for r in rules]
    return pl.concat(plans, how="horizontal").select(*codes, pl.all_horizontal(codes).alias(ROW_RULES)).collect()


def _passes(data: PolarsData) -> pl.LazyFrame:
    return data.lazyframe.select(pl.col(data.key))


def _schema(model: type[pa.DataFrameModel], rules: Sequence[Rule]) -> pa.DataFrameSchema:
    """The model's columns plus `ROW_RULES`, checked by one pandera check naming every rule it stands for."""
    base = model.to_schema()
    summary = "every row rule passes: " + ", ".join(r.code for r in rules)
    row_rules = pa.Column(pl.Boolean, pa.Check(_passes, name="row_rules", error=summary), nullable=True)
    return pa.DataFrameSchema(columns={**base.columns, ROW_RULES: row_rules}, strict=False, name=base.name)


def _failing_rows(
    frame: pl.DataFrame, flags: pl.DataFrame, model: type[pa.DataFrameModel], rules: Sequence[Rule]
) -> pl.Series:
    """Row indices (UInt32) that pandera reports failing `ROW_RULES`; a structural failure is a `ContractError`."""
    failing = pl.Series("index", [], pl.UInt32)
    try:
        _schema(model, rules).validate(frame.hstack([flags[ROW_RULES]]), lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        structural = cases.filter(pl.col("index").is_null())
        if structural.height:
            first = structural.row(0, named=True)
            raise ContractError(
                f"{model.__name__} failed at the schema level: check {first['check']} on column "
                f"{first['column']} ({first['failure_case']})"
            ) from errors
        # Failures of the contract's own data checks (e.g. source_row >= 1) are not rules: only ROW_RULES counts.
        failing = cases.filter(pl.col("column") == ROW_RULES)["index"].cast(pl.UInt32).unique().sort()
    return failing


def _ranked_failures(flags: pl.DataFrame, failing: pl.Series, rules: Sequence[Rule]) -> pl.DataFrame:
    """(index, reason_code, _priority, _field_row) for every failing row and rule, sorted by row and priority.

    `_priority` is the rules' order, refusing rules before field rules; `_field_row` marks a row that fails
    field rules only (its first failure is a field rule).
    """
    ordered = [r.code for r in rules if r.nulls is None] + [r.code for r in rules if r.nulls is not None]
    refusing = sum(r.nulls is None for r in rules)
    return (
        flags.lazy()
        .select(ordered)
        .with_row_index("index")
        .filter(pl.col("index").is_in(failing.implode()))
        .unpivot(on=ordered, index="index", variable_name="reason_code", value_name="_passes")
        .filter(~pl.col("_passes"))
        .select(
            "index",
            "reason_code",
            pl.col("reason_code")
            .replace_strict(ordered, list(range(len(ordered))), return_dtype=pl.Int32)
            .alias("_priority"),
        )
        .sort("index", "_priority")
        .with_columns(_field_row=pl.col("_priority").min().over("index") >= refusing)
        .collect()
    )


# --------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------


def _refusals(ranked: pl.DataFrame) -> pl.DataFrame:
    """One row per refused row: `_idx`, its primary `reason_code`, every code (`reason_codes`) and `_priority`."""
    return (
        ranked.lazy()
        .filter(~pl.col("_field_row"))
        .group_by("index", maintain_order=True)
        .agg(pl.col("reason_code").first(), pl.col("reason_code").alias("reason_codes"), pl.col("_priority").first())
        .rename({"index": "_idx"})
        .collect()
    )


def _failing_mask(height: int, refused: pl.DataFrame) -> pl.Series:
    """True for refused rows. A positional mask, not joins: joining the wide frame on a row index gathers every
    column."""
    failing = np.zeros(height, dtype=bool)
    failing[refused["_idx"].to_numpy()] = True
    return pl.Series("_failing", failing)


def _accepted(
    frame: pl.DataFrame,
    flags: pl.DataFrame,
    mask: pl.Series,
    keep: Sequence[str] | None,
    rules: Sequence[Rule],
    *,
    bad_fields: bool,
) -> pl.LazyFrame:
    """The rows not refused (the `keep` columns); with `bad_fields`, each optional field set to null where one of
    its rules failed."""
    # Plain column picks: `select` would copy every picked column into one chunk first.
    picked = frame[list(keep)] if keep is not None else frame
    nulled = [r for r in rules if r.nulls is not None and r.nulls in picked.columns] if bad_fields else []
    # Several rules may guard one field (an unreadable date, a date out of order): any failure nulls it.
    guards: dict[str, list[str]] = {}
    for r in nulled:
        guards.setdefault(str(r.nulls), []).append(f"_ok_{r.code}")
    oks = [flags[r.code].alias(f"_ok_{r.code}") for r in nulled]
    return (
        picked.hstack([*oks, mask])
        .lazy()
        .filter(~pl.col("_failing"))
        .with_columns(
            pl.when(pl.all_horizontal(ok)).then(pl.col(column)).otherwise(None).alias(column)
            for column, ok in guards.items()
        )
        .drop("_failing", *(f"_ok_{r.code}" for r in nulled))
    )


def _failed_rows(frame: pl.DataFrame, mask: pl.Series, refused: pl.DataFrame, ranked: pl.DataFrame) -> pl.LazyFrame:
    """The refused rows with their reasons, then one record per bad field of an accepted row (`_field`)."""
    indexed = frame.hstack([mask]).lazy().with_row_index("_idx")
    failed = (
        indexed.filter(pl.col("_failing"))
        .join(refused.lazy(), on="_idx", how="left", maintain_order="left")
        .with_columns(_field=False)
    )
    # One record per bad field: its row, repeated for each field that row got wrong.
    fields = (
        ranked.lazy()
        .filter(pl.col("_field_row"))
        .select(
            pl.col("index").alias("_idx"),
            "reason_code",
            pl.concat_list("reason_code").alias("reason_codes"),
            "_priority",
        )
    )
    # The wide frame is narrowed to those rows before the join, so the join never hashes or gathers all of it.
    rows = indexed.filter(pl.col("_idx").is_in(ranked.filter(pl.col("_field_row"))["index"].implode()))
    records = (
        fields.join(rows, on="_idx", how="left", maintain_order="left")
        .with_columns(_field=True)
        .select(failed.collect_schema().names())
    )
    return pl.concat([failed, records]).drop("_failing")


def _quarantine(
    failed: pl.LazyFrame, frame_columns: Sequence[str], rules: Sequence[Rule], input_kind: str
) -> pl.LazyFrame:
    """The readable quarantine: the column, value and expected value of each record's primary rule, a message
    naming file, row, column, value and expectation, and the input's original columns, in file order."""
    column = pl.lit(None, pl.String)
    value = pl.lit(None, pl.String)
    expected = pl.lit(None, pl.String)
    for rule in reversed(rules):
        hit = pl.col("reason_code") == rule.code
        column = pl.when(hit).then(string(rule.column)).otherwise(column)
        shown = f"_raw_{rule.column}" if f"_raw_{rule.column}" in frame_columns else rule.column
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
    original = [
        pl.col(f"_raw_{c}").alias(c) if f"_raw_{c}" in frame_columns else pl.col(c)
        for c in QUARANTINE_ORIGINAL_COLUMNS
        if c in frame_columns
    ]
    return (
        failed.with_columns(column=column, value=value, _expected=expected)
        .with_columns(message=pl.when("_field").then(pl.concat_str(message, kept_note)).otherwise(message))
        .sort("_idx", "_priority")
        .select(
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
    )


def apply_rules(
    frame: pl.DataFrame,
    model: type[pa.DataFrameModel],
    rules: Sequence[Rule],
    *,
    keep: Sequence[str] | None = None,
    flags: pl.DataFrame | None = None,
    annotate: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None,
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
    all_flags = _all_flags(frame, rules, flags)
    ranked = _ranked_failures(all_flags, _failing_rows(frame, all_flags, model, rules), rules)
    refused = _refusals(ranked)
    mask = _failing_mask(frame.height, refused)
    accepted = _accepted(frame, all_flags, mask, keep, rules, bad_fields=bool(ranked["_field_row"].any()))
    failed = _failed_rows(frame, mask, refused, ranked)
    if annotate is not None:
        failed = annotate(failed)
    quarantine = _quarantine(failed, frame.columns, rules, input_kind)
    if ranked.height == 0:
        # Nothing failed: the readable report is never built, only its (empty) table.
        return Split(accepted=accepted.collect(), quarantine=pl.DataFrame(schema=quarantine.collect_schema()))
    # Both read `frame`: one call runs the two plans.
    accepted_rows, quarantined = pl.collect_all([accepted, quarantine])
    return Split(accepted=accepted_rows, quarantine=quarantined)
