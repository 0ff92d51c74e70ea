"""Where a CSV file stops being RFC 4180 (immunostrat.ingest.diagnostics.csv_structure_problem), case by case.

Encodings, an unclosed quote and text after a closing quote are covered with whole lab files in
tests/test_fuzz_formats.py; these are the remaining steps of the walk, on files of two or three lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from immunostrat.ingest.diagnostics import csv_structure_problem


@pytest.mark.parametrize(
    ("text", "delimiter", "problem"),
    [
        ("a,b\n1,2,3\n", ",", "line 2 has 3 field(s) but the header has 2"),
        ("a,b\r\n1,2\r\n3\r\n", ",", "line 3 has 1 field(s) but the header has 2"),  # CRLF is one line break
        ("a,b\n1,2\n3", ",", "line 3 has 1 field(s) but the header has 2"),  # a last line without a break
        ("a,b\n\n\n1,2\n", ",", None),  # blank lines are skipped
        ('a,b\n"1\n2",3\n4\n', ",", "line 4 has 1 field(s) but the header has 2"),  # a quoted field spans lines
        ("a;b,c\n1;2\n", ",", "line 2 has 1 field(s) but the header has 2 (is the delimiter ';'?)"),
        ("a;b\n1;2\n", ";", None),
        (
            'a,b\n1,2"x\n',
            ",",
            'line 2, field 2: a quote inside an unquoted field; quote the whole field and double the quote ("")',
        ),
        ('a,b\n"1""2",3\n', ",", None),  # a doubled quote inside a quoted field
    ],
)
def test_csv_structure_problem_names_line_and_field(
    tmp_path: Path, text: str, delimiter: str, problem: str | None
) -> None:
    path = tmp_path / "labs.csv"
    path.write_bytes(text.encode())
    assert csv_structure_problem(path, delimiter) == problem
