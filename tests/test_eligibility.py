"""Tests for immunostrat.stages.eligibility: operators, three-valued outcomes, protocol errors, funnel."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from immunostrat.config.run import Criterion, Protocol, load_protocol
from immunostrat.stages.eligibility import ProtocolError, assess_eligibility, criterion_expr, funnel

# Hand-made columns: a float, an integer, a string and a boolean column, each with one null.
FRAME = pl.DataFrame(
    {
        "x": [10.0, 17.5, 18.0, 65.0, 65.5, None],
        "n": [0, 7, 8, 9, 10, None],
        "s": ["III", "IV", "IV+V", "NONE", "V", None],
        "b": [True, False, True, False, True, None],
    },
    schema={"x": pl.Float64, "n": pl.Int64, "s": pl.String, "b": pl.Boolean},
)


def crit(column: str, op: str, value: Any = None, cid: str = "c") -> Criterion:
    """A criterion built as the protocol loader would (via validation)."""
    return Criterion.model_validate(
        {"id": cid, "description": f"{column} {op}", "column": column, "op": op, "value": value}
    )


def outcome(criterion: Criterion, frame: pl.DataFrame = FRAME) -> list[bool | None]:
    """The criterion's per-row outcome."""
    return frame.select(criterion_expr(criterion).alias("out"))["out"].to_list()


def protocol(*criteria: Criterion) -> Protocol:
    """A protocol holding the given criteria."""
    return Protocol(protocol_id="test", version="0.1", criteria=list(criteria))


# --------------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "op", "value", "expected"),
    [
        ("x", "ge", 18, [False, False, True, True, True, None]),
        ("x", "gt", 18, [False, False, False, True, True, None]),
        ("x", "le", 65, [True, True, True, True, False, None]),
        ("x", "lt", 65, [True, True, True, False, False, None]),
        ("x", "between", [18, 65], [False, False, True, True, False, None]),
        ("x", "eq", 65, [False, False, False, True, False, None]),
        ("n", "ge", 8, [False, False, True, True, True, None]),
        ("n", "gt", 8, [False, False, False, True, True, None]),
        ("n", "le", 8, [True, True, True, False, False, None]),
        ("n", "lt", 8, [True, True, False, False, False, None]),
        ("n", "between", [7, 9], [False, True, True, True, False, None]),
        ("n", "between", [8, 8], [False, False, True, False, False, None]),
        ("n", "eq", 0, [True, False, False, False, False, None]),
        ("s", "eq", "IV", [False, True, False, False, False, None]),
        ("s", "in", ["III", "IV", "IV+V"], [True, True, True, False, False, None]),
        ("s", "in", ["NOPE"], [False, False, False, False, False, None]),
        ("b", "is_true", None, [True, False, True, False, True, None]),
        ("b", "is_false", None, [False, True, False, True, False, None]),
    ],
)
def test_operator(column: str, op: str, value: Any, expected: list[bool | None]) -> None:
    """Each operator on hand-made columns; a null value is never passed or failed."""
    assert outcome(crit(column, op, value)) == expected


def test_in_matches_integer_column_with_whole_numbers() -> None:
    """`in: [8, 10]` parses as floats but must still match an Int64 column holding 8 and 10."""
    assert outcome(crit("n", "in", [8, 10])) == [False, False, True, False, True, None]


def test_in_matches_float_column() -> None:
    """`in` on a float column matches exact values, whole or not."""
    assert outcome(crit("x", "in", [17.5, 65])) == [False, True, False, True, False, None]


def test_in_on_boolean_column_by_text() -> None:
    """`in` compares text: a boolean column matches "true"."""
    assert outcome(crit("b", "in", ["true"])) == [True, False, True, False, True, None]


def test_all_null_column_is_not_assessable() -> None:
    """A column holding only nulls gives null outcomes for every operator."""
    frame = pl.DataFrame({"z": [None, None]}, schema={"z": pl.Float64})
    for op, value in (("ge", 1), ("between", [1, 2]), ("eq", 1), ("in", [1]), ("lt", 1)):
        assert outcome(crit("z", op, value), frame) == [None, None]
    bools = pl.DataFrame({"z": [None, None]}, schema={"z": pl.Boolean})
    assert outcome(crit("z", "is_true"), bools) == [None, None]
    assert outcome(crit("z", "is_false"), bools) == [None, None]


