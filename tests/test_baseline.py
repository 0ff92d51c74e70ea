"""Tests for immunostrat.stages.baseline: window edges, tie rules, derived flags, completeness.

Every expected value below is worked out by hand from the module docstring and BaselineConfig defaults
(window 90 days before to 0 after; anti-dsDNA cut-off 30 IU/mL; C3 LLN 0.9 g/L; C4 LLN 0.16 g/L) and
schemas/reference/ifn_methods.csv (MEDIAN_FC_21 >= 2.0; MEDIAN_FC_6 > 2.466).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from immunostrat.config.run import BaselineConfig
from immunostrat.ingest.reference import ReferenceTables, load_reference
from immunostrat.stages.baseline import CORE_ANALYTES, derive_baseline, missing_counts, names_where, select_baseline

LAB_SCHEMA: dict[str, pl.DataType] = {
    "study_id": pl.String(),
    "subject_id": pl.String(),
    "site_id": pl.String(),
    "analyte": pl.String(),
    "value": pl.Float64(),
    "unit": pl.String(),
    "censoring": pl.String(),
    "ref_low": pl.Float64(),
    "ref_high": pl.Float64(),
    "method": pl.String(),
    "collected_at": pl.Datetime("us"),
    "collected_date": pl.Date(),
    "test_reported": pl.String(),
    "result_reported": pl.String(),
    "unit_reported": pl.String(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}
SUBJECT_SCHEMA: dict[str, pl.DataType] = {
    "study_id": pl.String(),
    "subject_id": pl.String(),
    "site_id": pl.String(),
    "sex": pl.String(),
    "age_years": pl.Float64(),
    "reference_date": pl.Date(),
    "first_exposure_date": pl.Date(),
    "sledai_2k": pl.Int64(),
    "prior_immunosuppressant_failures": pl.Int64(),
    "lupus_nephritis_class": pl.String(),
    "egfr": pl.Float64(),
    "active_cns_lupus": pl.Boolean(),
    "source_file": pl.String(),
    "source_row": pl.Int64(),
}
UNITS = {"anti_dsdna": "IU/mL", "anti_dsdna_xuln": "xULN", "c3": "g/L", "c4": "g/L", "ifn_score": ""}
REF = dt.date(2024, 6, 1)


@pytest.fixture(scope="module")
def ref() -> ReferenceTables:
    """The built-in reference tables."""
    return load_reference()


def subject(subject_id: str = "P1", *, reference_date: dt.date = REF, **fields: Any) -> dict[str, Any]:
    """One typed subject row (study S1)."""
    row: dict[str, Any] = {
        "study_id": "S1",
        "subject_id": subject_id,
        "site_id": "SITE1",
        "sex": "F",
        "age_years": 35.0,
        "reference_date": reference_date,
        "first_exposure_date": None,
        "sledai_2k": 10,
        "prior_immunosuppressant_failures": 2,
        "lupus_nephritis_class": "IV",
        "egfr": 90.0,
        "active_cns_lupus": False,
        "source_file": "subjects.csv",
        "source_row": 1,
    }
    row.update(fields)
    return row


def lab(
    analyte: str,
    value: float,
    day: int = 0,
    *,
    subject_id: str = "P1",
    time: dt.time = dt.time(0, 0),
    censoring: str | None = None,
    ref_low: float | None = None,
    ref_high: float | None = None,
    method: str | None = None,
    source_file: str = "labs.csv",
    source_row: int = 1,
) -> dict[str, Any]:
    """One harmonised lab row, `day` days from REF."""
    date = REF + dt.timedelta(days=day)
    shown = f"{censoring or ''}{value:g}"
    return {
        "study_id": "S1",
        "subject_id": subject_id,
        "site_id": "SITE1",
        "analyte": analyte,
        "value": value,
        "unit": UNITS.get(analyte, "cells/uL"),
        "censoring": censoring,
        "ref_low": ref_low,
        "ref_high": ref_high,
        "method": method,
        "collected_at": dt.datetime.combine(date, time),
        "collected_date": date,
        "test_reported": analyte,
        "result_reported": shown,
        "unit_reported": UNITS.get(analyte, "cells/uL"),
        "source_file": source_file,
        "source_row": source_row,
    }


def labs_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Harmonised table from rows."""
    return pl.DataFrame(rows, schema=LAB_SCHEMA)


