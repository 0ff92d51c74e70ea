"""Semi-quantitative urinalysis: reading counts (intervals, TNTC, words only if mapped) and the SLEDAI threshold."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.followup.thresholds import compare
from immunostrat.followup.urinalysis import (
    RANGE_REVERSED,
    UNREADABLE,
    WORD_UNMAPPED,
    parse_count,
)

WORDS = {"few": (1.0, 5.0), "Many": (20.0, None), "moderate": (3.0, 10.0)}


def _parse(cells: list[str | None], words: dict[str, tuple[float, float | None]] | None = None) -> list[tuple]:
    """(value, value_high, censoring, problem) per cell."""
    reading = parse_count(pl.col("c"), words, tntc_above=50)
    frame = pl.DataFrame({"c": cells}, schema={"c": pl.String})
    return frame.select(
        reading.value.alias("value"),
        reading.value_high.alias("value_high"),
        reading.censoring.alias("censoring"),
        reading.problem.alias("problem"),
    ).rows()


def _above(cells: list[str | None], words: dict[str, tuple[float, float | None]] | None = None) -> list:
    """Read each cell, then compare it with the SLEDAI-2K hematuria threshold (> 5 /HPF)."""
    reading = parse_count(pl.col("c"), words, tntc_above=50)
    frame = pl.DataFrame({"c": cells}, schema={"c": pl.String})
    read = frame.select(v=reading.value, h=reading.value_high, s=reading.censoring)
    return (
        read.select(compare(pl.col("v"), ">", 5, censoring=pl.col("s"), value_high=pl.col("h"))).to_series().to_list()
    )


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("12", (12.0, None, None, None)), ("5.5", (5.5, None, None, None)), ("0", (0.0, None, None, None)),
        ("3-5", (3.0, 5.0, None, None)), ("6–10", (6.0, 10.0, None, None)), ("3 - 8", (3.0, 8.0, None, None)),
        ("<1", (1.0, None, "<", None)), ("<=5", (5.0, None, "<=", None)), (">50", (50.0, None, ">", None)),
        (">= 6", (6.0, None, ">=", None)),
        ("TNTC", (50.0, None, ">", None)), ("too numerous to count", (50.0, None, ">", None)),
        ("", (None, None, None, None)), (None, (None, None, None, None)), ("  ", (None, None, None, None)),
        ("10-3", (None, None, None, RANGE_REVERSED)),  # a typo, not an interval
        ("few", (None, None, None, WORD_UNMAPPED)),  # a word without a mapping is never guessed
        ("positive", (None, None, None, WORD_UNMAPPED)),
        ("5/hpf", (None, None, None, UNREADABLE)), ("-3", (None, None, None, UNREADABLE)),
        ("\x1f", (None, None, None, UNREADABLE)),  # a control character is not a blank cell
    ],
)  # fmt: skip
def test_each_reported_form_is_read(cell: str | None, expected: tuple) -> None:
    assert _parse([cell]) == [expected]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("few", (1.0, 5.0, None, None)),
        ("MANY", (20.0, None, ">=", None)),  # no upper bound: at least 20
        ("moderate", (3.0, 10.0, None, None)),
        ("lots", (None, None, None, WORD_UNMAPPED)),
    ],
)
def test_words_are_read_through_the_configured_mapping(cell: str, expected: tuple) -> None:
    assert _parse([cell], WORDS) == [expected]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("12", True), ("5", False), ("5.5", True), ("0", False),
        ("6-10", True),  # lower bound 6 > 5: every value allowed is above
        ("3-5", False),  # upper bound 5 <= 5: none is above
        ("3 - 8", None),  # straddles 5: unknown
        ("0-2", False), (">50", True), (">5", True), (">3", None), (">=5", None), (">=6", True),
        ("<1", False), ("<=5", False), ("<10", None),
        ("TNTC", True),  # read as > 50: above any threshold at or below 50
        ("", None), (None, None), ("few", None), ("10-3", None),
    ],
)  # fmt: skip
def test_counts_against_the_hematuria_threshold(cell: str | None, expected: bool | None) -> None:
    assert _above([cell]) == [expected]


@pytest.mark.parametrize(("cell", "expected"), [("few", False), ("MANY", True), ("moderate", None)])
def test_mapped_words_against_the_threshold(cell: str, expected: bool | None) -> None:
    # few = 1-5: not above 5; many = at least 20: above; moderate = 3-10: straddles 5.
    assert _above([cell], WORDS) == [expected]


def test_casts_count_when_any_qualifying_cast_is_seen() -> None:
    frame = pl.DataFrame(
        {"v": [0.0, 1.0, 0.0, 0.0], "h": [None, None, 2.0, None], "s": [None, None, None, "<"]},
        schema={"v": pl.Float64, "h": pl.Float64, "s": pl.String},
    )
    above = (
        frame.select(compare(pl.col("v"), ">", 0, censoring=pl.col("s"), value_high=pl.col("h"))).to_series().to_list()
    )
    # 0: none; 1: present; 0-2: unknown; "<0" cannot be above 0.
    assert above == [False, True, None, False]


# Python's `str.strip` also strips these separators; polars strips Unicode White_Space only, so a cell holding
# one is not blank but invalid.
_SEPARATORS = "\x1c\x1d\x1e\x1f"


def _blank(cell: str | None) -> bool:
    return cell is None or (not cell.strip() and not any(c in _SEPARATORS for c in cell))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.text(max_size=8),
            st.from_regex(r"\A\s*[<>]?=?\s*\d{1,3}(\.\d)?\s*(-\s*\d{1,3})?\s*\Z"),
            st.sampled_from(["TNTC", "few", "many", "3-5", "6-10"]),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_every_cell_is_read_or_invalid_and_none_is_lost(cells: list[str | None]) -> None:
    rows = _parse(cells, WORDS)
    above = _above(cells, WORDS)
    assert len(rows) == len(cells) == len(above)
    for (value, high, censoring, problem), cell in zip(rows, cells, strict=True):
        assert problem in (None, WORD_UNMAPPED, RANGE_REVERSED, UNREADABLE)
        if problem is not None or _blank(cell):
            assert (value, high, censoring) == (None, None, None), cell  # never read as a result
        else:
            assert value is not None and value >= 0, cell
            assert high is None or high >= value, cell  # an interval is never reversed
            assert high is None or censoring is None, cell
        if _blank(cell):
            assert problem is None
