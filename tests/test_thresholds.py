"""The one three-valued comparison (`followup.thresholds.compare`): checked against brute force over every value a
result allows, and by hand at the edges the follow-up rules meet."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.followup.thresholds import compare

_FORMS = st.sampled_from(["exact", "interval", "<", "<=", ">", ">="])
_OPS = {"<": lambda x, t: x < t, "<=": lambda x, t: x <= t, ">": lambda x, t: x > t, ">=": lambda x, t: x >= t}


def _every_or_none(hits: list[bool]) -> bool | None:
    """True when every allowed value satisfies the comparison, False when none does, else unknown."""
    return True if all(hits) else (False if not any(hits) else None)


def _verdict(value: float | None, high: float | None, censoring: str | None, op: str, t: float | None) -> object:
    frame = pl.DataFrame(
        {"v": [value], "h": [high], "c": [censoring], "t": [t]},
        schema={"v": pl.Float64, "h": pl.Float64, "c": pl.String, "t": pl.Float64},
    )
    expr = compare(pl.col("v"), op, pl.col("t"), censoring=pl.col("c"), value_high=pl.col("h"))
    return frame.select(expr).item()


@settings(max_examples=200, deadline=None)
@given(_FORMS, st.integers(0, 20), st.integers(0, 20), st.integers(0, 20), st.sampled_from(sorted(_OPS)))
def test_the_verdict_is_what_every_allowed_value_gives(form: str, a: int, width: int, t: int, op: str) -> None:
    """True when all values the result allows satisfy the comparison, False when none does, unknown when some do
    (a half-integer grid reaching past every bound, so an open side is seen)."""
    value, high = float(a), (float(a + width) if form == "interval" else None)
    censoring = form if form in ("<", "<=", ">", ">=") else None
    grid = [x / 2 for x in range(-10, 70)]
    allowed = {
        "exact": [value],
        "interval": [x for x in grid if value <= x <= (high or 0)],
        "<": [x for x in grid if x < value],
        "<=": [x for x in grid if x <= value],
        ">": [x for x in grid if x > value],
        ">=": [x for x in grid if x >= value],
    }[form]
    assert _verdict(value, high, censoring, op, float(t)) is _every_or_none([_OPS[op](x, t) for x in allowed])


@pytest.mark.parametrize(
    ("value", "high", "censoring", "op", "t", "expected"),
    [
        (100.0, None, None, "<", 100.0, False),  # platelets exactly 100: not thrombocytopenia
        (99.9, None, None, "<", 100.0, True),
        (3.0, 5.0, None, ">", 5.0, False),  # urine RBC "3-5" is not above 5
        (6.0, 10.0, None, ">", 5.0, True),  # "6-10" is
        (4.0, 8.0, None, ">", 5.0, None),  # "4-8" may be
        (50.0, None, ">", ">", 5.0, True),  # TNTC read as ">50"
        (0.1, None, "<", "lt", 0.5, True),  # UPCR "<0.1" passes < 0.5
        (60.0, None, ">", "ge", 90.0, None),  # eGFR ">60" leaves >= 90 unknown
        (None, None, None, ">", 5.0, None),  # no value: unknown
        (7.0, None, None, ">", None, None),  # no threshold (no reference limit): unknown
    ],
)
def test_edges_the_rules_meet(  # noqa: PLR0917 (one parametrized case per row)
    value: float | None, high: float | None, censoring: str | None, op: str, t: float | None, expected: object
) -> None:
    assert _verdict(value, high, censoring, op, t) is expected