# --------------------------------------------------------------------------------------------------
# assess_eligibility: three-valued `eligible`, lists in protocol order
# --------------------------------------------------------------------------------------------------


def test_eligible_three_valued_and_lists_in_protocol_order() -> None:
    """Failed beats not-assessable; null when only unknowns remain; True when everything passes."""
    strata = pl.DataFrame(
        {
            "subject_id": ["all_pass", "one_fail", "fail_and_null", "only_null", "all_fail", "all_null"],
            "a": [5.0, 5.0, 1.0, None, 1.0, None],
            "b": [True, True, None, True, False, None],
            "c": ["X", "Y", "X", None, "Y", None],
        },
        schema={"subject_id": pl.String, "a": pl.Float64, "b": pl.Boolean, "c": pl.String},
    )
    prot = protocol(
        crit("c", "eq", "X", cid="third_in_table"),
        crit("a", "ge", 3, cid="a_ge_3"),
        crit("b", "is_true", cid="b_true"),
    )
    out = assess_eligibility(strata, prot)
    assert out["subject_id"].to_list() == strata["subject_id"].to_list()
    assert out["eligible"].to_list() == [True, False, False, None, False, None]
    assert out["criteria_failed"].to_list() == [
        [],
        ["third_in_table"],
        ["a_ge_3"],
        [],
        ["third_in_table", "a_ge_3", "b_true"],
        [],
    ]
    assert out["criteria_not_assessable"].to_list() == [
        [],
        [],
        ["b_true"],
        ["third_in_table", "a_ge_3"],
        [],
        ["third_in_table", "a_ge_3", "b_true"],
    ]
    assert out["criterion_a_ge_3"].to_list() == [True, True, False, None, False, None]
    assert out.schema["eligible"] == pl.Boolean
    assert out.schema["criteria_failed"] == pl.List(pl.String)
    # Input columns are kept as they were.
    assert out.select(strata.columns).equals(strata)


def test_lists_with_many_criteria_and_patterns() -> None:
    """70 thresholds on one column: every subject's failed list is exactly the thresholds above its value."""
    strata = pl.DataFrame({"a": [None, *range(0, 80, 3)]}, schema={"a": pl.Float64})
    prot = protocol(*(crit("a", "ge", i, cid=f"ge_{i}") for i in range(70)))
    out = assess_eligibility(strata, prot)
    expected = [[] if a is None else [f"ge_{i}" for i in range(70) if a < i] for a in strata["a"]]
    assert out["criteria_failed"].to_list() == expected
    assert out["criteria_not_assessable"].to_list() == [[f"ge_{i}" for i in range(70)], *[[]] * (strata.height - 1)]
    assert out["eligible"].to_list() == [None, *(a >= 69 for a in strata["a"][1:])]


def test_missing_column_raises_protocol_error_naming_it() -> None:
    """A criterion reading a column the table lacks raises ProtocolError naming that column."""
    strata = pl.DataFrame({"a": [1.0]})
    prot = protocol(crit("a", "ge", 0, cid="ok"), crit("egfr_missing", "ge", 30, cid="egfr"))
    with pytest.raises(ProtocolError, match="egfr_missing") as info:
        assess_eligibility(strata, prot)
    message = str(info.value)
    assert "test" in message
    assert "0.1" in message
    assert isinstance(info.value, ValueError)


def test_funnel_counts_per_criterion() -> None:
    """Funnel: passed/failed/not_assessable per criterion, in protocol order, adding up to the cohort."""
    strata = pl.DataFrame({"a": [1.0, 2.0, 3.0, None], "b": [True, None, None, False]})
    prot = protocol(crit("b", "is_true", cid="b_true"), crit("a", "ge", 2, cid="a_ge_2"))
    rows = funnel(assess_eligibility(strata, prot), prot)
    assert rows == [
        {"criterion": "b_true", "description": "b is_true", "passed": 1, "failed": 1, "not_assessable": 2},
        {"criterion": "a_ge_2", "description": "a ge", "passed": 2, "failed": 1, "not_assessable": 1},
    ]


def test_empty_strata() -> None:
    """No subjects: empty result with the outcome columns, zero funnel counts."""
    strata = pl.DataFrame({"a": []}, schema={"a": pl.Float64})
    prot = protocol(crit("a", "ge", 1, cid="a"))
    out = assess_eligibility(strata, prot)
    assert out.height == 0
    assert {"eligible", "criteria_failed", "criteria_not_assessable", "criterion_a"} <= set(out.columns)
    assert funnel(out, prot) == [
        {"criterion": "a", "description": "a ge", "passed": 0, "failed": 0, "not_assessable": 0}
    ]


