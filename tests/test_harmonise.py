"""Tests for immunostrat.stages.harmonise: test codes, units, censoring, dates, methods (expected values by hand)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from immunostrat.config.run import HarmoniseConfig
from immunostrat.ingest.reference import load_reference
from immunostrat.stages.harmonise import HARMONISED_COLUMNS, harmonise_labs, harmonised_table

from .fixtures_labs import harmonise, lab_row, raw_labs, validate


def _one(**overrides: str | None) -> dict[str, object]:
    """Harmonise one lab row and return its candidate as a dict."""
    parts = harmonise([lab_row(**overrides)])
    assert parts.candidates.height == 1
    return parts.candidates.row(0, named=True)


# --------------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "result", "unit", "expected"),
    [
        ("C3", "90", "mg/dL", ("c3", 0.9, "g/L")),
        ("c4", "25", "mg/dL", ("c4", 0.25, "g/L")),
        ("c3", "900", "mg/L", ("c3", 0.9, "g/L")),
        ("c3", "0.9", "g/L", ("c3", 0.9, "g/L")),
        ("cd19_b_cells", "0.1", "10^9/L", ("cd19_b_cells", 100.0, "cells/uL")),
        ("cd19_b_cells", "0.1", "10*9/L", ("cd19_b_cells", 100.0, "cells/uL")),
        ("lymphocytes", "1.5", "10*3/uL", ("lymphocytes", 1500.0, "cells/uL")),
        ("cd4_t_cells", "500", "10^6/L", ("cd4_t_cells", 500.0, "cells/uL")),
        ("cd4_t_cells", "500", "10*6/L", ("cd4_t_cells", 500.0, "cells/uL")),
        ("cd4_t_cells", "500", "/uL", ("cd4_t_cells", 500.0, "cells/uL")),
        ("cd4_t_cells", "500", "cells/uL", ("cd4_t_cells", 500.0, "cells/uL")),
        ("cd4_t_cells", "500", "cells/µL", ("cd4_t_cells", 500.0, "cells/uL")),
        ("cd4_t_cells", "500", "{cells}/uL", ("cd4_t_cells", 500.0, "cells/uL")),
        ("anti_dsdna", "40", "IU/mL", ("anti_dsdna", 40.0, "IU/mL")),
        ("anti_dsdna", "40", "kIU/L", ("anti_dsdna", 40.0, "IU/mL")),
        ("anti_dsdna", "40", "[IU]/mL", ("anti_dsdna", 40.0, "IU/mL")),
        ("anti_dsdna", "40", "k[IU]/L", ("anti_dsdna", 40.0, "IU/mL")),
        # Unit matching ignores case and surrounding white space.
        ("c3", "90", " MG/DL ", ("c3", 0.9, "g/L")),
        ("cd19_b_cells", "0.1", "10^9/l", ("cd19_b_cells", 100.0, "cells/uL")),
        ("anti_dsdna", "40", "iu/ml", ("anti_dsdna", 40.0, "IU/mL")),
        # A percentage turns a count test into its percent analyte.
        ("cd19_b_cells", "12.5", "%", ("cd19_b_cells_pct", 12.5, "%")),
        ("cd4_t_cells", "40", " % ", ("cd4_t_cells_pct", 40.0, "%")),
        ("8117-4", "12.5", "%", ("cd19_b_cells_pct", 12.5, "%")),
        ("ifn_score", "3.2", "", ("ifn_score", 3.2, "")),
        ("ifn_score", "3.2", None, ("ifn_score", 3.2, "")),
    ],
)
def test_unit_conversion(test: str, result: str, unit: str | None, expected: tuple[str, float, str]) -> None:
    """Reported results are converted to the analyte's canonical unit: expected = (analyte, value, unit)."""
    analyte, value, canonical = expected
    row = _one(test=test, result=result, unit=unit, ref_low=None, ref_high=None)
    assert row["analyte"] == analyte
    assert row["value"] == pytest.approx(value)
    assert row["unit_canonical"] == canonical
    assert row["value_reported"] == pytest.approx(float(result))


def test_reference_range_is_converted_with_the_result() -> None:
    """C3 in mg/dL with range 90-180 gives 0.9-1.8 g/L."""
    row = _one(result="85", unit="mg/dL", ref_low="90", ref_high="180")
    assert (row["value"], row["ref_low_value"], row["ref_high_value"]) == pytest.approx((0.85, 0.9, 1.8))


