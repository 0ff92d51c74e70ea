"""Tests for immunostrat.ingest.io: reading CSV/Parquet inputs as strings, input errors, and atomic writes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from immunostrat.ingest.atomic import atomic_path
from immunostrat.ingest.inputs import read_labs, read_subjects
from immunostrat.ingest.io import (
    InputError,
    read_outcomes,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)

from .fixtures_labs import LAB_COLUMNS, write_csv

HEADER = "study_id,subject_id,test,result,unit,collected_at"
ROW = "S1,P001,c3,0.9,g/L,2025-01-15"
PROVENANCE = ["source_file", "source_row"]


def _write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp-"))


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def test_csv_columns_are_strings_with_provenance(tmp_path: Path) -> None:
    """Every contract column is String (values verbatim), optional ones are added as null, rows count from 1."""
    path = _write(
        tmp_path / "labs.csv",
        f"{HEADER},ref_high,comment\nS1,P001,5130-0,0090,IU/mL,2025-01-15,1e2,first\nS1,007,c3,<0.5,g/L,2025-01-16,,x\n",
    )
    table = read_labs(path)
    frame = table.frame
    assert frame.columns == [*LAB_COLUMNS, *PROVENANCE]
    assert all(frame.schema[c] == pl.String for c in LAB_COLUMNS)
    assert frame.schema["source_row"] == pl.Int64
    assert frame["source_row"].to_list() == [1, 2]
    assert frame["source_file"].to_list() == [str(path), str(path)]
    assert frame["test"].to_list() == ["5130-0", "c3"]
    assert frame["result"].to_list() == ["0090", "<0.5"]
    assert frame["subject_id"].to_list() == ["P001", "007"]
    assert frame["ref_high"][0] == "1e2"
    assert frame["site_id"].to_list() == [None, None]
    assert frame["method"].to_list() == [None, None]
    assert table.extra_columns == ("comment",)
    assert table.rows_read == 2
    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_source_file_is_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path stays relative in source_file."""
    _write(tmp_path / "labs.csv", f"{HEADER}\n{ROW}\n")
    monkeypatch.chdir(tmp_path)
    assert read_labs("labs.csv").frame["source_file"].to_list() == ["labs.csv"]


