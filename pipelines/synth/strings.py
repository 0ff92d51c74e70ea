"""Vectorised rendering of numbers, dates, times and booleans as the strings a site's export holds."""

from __future__ import annotations

import numpy as np
import polars as pl


def _fmt(x: float | None, dec: int) -> str:
    # Reference limits as labs print them: "30", "0.9", "1.8", "0.16" (no float noise, no padding).
    return "" if x is None else f"{round(x, dec):g}"


_P10I = 10 ** np.arange(8, dtype=np.int64)


_P10F = _P10I.astype(np.float64)


_TIMES = ("", *(f"T{h:02d}:{m:02d}:00" for h in range(7, 18) for m in range(0, 60, 5)))


def _gather(table: tuple[str, ...] | list[str] | pl.Series, idx: np.ndarray) -> pl.Series:
    """Vectorised lookup of strings by integer index (a polars gather, not a Python loop)."""
    s = table if isinstance(table, pl.Series) else pl.Series(list(table), dtype=pl.String)
    return s.gather(idx)


def _enum_gather(categories: tuple[str, ...] | list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(list(categories), dtype=pl.Enum(list(categories))).gather(idx)


def _format_numbers(value: np.ndarray, dec: np.ndarray) -> pl.Series:
    """Format numbers with exactly `dec` decimals (per row) via scaled integers: exact, no float repr noise.

    Integer parts are cast in one pass; fractions and signs are only built for the rows that need them.
    """
    p10 = _P10I[dec]
    scaled = np.rint(value * p10).astype(np.int64)
    neg = np.flatnonzero(scaled < 0)
    np.abs(scaled, out=scaled)
    out = pl.Series(scaled // p10).cast(pl.String)
    frac = np.flatnonzero(dec > 0)
    p = p10[frac]
    # a % p + p has exactly dec + 1 digits, so dropping its leading "1" zero-pads the fraction.
    out.scatter(frac, out.gather(frac) + "." + pl.Series(scaled[frac] % p + p).cast(pl.String).str.slice(1))
    out.scatter(neg, "-" + out.gather(neg))
    return out


def _day_strings(days: np.ndarray) -> pl.Series:
    return pl.Series(days.astype("datetime64[D]")).cast(pl.String)


def _text_bool(flag: np.ndarray, blank: np.ndarray) -> pl.Series:
    """Booleans as a site's export writes them: "true"/"false", null where not assessed."""
    return _gather(("false", "true"), flag.astype(np.int64)).scatter(np.flatnonzero(blank), None)