@pytest.mark.parametrize("unit", ["mmol/L", "IU/mL", "g/dL", "cells"])
def test_unknown_unit_leaves_analyte_and_value_null(unit: str) -> None:
    """A unit not listed for the reported analyte converts nothing (validate flags it)."""
    row = _one(unit=unit)
    assert (row["analyte_reported"], row["analyte"], row["value"]) == ("c3", None, None)
    assert row["value_reported"] == pytest.approx(0.9)
    assert row["allowed_units"] == "g/L, mg/dL, mg/L"


@pytest.mark.parametrize("unit", ["U/mL", "AU/mL", "[arb'U]/mL", " u/ml "])
def test_kit_units_become_multiples_of_the_upper_limit(unit: str) -> None:
    """anti-dsDNA 250 U/mL with the lab's upper limit 100 is 2.5 x ULN; the range becomes 0-1."""
    row = _one(test="anti_dsdna", result="250", unit=unit, ref_low="0", ref_high="100")
    assert row["analyte"] == "anti_dsdna_xuln"
    assert row["unit_canonical"] == "xULN"
    assert row["value"] == pytest.approx(2.5)
    assert row["ref_high_value"] == pytest.approx(1.0)
    assert row["ref_low_value"] == pytest.approx(0.0)


def test_kit_unit_without_upper_limit_has_no_value() -> None:
    """Without ref_high nothing can be expressed per ULN."""
    row = _one(test="anti_dsdna", result="250", unit="U/mL", ref_low=None, ref_high=None)
    assert (row["analyte"], row["value"], row["value_reported"]) == ("anti_dsdna_xuln", None, 250.0)


# --------------------------------------------------------------------------------------------------
# Results and censoring
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "censoring", "value"),
    [
        ("<10", "<", 10.0),
        ("> 800", ">", 800.0),
        ("<=5", "<=", 5.0),
        (">=3", ">=", 3.0),
        ("  <   10  ", "<", 10.0),
        (">= 0.5", ">=", 0.5),
        ("12", None, 12.0),
        (".5", None, 0.5),
        ("5.", None, 5.0),
        ("+2", None, 2.0),
        ("-2", None, -2.0),
        ("1.5e3", None, 1500.0),
        ("1E-2", None, 0.01),
        ("007", None, 7.0),
    ],
)
def test_result_parsing(result: str, censoring: str | None, value: float) -> None:
    """Numbers, with an optional comparator and any spacing around it."""
    row = _one(result=result)
    assert row["censoring"] == censoring
    assert row["value_reported"] == pytest.approx(value)


@pytest.mark.parametrize(
    "result", ["1,5", "1 000", "10-20", "positive", "=5", "<<5", "5<", "< = 5", "~5", "5 g/L", "NaN", "inf", "", None]
)
def test_unparseable_results_are_null(result: str | None) -> None:
    """Decimal commas, ranges, text and NaN are never guessed: value and censoring stay null."""
    row = _one(result=result)
    assert (row["value_reported"], row["value"], row["censoring"]) == (None, None, None)


@pytest.mark.parametrize(("text", "value"), [("0.9", 0.9), (" 1.8 ", 1.8), ("abc", None), ("1,8", None), ("", None)])
def test_reference_limits_are_plain_numbers(text: str, value: float | None) -> None:
    """ref_low/ref_high: plain numbers only."""
    row = _one(ref_low=text, ref_high=None)
    assert row["ref_low_reported"] == (None if value is None else pytest.approx(value))


# --------------------------------------------------------------------------------------------------
# Test codes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "analyte"),
    [
        ("5130-0", "anti_dsdna"),
        ("ADSDNA", "anti_dsdna"),
        ("adsdna", "anti_dsdna"),
        ("anti-dsDNA", "anti_dsdna"),
        ("c3", "c3"),
        ("C3", "c3"),
        ("  c3  ", "c3"),
        ("4485-9", "c3"),
        ("complement_c4", "c4"),
        ("BLYCE", "cd19_b_cells"),
        ("CD19", "cd19_b_cells"),
        ("LYM", "lymphocytes"),
        ("IFNGS", "ifn_score"),
        ("PBBLY", "plasmablasts_pct"),
    ],
)
def test_test_codes_map_to_panel_analytes(test: str, analyte: str) -> None:
    """LOINC, CDISC, canonical names and aliases, case-insensitively."""
    parts = harmonise([lab_row(test=test, unit=None)])
    assert parts.outside_panel.height == 0
    assert parts.candidates["analyte_reported"].to_list() == [analyte]
    assert parts.candidates["test"].to_list() == [test]  # verbatim