def subjects_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Typed subjects table from rows."""
    return pl.DataFrame(rows, schema=SUBJECT_SCHEMA)


def chosen_rows(rows: list[dict[str, Any]], cfg: BaselineConfig | None = None, **subject_fields: Any) -> pl.DataFrame:
    """select_baseline for a single subject P1."""
    return select_baseline(labs_frame(rows), subjects_frame([subject(**subject_fields)]), cfg or BaselineConfig())


def strata_for(ref: ReferenceTables, rows: list[dict[str, Any]], cfg: BaselineConfig | None = None) -> dict[str, Any]:
    """The single strata row of subject P1, as a dict."""
    out = derive_baseline(labs_frame(rows), subjects_frame([subject()]), ref, cfg or BaselineConfig())
    assert out.height == 1
    return out.row(0, named=True)


# --------------------------------------------------------------------------------------------------
# Window
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "kept"),
    [(-91, False), (-90, True), (-45, True), (0, True), (1, False)],
)
def test_default_window_edges(day: int, kept: bool) -> None:
    """Default window is [-90, 0] days, both ends inclusive."""
    chosen = chosen_rows([lab("c3", 1.0, day)])
    assert chosen.height == int(kept)
    if kept:
        assert chosen["days_from_reference"].to_list() == [day]


@pytest.mark.parametrize(("day", "kept"), [(7, True), (8, False), (-90, True)])
def test_window_days_after(day: int, kept: bool) -> None:
    """window_days_after=7 admits day +7 but not +8."""
    chosen = chosen_rows([lab("c3", 1.0, day)], BaselineConfig(window_days_after=7))
    assert chosen.height == int(kept)


def test_window_days_before_configurable() -> None:
    """window_days_before=10 keeps -10 and drops -11."""
    cfg = BaselineConfig(window_days_before=10)
    assert chosen_rows([lab("c3", 1.0, -10)], cfg).height == 1
    assert chosen_rows([lab("c3", 1.0, -11)], cfg).height == 0


@pytest.mark.parametrize(("exposure_day", "kept"), [(-5, False), (-4, True), (-6, False), (None, True)])
def test_nothing_on_or_after_first_exposure(exposure_day: int | None, kept: bool) -> None:
    """A measurement on day -5 is excluded when exposure is on day -5 or earlier, kept when exposure is later."""
    exposure = None if exposure_day is None else REF + dt.timedelta(days=exposure_day)
    chosen = chosen_rows([lab("c3", 1.0, -5)], first_exposure_date=exposure)
    assert chosen.height == int(kept)


def test_first_exposure_falls_back_to_earlier_measurement() -> None:
    """Exposure on day -2: day -2 and day 0 are excluded, day -3 (the day before) becomes baseline."""
    rows = [lab("c3", 0.5, 0, source_row=1), lab("c3", 0.6, -2, source_row=2), lab("c3", 0.7, -3, source_row=3)]
    chosen = chosen_rows(rows, first_exposure_date=REF + dt.timedelta(days=-2))
    assert chosen["value"].to_list() == [0.7]


def test_labs_of_unknown_subjects_are_ignored() -> None:
    """Only subjects in the subjects table get a baseline."""
    chosen = chosen_rows([lab("c3", 1.0, 0, subject_id="GHOST")])
    assert chosen.height == 0


# --------------------------------------------------------------------------------------------------
# Closest wins, tie rules
# --------------------------------------------------------------------------------------------------


def test_closest_to_reference_wins() -> None:
    """-3 days beats -10 and -60, whatever the input order."""
    rows = [lab("c4", 0.30, -60, source_row=1), lab("c4", 0.20, -3, source_row=2), lab("c4", 0.10, -10, source_row=3)]
    chosen = chosen_rows(rows)
    assert chosen["value"].to_list() == [0.20]
    assert chosen["days_from_reference"].to_list() == [-3]


def test_closer_after_beats_farther_before() -> None:
    """With a window after, +2 beats -5: distance comes first."""
    rows = [lab("c4", 0.30, -5, source_row=1), lab("c4", 0.20, 2, source_row=2)]
    assert chosen_rows(rows, BaselineConfig(window_days_after=7))["value"].to_list() == [0.20]


def test_tie_before_beats_after() -> None:
    """Same distance (3 days) before and after: the one before wins, regardless of time or file order."""
    rows = [
        lab("c3", 1.3, 3, time=dt.time(23, 0), source_file="a.csv", source_row=1),
        lab("c3", 0.7, -3, time=dt.time(1, 0), source_file="z.csv", source_row=9),
    ]
    assert chosen_rows(rows, BaselineConfig(window_days_after=7))["value"].to_list() == [0.7]


def test_tie_same_day_later_time_wins() -> None:
    """Same day: the later collection time wins over an earlier one, even from a lower file name."""
    rows = [
        lab("c3", 0.8, -1, time=dt.time(8, 0), source_file="a.csv", source_row=1),
        lab("c3", 0.6, -1, time=dt.time(14, 30), source_file="b.csv", source_row=2),
        lab("c3", 0.9, -1, time=dt.time(9, 0), source_file="a.csv", source_row=3),
    ]
    assert chosen_rows(rows)["value"].to_list() == [0.6]


def test_tie_same_time_lower_source_file_then_row() -> None:
    """Same timestamp: lower source_file wins; within the same file, the lower source_row."""
    ten = dt.time(10, 0)
    rows = [
        lab("c3", 0.5, -1, time=ten, source_file="b.csv", source_row=1),
        lab("c3", 0.6, -1, time=ten, source_file="a.csv", source_row=7),
        lab("c3", 0.7, -1, time=ten, source_file="a.csv", source_row=3),
    ]
    assert chosen_rows(rows)["value"].to_list() == [0.7]


def test_one_baseline_per_analyte_and_subject() -> None:
    """Each (subject, analyte) gets exactly one row; analytes and subjects are independent."""
    rows = [
        lab("c3", 0.5, -1, source_row=1),
        lab("c3", 0.6, -2, source_row=2),
        lab("c4", 0.1, -30, source_row=3),
        lab("c3", 1.1, -50, subject_id="P2", source_row=4),
    ]
    subjects = subjects_frame([subject("P1"), subject("P2", source_row=2)])
    chosen = select_baseline(labs_frame(rows), subjects, BaselineConfig()).sort("subject_id", "analyte")
    assert chosen.select("subject_id", "analyte", "value").rows() == [
        ("P1", "c3", 0.5),
        ("P1", "c4", 0.1),
        ("P2", "c3", 1.1),
    ]


def test_strata_row_carries_baseline_value_date_and_censoring(ref: ReferenceTables) -> None:
    """The wide row takes value, date, censoring and reference limits from the chosen measurement."""
    rows = [
        lab("anti_dsdna", 55.0, -4, ref_high=20.0, method="ELISA", source_row=1),
        lab("anti_dsdna", 999.0, -40, source_row=2),
        lab("c3", 0.5, -2, censoring="<", ref_low=0.8, source_row=3),
    ]
    row = strata_for(ref, rows)
    assert row["anti_dsdna"] == 55.0
    assert row["anti_dsdna_date"] == REF - dt.timedelta(days=4)
    assert row["anti_dsdna_censoring"] is None
    assert row["anti_dsdna_ref_high"] == 20.0
    assert row["anti_dsdna_method"] == "ELISA"
    assert row["c3"] == 0.5
    assert row["c3_censoring"] == "<"
    assert row["c3_ref_low"] == 0.8
    assert row["c4"] is None


# --------------------------------------------------------------------------------------------------
# Missing analytes and subjects without labs
# --------------------------------------------------------------------------------------------------


def test_subject_without_labs_gets_a_row(ref: ReferenceTables) -> None:
    """Two subjects, labs for one: both get a row; the other has every core analyte missing."""
    subjects = subjects_frame([subject("P1"), subject("P2", source_row=2)])
    out = derive_baseline(labs_frame([lab("c3", 0.5, -1)]), subjects, ref, BaselineConfig())
    assert out["subject_id"].to_list() == ["P1", "P2"]
    p2 = out.row(1, named=True)
    assert p2["c3"] is None
    assert p2["n_baseline_analytes"] == 0
    assert p2["missing_analytes"] == list(CORE_ANALYTES)
    assert p2["serologically_active"] is None
    assert p2["sledai_2k"] == 10  # subject fields are carried over
    assert "source_file" not in out.columns


def test_empty_lab_table_still_yields_every_subject(ref: ReferenceTables) -> None:
    """No labs at all: one row per subject, all analytes null, missing_counts counts every subject."""
    subjects = subjects_frame([subject("P1"), subject("P2", source_row=2)])
    out = derive_baseline(labs_frame([]), subjects, ref, BaselineConfig())
    assert out.height == 2
    assert out["anti_dsdna"].null_count() == 2
    assert missing_counts(out) == dict.fromkeys(CORE_ANALYTES, 2)


def test_missing_analytes_and_counts(ref: ReferenceTables) -> None:
    """P1 has anti-dsDNA (xULN form counts), C3 and CD4; P2 has C4 only; out-of-window labs don't count."""
    rows = [
        lab("anti_dsdna_xuln", 2.0, -1, source_row=1),
        lab("c3", 0.5, -1, source_row=2),
        lab("cd4_t_cells", 500.0, -1, source_row=3),
        lab("cd4_t_cells_pct", 40.0, -1, source_row=4),  # not a core analyte
        lab("c4", 0.2, -1, subject_id="P2", source_row=5),
        lab("c3", 0.5, -200, subject_id="P2", source_row=6),  # outside the window
    ]
    subjects = subjects_frame([subject("P1"), subject("P2", source_row=2)])
    out = derive_baseline(labs_frame(rows), subjects, ref, BaselineConfig()).sort("subject_id")
    p1, p2 = out.rows(named=True)
    assert p1["n_baseline_analytes"] == 3
    assert p1["missing_analytes"] == [
        "c4",
        "ifn_score",
        "cd19_b_cells",
        "cd3_t_cells",
        "cd8_t_cells",
        "plasmablasts",
        "lymphocytes",
    ]
    assert p1["anti_dsdna"] is None  # the IU/mL form itself stays null; nothing is imputed
    assert p2["n_baseline_analytes"] == 1
    assert p2["c3"] is None
    assert "c3" in p2["missing_analytes"]
    counts = missing_counts(out)
    assert counts == {
        "anti_dsdna": 1,
        "c3": 1,
        "c4": 1,
        "ifn_score": 2,
        "cd19_b_cells": 2,
        "cd3_t_cells": 2,
        "cd4_t_cells": 1,
        "cd8_t_cells": 2,
        "plasmablasts": 2,
        "lymphocytes": 2,
    }


