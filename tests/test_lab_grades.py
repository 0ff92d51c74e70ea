"""CTCAE v5 laboratory grades (issue 13): the criteria table, grading at every threshold on both sides, unit
conversion, missing limits, censored and interval results, baselines and treatment-emergent worst grades.
Expected values are worked by hand from the CTCAE v5.0 thresholds (follow-up-facts.md §4)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from immunostrat.config.followup import LabGradesConfig
from immunostrat.errors import SettingsError
from immunostrat.followup.lab_grades import (
    CRITERIA_COLUMNS,
    default_criteria_path,
    grade_labs,
    load_criteria,
    term_slug,
    treatment_baseline_labs,
    worst_emergent_grades,
    worst_grade_column,
    worst_grades_wide,
)
from immunostrat.schemas.lab_grades import validate_lab_grades, validate_worst_grades, validate_worst_grades_wide

D = dt.date
DAY0 = D(2024, 3, 1)
SOURCE = "NCI CTCAE v5.0, as encoded in pharmaverse admiral ncictcaev5 metadata (Apache-2.0)"
NEUTRO = "Neutrophil count decreased"
PLATELETS = "Platelet count decreased"
WBC = "White blood cell decreased"
LYMPHO = "Lymphocyte count decreased"
CD4 = "CD4 lymphocytes decreased"
ANEMIA = "Anemia"
CREAT = "Creatinine increased"


def _labs(*rows: dict[str, Any]) -> pl.DataFrame:
    """Harmonised lab rows (canonical units); `source_row` numbered in order unless given."""
    base = {
        "study_id": "S",
        "subject_id": "P1",
        "value_high": None,
        "censoring": None,
        "ref_low": None,
        "ref_high": None,
        "collected_date": D(2024, 3, 8),
        "source_file": "labs.csv",
    }
    return pl.DataFrame(
        [base | {"source_row": i + 1} | r for i, r in enumerate(rows)],
        schema_overrides={
            "value": pl.Float64,
            "value_high": pl.Float64,
            "censoring": pl.String,
            "ref_low": pl.Float64,
            "ref_high": pl.Float64,
            "collected_date": pl.Date,
            "source_row": pl.Int64,
        },
    )


def _subjects(*rows: dict[str, Any]) -> pl.DataFrame:
    rows = rows or ({"subject_id": "P1"},)
    return pl.DataFrame([{"study_id": "S", "day0": DAY0} | r for r in rows], schema_overrides={"day0": pl.Date})


def _baseline(*rows: dict[str, Any]) -> pl.DataFrame:
    base = {"study_id": "S", "subject_id": "P1", "ref_low": None, "ref_high": None}
    return pl.DataFrame(
        [base | r for r in rows],
        schema={
            "study_id": pl.String,
            "subject_id": pl.String,
            "analyte": pl.String,
            "value": pl.Float64,
            "ref_low": pl.Float64,
            "ref_high": pl.Float64,
        },
    )


NO_BASELINE = _baseline()
SHIPPED = load_criteria()


def _graded(
    labs: pl.DataFrame,
    baseline: pl.DataFrame = NO_BASELINE,
    criteria: pl.DataFrame | None = None,
    config: LabGradesConfig | None = None,
) -> pl.DataFrame:
    out = grade_labs(labs, _subjects(), baseline, SHIPPED if criteria is None else criteria, config)
    return validate_lab_grades(out)


def _one(analyte: str, term: str, baseline: pl.DataFrame = NO_BASELINE, **row: Any) -> tuple[int | None, str]:
    """(grade, reason) of one measurement for `term`."""
    out = _graded(_labs({"analyte": analyte} | row), baseline).filter(pl.col("term") == term)
    assert out.height == 1
    return out["grade"][0], out["reason"][0]


def _write(tmp_path: Path, rows: list[str], name: str = "criteria.csv") -> Path:
    path = tmp_path / name
    path.write_text(",".join(CRITERIA_COLUMNS) + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# Each threshold on both sides
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "grade"),
    [(0.49, 4), (0.5, 3), (0.99, 3), (1.0, 2), (1.49, 2), (1.5, 1), (1.99, 1), (2.0, 0)],
)
def test_neutrophil_count_decreased_at_each_threshold(value: float, grade: int) -> None:
    # < 0.5 -> 4, < 1.0 -> 3, < 1.5 -> 2, < LLN (2.0) -> 1 (10^9/L, canonical).
    assert _one("neutrophils", NEUTRO, value=value, ref_low=2.0) == (grade, "GRADED")


@pytest.mark.parametrize(("value", "grade"), [(24, 4), (25, 3), (49, 3), (50, 2), (74, 2), (75, 1), (149, 1), (150, 0)])
def test_platelet_count_decreased_at_each_threshold(value: float, grade: int) -> None:
    assert _one("platelets", PLATELETS, value=value, ref_low=150.0) == (grade, "GRADED")


@pytest.mark.parametrize(
    ("value", "grade"), [(0.9, 4), (1.0, 3), (1.9, 3), (2.0, 2), (2.9, 2), (3.0, 1), (3.9, 1), (4.0, 0)]
)
def test_white_blood_cell_decreased_at_each_threshold(value: float, grade: int) -> None:
    assert _one("wbc", WBC, value=value, ref_low=4.0) == (grade, "GRADED")


@pytest.mark.parametrize(
    ("value", "grade"), [(199, 4), (200, 3), (499, 3), (500, 2), (799, 2), (800, 1), (999, 1), (1000, 0)]
)
def test_lymphocyte_count_decreased_after_unit_conversion(value: float, grade: int) -> None:
    # Lymphocytes are canonically cells/uL; the criteria say 10^9/L: 0.2 -> 200, 0.5 -> 500, 0.8 -> 800 cells/uL.
    assert _one("lymphocytes", LYMPHO, value=value, ref_low=1000.0) == (grade, "GRADED")


@pytest.mark.parametrize(
    ("value", "grade"), [(49, 4), (50, 3), (199, 3), (200, 2), (499, 2), (500, 1), (599, 1), (600, 0)]
)
def test_cd4_lymphocytes_decreased_after_unit_conversion(value: float, grade: int) -> None:
    # 0.05 / 0.2 / 0.5 x 10^9/L = 50 / 200 / 500 cells/uL; LLN 600 cells/uL.
    assert _one("cd4_t_cells", CD4, value=value, ref_low=600.0) == (grade, "GRADED")


@pytest.mark.parametrize(("value", "grade"), [(30, 3), (79, 3), (80, 2), (99, 2), (100, 1), (119, 1), (120, 0)])
def test_anemia_at_each_threshold_in_g_per_l(value: float, grade: int) -> None:
    # < 80 g/L -> 3, < 100 -> 2, < LLN (120) -> 1; CTCAE grade 4 is clinical, never from the value.
    assert _one("hemoglobin", ANEMIA, value=value, ref_low=120.0) == (grade, "GRADED")


# A baseline far above the values, so only the ULN conditions can be met.
HIGH_BASELINE = _baseline({"analyte": "creatinine", "value": 1000.0})


@pytest.mark.parametrize(
    ("value", "grade"), [(601, 4), (600, 3), (301, 3), (300, 2), (151, 2), (150, 1), (101, 1), (100, 0)]
)
def test_creatinine_increased_by_multiples_of_uln(value: float, grade: int) -> None:
    # > 6 x ULN -> 4, > 3 x -> 3, > 1.5 x -> 2, > ULN -> 1; ULN 100 umol/L.
    assert _one("creatinine", CREAT, HIGH_BASELINE, value=value, ref_high=100.0) == (grade, "GRADED")


@pytest.mark.parametrize(("value", "grade"), [(241, 3), (240, 2), (121, 2), (120, 0)])
def test_creatinine_increased_by_multiples_of_baseline(value: float, grade: int) -> None:
    # Baseline 80: > 3 x baseline (240) -> 3, > 1.5 x (120) -> 2; the ULN (1000) is never passed, and grade 1 has no
    # baseline condition, so 120 is grade 0.
    baseline = _baseline({"analyte": "creatinine", "value": 80.0})
    assert _one("creatinine", CREAT, baseline, value=value, ref_high=1000.0) == (grade, "GRADED")


def test_a_ratio_of_exactly_one_and_a_half_is_rounded_before_the_comparison() -> None:
    # 1.2 / 0.8 is 1.4999999999999998 in binary floating point; rounded to 6 decimals it is 1.5, and > 1.5 x ULN is
    # false: grade 1 (> ULN). 1.21 / 0.8 = 1.5125 > 1.5: grade 2.
    baseline = _baseline({"analyte": "creatinine", "value": 100.0})
    assert _one("creatinine", CREAT, baseline, value=1.2, ref_high=0.8) == (1, "GRADED")
    assert _one("creatinine", CREAT, baseline, value=1.21, ref_high=0.8) == (2, "GRADED")
    # The same against the baseline: 1.2 / 0.8 baseline is 1.5 x baseline, not above it; ULN 10 is not passed.
    small = _baseline({"analyte": "creatinine", "value": 0.8})
    assert _one("creatinine", CREAT, small, value=1.2, ref_high=10.0) == (0, "GRADED")


# --------------------------------------------------------------------------------------------------
# Missing limits, baselines, censored and interval results
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ref_low", "expected"),
    [
        (0.4, None, (4, "GRADED")),  # an absolute threshold decides without the LLN
        (1.4, None, (2, "GRADED")),
        (1.9, None, (None, "NO_REFERENCE_LIMIT")),  # grade 1 or 0 depends on the LLN
        (1.9, 0.0, (None, "NO_REFERENCE_LIMIT")),  # a zero limit is no usable limit
    ],
)
def test_an_absolute_threshold_decides_without_the_labs_limit(
    value: float, ref_low: float | None, expected: tuple[int | None, str]
) -> None:
    assert _one("neutrophils", NEUTRO, value=value, ref_low=ref_low) == expected


def test_without_a_baseline_a_baseline_condition_that_could_raise_the_grade_is_unknown() -> None:
    # ULN 100: 700 > 6 x ULN is grade 4 whatever the baseline; 350 > 3 x ULN is grade 3 (grade 4 has no baseline
    # condition); 120 is > ULN but could be > 1.5 x an unknown baseline: not gradable.
    assert _one("creatinine", CREAT, value=700, ref_high=100.0) == (4, "GRADED")
    assert _one("creatinine", CREAT, value=350, ref_high=100.0) == (3, "GRADED")
    assert _one("creatinine", CREAT, value=120, ref_high=100.0) == (None, "NO_BASELINE")
    # admiral's reading (a missing baseline makes the condition false) is a setting.
    lenient = LabGradesConfig(missing_baseline="not_applicable")
    out = _graded(_labs({"analyte": "creatinine", "value": 120, "ref_high": 100.0}), config=lenient)
    assert out.select("grade", "reason").row(0) == (1, "GRADED")


def test_a_censored_baseline_is_no_baseline_for_a_multiple_of_it() -> None:
    baseline = pl.DataFrame(
        {
            "study_id": ["S"],
            "subject_id": ["P1"],
            "analyte": ["creatinine"],
            "value": [20.0],
            "censoring": ["<"],
            "ref_low": [None],
            "ref_high": [100.0],
        },
        schema_overrides={"ref_low": pl.Float64},
    )
    out = _graded(_labs({"analyte": "creatinine", "value": 120, "ref_high": 100.0}), baseline)
    assert out.select("grade", "reason", "baseline_grade").row(0) == (None, "NO_BASELINE", 0)


@pytest.mark.parametrize(
    ("censoring", "value", "expected"),
    [
        ("<", 0.1, (4, "GRADED")),  # every x < 0.1 is < 0.5
        ("<", 0.5, (4, "GRADED")),  # x < 0.5 is < 0.5
        ("<=", 0.5, (None, "CENSORED_UNDECIDED")),  # x may be 0.5 (grade 3)
        ("<", 0.6, (None, "CENSORED_UNDECIDED")),
        (">", 2.5, (0, "GRADED")),  # above the LLN 2.0: nothing met
        (">", 1.8, (None, "CENSORED_UNDECIDED")),  # grades 2-4 ruled out, grade 1 (< 2.0) open
        (">=", 1.5, (None, "CENSORED_UNDECIDED")),
        (">=", 2.0, (0, "GRADED")),
    ],
)
def test_a_censored_result_decides_only_when_its_comparator_implies_the_grade(
    censoring: str, value: float, expected: tuple[int | None, str]
) -> None:
    assert _one("neutrophils", NEUTRO, value=value, censoring=censoring, ref_low=2.0) == expected


@pytest.mark.parametrize(
    ("censoring", "value", "expected"),
    [(">", 700, (4, "GRADED")), (">", 600, (4, "GRADED")), (">=", 600, (None, "CENSORED_UNDECIDED"))],
)
def test_a_censored_result_against_a_multiple_of_the_uln(
    censoring: str, value: float, expected: tuple[int | None, str]
) -> None:
    # ULN 100: "> 600" is above 6 x ULN; ">= 600" may be exactly 6 x ULN (grade 3).
    out = _one("creatinine", CREAT, HIGH_BASELINE, value=value, censoring=censoring, ref_high=100.0)
    assert out == expected


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.3, 0.45, (4, "GRADED")),
        (0.4, 0.6, (None, "CENSORED_UNDECIDED")),  # grade 4 or 3
        (2.0, 3.0, (0, "GRADED")),
        (1.8, 2.5, (None, "CENSORED_UNDECIDED")),  # grade 1 or 0
    ],
)
def test_an_interval_decides_when_it_lies_wholly_on_one_side(
    low: float, high: float, expected: tuple[int | None, str]
) -> None:
    assert _one("neutrophils", NEUTRO, value=low, value_high=high, ref_low=2.0) == expected


def test_a_missing_value_is_not_gradable() -> None:
    assert _one("neutrophils", NEUTRO, value=None, ref_low=2.0) == (None, "NO_VALUE")


# --------------------------------------------------------------------------------------------------
# The output table
# --------------------------------------------------------------------------------------------------


def test_one_row_per_measurement_and_term_with_day_and_baseline_grade() -> None:
    labs = _labs(
        {"analyte": "neutrophils", "value": 0.8, "ref_low": 2.0, "collected_date": D(2024, 3, 11)},
        {"analyte": "c3", "value": 0.5},  # no term grades complement
        {"analyte": "platelets", "value": 200.0, "ref_low": 150.0, "collected_date": D(2024, 2, 20)},
    )
    baseline = _baseline({"analyte": "neutrophils", "value": 1.2, "ref_low": 2.0})
    out = _graded(labs, baseline)
    assert out.to_dicts() == [
        {
            "source_file": "labs.csv",
            "source_row": 1,
            "term": NEUTRO,
            "study_id": "S",
            "subject_id": "P1",
            "analyte": "neutrophils",
            "collected_date": D(2024, 3, 11),
            "days_since_infusion": 10,
            "direction": "low",
            "grade": 3,
            "reason": "GRADED",
            "baseline_grade": 2,  # 1.2 < 1.5
        },
        {
            "source_file": "labs.csv",
            "source_row": 3,
            "term": PLATELETS,
            "study_id": "S",
            "subject_id": "P1",
            "analyte": "platelets",
            "collected_date": D(2024, 2, 20),
            "days_since_infusion": -10,
            "direction": "low",
            "grade": 0,
            "reason": "GRADED",
            "baseline_grade": None,
        },
    ]


def test_a_subject_without_day0_has_no_days_since_infusion() -> None:
    labs = _labs({"analyte": "neutrophils", "value": 0.8, "subject_id": "P9"})
    out = grade_labs(labs, _subjects({"subject_id": "P9", "day0": None}), NO_BASELINE, load_criteria())
    assert out.select("days_since_infusion", "grade").row(0) == (None, 3)


def test_low_and_high_terms_of_one_analyte_are_kept_apart(tmp_path: Path) -> None:
    # A user term grading high platelets beside the shipped low one: each measurement gets both rows.
    path = _write(tmp_path, [f'Platelet count increased,platelets,high,1,>,1,uln,,"{SOURCE}"'])
    criteria = load_criteria(path)
    out = _graded(
        _labs({"analyte": "platelets", "value": 500.0, "ref_low": 150.0, "ref_high": 400.0}), criteria=criteria
    )
    assert out.select("term", "direction", "grade").rows() == [
        (PLATELETS, "low", 0),
        ("Platelet count increased", "high", 1),
    ]


# --------------------------------------------------------------------------------------------------
# The criteria table: shipped, user files, units
# --------------------------------------------------------------------------------------------------


def test_the_shipped_table_has_every_required_term_with_its_source() -> None:
    criteria = load_criteria()
    assert criteria["term"].unique(maintain_order=True).to_list() == [
        NEUTRO,
        PLATELETS,
        WBC,
        LYMPHO,
        CD4,
        ANEMIA,
        CREAT,
    ]
    assert criteria["source"].unique().to_list() == [SOURCE]
    creatinine_3 = criteria.filter((pl.col("term") == CREAT) & (pl.col("grade") == 3))
    assert sorted(creatinine_3["threshold_basis"].to_list()) == ["baseline", "uln"]
    assert default_criteria_path().name == "ctcae_v5_lab_criteria.csv"


def test_a_criterion_in_another_convertible_unit_is_converted(tmp_path: Path) -> None:
    # Anemia stated in g/dL: 8.0 g/dL = 80 g/L, 10.0 g/dL = 100 g/L.
    path = _write(
        tmp_path,
        [
            f'Anemia,hemoglobin,low,3,<,8.0,absolute,g/dL,"{SOURCE}"',
            f'Anemia,hemoglobin,low,2,<,10.0,absolute,g/dL,"{SOURCE}"',
            f'Anemia,hemoglobin,low,1,<,1,lln,,"{SOURCE}"',
        ],
    )
    criteria = load_criteria(path, mode="replace")
    labs = _labs(*({"analyte": "hemoglobin", "value": v, "ref_low": 120.0} for v in (79.0, 80.0, 99.0, 100.0)))
    assert _graded(labs, criteria=criteria)["grade"].to_list() == [3, 2, 2, 1]


def test_a_criterion_unit_the_table_cannot_convert_is_never_guessed(tmp_path: Path) -> None:
    # Grade 2 in g/L, which lymphocyte counts cannot be converted to: a value that grade 4 settles is still graded,
    # one for which grade 2 would decide is not.
    path = _write(
        tmp_path,
        [
            f'Lymphocyte count decreased,lymphocytes,low,4,<,0.2,absolute,10^9/L,"{SOURCE}"',
            f'Lymphocyte count decreased,lymphocytes,low,3,<,0.5,absolute,10^9/L,"{SOURCE}"',
            f'Lymphocyte count decreased,lymphocytes,low,2,<,0.8,absolute,g/L,"{SOURCE}"',
            f'Lymphocyte count decreased,lymphocytes,low,1,<,1,lln,,"{SOURCE}"',
        ],
    )
    criteria = load_criteria(path, mode="replace")
    labs = _labs(*({"analyte": "lymphocytes", "value": v, "ref_low": 1000.0} for v in (150.0, 400.0, 600.0, 1200.0)))
    out = _graded(labs, criteria=criteria)
    assert out.select("grade", "reason").rows() == [
        (4, "GRADED"),
        (3, "GRADED"),
        (None, "UNIT_NOT_CONVERTIBLE"),
        (None, "UNIT_NOT_CONVERTIBLE"),
    ]


def test_a_user_file_extends_the_table_and_replaces_its_own_terms(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            'anemia,hemoglobin,low,3,<,85,absolute,g/L,"protocol X"',  # the same term, matched case-insensitively
            'Hemoglobin increased,hemoglobin,high,1,>,20,absolute,g/L,"protocol X"',
        ],
    )
    criteria = load_criteria(path)
    terms = criteria["term"].unique(maintain_order=True).to_list()
    assert terms == [NEUTRO, PLATELETS, WBC, LYMPHO, CD4, CREAT, "anemia", "Hemoglobin increased"]
    assert criteria.filter(pl.col("term") == "anemia")["threshold"].to_list() == [85.0]
    replaced = load_criteria(path, mode="replace")
    assert replaced["term"].to_list() == ["anemia", "Hemoglobin increased"]


def test_a_config_names_the_file_and_mode(tmp_path: Path) -> None:
    from immunostrat.followup.lab_grades import criteria_from_config

    path = _write(tmp_path, ['Anemia,hemoglobin,low,3,<,85,absolute,g/L,"protocol X"'])
    config = LabGradesConfig(criteria_file=path, criteria_mode="replace")
    assert criteria_from_config(config)["threshold"].to_list() == [85.0]


GOOD = ["Anemia", "hemoglobin", "low", "3", "<", "80", "absolute", "g/L", "src"]


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("analyte", "hemoglobinn", "a canonical analyte"),
        ("direction", "down", "low or high"),
        ("grade", "5", "a whole number from 1 to 4"),
        ("grade", "2.5", "a whole number from 1 to 4"),
        ("comparator", "=<", "< or <= for a low term"),
        ("comparator", ">", "< or <= for a low term"),
        ("threshold_basis", "lower", "absolute or lln or uln or baseline"),
        ("threshold", "-1", "a number > 0"),
        ("threshold", "eighty", "a number > 0"),
        ("unit", "", "the threshold's unit"),
        ("source", "", "the source of the threshold"),
    ],
)
def test_a_bad_criteria_row_is_refused_naming_file_line_column_value(
    tmp_path: Path, column: str, value: str, expected: str
) -> None:
    row = dict(zip(CRITERIA_COLUMNS, GOOD, strict=True)) | {column: value}
    path = _write(tmp_path, [",".join(GOOD), ",".join(row[c] for c in CRITERIA_COLUMNS)])
    with pytest.raises(SettingsError) as caught:
        load_criteria(path)
    message = str(caught.value)
    assert f"{path}: line 3, column {column}: {value!r} is not valid; expected {expected}" in message
    assert "\n" not in message


def test_a_unit_on_a_multiple_and_inconsistent_or_repeated_rows_are_refused(tmp_path: Path) -> None:
    cases = [
        ("Anemia,hemoglobin,low,1,<,1,lln,g/L,src", "column unit: 'g/L' is not valid; expected empty"),
        ("Anemia,creatinine,low,2,<,100,absolute,umol/L,src", "column analyte: 'creatinine' is not valid"),
        ("Anemia,hemoglobin,high,2,>,100,absolute,g/L,src", "column direction: 'high' is not valid"),
        ("Anemia,hemoglobin,low,3,<,70,absolute,g/L,src", "one row per term, grade and basis"),
    ]
    for second, fragment in cases:
        path = _write(tmp_path, [",".join(GOOD), second])
        with pytest.raises(SettingsError, match=fragment):
            load_criteria(path)


def test_a_file_without_a_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("term,analyte\nAnemia,hemoglobin\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="lacks column"):
        load_criteria(path)


def test_term_slugs_name_the_wide_columns() -> None:
    assert term_slug(CD4) == "cd4_lymphocytes_decreased"
    assert worst_grade_column(WBC) == "ctcae_white_blood_cell_decreased_worst_grade"


# --------------------------------------------------------------------------------------------------
# Treatment baseline values
# --------------------------------------------------------------------------------------------------


def test_the_treatment_baseline_is_the_last_value_on_or_before_first_exposure_within_the_window() -> None:
    exposure = D(2024, 2, 25)  # lymphodepletion before the infusion on DAY0: exposure is the anchor
    subjects = _subjects({"subject_id": "P1", "first_exposure_date": exposure})
    labs = _labs(
        {"analyte": "neutrophils", "value": 3.0, "collected_date": D(2024, 1, 25)},  # 31 days before: outside
        {"analyte": "neutrophils", "value": 2.5, "collected_date": D(2024, 1, 26)},  # 30 days before
        {"analyte": "platelets", "value": 210.0, "collected_date": D(2024, 2, 20)},
        {"analyte": "platelets", "value": 220.0, "collected_date": D(2024, 2, 25)},  # exposure day
        {"analyte": "platelets", "value": 90.0, "collected_date": D(2024, 2, 26)},  # after exposure
    )
    out = treatment_baseline_labs(labs, subjects, 30)
    assert out.select("analyte", "value", "collected_date").rows() == [
        ("neutrophils", 2.5, D(2024, 1, 26)),
        ("platelets", 220.0, D(2024, 2, 25)),
    ]
    strict = treatment_baseline_labs(labs, subjects, 30, include_exposure_day=False)
    assert strict.filter(pl.col("analyte") == "platelets")["value"].to_list() == [210.0]


def test_on_one_date_the_later_collection_time_is_the_baseline() -> None:
    labs = _labs(
        {"analyte": "wbc", "value": 5.0, "collected_date": D(2024, 2, 28)},
        {"analyte": "wbc", "value": 4.0, "collected_date": D(2024, 2, 28)},
    ).with_columns(collected_at=pl.Series([dt.datetime(2024, 2, 28, 14), dt.datetime(2024, 2, 28, 8)]))
    assert treatment_baseline_labs(labs, _subjects())["value"].to_list() == [5.0]


# --------------------------------------------------------------------------------------------------
# Worst treatment-emergent grade
# --------------------------------------------------------------------------------------------------


def _grades(*rows: dict[str, Any]) -> pl.DataFrame:
    """A lab-grade table (only the columns the worst grade reads)."""
    base = {"study_id": "S", "subject_id": "P1", "term": NEUTRO, "reason": "GRADED", "baseline_grade": None}
    return pl.DataFrame(
        [base | r for r in rows],
        schema_overrides={"grade": pl.Int8, "baseline_grade": pl.Int8, "days_since_infusion": pl.Int32},
    )


def _worst(grades: pl.DataFrame, config: LabGradesConfig | None = None) -> list[tuple[Any, ...]]:
    out = validate_worst_grades(worst_emergent_grades(grades, config))
    return out.select("subject_id", "worst_grade", "worst_emergent_grade", "worst_emergent_day", "reason").rows()


def test_the_worst_grade_above_baseline_from_day_1_is_treatment_emergent() -> None:
    grades = _grades(
        {"days_since_infusion": -3, "grade": 4, "baseline_grade": 2},  # before infusion: not counted
        {"days_since_infusion": 0, "grade": 4, "baseline_grade": 2},  # day 0: not post-infusion by default
        {"days_since_infusion": 3, "grade": 2, "baseline_grade": 2},  # equal to baseline: not emergent
        {"days_since_infusion": 7, "grade": 3, "baseline_grade": 2},
        {"days_since_infusion": 9, "grade": None, "baseline_grade": 2, "reason": "CENSORED_UNDECIDED"},
        {"days_since_infusion": 12, "grade": 3, "baseline_grade": 2},
    )
    assert _worst(grades) == [("P1", 3, 3, 7, "EVALUATED")]
    counts = worst_emergent_grades(grades).select("post_infusion_measurements", "post_infusion_not_gradable")
    assert counts.row(0) == (4, 1)
    # Day 0 counts when configured.
    assert _worst(grades, LabGradesConfig(emergent_from_day=0)) == [("P1", 4, 4, 0, "EVALUATED")]


def test_a_grade_no_worse_than_baseline_gives_worst_emergent_grade_0() -> None:
    grades = _grades({"days_since_infusion": 5, "grade": 2, "baseline_grade": 3})
    assert _worst(grades) == [("P1", 2, 0, None, "EVALUATED")]


def test_with_the_baseline_grade_unknown_emergence_is_unknown_unless_configured() -> None:
    grades = _grades(
        {"days_since_infusion": 5, "grade": 0},
        {"days_since_infusion": 8, "grade": 3},
        {"days_since_infusion": 10, "grade": 3},
    )
    assert _worst(grades) == [("P1", 3, None, None, "BASELINE_GRADE_UNKNOWN")]
    assert _worst(grades, LabGradesConfig(unknown_baseline_grade="emergent")) == [("P1", 3, 3, 8, "EVALUATED")]
    # Only grade 0 after infusion: nothing can be emergent, whatever the baseline.
    assert _worst(_grades({"days_since_infusion": 5, "grade": 0})) == [("P1", 0, 0, None, "EVALUATED")]


def test_subjects_without_infusion_or_post_infusion_grades_say_why() -> None:
    grades = _grades(
        {"subject_id": "P1", "days_since_infusion": None, "grade": 3},
        {"subject_id": "P2", "days_since_infusion": -5, "grade": 3},
        {"subject_id": "P3", "days_since_infusion": 5, "grade": None, "reason": "NO_REFERENCE_LIMIT"},
    )
    assert _worst(grades) == [
        ("P1", None, None, None, "NOT_INFUSED"),
        ("P2", None, None, None, "NO_POST_INFUSION_GRADE"),
        ("P3", None, None, None, "NO_POST_INFUSION_GRADE"),
    ]


def test_the_wide_form_has_one_column_per_term() -> None:
    grades = _grades(
        {"subject_id": "P1", "days_since_infusion": 5, "grade": 3, "baseline_grade": 0},
        {"subject_id": "P1", "term": ANEMIA, "days_since_infusion": 5, "grade": 2, "baseline_grade": 2},
        {"subject_id": "P2", "days_since_infusion": 5, "grade": 1},
    )
    wide = validate_worst_grades_wide(worst_grades_wide(worst_emergent_grades(grades), [NEUTRO, ANEMIA, CREAT]))
    assert wide.columns == [
        "study_id",
        "subject_id",
        "ctcae_neutrophil_count_decreased_worst_grade",
        "ctcae_anemia_worst_grade",
        "ctcae_creatinine_increased_worst_grade",
    ]
    assert wide.rows() == [("S", "P1", 3, 0, None), ("S", "P2", None, None, None)]


def test_end_to_end_from_labs_to_the_wide_worst_grades() -> None:
    subjects = _subjects()
    labs = _labs(
        {"analyte": "neutrophils", "value": 2.5, "ref_low": 2.0, "collected_date": D(2024, 2, 27)},  # baseline
        {"analyte": "neutrophils", "value": 0.3, "ref_low": 2.0, "collected_date": D(2024, 3, 6)},  # day 5: 4
        {"analyte": "neutrophils", "value": 1.7, "ref_low": 2.0, "collected_date": D(2024, 3, 15)},  # day 14: 1
    )
    criteria = load_criteria()
    grades = grade_labs(labs, subjects, treatment_baseline_labs(labs, subjects), criteria)
    assert grades.select("days_since_infusion", "grade", "baseline_grade").rows() == [(-3, 0, 0), (5, 4, 0), (14, 1, 0)]
    worst = worst_emergent_grades(grades)
    assert worst.select("worst_emergent_grade", "worst_emergent_day").rows() == [(4, 5)]
    wide = worst_grades_wide(worst, criteria["term"].unique(maintain_order=True).to_list())
    assert wide["ctcae_neutrophil_count_decreased_worst_grade"].to_list() == [4]


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

_CELL = st.one_of(
    st.sampled_from(["", " ", "1", "0", "-1", "4", "5", "1.5", "nan", "inf", "1e400", "<", ">=", "=", "lln", "uln"]),
    st.sampled_from(["baseline", "absolute", "low", "high", "g/L", "10^9/L", "neutrophils", "hemoglobin", "x"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters='",\r\n'), max_size=8),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(_CELL, min_size=len(CRITERIA_COLUMNS), max_size=len(CRITERIA_COLUMNS)))
def test_any_criteria_row_loads_or_is_refused_in_one_line(tmp_path: Path, cells: list[str]) -> None:
    path = _write(tmp_path, [",".join(GOOD), ",".join(cells)], name="fuzz.csv")
    try:
        criteria = load_criteria(path, mode="replace")
    except SettingsError as error:
        assert "\n" not in str(error)
        assert str(path) in str(error)
    else:  # accepted: every value is one the rules allow
        assert set(criteria["direction"].to_list()) <= {"low", "high"}
        assert criteria["grade"].is_between(1, 4).all()
        assert (criteria["threshold"] > 0).all()


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(0, 5, allow_nan=False), min_size=2, max_size=2),
    lln=st.one_of(st.none(), st.floats(0.5, 3, allow_nan=False)),
)
def test_a_lower_count_never_has_a_lower_grade(values: list[float], lln: float | None) -> None:
    low, high = sorted(values)
    labs = _labs(*({"analyte": "neutrophils", "value": v, "ref_low": lln} for v in (low, high)))
    grades = grade_labs(labs, _subjects(), NO_BASELINE, SHIPPED)["grade"].to_list()
    if None not in grades:
        assert grades[0] >= grades[1]
    # Whatever the LLN, grades 2-4 are settled by the absolute thresholds alone.
    if low < 1.5:
        assert grades[0] == (4 if low < 0.5 else 3 if low < 1.0 else 2)