# --------------------------------------------------------------------------------------------------
# The default protocol
# --------------------------------------------------------------------------------------------------

DEFAULT_IDS = [
    "age_18_65",
    "sledai_2k_ge_8",
    "prior_is_failures_ge_2",
    "egfr_ge_30",
    "no_active_cns_lupus",
    "serologically_active",
]
STRATA_SCHEMA = {
    "subject_id": pl.String,
    "age_years": pl.Float64,
    "sledai_2k": pl.Int64,
    "prior_immunosuppressant_failures": pl.Int64,
    "egfr": pl.Float64,
    "active_cns_lupus": pl.Boolean,
    "serologically_active": pl.Boolean,
}
PASSING: dict[str, Any] = {
    "age_years": 40.0,
    "sledai_2k": 12,
    "prior_immunosuppressant_failures": 3,
    "egfr": 75.0,
    "active_cns_lupus": False,
    "serologically_active": True,
}


def default_outcome(**changes: Any) -> dict[str, Any]:
    """Assess one subject (PASSING with `changes`) under the built-in protocol."""
    row = {"subject_id": "P1", **PASSING, **changes}
    out = assess_eligibility(pl.DataFrame([row], schema=STRATA_SCHEMA), load_protocol())
    return out.row(0, named=True)


def test_default_protocol_loads_with_six_criteria() -> None:
    """The built-in protocol has the six documented criteria, in order."""
    prot = load_protocol()
    assert prot.protocol_id == "cart-sle-default"
    assert prot.version == "1.0.0"
    assert [c.id for c in prot.criteria] == DEFAULT_IDS
    assert {c.column for c in prot.criteria} == set(STRATA_SCHEMA) - {"subject_id"}


def test_default_protocol_all_pass() -> None:
    """A subject meeting every criterion is eligible."""
    row = default_outcome()
    assert row["eligible"] is True
    assert row["criteria_failed"] == []
    assert row["criteria_not_assessable"] == []


@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({"age_years": 18.0}, []),
        ({"age_years": 65.0}, []),
        ({"age_years": 17.9}, ["age_18_65"]),
        ({"age_years": 66.0}, ["age_18_65"]),
        ({"age_years": 65.5}, ["age_18_65"]),
        ({"sledai_2k": 8}, []),
        ({"sledai_2k": 7}, ["sledai_2k_ge_8"]),
        ({"prior_immunosuppressant_failures": 2}, []),
        ({"prior_immunosuppressant_failures": 1}, ["prior_is_failures_ge_2"]),
        ({"egfr": 30.0}, []),
        ({"egfr": 29.9}, ["egfr_ge_30"]),
        ({"active_cns_lupus": True}, ["no_active_cns_lupus"]),
        ({"serologically_active": False}, ["serologically_active"]),
        ({"age_years": 70.0, "sledai_2k": 4}, ["age_18_65", "sledai_2k_ge_8"]),
    ],
)
def test_default_protocol_boundaries(changes: dict[str, Any], failed: list[str]) -> None:
    """Each default criterion at and just past its boundary."""
    row = default_outcome(**changes)
    assert row["criteria_failed"] == failed
    assert row["eligible"] is (not failed)
    assert row["criteria_not_assessable"] == []


@pytest.mark.parametrize("column", [c for c in STRATA_SCHEMA if c != "subject_id"])
def test_default_protocol_null_is_not_assessable(column: str) -> None:
    """A null input makes its criterion not assessable (never failed) and `eligible` null."""
    by_column = {c.column: c.id for c in load_protocol().criteria}
    row = default_outcome(**{column: None})
    assert row["criteria_failed"] == []
    assert row["criteria_not_assessable"] == [by_column[column]]
    assert row["eligible"] is None


def test_default_protocol_fail_beats_not_assessable() -> None:
    """SLEDAI 7 fails while serology is unknown: the subject is ineligible, not unknown."""
    row = default_outcome(sledai_2k=7, serologically_active=None)
    assert row["eligible"] is False
    assert row["criteria_failed"] == ["sledai_2k_ge_8"]
    assert row["criteria_not_assessable"] == ["serologically_active"]