def test_missing_counts_zero_when_complete(ref: ReferenceTables) -> None:
    """A subject with every core analyte: nothing missing, zero counts."""
    rows = [
        lab(a, 1.0, -1, source_row=i, method="MEDIAN_FC_21" if a == "ifn_score" else None)
        for i, a in enumerate(CORE_ANALYTES, 1)
    ]
    row = strata_for(ref, rows)
    assert row["n_baseline_analytes"] == len(CORE_ANALYTES)
    assert row["missing_analytes"] == []
    out = derive_baseline(labs_frame(rows), subjects_frame([subject()]), ref, BaselineConfig())
    assert missing_counts(out) == dict.fromkeys(CORE_ANALYTES, 0)


# --------------------------------------------------------------------------------------------------
# Derived flags
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "positive", "ratio"),
    [
        ((30.0, None, None), True, 1.0),  # default cut-off 30 is inclusive
        ((29.9, None, None), False, 29.9 / 30),
        ((60.0, None, None), True, 2.0),
        ((25.0, None, 25.0), False, 1.0),  # own ref_high is strict
        ((25.5, None, 25.0), True, 25.5 / 25),
        ((20.0, None, 15.0), True, 20.0 / 15),  # own ref_high below the default
        ((35.0, None, 50.0), False, 0.7),  # own ref_high above the default
        ((10.0, "<", None), False, 10.0 / 30),  # "<10": known below 30
        ((800.0, ">", None), True, 800.0 / 30),  # ">800": known above
        ((40.0, "<", None), None, 40.0 / 30),  # "<40": could be either side of 30
        ((30.0, "<", None), False, 1.0),  # "<30": below the inclusive cut-off
        ((30.0, "<=", None), None, 1.0),  # "<=30": could be exactly 30 (positive)
        ((25.0, "<=", 25.0), False, 1.0),  # "<=25" with strict ref_high 25: not above
        ((30.0, ">=", None), True, 1.0),  # ">=30": at or above the inclusive cut-off
        ((25.0, ">=", 25.0), None, 1.0),  # ">=25" with strict ref_high 25: could be exactly 25
        ((20.0, ">", None), None, 20.0 / 30),  # ">20": unknown vs 30
    ],
)
def test_anti_dsdna_positive_and_ratio(
    ref: ReferenceTables, reported: tuple[float, str | None, float | None], positive: bool | None, ratio: float
) -> None:
    """Positivity vs the row's own ref_high (strict) or the default 30 IU/mL (inclusive), honouring censoring."""
    value, censoring, ref_high = reported
    row = strata_for(ref, [lab("anti_dsdna", value, -1, censoring=censoring, ref_high=ref_high)])
    assert row["anti_dsdna_positive"] is positive
    assert row["anti_dsdna_ratio"] == pytest.approx(ratio)


