"""Eligibility: evaluate a versioned protocol's criteria on the strata table.

Each criterion is three-valued per subject: passed, failed, or not assessable (its column is null).
`eligible` is False when any criterion failed, null when none failed but some could not be assessed,
and True when every criterion passed.
"""

from __future__ import annotations

import polars as pl

from immunostrat.config.run import Criterion, Protocol
from immunostrat.errors import SettingsError
from immunostrat.stages.baseline import names_where


class ProtocolError(SettingsError, ValueError):
    """The protocol cannot be evaluated on this table (e.g. it reads a column no input provides)."""


def criterion_expr(criterion: Criterion) -> pl.Expr:
    """True/False/null per subject for one criterion."""
    col = pl.col(criterion.column)
    value = criterion.value
    op = criterion.op
    if op == "between":
        assert isinstance(value, list)
        return col.is_between(value[0], value[1])
    if op == "in":
        assert isinstance(value, list)
        # The protocol parses `[8, 10]` as floats; an integer column casts to "8", not "8.0", so whole numbers
        # are matched in both spellings.
        labels = {str(v) for v in value} | {str(int(v)) for v in value if isinstance(v, float) and v.is_integer()}
        return pl.when(col.is_not_null()).then(col.cast(pl.String).is_in(sorted(labels)))
    if op == "is_true":
        return col == True  # noqa: E712 - elementwise comparison keeps nulls null
    if op == "is_false":
        return col == False  # noqa: E712
    comparisons = {
        "ge": col >= value,
        "gt": col > value,
        "le": col <= value,
        "lt": col < value,
        "eq": col == value,
    }
    return comparisons[op]


def assess_eligibility(strata: pl.DataFrame, protocol: Protocol) -> pl.DataFrame:
    """Add `eligible`, `criteria_failed` and `criteria_not_assessable`, plus `criterion_<id>` outcomes."""
    missing = sorted({c.column for c in protocol.criteria} - set(strata.columns))
    if missing:
        raise ProtocolError(
            f"protocol {protocol.protocol_id} v{protocol.version} reads column(s) the strata table does not have: "
            f"{', '.join(missing)}; available: {', '.join(strata.columns)}"
        )
    outcomes = {f"criterion_{c.id}": criterion_expr(c) for c in protocol.criteria}
    with_outcomes = strata.with_columns(**outcomes)
    verdicts = {c.id: pl.col(f"criterion_{c.id}") for c in protocol.criteria}
    failed = with_outcomes.select((v == False).alias(i) for i, v in verdicts.items())  # noqa: E712
    unknown = with_outcomes.select(v.is_null().alias(i) for i, v in verdicts.items())
    return with_outcomes.with_columns(
        criteria_failed=names_where(failed),
        criteria_not_assessable=names_where(unknown),
        # Kleene AND: False when any criterion failed, else null when any could not be assessed, else True.
        eligible=pl.all_horizontal(verdicts.values()),
    )


def funnel(strata: pl.DataFrame, protocol: Protocol) -> list[dict[str, object]]:
    """Per criterion: how many subjects passed, failed and could not be assessed."""
    rows = []
    for c in protocol.criteria:
        col = pl.col(f"criterion_{c.id}")
        counts = strata.select(
            passed=(col == True).sum(),  # noqa: E712
            failed=(col == False).sum(),  # noqa: E712
            not_assessable=col.is_null().sum(),
        ).row(0, named=True)
        rows.append({"criterion": c.id, "description": c.description, **counts})
    return rows
