"""Semi-quantitative urinalysis against the SLEDAI threshold (> 5 /HPF): intervals, TNTC, words only if mapped."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.followup.urinalysis import above_threshold

WORDS = {"few": (1.0, 5.0), "Many": (20.0, None), "moderate": (3.0, 10.0)}


def _read(cells: list[str | None], words: dict[str, tuple[float, float | None]] | None = None) -> list[tuple]:
    above, invalid = above_threshold(pl.col("c"), 5, words)
    frame = pl.DataFrame({"c": cells}, schema={"c": pl.String})
    return frame.select(above.alias("above"), invalid.alias("invalid")).rows()


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("12", (True, False)), ("5", (False, False)), ("5.5", (True, False)), ("0", (False, False)),
        ("6-10", (True, False)),  # lower bound 6 > 5: every value allowed is above
        ("3-5", (False, False)),  # upper bound 5 <= 5: none is above
        ("3 - 8", (None, False)),  # straddles 5: unknown
        ("0-2", (False, False)), (">50", (True, False)), (">5", (True, False)), (">3", (None, False)),
        ("<1", (False, False)), ("<=5", (False, False)), ("<10", (None, False)),
        ("TNTC", (True, False)), ("too numerous to count", (True, False)),
        ("", (None, False)), (None, (None, False)), ("  ", (None, False)),
        ("few", (None, True)),  # a word without a mapping is never guessed
        ("positive", (None, True)), ("10-3", (None, True)), ("5/hpf", (None, True)),
        ("\x1f", (None, True)),  # a control character is not a blank cell
    ],
)  # fmt: skip
def test_each_reported_form(cell: str | None, expected: tuple) -> None:
    assert _read([cell]) == [expected]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("few", (False, False)), ("MANY", (True, False)), ("moderate", (None, False)), ("lots", (None, True))],
)
def test_words_through_a_configured_mapping(cell: str, expected: tuple) -> None:
    assert _read([cell], WORDS) == [expected]


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
def test_every_cell_is_present_absent_unknown_or_invalid_and_none_is_lost(cells: list[str | None]) -> None:
    rows = _read(cells, WORDS)
    assert len(rows) == len(cells)
    for (above, invalid), cell in zip(rows, cells, strict=True):
        assert invalid in (True, False)
        if invalid:
            assert above is None, cell  # an invalid cell is never read as a result
        if _blank(cell):
            assert (above, invalid) == (None, False)
