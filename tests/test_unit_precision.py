"""Converted values carry no more digits than the reported value justifies (docs/input.md, Units).

Expected values are worked out by hand, or by Python's `decimal` module (exact decimal arithmetic, independent of
the polars code under test).
"""

from __future__ import annotations

import math
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.stages.harmonise import SIGNIFICANT_DIGITS, decimals_of, round_to_places

from .fixtures_labs import harmonise, lab_row


def _converted(**overrides: str | None) -> tuple[object, object, object, object]:
    row = harmonise([lab_row(**overrides)]).candidates.row(0, named=True)
    return row["analyte"], row["value"], row["ref_low_value"], row["ref_high_value"]


# --------------------------------------------------------------------------------------------------
# Hand-worked conversions (exact equality: no float artefacts)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # 35 x 0.01 is 0.35000000000000003 in float64; two decimals + two from the factor = 0.35 exactly.
        ({"result": "35", "unit": "mg/dL", "ref_low": "90", "ref_high": "180"}, ("c3", 0.35, 0.9, 1.8)),
        ({"test": "c4", "result": "7", "unit": "mg/dL", "ref_low": "16", "ref_high": "39"}, ("c4", 0.07, 0.16, 0.39)),
        ({"result": "81.1", "unit": "mg/dL", "ref_low": "81.1", "ref_high": "145"}, ("c3", 0.811, 0.811, 1.45)),
        ({"result": "650", "unit": "mg/L", "ref_low": "900", "ref_high": "1800"}, ("c3", 0.65, 0.9, 1.8)),
        # 0.05 x 10^9/L: two decimals - three from the factor = to the tens: 50 cells/uL.
        (
            {"test": "cd19_b_cells", "result": "0.05", "unit": "10^9/L", "ref_low": "0.07", "ref_high": "0.5"},
            ("cd19_b_cells", 50.0, 70.0, 500.0),
        ),
        # 0.07 x 1000 is 70.00000000000001 in float64.
        ({"test": "lymphocytes", "result": "0.07", "unit": "10*9/L"}, ("lymphocytes", 70.0, None, None)),
        ({"test": "lymphocytes", "result": "1.2345", "unit": "10^9/L"}, ("lymphocytes", 1234.5, None, None)),
        ({"test": "lymphocytes", "result": "1.5e3", "unit": "cells/uL"}, ("lymphocytes", 1500.0, None, None)),
        # Kit units over the lab's upper limit: 120 / 100 = 1.2 x ULN; ref_high becomes 1.
        (
            {"test": "anti_dsdna", "result": "120", "unit": "U/mL", "ref_low": "0", "ref_high": "100"},
            ("anti_dsdna_xuln", 1.2, 0.0, 1.0),
        ),
        # 100 / 300 = 0.3333...: 0 decimals + ceil(log10 300) = 3 places.
        (
            {"test": "anti_dsdna", "result": "100", "unit": "U/mL", "ref_low": "10", "ref_high": "300"},
            ("anti_dsdna_xuln", 0.333, 0.033, 1.0),
        ),
        # 301 / 300 = 1.00333...: still above the limit after rounding (1.003).
        (
            {"test": "anti_dsdna", "result": "301", "unit": "AU/mL", "ref_low": None, "ref_high": "300"},
            ("anti_dsdna_xuln", 1.003, None, 1.0),
        ),
        # The limit's own decimals count: 101 / 100.5 = 1.00497...: 1 + ceil(log10 100.5) = 4 places.
        (
            {"test": "anti_dsdna", "result": "101", "unit": "U/mL", "ref_low": None, "ref_high": "100.5"},
            ("anti_dsdna_xuln", 1.005, None, 1.0),
        ),
        # Censored results are rounded like any other: the number is the value.
        ({"result": "<6", "unit": "mg/dL", "ref_low": "10", "ref_high": "40"}, ("c3", 0.06, 0.1, 0.4)),
        # Canonical units are not changed.
        ({"result": "0.123", "unit": "g/L", "ref_low": "0.9", "ref_high": "1.8"}, ("c3", 0.123, 0.9, 1.8)),
        ({"test": "ifn_score", "result": "2.466", "unit": "", "method": "MEAN_Z"}, ("ifn_score", 2.466, None, None)),
    ],
)
def test_converted_values_carry_the_reported_precision(
    overrides: dict[str, str | None], expected: tuple[object, ...]
) -> None:
    """Exact values, worked out by hand: the binary artefact of the product is gone."""
    row = {"ref_low": None, "ref_high": None, **overrides}
    assert _converted(**row) == expected