def test_anti_dsdna_default_cutoff_is_configurable(ref: ReferenceTables) -> None:
    """With a 50 IU/mL default cut-off, 40 is negative and the ratio is 0.8."""
    row = strata_for(ref, [lab("anti_dsdna", 40.0, -1)], BaselineConfig(anti_dsdna_default_cutoff=50.0))
    assert row["anti_dsdna_positive"] is False
    assert row["anti_dsdna_ratio"] == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("value", "censoring", "positive"),
    [(1.0, None, False), (1.01, None, True), (3.0, None, True), (0.5, "<", False), (2.0, ">", True), (2.0, "<", None)],
)
def test_anti_dsdna_xuln_used_without_iu_value(
    ref: ReferenceTables, value: float, censoring: str | None, positive: bool | None
) -> None:
    """Without an IU/mL value the xULN form decides (> 1 positive) and is the ratio."""
    row = strata_for(ref, [lab("anti_dsdna_xuln", value, -1, censoring=censoring)])
    assert row["anti_dsdna"] is None
    assert row["anti_dsdna_positive"] is positive
    assert row["anti_dsdna_ratio"] == pytest.approx(value)


def test_anti_dsdna_iu_value_takes_precedence_over_xuln(ref: ReferenceTables) -> None:
    """IU/mL 10 (negative) and xULN 5 (positive): the IU/mL value decides and gives the ratio."""
    rows = [lab("anti_dsdna", 10.0, -1, source_row=1), lab("anti_dsdna_xuln", 5.0, -1, source_row=2)]
    row = strata_for(ref, rows)
    assert row["anti_dsdna_positive"] is False
    assert row["anti_dsdna_ratio"] == pytest.approx(10.0 / 30)
    assert row["anti_dsdna_xuln"] == 5.0