def test_user_alias_file(tmp_path: Path) -> None:
    """Extra names from an alias file map like built-in codes; without the file they are outside the panel."""
    alias = tmp_path / "aliases.csv"
    alias.write_text("code,analyte\nKomplement C3,c3\nDNA-AK,anti_dsdna\n", encoding="utf-8")
    rows = [lab_row(test="komplement c3 "), lab_row(test="DNA-AK", unit="IU/mL", result="12")]
    with_alias = harmonise(rows, ref=load_reference(alias_file=alias))
    assert with_alias.candidates["analyte_reported"].to_list() == ["c3", "anti_dsdna"]
    assert with_alias.outside_panel.height == 0
    without = harmonise(rows)
    assert without.candidates.height == 0
    assert without.outside_panel["test"].to_list() == ["komplement c3 ", "DNA-AK"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("code,analyte\nALB,albumin\n", "unknown analyte"),
        ("code,analyte\nc3,c4\n", "more than one analyte"),
        ("name,analyte\nX,c3\n", "lacks column"),
    ],
)
def test_bad_alias_file_is_refused(tmp_path: Path, content: str, match: str) -> None:
    """An alias to an unknown analyte, a clash with a built-in code, or a wrong header is an error."""
    alias = tmp_path / "aliases.csv"
    alias.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_reference(alias_file=alias)


def test_outside_panel_rows_are_split_off() -> None:
    """Unknown tests leave the candidates; an empty or missing test stays (validate calls it TEST_MISSING)."""
    rows = [
        lab_row(),
        lab_row(test="ALB", unit="g/L", result="40"),
        lab_row(test=" "),
        lab_row(test=None),
        lab_row(test="CRP", unit="mg/L", result="3"),
    ]
    parts = harmonise(rows)
    assert parts.outside_panel.columns == ["source_file", "source_row", "test"]
    assert parts.outside_panel.rows() == [("labs.csv", 2, "ALB"), ("labs.csv", 5, "CRP")]
    assert parts.candidates["source_row"].to_list() == [1, 3, 4]
    assert parts.candidates["analyte_reported"].to_list() == ["c3", None, None]


# --------------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2025-03-04", dt.datetime(2025, 3, 4)),
        (" 2025-03-04 ", dt.datetime(2025, 3, 4)),
        ("2024-02-29", dt.datetime(2024, 2, 29)),
        ("2025-03-04T10:20:30", dt.datetime(2025, 3, 4, 10, 20, 30)),
        ("2025-03-04 10:20", dt.datetime(2025, 3, 4, 10, 20)),
        ("2025-03-04T10:20:30.123456", dt.datetime(2025, 3, 4, 10, 20, 30)),
        ("2025-03-04T23:30:00Z", dt.datetime(2025, 3, 4, 23, 30)),
        ("2025-03-04T23:30:00+02:00", dt.datetime(2025, 3, 4, 23, 30)),
        ("2025-03-04T01:00:00-05:00", dt.datetime(2025, 3, 4, 1, 0)),
        ("2025-03-04T23:30+0530", dt.datetime(2025, 3, 4, 23, 30)),
    ],
)
def test_dates_are_parsed_as_written(text: str, at: dt.datetime) -> None:
    """Date-only at midnight; a time kept as written; an offset is read but never applied."""
    row = _one(collected_at=text)
    assert row["collected_at_parsed"] == at
    assert row["collected_date"] == at.date()


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-30",
        "2023-02-29",
        "2025-13-01",
        "2025-00-10",
        "2026-03",
        "2026",
        "2025-03-04T25:00:00",
        "2025-03-04T24:00",
        "2025-03-04T10:60",
        "2025-03-04T10:00:60",
        "2025-03-04T",
        "04/03/2025",
        "20250304",
        "2025-3-4",
        "2025-03-04+02:00",
        "yesterday",
        "",
        None,
    ],
)
def test_impossible_or_partial_dates_are_null(text: str | None) -> None:
    """Impossible, partial or non-ISO dates give null (validate says why)."""
    row = _one(collected_at=text)
    assert (row["collected_date"], row["collected_at_parsed"]) == (None, None)


# --------------------------------------------------------------------------------------------------
# Methods and identifiers
# --------------------------------------------------------------------------------------------------


def test_ifn_default_method_fills_only_ifn_rows_without_a_method() -> None:
    """The configured default applies to ifn_score rows naming no method; given methods are upper-cased."""
    rows = [
        lab_row(test="ifn_score", unit="", method=None),
        lab_row(test="IFNGS", unit="", method=" mean_z "),
        lab_row(test="ifn_score", unit="", method="  "),
        lab_row(test="c3", method=None),
    ]
    cfg = HarmoniseConfig(ifn_default_method=" median_fc_21 ")
    assert harmonise(rows, cfg).candidates["method"].to_list() == ["MEDIAN_FC_21", "MEAN_Z", "MEDIAN_FC_21", None]
    assert harmonise(rows).candidates["method"].to_list() == [None, "MEAN_Z", None, None]


