"""Disclosure-control helpers the reports share (immunostrat.reporting.disclosure), on tables small enough to
work out by hand. `suppress` itself is tested in tests/test_report.py."""

from __future__ import annotations

import numpy as np

from immunostrat.reporting.disclosure import margin_lines, shown_value, suppress, with_margins


def test_with_margins_appends_row_and_column_totals() -> None:
    assert with_margins(np.array([[1, 2], [3, 4]])).tolist() == [[1, 2, 3], [3, 4, 7], [4, 6, 10]]


def test_margin_lines_are_every_row_and_every_column() -> None:
    assert margin_lines(2, 2) == [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0), (1, 0)], [(0, 1), (1, 1)]]


def test_a_table_with_margins_hides_a_small_cell_and_what_would_give_it_away() -> None:
    # [[2, 10], [8, 9]] with totals: 2 is primary (<5); its row (2, 10, 12) and its column (2, 8, 10) would
    # give it away, so the smallest visible non-zero cell of each is hidden too: 10 (row) and 8 (column).
    # Then row 1 (8, 9, 17) and column 1 (10, 9, 19) each hold one hidden cell: 9 goes as well, after which
    # every line holds two hidden cells or none.
    full = with_margins(np.array([[2, 10], [8, 9]]))
    assert suppress(full, margin_lines(*full.shape), 5).tolist() == [
        ["<5", "*", "12"],
        ["*", "*", "17"],
        ["10", "19", "29"],
    ]


def test_shown_value_truncates_safe_columns_and_withholds_the_rest() -> None:
    assert shown_value("unit", "mg/dL") == "mg/dL"
    assert shown_value("result", "x" * 30) == "x" * 23 + "…"  # 24 characters shown
    assert shown_value("result", "") == "(empty)"
    assert shown_value("subject_id", "P-0042") == "(withheld)"
