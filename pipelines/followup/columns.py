"""Optional columns of the follow-up derivations' input frames: a column a frame lacks is a column of nulls."""

from __future__ import annotations

import polars as pl

__all__ = ["with_optional_columns"]


def with_optional_columns(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with every column of `columns` it lacks added as typed nulls (null = not given, never absent)."""
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in columns.items() if name not in frame.columns]
    return frame.with_columns(missing) if missing else frame
