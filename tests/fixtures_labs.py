"""Helpers for the io, harmonise, validate and property tests: tiny hand-written lab, subject and outcome tables."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from immunostrat.config.run import HarmoniseConfig
from immunostrat.ingest.io import (
    LAB_OPTIONAL,
    LAB_REQUIRED,
    OUTCOME_OPTIONAL,
    OUTCOME_REQUIRED,
    SUBJECT_OPTIONAL,
    SUBJECT_REQUIRED,
)
from immunostrat.ingest.reference import ReferenceTables, load_reference
from immunostrat.stages.harmonise import Harmonised, harmonise_labs
from immunostrat.stages.rules import Split
from immunostrat.stages.validate import validate_labs

LAB_COLUMNS = (*LAB_REQUIRED, *LAB_OPTIONAL)
SUBJECT_COLUMNS = (*SUBJECT_REQUIRED, *SUBJECT_OPTIONAL)
OUTCOME_COLUMNS = (*OUTCOME_REQUIRED, *OUTCOME_OPTIONAL)

AS_OF = dt.date(2025, 6, 30)
# Written out by hand (not read from schemas/reference/ifn_methods.csv): the methods validate is told about.
IFN_METHODS = ("MEDIAN_FC_21", "MEAN_Z")
SOURCE = "labs.csv"

Row = Mapping[str, str | None]


def lab_row(**overrides: str | None) -> dict[str, str | None]:
    """A valid C3 row in g/L; override any contract column."""
    row: dict[str, str | None] = {
        "study_id": "S1",
        "subject_id": "P001",
        "test": "c3",
        "result": "0.9",
        "unit": "g/L",
        "collected_at": "2025-01-15",
        "site_id": "SITE1",
        "method": None,
        "ref_low": "0.9",
        "ref_high": "1.8",
    }
    row.update(overrides)
    return row


def subject_row(**overrides: str | None) -> dict[str, str | None]:
    """A valid subject row; override any contract column."""
    row: dict[str, str | None] = {
        "study_id": "S1",
        "subject_id": "P001",
        "reference_date": "2025-02-01",
        "site_id": "SITE1",
        "sex": "F",
        "age_years": "34",
        "first_exposure_date": "2025-03-01",
        "sledai_2k": "12",
        "prior_immunosuppressant_failures": "2",
        "lupus_nephritis_class": "IV",
        "egfr": "95",
        "active_cns_lupus": "no",
    }
    row.update(overrides)
    return row


def outcome_row(**overrides: str | None) -> dict[str, str | None]:
    """A valid outcome row; override any contract column."""
    row: dict[str, str | None] = {
        "study_id": "S1",
        "subject_id": "P001",
        "responded": "true",
        "endpoint": "DORIS remission at month 6",
    }
    row.update(overrides)
    return row


def raw_frame(rows: Sequence[Row], columns: Sequence[str], source_file: str = SOURCE) -> pl.DataFrame:
    """Rows as `read_input` would return them: contract columns as String, then source_file, source_row."""
    data = {c: [r.get(c) for r in rows] for c in columns}
    frame = pl.DataFrame(data, schema=dict.fromkeys(columns, pl.String))
    return frame.with_columns(
        pl.lit(source_file, pl.String).alias("source_file"),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
    )


def raw_labs(rows: Sequence[Row], source_file: str = SOURCE) -> pl.DataFrame:
    """A raw labs frame (output of `read_labs`) from row dicts."""
    return raw_frame(rows, LAB_COLUMNS, source_file)


def raw_subjects(rows: Sequence[Row], source_file: str = "subjects.csv") -> pl.DataFrame:
    """A raw subjects frame (output of `read_subjects`) from row dicts."""
    return raw_frame(rows, SUBJECT_COLUMNS, source_file)


def raw_outcomes(rows: Sequence[Row], source_file: str = "outcomes.csv") -> pl.DataFrame:
    """A raw outcomes frame (output of `read_outcomes`) from row dicts."""
    return raw_frame(rows, OUTCOME_COLUMNS, source_file)


def reference() -> ReferenceTables:
    """The built-in mapping tables."""
    return load_reference()


def harmonise(
    rows: Sequence[Row], cfg: HarmoniseConfig | None = None, ref: ReferenceTables | None = None
) -> Harmonised:
    """Harmonise hand-written lab rows."""
    return harmonise_labs(raw_labs(rows), ref or reference(), cfg or HarmoniseConfig())


def validate(
    rows: Sequence[Row],
    enrolled: Sequence[tuple[str, str]] | None = None,
    as_of: dt.date = AS_OF,
    refused: pl.DataFrame | None = None,
) -> tuple[Harmonised, Split]:
    """Harmonise then validate hand-written lab rows; `enrolled` lists (study_id, subject_id) pairs.

    `refused` is a subjects quarantine (`validate_subjects(...).quarantine`).
    """
    parts = harmonise(rows)
    enrolled_frame = (
        None
        if enrolled is None
        else pl.DataFrame(
            {"study_id": [s for s, _ in enrolled], "subject_id": [p for _, p in enrolled]},
            schema={"study_id": pl.String, "subject_id": pl.String},
        )
    )
    return parts, validate_labs(parts.candidates, as_of, list(IFN_METHODS), enrolled=enrolled_frame, refused=refused)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str | None]], bom: bool = False) -> Path:
    """Write a well-formed UTF-8 CSV (None written as an empty field)."""
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in r] for r in rows])
    return path


def write_lab_csv(path: Path, rows: Sequence[Row], columns: Sequence[str] = LAB_COLUMNS) -> Path:
    """Write lab row dicts as a CSV with the given columns."""
    return write_csv(path, columns, [[r.get(c) for c in columns] for r in rows])
