"""One three-valued comparison of a lab result with a threshold, for every follow-up rule.

A harmonised result is the set of values it allows: a number n ({n}); an interval [value, value_high] (urine
sediment "3-5"); a censored result ">x" (x, inf), ">=x" [x, inf), "<x" (-inf, x), "<=x" (-inf, x]. `compare`
says True when every allowed value satisfies the comparison, False when none does, and null (unknown) when some
do and some do not, or when the value or the threshold is missing. So "<0.1" passes "< 0.5", ">60" passes
">= 60" but leaves ">= 90" unknown, and "4-8" is unknown against "> 5". SLEDAI-2K's lab descriptors, the endpoint
thresholds and the toxicity grades all compare through this one function.
"""

from __future__ import annotations

import polars as pl

__all__ = ["OPERATORS", "compare"]

#: Comparison operators by symbol, with the names the endpoint definition uses.
OPERATORS: dict[str, str] = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _all_above(low: pl.Expr, low_open: pl.Expr, t: pl.Expr, inclusive: bool) -> pl.Expr:
    """Every allowed value is > t (>= t when `inclusive`), from the set's lower bound (null: unbounded)."""
    return (low >= t) if inclusive else ((low > t) | ((low == t) & low_open))


def _none_above(high: pl.Expr, high_open: pl.Expr, t: pl.Expr, inclusive: bool) -> pl.Expr:
    """No allowed value is > t (>= t when `inclusive`), from the set's upper bound (null: unbounded)."""
    return ((high < t) | ((high == t) & high_open)) if inclusive else (high <= t)


def compare(
    value: pl.Expr,
    op: str,
    threshold: pl.Expr | float,
    *,
    censoring: pl.Expr | None = None,
    value_high: pl.Expr | None = None,
) -> pl.Expr:
    """Three-valued `result <op> threshold` (see the module docstring).

    Args:
        value: the number, the interval's lower bound, or the number after a censoring comparator.
        op: `<`, `<=`, `>`, `>=` (or `lt`, `le`, `gt`, `ge`).
        threshold: a number, or an expression per row (e.g. the row's own reference limit).
        censoring: `<`, `<=`, `>`, `>=` or null per row; None when results are never censored.
        value_high: the interval's upper bound (null for a single number); None when there are no intervals.

    Returns:
        A Boolean expression: True, False, or null when the result allows both answers or a value is missing.
    """
    symbol = OPERATORS[op]
    t = threshold if isinstance(threshold, pl.Expr) else pl.lit(float(threshold))
    comparator = censoring if censoring is not None else pl.lit(None, pl.String)
    upper = value_high if value_high is not None else pl.lit(None, pl.Float64)
    low = pl.when(comparator.is_in(["<", "<="])).then(None).otherwise(value)
    high = (
        pl.when(comparator.is_in([">", ">="]))
        .then(None)
        .when(comparator.is_null() & upper.is_not_null())
        .then(upper)
        .otherwise(value)
    )
    low_open, high_open = (comparator == ">").fill_null(False), (comparator == "<").fill_null(False)
    # "< t" is "not >= t" and "<= t" is "not > t": one set rule for all four operators.
    inclusive = symbol in (">=", "<")
    every = _all_above(low, low_open, t, inclusive)
    none = _none_above(high, high_open, t, inclusive)
    true_when, false_when = (every, none) if symbol in (">", ">=") else (none, every)
    missing = value.is_null() | t.is_null()
    return (
        pl.when(missing)
        .then(None)
        .when(true_when)
        .then(True)
        .when(false_when)
        .then(False)
        .otherwise(None)
        .cast(pl.Boolean)
    )