def test_no_anti_dsdna_at_all_is_null(ref: ReferenceTables) -> None:
    """Neither form: positivity and ratio are null."""
    row = strata_for(ref, [lab("c3", 1.0, -1)])
    assert row["anti_dsdna_positive"] is None
    assert row["anti_dsdna_ratio"] is None


@pytest.mark.parametrize(
    ("analyte", "reported", "low"),
    [
        ("c3", (0.9, None, None), False),  # at the default LLN: not strictly below
        ("c3", (0.89, None, None), True),
        ("c3", (1.2, None, None), False),
        ("c3", (0.95, None, 1.0), True),  # own ref_low above the default
        ("c3", (0.85, None, 0.8), False),  # own ref_low below the default
        ("c3", (1.0, None, 1.0), False),
        ("c3", (0.5, "<", None), True),  # "<0.5": known below 0.9
        ("c3", (0.9, "<", None), True),  # "<0.9": strictly below 0.9
        ("c3", (0.9, "<=", None), None),  # "<=0.9": could be exactly 0.9
        ("c3", (1.0, "<", None), None),  # "<1.0": either side of 0.9
        ("c3", (1.0, ">", None), False),
        ("c3", (0.9, ">=", None), False),
        ("c3", (0.5, ">", None), None),
        ("c4", (0.16, None, None), False),
        ("c4", (0.15, None, None), True),
        ("c4", (0.2, None, 0.25), True),
        ("c4", (0.1, ">", None), None),
    ],
)
def test_complement_low(
    ref: ReferenceTables, analyte: str, reported: tuple[float, str | None, float | None], low: bool | None
) -> None:
    """C3/C4 low: strictly below the row's ref_low, else the default LLN (0.9 / 0.16 g/L)."""
    value, censoring, ref_low = reported
    row = strata_for(ref, [lab(analyte, value, -1, censoring=censoring, ref_low=ref_low)])
    assert row[f"{analyte}_low"] is low


