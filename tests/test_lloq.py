"""The lab `lloq` column: read, converted with the value's factor, refused when unreadable, carried into harmonised.

Expected values are worked by hand from units.csv factors (mg/dL -> g/L x 0.01; 10^9/L -> cells/uL x 1000) and the
kit-unit rule (a U/mL number over the lab's upper limit).
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest

from immunostrat.ingest.readers import read_sdtm_labs
from immunostrat.schemas.outputs import HarmonisedLab
from immunostrat.stages.harmonise import harmonised_table

from .fixtures_labs import harmonise, lab_row, reference, validate


def _candidate(**overrides: str | None) -> dict[str, object]:
    return harmonise([lab_row(**overrides)]).candidates.row(0, named=True)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # 5 mg/dL x 0.01 = 0.05 g/L, the value's own factor.
        ({"result": "<5", "unit": "mg/dL", "lloq": "5", "ref_low": None, "ref_high": None}, 0.05),
        # 0.0004 10^9/L x 1000 = 0.4 cells/uL (high-sensitivity flow LLOQ, follow-up-facts §3).
        (
            {"test": "cd19_b_cells", "result": "0.0003", "unit": "10^9/L", "lloq": "0.0004", "ref_low": None},
            0.4,
        ),
        # A kit unit: 10 U/mL over the lab's upper limit 100 U/mL = 0.1 x ULN, as the value is.
        (
            {"test": "anti_dsdna", "result": "250", "unit": "U/mL", "lloq": "10", "ref_low": None, "ref_high": "100"},
            0.1,
        ),
        # Already canonical: unchanged; zero is a valid limit (the boundary of >= 0).
        ({"lloq": "0.05"}, 0.05),
        ({"lloq": "0"}, 0.0),
        ({"lloq": None}, None),
        ({"lloq": "  "}, None),
    ],
)
def test_lloq_is_converted_with_the_values_factor(overrides: dict[str, str | None], expected: float | None) -> None:
    row = _candidate(**overrides)
    assert row["lloq_value"] == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("text", ["abc", "<0.5", "-0.001", "1e999", "0,5"])
def test_unreadable_or_negative_lloq_refuses_the_row(text: str) -> None:
    """LLOQ_INVALID refuses the row (as REF_LOW_INVALID does); the good row beside it is kept."""
    _, split = validate([lab_row(subject_id="P1", lloq="0.1"), lab_row(subject_id="P2", lloq=text)])
    assert split.accepted["subject_id"].to_list() == ["P1"]
    bad = split.quarantine.row(0, named=True)
    assert (bad["reason_code"], bad["column"], bad["value"], bad["lloq"]) == ("LLOQ_INVALID", "lloq", text, text)


def test_harmonised_table_carries_lloq_and_validates() -> None:
    rows = [
        lab_row(subject_id="P1", result="<5", unit="mg/dL", lloq="5", ref_low="90", ref_high="180"),
        lab_row(subject_id="P2"),
    ]
    _, split = validate(rows)
    table = harmonised_table(split.accepted)
    HarmonisedLab.validate(table)
    assert table.schema["lloq"] == pl.Float64
    assert table["lloq"].to_list() == [pytest.approx(0.05), None]


def _write_lb(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["STUDYID", "USUBJID", "LBTESTCD", "LBORRES", "LBORRESU", "LBSTRESC", "LBSTRESU", "LBDTC", "LBLLOQ"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def test_sdtm_lblloq_goes_with_the_standardised_result_only(tmp_path: Path) -> None:
    """LBLLOQ is in LBSTRESU: read with a standardised result, left empty (and counted) with an original one."""
    base = {"STUDYID": "S1", "LBTESTCD": "BLYCE", "LBDTC": "2025-05-01", "LBLLOQ": "0.441"}
    path = _write_lb(
        tmp_path / "lb.csv",
        [
            {**base, "USUBJID": "S1-001", "LBORRES": "0.0002", "LBORRESU": "10^9/L", "LBSTRESC": "<0.441"}
            | {"LBSTRESU": "cells/uL"},
            {**base, "USUBJID": "S1-002", "LBORRES": "0.0002", "LBORRESU": "10^9/L"},
        ],
    )
    table = read_sdtm_labs(path, reference())
    assert table.frame["lloq"].to_list() == ["0.441", None]
    assert table.notes["lloq_not_used"] == 1
    assert table.detail is not None
    assert table.detail["lloq_standard"].to_list() == ["0.441", "0.441"]
