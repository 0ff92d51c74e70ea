"""Disclosure control for everything a sponsor may see: counts of subjects with small cells suppressed, and which
quarantined values may be shown at all.

Every count of subjects from 1 to ``min_cell_count - 1`` shows as ``<k``, and any further cell from which such a
count could be recomputed through a displayed total shows as ``*`` (complementary suppression). A quarantined
value is shown (truncated) only for columns that cannot identify anyone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SHOWN_VALUE_COLUMNS", "Cell", "margin_lines", "shown_value", "suppress", "with_margins"]

#: A (row, column) cell of a table of counts.
Cell = tuple[int, int]
#: Quarantine columns whose offending value is shown (truncated); every other column's value is withheld.
SHOWN_VALUE_COLUMNS = frozenset(
    {
        "test",
        "result",
        "unit",
        "method",
        "ref_low",
        "ref_high",
        "sex",
        "sledai_2k",
        "prior_immunosuppressant_failures",
        "lupus_nephritis_class",
        "egfr",
        "active_cns_lupus",
    }
)
_VALUE_WIDTH = 24


def suppress(values: np.ndarray, lines: Sequence[Sequence[Cell]], min_cell_count: int) -> np.ndarray:
    """Display strings for a table of subject counts, small cells suppressed.

    Primary suppression hides every count from 1 to ``min_cell_count - 1`` (shown as ``<k``). Complementary
    suppression then hides, on any line (a set of cells a reader can add up, e.g. a row with its displayed total)
    that has exactly one hidden cell, the smallest visible non-zero cell of that line (shown as ``*``), until no
    line gives a hidden cell away. Zeros are shown.

    Args:
        values: Non-negative integer counts (totals included as ordinary cells).
        lines: Each a sequence of (row, column) cells whose sum relation is visible to a reader.
        min_cell_count: The threshold k.

    Returns:
        An array of strings of the same shape.
    """
    counts = np.asarray(values, dtype=np.int64)
    primary = (counts > 0) & (counts < min_cell_count)
    hidden = primary.copy()
    changed = True
    while changed:
        changed = False
        for line in lines:
            if sum(bool(hidden[c]) for c in line) != 1:
                continue
            options = [c for c in line if not hidden[c] and counts[c] > 0]
            if options:
                hidden[min(options, key=lambda c: (int(counts[c]), c))] = True
                changed = True
    out = counts.astype(str).astype(object)
    out[hidden] = "*"
    out[primary] = f"<{min_cell_count}"
    return out


def margin_lines(rows: int, cols: int) -> list[list[Cell]]:
    """Lines of a table whose last row and last column are totals."""
    lines = [[(i, j) for j in range(cols)] for i in range(rows)]
    lines += [[(i, j) for i in range(rows)] for j in range(cols)]
    return lines


def with_margins(values: np.ndarray) -> np.ndarray:
    """The table with a total column and a total row appended."""
    values = np.asarray(values, dtype=np.int64)
    full = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.int64)
    full[:-1, :-1] = values
    full[:-1, -1] = values.sum(axis=1)
    full[-1, :] = full[:-1, :].sum(axis=0)
    return full


def shown_value(column: str, value: str | None) -> str:
    """A quarantined value as a report may show it: truncated, or withheld for columns that could identify."""
    if column not in SHOWN_VALUE_COLUMNS:
        return "(withheld)"
    if value is None or value == "":
        return "(empty)"
    return value if len(value) <= _VALUE_WIDTH else value[: _VALUE_WIDTH - 1] + "…"
