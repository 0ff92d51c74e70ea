"""Semi-quantitative urinalysis counts (red or white cells per high-power field) against a SLEDAI threshold.

Sites report sediment counts as numbers ("12"), ranges ("3-5", "6-10"), censored values ("<1", ">50"), "TNTC"
(too numerous to count) or words ("few", "many"). A result counts as above the threshold (SLEDAI-2K: > 5 /HPF)
only when every value it allows is above it:

- a number n: n > threshold;
- a range a-b: above when a > threshold, not above when b <= threshold, else unknown;
- ">x" (or ">=x"): above when x >= threshold, else unknown; "<x" (or "<=x"): not above when x <= threshold, else
  unknown;
- "TNTC": above any threshold;
- a word: only through a configured mapping to an interval (`words`), never guessed; an unmapped word is invalid;
- an empty cell: unknown (not assessed); a reversed range ("10-3") is invalid.

Anything else is invalid (to be quarantined with its reason), never read as a number.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

# ASCII digits only: `\d` also matches other scripts' digits ("٠"), which are not numbers to cast.
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_TNTC = ("tntc", "too numerous to count", "too numerous")


def above_threshold(
    text: pl.Expr, threshold: float, words: Mapping[str, tuple[float, float | None]] | None = None
) -> tuple[pl.Expr, pl.Expr]:
    """(above, invalid) for a column of reported counts: `above` is True, False or null (unknown).

    Args:
        text: the reported result, as text.
        threshold: counts strictly above this are present (SLEDAI-2K hematuria and pyuria: 5 per HPF).
        words: a configured reading of words as intervals, e.g. ``{"few": (1, 5), "many": (20, None)}`` (None: no
            upper bound). Keys are matched case-insensitively.
    """
    cell = text.str.strip_chars().str.to_lowercase()
    empty = cell.is_null() | (cell == "")
    number = cell.str.extract(rf"^{_NUMBER}$").cast(pl.Float64, strict=False)
    low = cell.str.extract(rf"^{_NUMBER}\s*[-–]\s*{_NUMBER}$", 1).cast(pl.Float64, strict=False)
    high = cell.str.extract(rf"^{_NUMBER}\s*[-–]\s*{_NUMBER}$", 2).cast(pl.Float64, strict=False)
    more = cell.str.extract(rf"^>=?\s*{_NUMBER}$").cast(pl.Float64, strict=False)
    less = cell.str.extract(rf"^<=?\s*{_NUMBER}$").cast(pl.Float64, strict=False)
    table = {k.strip().lower(): v for k, v in (words or {}).items()}
    word_low = cell.replace_strict({k: float(v[0]) for k, v in table.items()}, default=None, return_dtype=pl.Float64)
    word_high = cell.replace_strict(
        {k: (float(v[1]) if v[1] is not None else None) for k, v in table.items()},
        default=None,
        return_dtype=pl.Float64,
    )
    is_word = cell.is_in(list(table)) if table else pl.lit(False)
    tntc = cell.is_in(_TNTC)
    above = (
        pl.when(empty)
        .then(None)
        .when(number.is_not_null())
        .then(number > threshold)
        .when(low.is_not_null())
        .then(pl.when(low > threshold).then(True).when(high <= threshold).then(False).otherwise(None))
        .when(more.is_not_null())
        .then(pl.when(more >= threshold).then(True).otherwise(None))
        .when(less.is_not_null())
        .then(pl.when(less <= threshold).then(False).otherwise(None))
        .when(tntc)
        .then(True)
        .when(is_word)
        .then(
            pl.when(word_low > threshold)
            .then(True)
            .when(word_high.is_not_null() & (word_high <= threshold))
            .then(False)
            .otherwise(None)
        )
        .otherwise(None)
        .cast(pl.Boolean)
    )
    reversed_range = low.is_not_null() & (low > high)  # "10-3": a typo, not an interval
    read = number.is_not_null() | low.is_not_null() | more.is_not_null() | less.is_not_null() | tntc | is_word
    invalid = (~empty & (~read.fill_null(False) | reversed_range.fill_null(False))).fill_null(True)
    above = pl.when(invalid).then(None).otherwise(above)
    return above, invalid