def test_values_that_are_not_finite_stay_so() -> None:
    """1e999 overflows (VALUE_NOT_FINITE downstream); a kit unit over a limit of 0 is infinite, not rounded."""
    assert _converted(result="1e999", unit="g/L", ref_low=None, ref_high=None)[1] == math.inf
    _, value, _, ref_high = _converted(test="anti_dsdna", result="250", unit="U/mL", ref_low=None, ref_high="0")
    assert value == math.inf
    assert ref_high is not None and math.isnan(ref_high)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# The two helpers, on plain values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "places"),
    [
        ("35", 0),
        ("0.35", 2),
        ("2.50", 2),
        ("12.", 0),
        (".5", 1),
        (" 7.25 ", 2),
        ("-0.5", 1),
        ("1.5e3", -2),
        ("1.5E+3", -2),
        ("2.5e-2", 3),
        ("1e999", -999),
        ("1e99999999999999999999", None),
        (None, None),
    ],
)
def test_decimals_of(text: str | None, places: int | None) -> None:
    got = pl.select(decimals_of(pl.lit(text, pl.String))).item()
    assert got == places


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (0.35000000000000003, 2, 0.35),
        (70.00000000000001, -1, 70.0),
        (1234.5, 0, 1235.0),  # halves away from zero
        (-1234.5, 0, -1235.0),
        (0.125, 2, 0.13),
        (1 / 3, 3, 0.333),
        (1 / 3, None, 0.333333333333),  # no places: only the 12 significant digits
        (1 / 3, 40, 0.333333333333),  # beyond float64's exact range: likewise
        (123456.0, -3, 123000.0),
        (0.0, 5, 0.0),
        (math.inf, 2, math.inf),
    ],
)
def test_round_to_places(value: float, places: int | None, expected: float) -> None:
    got = pl.select(round_to_places(pl.lit(value, pl.Float64), pl.lit(places, pl.Int32))).item()
    assert got == expected


# --------------------------------------------------------------------------------------------------
# Properties (oracle: exact decimal arithmetic)
# --------------------------------------------------------------------------------------------------


def _written(digits: str, point: int | None, exponent: int) -> str:
    """A number as a lab writes it: `digits` with a decimal point before position `point` (None: no point)."""
    text = digits if point is None else (digits[:point] or "0") + "." + digits[point:]
    return text + (f"e{exponent}" if exponent else "")


# Up to 9 significant digits, integers or a few decimals, sometimes an exponent.
_NUMBERS = st.builds(
    _written,
    st.text("0123456789", min_size=1, max_size=9),
    st.one_of(st.none(), st.integers(0, 9)),
    st.sampled_from([0, 0, 0, -3, -1, 2]),
)


@settings(max_examples=300, deadline=None)
@given(text=_NUMBERS)
def test_decimals_of_matches_the_decimal_exponent(text: str) -> None:
    """The places of a number are minus its `decimal` exponent ("2.50" has exponent -2)."""
    exponent = Decimal(text).as_tuple().exponent
    assert isinstance(exponent, int)
    assert pl.select(decimals_of(pl.lit(text))).item() == -exponent


@settings(max_examples=300, deadline=None)
@given(text=_NUMBERS, unit=st.sampled_from(["g/L", "mg/dL", "mg/L"]))
def test_multiplied_values_are_the_exact_decimal_product(text: str, unit: str) -> None:
    """For the power-of-ten factors of units.csv the converted value is the float nearest the exact product."""
    factor = {"g/L": Decimal(1), "mg/dL": Decimal("0.01"), "mg/L": Decimal("0.001")}[unit]
    value = harmonise([lab_row(result=text, unit=unit, ref_low=None, ref_high=None)]).candidates["value"][0]
    assert value == float(Decimal(text) * factor)


@settings(max_examples=300, deadline=None)
@given(
    result=st.integers(0, 100_000),
    result_places=st.integers(0, 3),
    limit=st.integers(1, 100_000),
    limit_places=st.integers(0, 3),
)
def test_ratio_to_the_upper_limit_keeps_its_side_of_the_limit(
    result: int, result_places: int, limit: int, limit_places: int
) -> None:
    """result / ref_high, rounded, is above, at or below 1 exactly as the result is against the limit.

    And it is within half a unit of its last place of the exact quotient.
    """
    number = Decimal(result).scaleb(-result_places)
    upper = Decimal(limit).scaleb(-limit_places)
    overrides = {"test": "anti_dsdna", "unit": "U/mL", "result": str(number), "ref_high": str(upper), "ref_low": None}
    value = harmonise([lab_row(**overrides)]).candidates["value"][0]
    assert (value > 1) == (number > upper) and (value == 1) == (number == upper)
    places = max(result_places, limit_places) + math.ceil(math.log10(float(upper)) - 1e-9)
    exact = number / upper
    assert abs(Decimal(value) - exact) <= Decimal(5).scaleb(-places - 1) + abs(exact) * Decimal("1e-12")
    assert len(Decimal(repr(value)).normalize().as_tuple().digits) <= SIGNIFICANT_DIGITS
