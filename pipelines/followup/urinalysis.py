"""Semi-quantitative urinalysis counts (cells per high-power field, casts per low-power field): reading and thresholds.

Sites report sediment counts as numbers ("12"), ranges ("3-5", "6–10"), censored values ("<1", ">50"), "TNTC"
(too numerous to count) or words ("few", "many"). `parse_count` reads a result into the harmonised columns:

- a number n: `value` n, `value_high` null, no censoring;
- a range a-b (hyphen or en dash): the interval, `value` a and `value_high` b; a reversed range ("10-3") is a
  typo, not an interval: problem `RANGE_REVERSED`;
- "<x", "<=x", ">x", ">=x": `value` x with that censoring, as for every other analyte;
- "TNTC" (or "too numerous to count"): censoring ">" and `value` = the configured `tntc_above` (default 50): read
  as above any threshold at or below it;
- a word: only through a configured mapping word -> (low, high or None), never guessed. (low, high) reads as the
  interval; (low, None) as ">= low". An unmapped word (letters and spaces only) is problem `WORD_UNMAPPED`;
- an empty cell: all null, no problem (the row's RESULT_MISSING rule speaks for it);
- anything else: problem `UNREADABLE`, never read as a number.

A read count is compared with a threshold by `immunostrat.followup.thresholds.compare`, three-valued: above only
when every value it allows is above (SLEDAI-2K hematuria and pyuria: > 5 /HPF; casts: > 0), so "3-5" is not above
5, "6-10" is, and "4-8" is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

#: Analytes whose results are read as semi-quantitative counts (`parse_count`) rather than plain numbers.
SEMI_QUANTITATIVE_ANALYTES = ("urine_rbc", "urine_wbc", "urine_casts")
#: Reading problems, as `CountReading.problem` names them.
WORD_UNMAPPED = "WORD_UNMAPPED"
RANGE_REVERSED = "RANGE_REVERSED"
UNREADABLE = "UNREADABLE"

# ASCII digits only: `\d` also matches other scripts' digits ("٠"), which are not numbers to cast.
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
_TNTC = ("tntc", "too numerous to count", "too numerous")
# A word: letters (any script), spaces and hyphens, at least one letter; no digits.
_WORD = r"^[^\W\d_]+(?:[\s-]+[^\W\d_]+)*$"


@dataclass(frozen=True)
class CountReading:
    """Expressions for one reported count: the harmonised `value`, `value_high`, `censoring`, and the `problem`.

    `problem` is null for a readable (or empty) cell, else `WORD_UNMAPPED`, `RANGE_REVERSED` or `UNREADABLE`;
    where it is set, the three values are null.
    """

    value: pl.Expr
    value_high: pl.Expr
    censoring: pl.Expr
    problem: pl.Expr

    @property
    def invalid(self) -> pl.Expr:
        """True where the cell holds something that is not a readable count (to be quarantined)."""
        return self.problem.is_not_null()


def parse_count(
    text: pl.Expr, words: Mapping[str, tuple[float, float | None]] | None = None, tntc_above: float = 50.0
) -> CountReading:
    """Read reported counts (see the module docstring for every form).

    Args:
        text: the reported result, as text.
        words: a configured reading of words as intervals, e.g. ``{"few": (1, 5), "many": (20, None)}`` (None: no
            upper bound). Keys are matched case-insensitively, without surrounding white space.
        tntc_above: the value "TNTC" is read as above (censoring ">").
    """
    cell = text.str.strip_chars().str.to_lowercase()
    empty = cell.is_null() | (cell == "")
    number = cell.str.extract(rf"^{_NUMBER}$").cast(pl.Float64, strict=False)
    low = cell.str.extract(rf"^{_NUMBER}\s*[-–]\s*{_NUMBER}$", 1).cast(pl.Float64, strict=False)
    high = cell.str.extract(rf"^{_NUMBER}\s*[-–]\s*{_NUMBER}$", 2).cast(pl.Float64, strict=False)
    comparator = cell.str.extract(rf"^(<=|>=|<|>)\s*{_NUMBER}$", 1)
    bound = cell.str.extract(rf"^(<=|>=|<|>)\s*{_NUMBER}$", 2).cast(pl.Float64, strict=False)
    table = {k.strip().lower(): v for k, v in (words or {}).items()}
    word_low = cell.replace_strict({k: float(v[0]) for k, v in table.items()}, default=None, return_dtype=pl.Float64)
    word_high = cell.replace_strict(
        {k: (float(v[1]) if v[1] is not None else None) for k, v in table.items()},
        default=None,
        return_dtype=pl.Float64,
    )
    is_word = cell.is_in(list(table)) if table else pl.lit(False)
    tntc = cell.is_in(_TNTC)
    is_range = low.is_not_null() & high.is_not_null()
    reversed_range = (is_range & (low > high)).fill_null(False)
    read = (number.is_not_null() | is_range | bound.is_not_null() | tntc | is_word).fill_null(False)
    problem = (
        pl.when(empty | (read & ~reversed_range))
        .then(pl.lit(None, pl.String))
        .when(reversed_range)
        .then(pl.lit(RANGE_REVERSED))
        .when(cell.str.contains(_WORD).fill_null(False))
        .then(pl.lit(WORD_UNMAPPED))
        .otherwise(pl.lit(UNREADABLE))
    )
    ok = ~empty & problem.is_null()
    value = (
        pl.when(~ok)
        .then(None)
        .when(number.is_not_null())
        .then(number)
        .when(is_range)
        .then(low)
        .when(bound.is_not_null())
        .then(bound)
        .when(tntc)
        .then(pl.lit(float(tntc_above)))
        .otherwise(word_low)
    )
    value_high = pl.when(ok & is_range).then(high).when(ok & is_word & ~tntc).then(word_high).otherwise(None)
    censoring = (
        pl.when(~ok)
        .then(pl.lit(None, pl.String))
        .when(bound.is_not_null())
        .then(comparator)
        .when(tntc)
        .then(pl.lit(">"))
        .when(is_word & word_high.is_null())
        .then(pl.lit(">="))
        .otherwise(pl.lit(None, pl.String))
    )
    return CountReading(
        value=value.cast(pl.Float64),
        value_high=value_high.cast(pl.Float64),
        censoring=censoring,
        problem=problem,
    )
