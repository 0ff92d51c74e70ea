"""CSV files people open in a spreadsheet: cells that a spreadsheet would run as formulas are neutralised.

For files people open (the validate report, sponsor CSV exports), never for data a program reads back: the
leading quote changes the value.
"""

from __future__ import annotations

import re

import polars as pl

__all__ = ["csv_safe", "csv_safe_text"]

# OWASP "CSV injection": a cell starting with one of these may be run as a formula by Excel/LibreOffice/Sheets.
_FORMULA_START = r"^(?:[=+\-@\t\r]|[ \n]+[=+\-@])"
_PLAIN_NUMBER = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$"


def csv_safe_text(value: str) -> str:
    """One cell made safe for a spreadsheet: a formula-like cell gets a leading single quote.

    Plain numbers (``-5``, ``+1.5e3``) are left as they are: a spreadsheet reads them as numbers, never as
    formulas.
    """
    if re.match(_FORMULA_START, value) and not re.match(_PLAIN_NUMBER, value):
        return "'" + value
    return value


def _safe_expr(expr: pl.Expr) -> pl.Expr:
    """`csv_safe_text` as a polars expression over a text column."""
    risky = expr.str.contains(_FORMULA_START) & ~expr.str.contains(_PLAIN_NUMBER)
    return pl.when(risky.fill_null(False)).then(pl.lit("'") + expr).otherwise(expr)


def csv_safe(frame: pl.DataFrame) -> pl.DataFrame:
    """Neutralise spreadsheet formulas in every text cell and column name before writing ``frame`` as CSV.

    Text cells (String, Categorical and Enum columns, and the elements of List[String] columns) that start with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (or spaces then ``=+-@``) get a leading ``'``, which
    spreadsheets show as text and do not evaluate. Plain numbers stay untouched; other column types are left
    as they are. Column names get the same treatment. The CSV writer's quoting takes care of commas, quotes
    and newlines inside cells.

    This is for files people open (validate reports, sponsor CSV exports). Never apply it to data that is read
    back by a program: the quote changes the value.
    """
    exprs: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        if dtype == pl.String:
            exprs.append(_safe_expr(pl.col(name)).alias(name))
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            exprs.append(_safe_expr(pl.col(name).cast(pl.String)).alias(name))
        elif isinstance(dtype, pl.List) and dtype.inner == pl.String:
            exprs.append(pl.col(name).list.eval(_safe_expr(pl.element())).alias(name))
    safe = frame.with_columns(exprs) if exprs else frame
    renamed = {c: csv_safe_text(c) for c in safe.columns if csv_safe_text(c) != c}
    return safe.rename(renamed) if renamed else safe
