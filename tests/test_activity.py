"""SLEDAI-2K per visit from reported items and labs (issue 12): lab rules, window edges, unknown versus absent,
the disagreement rule, hematology after first exposure, and the scores. Expected values are worked by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from immunostrat.config.followup import FollowUpConfig
from immunostrat.config.run import BaselineConfig
from immunostrat.followup.activity import activity, lab_descriptors
from immunostrat.followup.sledai import ITEM_PREFIX, load_descriptors, parse_descriptor
from immunostrat.schemas.followup import Activity
from immunostrat.schemas.outputs import check_contract
from tests.support import LAB_SCHEMA, NO_LABS

DESCRIPTORS = load_descriptors()
VISIT = dt.date(2024, 3, 11)


def _labs(*rows: dict[str, Any]) -> pl.DataFrame:
    """Lab rows of subject S/P1, dated on the visit day unless `days_before` says otherwise."""
    full = [
        {
            "study_id": "S",
            "subject_id": "P1",
            "value_high": None,
            "censoring": None,
            "ref_low": None,
            "ref_high": None,
            **{k: v for k, v in r.items() if k != "days_before"},
            "collected_date": VISIT - dt.timedelta(days=r.get("days_before", 0)),
        }
        for r in rows
    ]
    return pl.DataFrame(full, schema=LAB_SCHEMA)


def _one_visit(date: dt.date = VISIT) -> pl.DataFrame:
    return pl.DataFrame({"study_id": ["S"], "subject_id": ["P1"], "visit_date": [date]})


def _lab_value(descriptor: str, *rows: dict[str, Any], config: FollowUpConfig | None = None) -> bool | None:
    out = lab_descriptors(_one_visit(), _labs(*rows), DESCRIPTORS, config=config)
    value: bool | None = out[f"item_{descriptor}_lab"].item()
    return value


# --------------------------------------------------------------------------------------------------
# One descriptor per rule, at its boundaries
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("descriptor", "row", "expected"),
    [
        # thrombocytopenia: platelets < 100 x10^9/L
        ("thrombocytopenia", {"analyte": "platelets", "value": 100.0}, False),
        ("thrombocytopenia", {"analyte": "platelets", "value": 99.9}, True),
        ("thrombocytopenia", {"analyte": "platelets", "value": 20.0, "censoring": "<"}, True),
        # leukopenia: WBC < 3.0
        ("leukopenia", {"analyte": "wbc", "value": 2.99}, True),
        ("leukopenia", {"analyte": "wbc", "value": 3.0}, False),
        # hematuria: urine RBC > 5 /HPF; intervals and censoring never guessed
        ("hematuria", {"analyte": "urine_rbc", "value": 5.0}, False),
        ("hematuria", {"analyte": "urine_rbc", "value": 6.0}, True),
        ("hematuria", {"analyte": "urine_rbc", "value": 3.0, "value_high": 5.0}, False),  # "3-5"
        ("hematuria", {"analyte": "urine_rbc", "value": 4.0, "value_high": 8.0}, None),  # "4-8"
        ("hematuria", {"analyte": "urine_rbc", "value": 6.0, "value_high": 10.0}, True),  # "6-10"
        ("hematuria", {"analyte": "urine_rbc", "value": 1.0, "censoring": "<"}, False),  # "<1"
        ("hematuria", {"analyte": "urine_rbc", "value": 10.0, "censoring": "<"}, None),  # "<10"
        ("hematuria", {"analyte": "urine_rbc", "value": 5.0, "censoring": ">"}, True),  # ">5": all above 5
        ("hematuria", {"analyte": "urine_rbc", "value": 5.0, "censoring": ">="}, None),  # ">=5": 5 is possible
        ("hematuria", {"analyte": "urine_rbc", "value": 5.0, "censoring": "<="}, False),
        # pyuria: urine WBC > 5 /HPF
        ("pyuria", {"analyte": "urine_wbc", "value": 6.0}, True),
        ("pyuria", {"analyte": "urine_wbc", "value": 0.0, "value_high": 2.0}, False),
        # urinary casts: qualifying casts > 0 /LPF
        ("urinary_casts", {"analyte": "urine_casts", "value": 0.0}, False),
        ("urinary_casts", {"analyte": "urine_casts", "value": 1.0}, True),
        # proteinuria: 24-h urine protein > 0.5 g/24h, else UPCR > 0.5 g/g
        ("proteinuria", {"analyte": "urine_protein_24h", "value": 0.5}, False),
        ("proteinuria", {"analyte": "urine_protein_24h", "value": 0.51}, True),
        ("proteinuria", {"analyte": "upcr", "value": 0.6}, True),
        ("proteinuria", {"analyte": "upcr", "value": 0.5}, False),
        # low complement: C3/C4 below the row's own ref_low, else 0.9 / 0.16 g/L
        ("low_complement", {"analyte": "c3", "value": 0.85}, True),  # default LLN 0.9
        ("low_complement", {"analyte": "c3", "value": 0.85, "ref_low": 0.8}, False),  # the lab's own LLN
        ("low_complement", {"analyte": "c3", "value": 0.75, "ref_low": 0.8}, True),
        ("low_complement", {"analyte": "c3", "value": 0.9}, False),  # at the LLN is not below it
        ("low_complement", {"analyte": "c4", "value": 0.15}, True),  # default LLN 0.16
        ("low_complement", {"analyte": "c4", "value": 0.2}, False),
        ("low_complement", {"analyte": "c3", "value": 1.0, "censoring": "<"}, None),  # "<1.0": 0.95 or 0.5?
        ("low_complement", {"analyte": "c3", "value": 0.5, "censoring": "<"}, True),
        # increased DNA binding: above the lab's ref_high; at/above 30 IU/mL without one; xULN above 1
        ("increased_dna_binding", {"analyte": "anti_dsdna", "value": 30.0}, True),
        ("increased_dna_binding", {"analyte": "anti_dsdna", "value": 29.0}, False),
        ("increased_dna_binding", {"analyte": "anti_dsdna", "value": 30.0, "ref_high": 30.0}, False),
        ("increased_dna_binding", {"analyte": "anti_dsdna", "value": 31.0, "ref_high": 30.0}, True),
        ("increased_dna_binding", {"analyte": "anti_dsdna", "value": 10.0, "censoring": "<"}, False),
        ("increased_dna_binding", {"analyte": "anti_dsdna", "value": 300.0, "censoring": ">"}, True),
        ("increased_dna_binding", {"analyte": "anti_dsdna_xuln", "value": 1.0, "ref_high": 1.0}, False),
        ("increased_dna_binding", {"analyte": "anti_dsdna_xuln", "value": 1.5, "ref_high": 1.0}, True),
    ],
)
def test_each_lab_rule(descriptor: str, row: dict[str, Any], expected: bool | None) -> None:
    assert _lab_value(descriptor, row) is expected


def test_a_24_hour_protein_in_the_window_decides_over_upcr() -> None:
    """0.4 g/24h is absent although a UPCR of 0.8 g/g the same week would be present."""
    rows = ({"analyte": "urine_protein_24h", "value": 0.4}, {"analyte": "upcr", "value": 0.8, "days_before": 3})
    assert _lab_value("proteinuria", *rows) is False


def test_thresholds_are_configuration() -> None:
    config = FollowUpConfig(platelets_below=150.0, upcr_above=0.3)
    assert _lab_value("thrombocytopenia", {"analyte": "platelets", "value": 120.0}, config=config) is True
    assert _lab_value("proteinuria", {"analyte": "upcr", "value": 0.4}, config=config) is True


def test_complement_defaults_are_the_baseline_stages() -> None:
    """The default lower limits come from BaselineConfig, shared with the selection baseline."""
    visit, labs = _one_visit(), _labs({"analyte": "c3", "value": 0.85})
    out = lab_descriptors(visit, labs, DESCRIPTORS, baseline=BaselineConfig(c3_default_lln=0.8))
    assert out["item_low_complement_lab"].item() is False


# --------------------------------------------------------------------------------------------------
# The window and unknown versus absent
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_before", "lookback", "expected"),
    [(0, 10, True), (10, 10, True), (11, 10, None), (-1, 10, None), (11, 30, True), (30, 30, True), (31, 30, None)],
)
def test_window_edges(days_before: int, lookback: int, expected: bool | None) -> None:
    """A lab counts on the visit day and up to `lookback_days` before it, never after the visit."""
    row = {"analyte": "platelets", "value": 50.0, "days_before": days_before}
    assert _lab_value("thrombocytopenia", row, config=FollowUpConfig(lookback_days=lookback)) is expected


def test_lookback_is_bounded() -> None:
    with pytest.raises(ValueError, match="lookback_days"):
        FollowUpConfig(lookback_days=31)


def test_any_present_row_in_the_window_makes_the_descriptor_present() -> None:
    rows = ({"analyte": "urine_rbc", "value": 2.0}, {"analyte": "urine_rbc", "value": 12.0, "days_before": 6})
    assert _lab_value("hematuria", *rows) is True


def test_an_unknown_row_beside_absent_ones_leaves_the_descriptor_unknown() -> None:
    """2 /HPF is absent but "4-8" may be above 5: the descriptor could be present, so it is unknown."""
    rows = (
        {"analyte": "urine_rbc", "value": 2.0},
        {"analyte": "urine_rbc", "value": 4.0, "value_high": 8.0, "days_before": 2},
    )
    assert _lab_value("hematuria", *rows) is None


def test_no_lab_row_is_unknown_not_absent() -> None:
    assert _lab_value("hematuria", {"analyte": "platelets", "value": 200.0}) is None
    assert _lab_value("thrombocytopenia", {"analyte": "platelets", "value": 200.0}) is False


@pytest.mark.parametrize(
    ("needs", "rows", "expected"),
    [
        ("c3_or_c4", [{"analyte": "c3", "value": 1.1}], False),
        ("c3_and_c4", [{"analyte": "c3", "value": 1.1}], None),
        ("c3_and_c4", [{"analyte": "c3", "value": 1.1}, {"analyte": "c4", "value": 0.3}], False),
        ("c3_and_c4", [{"analyte": "c4", "value": 0.1}], True),
        ("c3_or_c4", [{"analyte": "c3", "value": 1.1}, {"analyte": "c4", "value": 0.1}], True),
    ],
)
def test_when_low_complement_is_absent(needs: str, rows: list[dict[str, Any]], expected: bool | None) -> None:
    config = FollowUpConfig(low_complement_absent_needs=needs)
    assert _lab_value("low_complement", *rows, config=config) is expected


def test_labs_of_another_subject_do_not_count() -> None:
    labs = _labs({"analyte": "platelets", "value": 50.0}).with_columns(subject_id=pl.lit("P2"))
    out = lab_descriptors(_one_visit(), labs, DESCRIPTORS)
    assert out["item_thrombocytopenia_lab"].item() is None


def test_one_row_per_visit_in_input_order() -> None:
    visits = pl.DataFrame(
        {
            "study_id": ["S", "S", "S"],
            "subject_id": ["P1", "P9", "P1"],
            "visit_date": [VISIT, VISIT, VISIT - dt.timedelta(days=30)],
        }
    )
    out = lab_descriptors(visits, _labs({"analyte": "platelets", "value": 50.0}), DESCRIPTORS)
    assert out["subject_id"].to_list() == ["P1", "P9", "P1"]
    assert out["item_thrombocytopenia_lab"].to_list() == [True, None, None]


# --------------------------------------------------------------------------------------------------
# Reported and lab values together
# --------------------------------------------------------------------------------------------------

SUBJECT = pl.DataFrame(
    {
        "study_id": ["S"],
        "subject_id": ["P1"],
        "first_exposure_date": [dt.date(2024, 3, 1)],
        "day0": [dt.date(2024, 3, 6)],
    }
)
NOT_EXPOSED = SUBJECT.with_columns(first_exposure_date=pl.lit(None, pl.Date), day0=pl.lit(None, pl.Date))


def _visits(date: dt.date = VISIT, **reported: bool | None) -> pl.DataFrame:
    """One visit of S/P1; every descriptor unknown unless given."""
    row: dict[str, Any] = {"study_id": "S", "subject_id": "P1", "visit": "M1", "visit_date": date}
    row |= {ITEM_PREFIX + d.item: reported.get(d.item) for d in DESCRIPTORS}
    return pl.DataFrame([row], schema_overrides={ITEM_PREFIX + d.item: pl.Boolean for d in DESCRIPTORS})


@pytest.mark.parametrize(
    ("rule", "value", "source"),
    [("prefer_reported", False, "reported"), ("prefer_lab", True, "lab"), ("present_if_either", True, "lab")],
)
def test_the_disagreement_rule_decides_and_disagreements_are_counted(rule: str, value: bool, source: str) -> None:
    """The site reports no hematuria (e.g. an infection); the lab shows 12 RBC/HPF."""
    config = FollowUpConfig(disagreement=rule)
    labs = _labs({"analyte": "urine_rbc", "value": 12.0})
    out, counts = activity(_visits(hematuria=False), labs, NOT_EXPOSED, DESCRIPTORS, config=config)
    row = out.row(0, named=True)
    assert (row["item_hematuria"], row["item_hematuria_source"], row["item_hematuria_lab"]) == (value, source, True)
    assert counts["disagreements_by_descriptor"]["hematuria"] == 1
    assert sum(counts["disagreements_by_descriptor"].values()) == 1


@pytest.mark.parametrize("rule", ["prefer_reported", "prefer_lab", "present_if_either"])
def test_one_known_value_is_used_alone_under_every_rule(rule: str) -> None:
    config = FollowUpConfig(disagreement=rule)
    labs = _labs({"analyte": "urine_rbc", "value": 12.0})
    out, counts = activity(_visits(pyuria=True), labs, NOT_EXPOSED, DESCRIPTORS, config=config)
    row = out.row(0, named=True)
    assert (row["item_hematuria"], row["item_hematuria_source"]) == (True, "lab")  # reported unknown
    assert (row["item_pyuria"], row["item_pyuria_source"], row["item_pyuria_lab"]) == (True, "reported", None)
    assert (row["item_proteinuria"], row["item_proteinuria_source"]) == (None, "missing")
    assert counts["disagreements_by_descriptor"]["hematuria"] == 0


def test_agreeing_values_are_credited_to_the_reported_item_by_default() -> None:
    labs = _labs({"analyte": "urine_rbc", "value": 2.0})
    out, counts = activity(_visits(hematuria=False), labs, NOT_EXPOSED, DESCRIPTORS)
    assert out.select("item_hematuria", "item_hematuria_source").row(0) == (False, "reported")
    assert counts["disagreements_by_descriptor"]["hematuria"] == 0


@pytest.mark.parametrize(
    ("visit_date", "reported", "setting", "expected"),
    [
        # Before first exposure (1 March): the lab rule applies.
        (dt.date(2024, 2, 28), None, "reported", (True, "lab")),
        # On and after first exposure: only the site's item, lab kept beside.
        (dt.date(2024, 3, 1), None, "reported", (None, "missing")),
        (VISIT, None, "reported", (None, "missing")),
        (VISIT, False, "reported", (False, "reported")),
        (VISIT, True, "reported", (True, "reported")),
        # Configured back to the lab: the disagreement rule as before exposure.
        (VISIT, None, "lab", (True, "lab")),
        (VISIT, False, "lab", (False, "reported")),
    ],
)
def test_hematology_after_first_exposure(
    visit_date: dt.date, reported: bool | None, setting: str, expected: tuple[bool | None, str]
) -> None:
    """Platelets 40 and WBC 1.2 after lymphodepletion are a drug cause SLEDAI excludes."""
    labs = _labs({"analyte": "platelets", "value": 40.0}, {"analyte": "wbc", "value": 1.2}).with_columns(
        collected_date=pl.lit(visit_date)
    )
    config = FollowUpConfig(hematology_after_exposure=setting)
    visits = _visits(visit_date, thrombocytopenia=reported, leukopenia=reported)
    row = activity(visits, labs, SUBJECT, DESCRIPTORS, config=config)[0].row(0, named=True)
    for name in ("thrombocytopenia", "leukopenia"):
        assert (row[f"item_{name}"], row[f"item_{name}_source"]) == expected
        assert row[f"item_{name}_lab"] is True


def test_exposure_falls_back_to_day0() -> None:
    subject = SUBJECT.with_columns(first_exposure_date=pl.lit(None, pl.Date))
    labs = _labs({"analyte": "platelets", "value": 40.0})
    row = activity(_visits(), labs, subject, DESCRIPTORS)[0].row(0, named=True)  # 11 March >= day 0 (6 March)
    assert (row["item_thrombocytopenia"], row["item_thrombocytopenia_source"]) == (None, "missing")


@pytest.mark.parametrize(
    ("visit_date", "day0", "expected"),
    [
        (dt.date(2024, 3, 1), dt.date(2024, 3, 6), -5),
        (dt.date(2024, 3, 6), dt.date(2024, 3, 6), 0),
        (dt.date(2024, 4, 5), dt.date(2024, 3, 6), 30),
        (dt.date(2024, 4, 5), None, None),
    ],
)
def test_days_since_infusion(visit_date: dt.date, day0: dt.date | None, expected: int | None) -> None:
    subject = SUBJECT.with_columns(day0=pl.lit(day0, pl.Date))
    out = activity(_visits(visit_date), NO_LABS, subject, DESCRIPTORS)[0]
    assert out.schema["days_since_infusion"] == pl.Int32
    assert out["days_since_infusion"].item() == expected


def test_a_visit_scored_from_items_and_labs() -> None:
    """Clinical items reported (arthritis present), lab items from labs only; worked by hand:
    arthritis 4 + hematuria (10 /HPF) 4 + low complement (C3 0.6) 2 + DNA binding (80 IU/mL) 2 = 12; clinical 8.
    Platelets 150, WBC 4.0, urine WBC 2, no casts and 0.2 g/24h are absent."""
    clinical = {d.item: d.item == "arthritis" for d in DESCRIPTORS if d.kind == "clinical"}
    labs = _labs(
        {"analyte": "urine_rbc", "value": 10.0},
        {"analyte": "c3", "value": 0.6, "days_before": 4},
        {"analyte": "c4", "value": 0.2, "days_before": 4},
        {"analyte": "anti_dsdna", "value": 80.0, "days_before": 4},
        {"analyte": "platelets", "value": 150.0},
        {"analyte": "wbc", "value": 4.0},
        {"analyte": "urine_wbc", "value": 2.0},
        {"analyte": "urine_casts", "value": 0.0},
        {"analyte": "urine_protein_24h", "value": 0.2, "days_before": 1},
    )
    out, counts = activity(_visits(**clinical), labs, NOT_EXPOSED, DESCRIPTORS)
    row = out.row(0, named=True)
    assert (row["sledai_2k"], row["sledai_2k_known"], row["sledai_2k_max"]) == (12, 12, 12)
    assert (row["sledai_items_missing"], row["clinical_sledai_2k"]) == (0, 8)
    assert counts["item_sources"] == {"lab": 8, "reported": 16, "missing": 0}
    check_contract("activity.parquet", Activity, out)


def test_unknown_items_leave_the_total_unknown_with_bounds() -> None:
    """Only rash (2) reported present, the rest unknown and no labs: known 2, max 105, 23 missing."""
    out = activity(_visits(rash=True), NO_LABS, NOT_EXPOSED, DESCRIPTORS)[0]
    row = out.row(0, named=True)
    assert (row["sledai_2k"], row["sledai_2k_known"], row["sledai_2k_max"], row["sledai_items_missing"]) == (
        None,
        2,
        105,
        23,
    )


def test_a_weight_encoded_cohort_without_labs_scores_the_sum_of_its_weights() -> None:
    """Descriptors exported as their SLEDAI weight and read with the weight encoding; no labs at all."""
    exported = [
        {"seizure": "8", "proteinuria": "4", "fever": "1"},  # 13
        {"low_complement": "2", "increased_dna_binding": "2", "leukopenia": "1", "thrombocytopenia": "1"},  # 6
        {},  # 0
        {"vasculitis": "8", "arthritis": "4", "rash": "2", "hematuria": "4", "pyuria": "4"},  # 22
    ]
    raw = pl.DataFrame({d.item: [visit.get(d.item, "0") for visit in exported] for d in DESCRIPTORS})
    items = raw.select(
        parse_descriptor(pl.col(d.item), d.weight, "weight")[0].alias(ITEM_PREFIX + d.item) for d in DESCRIPTORS
    )
    visits = items.with_columns(
        study_id=pl.lit("S"),
        subject_id=pl.lit("P1"),
        visit_date=pl.date_range(dt.date(2024, 1, 1), dt.date(2024, 1, 4), eager=True),
        source_file=pl.lit("visits.csv"),
        source_row=pl.int_range(1, 5, dtype=pl.Int64),
    )
    out = activity(visits, NO_LABS, SUBJECT, DESCRIPTORS)[0]
    assert out["sledai_2k"].to_list() == [13, 6, 0, 22]
    assert out["clinical_sledai_2k"].to_list() == [13, 2, 0, 22]
    check_contract("activity.parquet", Activity, out)


def test_carried_fields_pass_through_and_missing_ones_are_null() -> None:
    visits = _visits().with_columns(
        pga=pl.lit(0.4), prednisone_mg_day=pl.lit(5.0), antimalarial=pl.lit(True), immunosuppressants=pl.lit(1)
    )
    row = activity(visits, NO_LABS, SUBJECT, DESCRIPTORS)[0].row(0, named=True)
    assert (row["visit"], row["pga"], row["prednisone_mg_day"], row["antimalarial"]) == ("M1", 0.4, 5.0, True)
    assert (row["immunosuppressants"], row["treatment_failure"], row["gi_activity"]) == (1, None, None)


def test_an_empty_visits_table_gives_an_empty_activity_table() -> None:
    out, counts = activity(_visits().clear(), NO_LABS, SUBJECT, DESCRIPTORS)
    assert out.height == 0 and out.columns == list(Activity.to_schema().columns)[: out.width]
    assert counts["item_sources"] == {"lab": 0, "reported": 0, "missing": 0}


# --------------------------------------------------------------------------------------------------
# The comparison itself: its verdict holds for every value the result allows
# --------------------------------------------------------------------------------------------------