def test_header_is_normalised(tmp_path: Path) -> None:
    """BOM, case and surrounding spaces in header names are ignored."""
    header = ["Study_ID ", " SUBJECT_ID", "Test", "RESULT", " Unit ", "Collected_At", "Site_Id"]
    path = write_csv(tmp_path / "labs.csv", header, [["S1", "P1", "c3", "0.9", "g/L", "2025-01-15", "X"]], bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    row = read_labs(path).frame.row(0, named=True)
    assert row.pop("source_file") == str(path)
    assert row == {
        "study_id": "S1",
        "subject_id": "P1",
        "test": "c3",
        "result": "0.9",
        "unit": "g/L",
        "collected_at": "2025-01-15",
        "site_id": "X",
        "method": None,
        "ref_low": None,
        "ref_high": None,
        "lloq": None,
        "source_row": 1,
    }


def test_header_only_file_gives_zero_rows(tmp_path: Path) -> None:
    """A header without data rows is a valid, empty table."""
    table = read_labs(_write(tmp_path / "labs.csv", f"{HEADER}\n"))
    assert table.rows_read == 0
    assert table.frame.columns == [*LAB_COLUMNS, *PROVENANCE]


def test_parquet_columns_are_cast_to_strings(tmp_path: Path) -> None:
    """Typed Parquet columns are read as text; the header is normalised; provenance added."""
    path = tmp_path / "labs.parquet"
    pl.DataFrame(
        {
            "Study_ID": ["S1", "S1"],
            "subject_id": [1, 2],
            "test": ["c3", "c4"],
            "result": [0.9, 0.25],
            "unit": ["g/L", "g/L"],
            "collected_at": [dt.date(2025, 1, 15), dt.date(2025, 1, 16)],
            "ref_high": [None, None],
        }
    ).write_parquet(path)
    frame = read_labs(path).frame
    assert frame.columns == [*LAB_COLUMNS, *PROVENANCE]
    assert all(frame.schema[c] == pl.String for c in LAB_COLUMNS)
    assert frame["subject_id"].to_list() == ["1", "2"]
    assert frame["result"].to_list() == ["0.9", "0.25"]
    assert frame["collected_at"].to_list() == ["2025-01-15", "2025-01-16"]
    assert frame["ref_high"].to_list() == [None, None]
    assert frame["source_row"].to_list() == [1, 2]


def test_format_is_detected_from_content_not_suffix(tmp_path: Path) -> None:
    """A Parquet file named .csv is read as Parquet, and a CSV named .parquet as CSV."""
    parquet_named_csv = tmp_path / "labs.csv"
    pl.DataFrame(dict(zip(HEADER.split(","), [[v] for v in ROW.split(",")], strict=True))).write_parquet(
        parquet_named_csv
    )
    csv_named_parquet = _write(tmp_path / "labs.parquet", f"{HEADER}\n{ROW}\n")
    for path in (parquet_named_csv, csv_named_parquet):
        assert read_labs(path).frame.select(HEADER.split(",")).rows() == [tuple(ROW.split(","))]


def test_subjects_and_outcomes_readers(tmp_path: Path) -> None:
    """The subject and outcome readers use their own contracts."""
    subjects = read_subjects(_write(tmp_path / "s.csv", "study_id,subject_id,reference_date,sex\nS1,P1,2025-02-01,F\n"))
    assert subjects.frame["sex"].to_list() == ["F"]
    assert subjects.frame["egfr"].to_list() == [None]
    outcomes = read_outcomes(_write(tmp_path / "o.csv", "study_id,subject_id,responded,endpoint\nS1,P1,yes,DORIS\n"))
    assert outcomes.frame.columns == ["study_id", "subject_id", "responded", "endpoint", *PROVENANCE]


# --------------------------------------------------------------------------------------------------
# Input errors
# --------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    """A path that does not exist (or is a directory) is an InputError naming it."""
    path = tmp_path / "nope.csv"
    with pytest.raises(InputError, match="not found") as info:
        read_labs(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    with pytest.raises(InputError, match="not found"):
        read_labs(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    """An empty file says so and lists the expected header."""
    path = _write(tmp_path / "labs.csv", b"")
    with pytest.raises(InputError, match=r"empty \(0 bytes\).*study_id, subject_id, test, result, unit, collected_at"):
        read_labs(path)


@pytest.mark.parametrize("content", ["\n", "\r\n\r\n"])
def test_blank_file_has_no_header(tmp_path: Path, content: str) -> None:
    """A file of blank lines has no header row."""
    with pytest.raises(InputError, match="no header row"):
        read_labs(_write(tmp_path / "labs.csv", content))


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("study_id,subject_id,test,unit,collected_at", "result"),
        ("study_id,test,unit,collected_at", "subject_id"),
        ("Study ID,subject_id,test,result,unit,collected_at", "study_id"),
        ("a;b;c", "study_id"),
    ],
)
def test_missing_required_column(tmp_path: Path, header: str, column: str) -> None:
    """The message names the file and the (first) missing column; `.column` holds it."""
    path = _write(tmp_path / "labs.csv", f"{header}\n")
    with pytest.raises(InputError) as info:
        read_labs(path)
    assert info.value.column == column
    message = str(info.value)
    assert message.startswith(f"{path}: missing required column(s): {column}")
    assert "the file has:" in message


def test_missing_required_column_in_parquet(tmp_path: Path) -> None:
    """Parquet inputs get the same check."""
    path = tmp_path / "labs.parquet"
    pl.DataFrame({"study_id": ["S1"], "subject_id": ["P1"]}).write_parquet(path)
    with pytest.raises(InputError, match="missing required column") as info:
        read_labs(path)
    assert info.value.column == "test"


@pytest.mark.parametrize(
    "header",
    [
        f"{HEADER},study_id",
        f"{HEADER},Study_ID ",
        f"{HEADER},result,result",
        "study_id,Subject_ID,subject_id,test,result,unit,collected_at",
    ],
)
def test_duplicate_columns(tmp_path: Path, header: str) -> None:
    """A column given twice (exactly or after normalisation) is refused, never silently resolved."""
    n = header.count(",") + 1
    path = _write(tmp_path / "labs.csv", f"{header}\n{','.join(['x'] * n)}\n")
    with pytest.raises(InputError, match="appear more than once") as info:
        read_labs(path)
    assert info.value.column in {"study_id", "subject_id", "result"}
    assert info.value.column in str(info.value)


def test_column_named_like_a_polars_duplicate_is_not_a_duplicate(tmp_path: Path) -> None:
    """A header that merely ends in `_duplicated_0` is an ordinary extra column."""
    path = _write(tmp_path / "labs.csv", f"{HEADER},note_duplicated_0\n{ROW},x\n")
    assert read_labs(path).extra_columns == ("note_duplicated_0",)


@pytest.mark.parametrize(
    "content",
    [
        f"{HEADER}\n{ROW},extra,fields\n",
        f'{HEADER}\nS1,P1,"c3,0.9,g/L,2025-01-15\n',
        f'{HEADER}\nS1,P1,c3,"0.9"x,g/L,2025-01-15\n',
    ],
    ids=["too-many-fields", "unclosed-quote", "text-after-quote"],
)
def test_structurally_broken_csv(tmp_path: Path, content: str) -> None:
    """Ragged rows and quoting errors stop the run with an InputError naming the file."""
    path = _write(tmp_path / "labs.csv", content)
    with pytest.raises(InputError, match="cannot be read as CSV") as info:
        read_labs(path)
    assert str(info.value).startswith(str(path))


def test_non_utf8_file(tmp_path: Path) -> None:
    """A Latin-1 file is refused rather than mis-decoded."""
    path = _write(tmp_path / "labs.csv", f"{HEADER}\nS1,Pé,c3,0.9,g/L,2025-01-15\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"cannot be read as CSV.*utf-8"):
        read_labs(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    """A file that starts like Parquet but is not one is an InputError."""
    with pytest.raises(InputError, match="cannot be read as PARQUET"):
        read_labs(_write(tmp_path / "labs.parquet", b"PAR1 not really parquet"))


def test_parquet_column_that_cannot_be_text(tmp_path: Path) -> None:
    """A list-typed contract column is an InputError naming the column, not a polars exception."""
    path = tmp_path / "labs.parquet"
    columns = {c: ["x"] for c in HEADER.split(",")}
    pl.DataFrame({**columns, "result": [[1.0, 2.0]]}).write_parquet(path)
    with pytest.raises(InputError, match="column result has type List") as info:
        read_labs(path)
    assert info.value.column == "result"


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------


def test_write_parquet_atomic(tmp_path: Path) -> None:
    """The Parquet file round-trips with its footer metadata; no temp file is left; parents are created."""
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", None]})
    final = tmp_path / "run" / "out.parquet"
    assert write_parquet_atomic(frame, final, metadata={"run_id": "r1"}) == final
    assert pl.read_parquet(final).equals(frame)
    assert pl.read_parquet_metadata(final)["run_id"] == "r1"
    assert _leftovers(final.parent) == []


def test_write_json_atomic(tmp_path: Path) -> None:
    """Sorted keys, dates as text, trailing newline, no temp file."""
    final = tmp_path / "run.json"
    write_json_atomic({"b": 1, "a": dt.date(2025, 6, 30)}, final)
    text = final.read_text(encoding="utf-8")
    assert text == '{\n  "a": "2025-06-30",\n  "b": 1\n}\n'
    assert json.loads(text) == {"a": "2025-06-30", "b": 1}
    assert _leftovers(tmp_path) == []


def test_write_text_atomic_replaces(tmp_path: Path) -> None:
    """A second write replaces the first."""
    final = tmp_path / "note.txt"
    write_text_atomic("one", final)
    write_text_atomic("two", final)
    assert final.read_text(encoding="utf-8") == "two"
    assert _leftovers(tmp_path) == []


def test_failure_inside_atomic_path_keeps_the_old_file(tmp_path: Path) -> None:
    """An exception while writing leaves the previous final file intact and removes the temp file."""
    final = tmp_path / "out.txt"
    final.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(final) as tmp:
        tmp.write_text("half-written", encoding="utf-8")
        raise RuntimeError("boom")
    assert final.read_text(encoding="utf-8") == "old"
    assert _leftovers(tmp_path) == []


def test_failed_parquet_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A frame polars cannot write (Object column) leaves the old Parquet file in place."""
    final = tmp_path / "out.parquet"
    old = pl.DataFrame({"a": [1]})
    write_parquet_atomic(old, final)
    with pytest.raises(pl.exceptions.PolarsError):
        write_parquet_atomic(pl.DataFrame({"a": [object()]}), final)
    assert pl.read_parquet(final).equals(old)
    assert _leftovers(tmp_path) == []


def test_failed_json_write_keeps_the_old_file(tmp_path: Path) -> None:
    """An unserialisable payload (a cycle) leaves the old JSON file in place."""
    final = tmp_path / "run.json"
    write_json_atomic({"ok": True}, final)
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        write_json_atomic({"bad": cycle}, final)
    assert json.loads(final.read_text(encoding="utf-8")) == {"ok": True}
    assert _leftovers(tmp_path) == []