def test_complement_default_lln_configurable(ref: ReferenceTables) -> None:
    """C3 LLN 0.8: 0.85 is not low; C4 LLN 0.2: 0.18 is low."""
    cfg = BaselineConfig(c3_default_lln=0.8, c4_default_lln=0.2)
    row = strata_for(ref, [lab("c3", 0.85, -1, source_row=1), lab("c4", 0.18, -1, source_row=2)], cfg)
    assert row["c3_low"] is False
    assert row["c4_low"] is True


def test_missing_complement_is_null(ref: ReferenceTables) -> None:
    """No C3/C4 baseline: the flags are null, not False."""
    row = strata_for(ref, [lab("anti_dsdna", 10.0, -1)])
    assert row["c3_low"] is None
    assert row["c4_low"] is None


@pytest.mark.parametrize(
    ("method", "reported", "high", "ratio"),
    [
        ("MEDIAN_FC_21", (2.0, None), True, 1.0),  # inclusive
        ("MEDIAN_FC_21", (1.99, None), False, 0.995),
        ("MEDIAN_FC_21", (4.0, None), True, 2.0),
        ("MEDIAN_FC_6", (2.466, None), False, 1.0),  # exclusive: exactly the cut-off is not high
        ("MEDIAN_FC_6", (2.467, None), True, 2.467 / 2.466),
        ("MEDIAN_FC_6", (1.233, None), False, 0.5),
        ("LOG2_MEDIAN_FC_21", (1.0, None), True, 1.0),
        ("MEDIAN_FC_21", (1.0, "<"), False, 0.5),
        ("MEDIAN_FC_21", (3.0, "<"), None, 1.5),
    ],
)
def test_ifn_high_and_ratio_per_method(
    ref: ReferenceTables, method: str, reported: tuple[float, str | None], high: bool | None, ratio: float
) -> None:
    """IFN-high uses the method's own cut-off and inclusivity; the ratio is score over that cut-off."""
    score, censoring = reported
    row = strata_for(ref, [lab("ifn_score", score, -1, method=method, censoring=censoring)])
    assert row["ifn_method"] == method
    assert row["ifn_high"] is high
    assert row["ifn_ratio"] == pytest.approx(ratio)