def test_identifiers_are_stripped_but_not_otherwise_changed() -> None:
    """Surrounding white space goes; case and inner text stay."""
    row = _one(study_id=" Sle-01 ", subject_id="\tp 001 ", site_id=" s1")
    assert (row["study_id"], row["subject_id"], row["site_id"]) == ("Sle-01", "p 001", "s1")


def test_candidates_keep_input_order_and_provenance() -> None:
    """Row order and (source_file, source_row) survive the mapping joins."""
    tests = ["lymphocytes", "c3", "5130-0", "ifn_score", "c4", "cd19_b_cells", "ALB", "c3"] * 25
    units = {"lymphocytes": "cells/uL", "c3": "g/L", "5130-0": "IU/mL", "ifn_score": "", "c4": "g/L"}
    rows = [lab_row(test=t, unit=units.get(t, "cells/uL"), subject_id=f"P{i}") for i, t in enumerate(tests)]
    parts = harmonise(rows)
    expected = [i + 1 for i, t in enumerate(tests) if t != "ALB"]
    assert parts.candidates["source_row"].to_list() == expected
    assert parts.candidates["subject_id"].to_list() == [f"P{r - 1}" for r in expected]


def test_harmonised_table_projection() -> None:
    """Accepted candidates project onto the documented harmonised columns, with verbatim inputs kept."""
    _, split = validate([lab_row(test="C3", result="<90", unit="mg/dL", ref_low="90", ref_high="180")])
    table = harmonised_table(split.accepted)
    assert tuple(table.columns) == HARMONISED_COLUMNS
    row = table.row(0, named=True)
    assert (row["analyte"], row["unit"], row["censoring"]) == ("c3", "g/L", "<")
    assert (row["value"], row["ref_low"], row["ref_high"]) == pytest.approx((0.9, 0.9, 1.8))
    assert (row["test_reported"], row["result_reported"], row["unit_reported"]) == ("C3", "<90", "mg/dL")
    assert row["collected_at"] == dt.datetime(2025, 1, 15)
    assert table.schema["collected_at"] == pl.Datetime("us")
    assert table.schema["collected_date"] == pl.Date


def test_empty_input_gives_empty_outputs() -> None:
    """No rows: empty candidates and outside-panel tables, no error."""
    parts = harmonise_labs(raw_labs([]), load_reference(), HarmoniseConfig())
    assert (parts.candidates.height, parts.outside_panel.height) == (0, 0)


def test_multi_chunk_input_harmonises_like_one_chunk() -> None:
    """Readers hand over many chunks (one per parquet row group); the result does not depend on them."""
    rows = [lab_row(subject_id=f"P{i}", result=f"{i}.5", collected_at=f"2025-01-{i % 28 + 1:02d}") for i in range(40)]
    rows += [lab_row(test="ALB"), lab_row(test=None, result=None), lab_row(unit=None, method="elisa")]
    one = raw_labs(rows)
    many = pl.concat([one.slice(i, 7) for i in range(0, one.height, 7)], rechunk=False)
    assert many.n_chunks() > 1
    ref, cfg = load_reference(), HarmoniseConfig(ifn_default_method="MEDIAN_FC_21")
    a, b = harmonise_labs(one, ref, cfg), harmonise_labs(many, ref, cfg)
    assert a.candidates.equals(b.candidates)
    assert a.outside_panel.equals(b.outside_panel)


def test_values_are_parsed_per_distinct_value_including_null() -> None:
    """Repeated and missing values get the same parse as a lone value would (the per-value tables)."""
    rows = [
        lab_row(result="<10", collected_at="2025-01-15T08:00", ref_high="1.8"),
        lab_row(result=None, collected_at=None, ref_high=None, site_id=None, unit=None),
        lab_row(result="<10", collected_at="2025-01-15T08:00", ref_high="1.8"),
        lab_row(result=" ", collected_at="", ref_high="", site_id=" "),
    ]
    c = harmonise(rows).candidates
    assert c["censoring"].to_list() == ["<", None, "<", None]
    assert c["value_reported"].to_list() == [10.0, None, 10.0, None]
    assert c["_present_result"].to_list() == [True, False, True, False]
    assert c["_present_collected_at"].to_list() == [True, False, True, False]
    assert c["_present_ref_high"].to_list() == [True, False, True, False]
    assert c["collected_at_parsed"].to_list() == [dt.datetime(2025, 1, 15, 8), None, dt.datetime(2025, 1, 15, 8), None]
    assert c["site_id"].to_list() == ["SITE1", None, "SITE1", None]
    assert c["analyte"].to_list() == ["c3", None, "c3", "c3"]
