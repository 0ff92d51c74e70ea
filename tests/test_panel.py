"""The extended lab panel (issue 12): follow-up analytes, their units and codes, semi-quantitative urine counts,
the per-group quarantine ceiling, and eGFR from the subjects file or the labs.

Every expected value is worked out by hand from units.csv factors and the precision rule of docs/input.md
(round to the places reported plus -floor(log10 factor)).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from immunostrat.config.run import BaselineConfig, HarmoniseConfig, ValidationConfig
from immunostrat.errors import QuarantineCeilingError
from immunostrat.followup.urinalysis import SEMI_QUANTITATIVE_ANALYTES
from immunostrat.ingest.reference import load_reference
from immunostrat.pipeline.selection import check_quarantine_ceiling, panel_group_counts
from immunostrat.schemas.outputs import OUTPUT_SCHEMA_VERSION, HarmonisedLab
from immunostrat.stages.baseline import derive_baseline
from immunostrat.stages.harmonise import harmonise_labs, harmonised_table
from immunostrat.stages.subjects import validate_subjects
from immunostrat.stages.validate import validate_labs
from tests.fixtures_labs import AS_OF, IFN_METHODS, lab_row, raw_labs, raw_subjects, subject_row

REF = load_reference()
REF_PATH = Path(__file__).resolve().parents[1] / "schemas" / "reference"


def _accepted(rows: list[dict[str, str | None]], cfg: HarmoniseConfig | None = None) -> pl.DataFrame:
    split = validate_labs(harmonise_labs(raw_labs(rows), REF, cfg or HarmoniseConfig()).candidates, AS_OF, IFN_METHODS)
    return harmonised_table(split.accepted)


def _quarantine(rows: list[dict[str, str | None]], cfg: HarmoniseConfig | None = None) -> pl.DataFrame:
    parts = harmonise_labs(raw_labs(rows), REF, cfg or HarmoniseConfig())
    return validate_labs(parts.candidates, AS_OF, IFN_METHODS).quarantine


def _one(test: str, result: str, unit: str) -> tuple[str, float, float | None, str | None]:
    table = _accepted([lab_row(test=test, result=result, unit=unit, ref_low=None, ref_high=None)])
    assert table.height == 1, (test, result, unit)
    row = table.row(0, named=True)
    return row["analyte"], row["value"], row["value_high"], row["censoring"]


# ------------------------------------------------------------------------------------------- units and codes


@pytest.mark.parametrize(
    ("test", "result", "unit", "analyte", "value"),
    [
        # Counts: every common spelling of 10^9/L is x 1; per microliter is x 0.001 (places 0 + 3).
        ("platelets", "250", "10^9/L", "platelets", 250.0), ("platelets", "250", "10*9/L", "platelets", 250.0),
        ("platelets", "250", "G/L", "platelets", 250.0), ("platelets", "250", "10^3/uL", "platelets", 250.0),
        ("platelets", "250", "10*3/uL", "platelets", 250.0), ("PLAT", "250", "K/uL", "platelets", 250.0),
        ("777-3", "250", "x10E3/uL", "platelets", 250.0), ("platelets", "250000", "/uL", "platelets", 250.0),
        ("wbc", "3.2", "K/uL", "wbc", 3.2), ("WBC", "3200", "cells/uL", "wbc", 3.2),
        ("NEUT", "1.5", "10*9/L", "neutrophils", 1.5), ("ANC", "1500", "/µL", "neutrophils", 1.5),
        # Hemoglobin: 13.5 g/dL x 10 = 135 (1 place - 1); 8.4 mmol/L x 16.11 = 135.324 -> 135 (1 - 1 = 0 places).
        ("HGB", "13.5", "g/dL", "hemoglobin", 135.0), ("hemoglobin", "135", "g/L", "hemoglobin", 135.0),
        ("718-7", "8.4", "mmol/L", "hemoglobin", 135.0),
        # Creatinine: 1.2 mg/dL x 88.42 = 106.104 -> 106 (1 place - 1 = 0); 0.85 -> 75.157 -> 75.2 (2 - 1 = 1).
        ("CREAT", "1.2", "mg/dL", "creatinine", 106.0), ("creatinine", "0.85", "mg/dL", "creatinine", 75.2),
        ("creatinine", "106", "umol/L", "creatinine", 106.0), ("2160-0", "106", "µmol/L", "creatinine", 106.0),
        # UPCR: 56.6 mg/mmol x 0.00884 = 0.500344 -> 0.5003 (1 + 3 = 4 places); 500 mg/g x 0.001 = 0.5.
        ("upcr", "56.6", "mg/mmol", "upcr", 0.5003), ("2890-2", "500", "mg/g", "upcr", 0.5),
        ("PROTCRT", "0.5", "mg/mg", "upcr", 0.5),
        ("urine_protein_24h", "650", "mg/24h", "urine_protein_24h", 0.65),
        # IgG: 1050 mg/dL x 0.01 = 10.5; 10500 mg/L x 0.001 = 10.5.
        ("IGG", "1050", "mg/dL", "igg", 10.5), ("igg", "10500", "mg/L", "igg", 10.5),
        ("igg", "10.5", "g/L", "igg", 10.5),
        ("egfr", "72", "mL/min/1.73 m2", "egfr", 72.0),
        ("car_t_cells", "35.5", "cells/µL", "car_t_cells", 35.5),
        ("car_t_copies", "15000", "copies/µg DNA", "car_t_copies", 15000.0),
    ],
)  # fmt: skip
def test_follow_up_units_convert_to_the_canonical_unit(
    test: str, result: str, unit: str, analyte: str, value: float
) -> None:
    assert _one(test, result, unit) == (analyte, value, None, None)


def test_a_wbc_count_per_high_power_field_is_urine_wbc() -> None:
    assert _one("WBC", "6-10", "/HPF") == ("urine_wbc", 6.0, 10.0, None)


@pytest.mark.parametrize("test", ["CASTS", "casts", "granular casts", "hyaline casts"])
def test_a_generic_casts_code_stays_outside_the_panel(test: str) -> None:
    parts = harmonise_labs(raw_labs([lab_row(test=test, result="2", unit="/LPF")]), REF, HarmoniseConfig())
    assert parts.candidates.height == 0
    assert parts.outside_panel["test"].to_list() == [test]


@pytest.mark.parametrize("test", ["RBC casts", "heme-granular casts", "urine_casts"])
def test_red_cell_and_heme_granular_casts_are_urine_casts(test: str) -> None:
    assert _one(test, "1", "/LPF") == ("urine_casts", 1.0, None, None)


def test_unverified_codes_are_aliases_and_verified_ones_keep_their_system() -> None:
    codes = pl.read_csv(REF_PATH / "test_codes.csv", infer_schema=False)
    follow_up = set(REF.analytes.filter(pl.col("panel_group") == "follow_up")["analyte"].to_list())
    for row in codes.filter(pl.col("analyte").is_in(list(follow_up))).iter_rows(named=True):
        assert row["code_system"] in ("canonical", "alias"), row
    # Every LOINC-looking follow-up code says it is unverified.
    loinc = codes.filter(pl.col("code").str.contains(r"^\d+-\d$") & pl.col("analyte").is_in(list(follow_up)))
    assert loinc.height == 9
    assert loinc["note"].str.starts_with("unverified LOINC/CDISC code").all()


def test_groups_and_count_units() -> None:
    groups = REF.panel_group_of()
    assert groups["c3"] == "selection" and groups["platelets"] == "follow_up"
    assert len(REF.selection_panel) == 16 and len(REF.panel) == 30
    counts = REF.units.filter(pl.col("target_analyte").is_in(SEMI_QUANTITATIVE_ANALYTES))
    # The count reading is the canonical value only because every count unit has factor 1.
    assert counts["factor"].unique().to_list() == [1.0]


# --------------------------------------------------------------------------------- semi-quantitative urine


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ("3-5", ("urine_rbc", 3.0, 5.0, None)),
        ("6–10", ("urine_rbc", 6.0, 10.0, None)),
        ("12", ("urine_rbc", 12.0, None, None)),
        ("<1", ("urine_rbc", 1.0, None, "<")),
        ("TNTC", ("urine_rbc", 50.0, None, ">")),
    ],
)
def test_urine_counts_are_read_as_intervals_or_censored_values(result: str, expected: tuple) -> None:
    assert _one("urine_rbc", result, "/HPF") == expected


def test_tntc_reads_as_above_the_configured_value() -> None:
    table = _accepted([lab_row(test="13945-1", result="tntc", unit="/HPF")], HarmoniseConfig(urine_tntc_above=100))
    assert table.select("value", "censoring").row(0) == (100.0, ">")


def test_words_are_read_only_through_the_configured_mapping() -> None:
    rows = [
        lab_row(test="urine_wbc", result="few", unit="/HPF", collected_at="2025-01-01"),
        lab_row(test="urine_wbc", result="Many", unit="/HPF", collected_at="2025-01-02"),
    ]
    mapped = _accepted(rows, HarmoniseConfig(urine_count_words={"few": (1, 5), "many": (20, None)}))
    assert mapped.select("value", "value_high", "censoring").rows() == [(1.0, 5.0, None), (20.0, None, ">=")]
    quarantine = _quarantine(rows)
    assert quarantine["reason_code"].to_list() == ["RESULT_WORD_UNMAPPED"] * 2
    assert quarantine["reason_codes"].to_list() == [["RESULT_WORD_UNMAPPED"]] * 2
    assert "harmonise.urine_count_words" in quarantine["message"][0]


def test_a_reversed_range_is_quarantined_with_its_own_reason() -> None:
    quarantine = _quarantine([lab_row(test="urine_rbc", result="10-3", unit="/HPF")])
    assert quarantine["reason_codes"].to_list() == [["RESULT_RANGE_REVERSED"]]
    assert "low <= high" in quarantine["message"][0]


def test_ranges_are_read_for_urine_counts_only() -> None:
    quarantine = _quarantine([lab_row(test="platelets", result="150-200", unit="10^9/L")])
    assert quarantine["reason_codes"].to_list() == [["RESULT_NOT_NUMERIC"]]


def test_different_ranges_of_one_measurement_conflict() -> None:
    rows = [lab_row(test="urine_rbc", result="3-5", unit="/HPF"), lab_row(test="urine_rbc", result="3-8", unit="/HPF")]
    assert _quarantine(rows)["reason_code"].to_list() == ["DUPLICATE_CONFLICT"] * 2


def test_harmonised_table_holds_follow_up_rows_under_its_contract() -> None:
    table = _accepted(
        [
            lab_row(),
            lab_row(test="urine_rbc", result="3-5", unit="/HPF"),
            lab_row(test="platelets", result="250", unit="K/uL"),
        ]
    )
    HarmonisedLab.validate(table)
    assert table["value_high"].to_list() == [None, 5.0, None]
    assert OUTPUT_SCHEMA_VERSION == "2.0.0"


def test_urine_count_words_must_be_intervals() -> None:
    with pytest.raises(ValidationError, match="low <= high"):
        HarmoniseConfig(urine_count_words={"few": (5, 1)})
    with pytest.raises(ValidationError):
        HarmoniseConfig(urine_tntc_above=0)


# ------------------------------------------------------------------------------- per-group quarantine ceiling


def _counts(rows: list[dict[str, str | None]]) -> dict[str, dict[str, int]]:
    parts = harmonise_labs(raw_labs(rows), REF, HarmoniseConfig())
    split = validate_labs(parts.candidates, AS_OF, IFN_METHODS)
    return {"panel_groups": panel_group_counts(harmonised_table(split.accepted), split.quarantine, REF)}


# Four clean selection rows and four follow-up rows that are all bad (an unknown unit).
CLEAN_SELECTION = [lab_row(collected_at=f"2025-01-0{d}") for d in range(1, 5)]
BAD_FOLLOW_UP = [lab_row(test="platelets", result="250", unit="mm", collected_at=f"2025-01-0{d}") for d in range(1, 5)]


def test_rows_are_counted_per_panel_group() -> None:
    counts = _counts([*CLEAN_SELECTION, *BAD_FOLLOW_UP, lab_row(test="", collected_at="2025-01-09")])
    # The empty test cannot be attributed: it counts against the selection group.
    assert counts["panel_groups"] == {
        "selection": {"panel_rows": 5, "accepted": 4, "quarantined": 1},
        "follow_up": {"panel_rows": 4, "accepted": 0, "quarantined": 4},
    }


def test_messy_follow_up_rows_do_not_stop_a_selection_run() -> None:
    counts = _counts([*CLEAN_SELECTION, *BAD_FOLLOW_UP])
    check_quarantine_ceiling(counts, ValidationConfig())  # 0/4 selection rows quarantined: passes


def test_a_run_reading_follow_up_analytes_checks_that_group() -> None:
    counts = _counts([*CLEAN_SELECTION, *BAD_FOLLOW_UP])
    with pytest.raises(QuarantineCeilingError, match=r"4 of 4 follow_up panel rows \(100.0%\)"):
        check_quarantine_ceiling(counts, ValidationConfig(), ("selection", "follow_up"))


def test_a_group_ceiling_is_checked_by_every_run() -> None:
    counts = _counts([*CLEAN_SELECTION, *BAD_FOLLOW_UP])
    strict = ValidationConfig(max_quarantine_fraction_by_group={"follow_up": 0.5})
    with pytest.raises(QuarantineCeilingError, match=r"max_quarantine_fraction_by_group\.follow_up"):
        check_quarantine_ceiling(counts, strict)
    lenient = ValidationConfig(max_quarantine_fraction_by_group={"follow_up": 1.0})
    check_quarantine_ceiling(counts, lenient, ("selection", "follow_up"))


def test_messy_selection_rows_still_stop_the_run() -> None:
    bad_selection = [lab_row(result="high", collected_at=f"2025-02-0{d}") for d in range(1, 3)]
    # 2 of 6 selection rows = 33% > 25%.
    counts = _counts([*CLEAN_SELECTION, *bad_selection])
    with pytest.raises(QuarantineCeilingError, match=r"2 of 6 selection panel rows"):
        check_quarantine_ceiling(counts, ValidationConfig())


# ---------------------------------------------------------------------------------------- strata and eGFR


def _strata(subject_egfr: str | None, lab_rows: list[dict[str, str | None]]) -> pl.DataFrame:
    subjects = validate_subjects(raw_subjects([subject_row(egfr=subject_egfr)])).accepted
    return derive_baseline(_accepted(lab_rows), subjects, REF, BaselineConfig())


def _egfr_row(result: str, day: str, method: str | None = "CKD-EPI 2021") -> dict[str, str | None]:
    return lab_row(test="egfr", result=result, unit="mL/min/1.73m2", collected_at=day, method=method)


def test_strata_keep_the_selection_panel_only() -> None:
    strata = _strata("95", [lab_row(), lab_row(test="platelets", result="250", unit="K/uL")])
    assert "c3" in strata.columns and "c3_date" in strata.columns
    assert not [c for c in strata.columns if c.startswith(("platelets", "urine_", "car_t", "hemoglobin"))]
    assert strata["c3"].to_list() == [0.9]


def test_the_subjects_file_egfr_wins_over_the_labs() -> None:
    strata = _strata("95", [_egfr_row("40", "2025-01-20")])
    assert strata.select("egfr", "egfr_source", "egfr_equation").row(0) == (95.0, "subjects", None)


def test_a_lab_egfr_fills_an_empty_subjects_egfr_with_its_equation() -> None:
    # Reference date 2025-02-01, window 90 days before: 2025-01-20 is closer than 2024-12-01.
    strata = _strata(None, [_egfr_row("55", "2024-12-01"), _egfr_row("61", "2025-01-20")])
    assert strata.select("egfr", "egfr_source", "egfr_equation").row(0) == (61.0, "labs", "CKD-EPI 2021")


def test_a_censored_lab_egfr_never_fills_it() -> None:
    strata = _strata(None, [_egfr_row("55", "2024-12-01", method=None), _egfr_row(">90", "2025-01-20")])
    # The closer ">90" is skipped: the exact 55 fills, with no equation given.
    assert strata.select("egfr", "egfr_source", "egfr_equation").row(0) == (55.0, "labs", None)
    only_censored = _strata(None, [_egfr_row("<60", "2025-01-20")])
    assert only_censored.select("egfr", "egfr_source", "egfr_equation").row(0) == (None, None, None)


def test_a_lab_egfr_after_first_exposure_is_not_baseline() -> None:
    # First exposure 2025-03-01 (subject_row default); the window ends at the reference date 2025-02-01.
    strata = _strata(None, [_egfr_row("61", "2025-02-10")])
    assert strata["egfr_source"].to_list() == [None]


def test_egfr_columns_sit_beside_egfr() -> None:
    columns = _strata("95", []).columns
    at = columns.index("egfr")
    assert columns[at : at + 3] == ["egfr", "egfr_source", "egfr_equation"]