@pytest.mark.parametrize("method", [None, "UNKNOWN_METHOD"])
def test_ifn_without_known_method_is_null(ref: ReferenceTables, method: str | None) -> None:
    """A score without a (known) method keeps its value but is never compared with a cut-off."""
    row = strata_for(ref, [lab("ifn_score", 5.0, -1, method=method)])
    assert row["ifn_score"] == 5.0
    assert row["ifn_high"] is None
    assert row["ifn_ratio"] is None


@pytest.mark.parametrize(
    ("cd4", "cd8", "ratio"),
    [
        (800.0, 400.0, 2.0),
        (300.0, 600.0, 0.5),
        (0.0, 200.0, 0.0),
        (500.0, 0.0, None),
        (500.0, None, None),
        (None, 400.0, None),
    ],
)
def test_cd4_cd8_ratio(ref: ReferenceTables, cd4: float | None, cd8: float | None, ratio: float | None) -> None:
    """CD4/CD8 ratio; null when CD8 is zero or either count is missing."""
    rows = []
    if cd4 is not None:
        rows.append(lab("cd4_t_cells", cd4, -1, source_row=1))
    if cd8 is not None:
        rows.append(lab("cd8_t_cells", cd8, -1, source_row=2))
    rows.append(lab("c3", 1.0, -1, source_row=3))
    row = strata_for(ref, rows)
    if ratio is None:
        assert row["cd4_cd8_ratio"] is None
    else:
        assert row["cd4_cd8_ratio"] == pytest.approx(ratio)


# anti-dsDNA rows giving positive True/False/null, and C3/C4 rows giving low True/False/null.
_DSDNA = {True: (100.0, None), False: (5.0, None), None: (40.0, "<")}
_C3 = {True: (0.5, None), False: (1.2, None), None: (1.0, "<")}
_C4 = {True: (0.05, None), False: (0.3, None), None: (0.2, "<")}


@pytest.mark.parametrize(
    ("dsdna", "c3", "c4", "active"),
    [
        (True, None, None, True),
        (None, True, None, True),
        (None, None, True, True),
        (True, False, False, True),
        (False, False, True, True),
        (False, False, False, False),
        (False, None, False, None),
        (None, False, False, None),
        (None, None, None, None),
        ("absent", False, False, None),  # no anti-dsDNA at all: unknown, not False
        ("absent", True, "absent", True),
    ],
)
def test_serologically_active_is_kleene_or(
    ref: ReferenceTables, dsdna: bool | str | None, c3: bool | str | None, c4: bool | str | None, active: bool | None
) -> None:
    """True if any of the three flags is True; False only if all three are False; otherwise null."""
    rows = []
    for i, (analyte, table, want) in enumerate((("anti_dsdna", _DSDNA, dsdna), ("c3", _C3, c3), ("c4", _C4, c4)), 1):
        if want == "absent":
            continue
        value, censoring = table[want]  # type: ignore[index]
        rows.append(lab(analyte, value, -1, censoring=censoring, source_row=i))
    row = strata_for(ref, rows)
    flags = {"anti_dsdna_positive": dsdna, "c3_low": c3, "c4_low": c4}
    for column, want in flags.items():
        assert row[column] is (None if want == "absent" else want)
    assert row["serologically_active"] is active


def test_flags_use_baseline_measurement_not_others(ref: ReferenceTables) -> None:
    """Flags come from the chosen measurement: a positive anti-dsDNA outside the window is ignored."""
    rows = [lab("anti_dsdna", 500.0, -120, source_row=1), lab("anti_dsdna", 12.0, -10, source_row=2)]
    row = strata_for(ref, rows)
    assert row["anti_dsdna"] == 12.0
    assert row["anti_dsdna_positive"] is False


def test_output_keeps_subject_order(ref: ReferenceTables) -> None:
    """Rows come out in the order of the subjects table, one per subject."""
    ids = [f"P{i:02d}" for i in range(30, 0, -1)]
    subjects = subjects_frame([subject(i, source_row=n) for n, i in enumerate(ids, 1)])
    rows = [lab("c3", 0.5, -1, subject_id=i, source_row=n) for n, i in enumerate(ids[::3], 1)]
    out = derive_baseline(labs_frame(rows), subjects, ref, BaselineConfig())
    assert out["subject_id"].to_list() == ids


def test_analytes_outside_the_panel_are_ignored(ref: ReferenceTables) -> None:
    """A harmonised analyte without a strata column neither adds a column nor disturbs the others."""
    rows = [lab("c3", 0.5, -1, source_row=1), lab("not_in_panel", 9.0, -1, source_row=2)]
    out = derive_baseline(labs_frame(rows), subjects_frame([subject()]), ref, BaselineConfig())
    assert not any(c.startswith("not_in_panel") for c in out.columns)
    assert out["c3"].to_list() == [0.5]


def test_repeated_subject_rows_share_one_baseline(ref: ReferenceTables) -> None:
    """A (study_id, subject_id) listed twice (validation rejects this) gets the same baseline on both rows,
    chosen over both rows' windows."""
    subjects = subjects_frame(
        [subject(), subject("P2", source_row=2), subject(reference_date=REF + dt.timedelta(days=30), source_row=3)]
    )
    rows = [lab("c3", 0.5, -60, source_row=1), lab("c3", 0.7, 29, source_row=2)]
    out = derive_baseline(labs_frame(rows), subjects, ref, BaselineConfig())
    assert out["subject_id"].to_list() == ["P1", "P2", "P1"]
    # Day +29 is one day before the second row's reference date: the closest of all candidates.
    assert out["c3"].to_list() == [0.7, None, 0.7]


def test_strata_columns_agree_with_select_baseline(ref: ReferenceTables) -> None:
    """derive_baseline's per-analyte columns hold exactly the rows select_baseline chooses (many ties)."""
    rows = [
        lab(
            analyte,
            float(n),
            -(n % 4),
            subject_id=f"P{n % 5}",
            time=dt.time(n % 3, 0),
            source_file=f"{'ab'[n % 2]}.csv",
            source_row=n % 7,
        )
        for n in range(200)
        for analyte in ("c3", "c4", "anti_dsdna_xuln")
    ]
    subjects = subjects_frame([subject(f"P{i}", source_row=i) for i in range(6)])
    out = derive_baseline(labs_frame(rows), subjects, ref, BaselineConfig())
    chosen = select_baseline(labs_frame(rows), subjects, BaselineConfig())
    for analyte in ("c3", "c4", "anti_dsdna_xuln"):
        expected = dict(chosen.filter(analyte=analyte).select("subject_id", "value").iter_rows())
        assert out[analyte].to_list() == [expected.get(s) for s in out["subject_id"]]


def test_names_where_lists_true_columns_in_column_order() -> None:
    """True columns by name, in column order; null counts as not True; no columns gives empty lists."""
    flags = pl.DataFrame({"b": [True, False, None, True], "a": [True, None, False, False]})
    assert names_where(flags).to_list() == [["b", "a"], [], [], ["b"]]
    assert names_where(flags.head(0)).to_list() == []
    assert names_where(pl.DataFrame()).dtype == pl.List(pl.String)
