"""Response endpoints at landmarks (issue 12): hand-worked cases per endpoint, reason code, window edge, tie
rule and intercurrent event; the definition; training outcomes; renal values per visit; the contract."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from immunostrat.config.endpoints import (
    ENDPOINT_NAMES,
    LN_CLASSES,
    EndpointDefinition,
    load_endpoint_definition,
)
from immunostrat.errors import SettingsError
from immunostrat.followup.endpoints import (
    NOT_ASSESSABLE_REASONS,
    REASONS,
    UnknownEndpointError,
    derive_outcomes,
    endpoints,
    renal_values,
    threshold_met,
)
from immunostrat.followup.sledai import load_descriptors

DESCRIPTORS = load_descriptors()
ITEMS = [d.item for d in DESCRIPTORS]
RENAL = ["urinary_casts", "hematuria", "proteinuria", "pyuria"]
DAY0 = dt.date(2024, 1, 1)
AS_OF = dt.date(2025, 6, 1)  # every default window has closed
DEFAULT = EndpointDefinition(version="1.0.0")

ACTIVITY_SCHEMA: dict[str, Any] = {
    "study_id": pl.String,
    "subject_id": pl.String,
    "visit": pl.String,
    "visit_date": pl.Date,
    **{f"item_{i}": pl.Boolean for i in ITEMS},
    "pga": pl.Float64,
    "prednisone_mg_day": pl.Float64,
    "antimalarial": pl.Boolean,
    "hemolytic_anemia": pl.Boolean,
    "gi_activity": pl.Boolean,
    "other_investigational_drug": pl.Boolean,
    "treatment_failure": pl.Boolean,
    "immunosuppressants": pl.Int64,
    "upcr": pl.Float64,
    "upcr_censoring": pl.String,
    "egfr": pl.Float64,
    "egfr_censoring": pl.String,
}
BASELINE_SCHEMA: dict[str, Any] = {
    "study_id": pl.String,
    "subject_id": pl.String,
    "baseline_visit_date": pl.Date,
    "sledai_2k": pl.Int64,
    "clinical_sledai_2k": pl.Int64,
    "pga": pl.Float64,
    "prednisone_mg_day": pl.Float64,
    "upcr": pl.Float64,
    "egfr": pl.Float64,
    **{f"item_{i}": pl.Boolean for i in RENAL},
}
SUBJECT_SCHEMA: dict[str, Any] = {
    "study_id": pl.String,
    "subject_id": pl.String,
    "day0": pl.Date,
    "discontinued_date": pl.Date,
    "lupus_nephritis_class": pl.String,
}


def day(n: int) -> dt.date:
    """The date of study day `n` (day 0 = infusion on DAY0)."""
    return DAY0 + dt.timedelta(days=n)


def visit(on: int, subject: str = "S1", items: dict[str, bool | None] | None = None, **values: Any) -> dict[str, Any]:
    """A visit on day `on`: every descriptor absent, PGA 0, no drugs, normal kidneys, unless given."""
    row: dict[str, Any] = {
        "study_id": "ST",
        "subject_id": subject,
        "visit": None,
        "visit_date": day(on),
        **{f"item_{i}": False for i in ITEMS},
        "pga": 0.0,
        "prednisone_mg_day": 0.0,
        "antimalarial": False,
        "hemolytic_anemia": False,
        "gi_activity": False,
        "other_investigational_drug": False,
        "treatment_failure": False,
        "immunosuppressants": 0,
        "upcr": 0.1,
        "upcr_censoring": None,
        "egfr": 100.0,
        "egfr_censoring": None,
    }
    row.update({f"item_{k}": v for k, v in (items or {}).items()})
    row.update(values)
    return row


def baseline(subject: str = "S1", items: dict[str, bool | None] | None = None, **values: Any) -> dict[str, Any]:
    """A treatment baseline: SLEDAI-2K 10, PGA 2, UPCR 1.0 g/g, eGFR 100, renal descriptors absent."""
    row: dict[str, Any] = {
        "study_id": "ST",
        "subject_id": subject,
        "baseline_visit_date": day(-7),
        "sledai_2k": 10,
        "clinical_sledai_2k": 8,
        "pga": 2.0,
        "prednisone_mg_day": 10.0,
        "upcr": 1.0,
        "egfr": 100.0,
        **{f"item_{i}": False for i in RENAL},
    }
    row.update({f"item_{k}": v for k, v in (items or {}).items()})
    row.update(values)
    return row


def subject(name: str = "S1", **values: Any) -> dict[str, Any]:
    """A subject infused on DAY0, not discontinued, lupus nephritis class IV (renal population)."""
    row: dict[str, Any] = {
        "study_id": "ST",
        "subject_id": name,
        "day0": DAY0,
        "discontinued_date": None,
        "lupus_nephritis_class": "IV",
    }
    row.update(values)
    return row


def run(
    visits: list[dict[str, Any]],
    baselines: list[dict[str, Any]] | None = None,
    subjects: list[dict[str, Any]] | None = None,
    definition: EndpointDefinition = DEFAULT,
    as_of: dt.date = AS_OF,
) -> pl.DataFrame:
    return endpoints(
        pl.DataFrame(visits, schema=ACTIVITY_SCHEMA),
        pl.DataFrame(baselines if baselines is not None else [baseline()], schema=BASELINE_SCHEMA),
        pl.DataFrame(subjects if subjects is not None else [subject()], schema=SUBJECT_SCHEMA),
        definition,
        as_of,
    )


def at(frame: pl.DataFrame, endpoint: str, landmark: str = "month_6", subject_id: str = "S1") -> dict[str, Any]:
    rows = frame.filter(
        (pl.col("endpoint") == endpoint) & (pl.col("landmark") == landmark) & (pl.col("subject_id") == subject_id)
    )
    assert rows.height == 1
    return rows.row(0, named=True)


def outcome(frame: pl.DataFrame, endpoint: str, landmark: str = "month_6") -> tuple[bool | None, str, str | None]:
    row = at(frame, endpoint, landmark)
    return row["met"], row["reason"], row["reason_detail"]


def with_settings(**sections: dict[str, Any]) -> EndpointDefinition:
    return load_endpoint_definition({"version": "test", **sections})


MET = (True, "EVALUATED", None)
NOT_MET = (False, "EVALUATED", None)


# --------------------------------------------------------------------------------------------------
# The grid and the output
# --------------------------------------------------------------------------------------------------


def test_one_row_per_subject_endpoint_and_landmark_in_order() -> None:
    frame = run([visit(180)], subjects=[subject("S1"), subject("S2")], baselines=[baseline("S1"), baseline("S2")])
    assert frame.height == 2 * 6 * 3
    assert frame.columns == [
        "study_id",
        "subject_id",
        "endpoint",
        "definition_version",
        "landmark",
        "target_day",
        "visit_date",
        "visit_day",
        "met",
        "reason",
        "reason_detail",
    ]
    first = frame.filter(pl.col("subject_id") == "S1").head(4)
    assert first["endpoint"].to_list() == ["doris_remission"] * 3 + ["drug_free_doris_remission"]
    assert first["landmark"].to_list() == ["month_3", "month_6", "month_12", "month_3"]
    assert first["target_day"].to_list() == [90, 180, 365, 90]
    assert set(frame["definition_version"]) == {"1.0.0"}
    row = at(frame, "doris_remission")
    assert (row["visit_date"], row["visit_day"]) == (day(180), 180)


def test_every_reason_has_a_meaning() -> None:
    assert set(NOT_ASSESSABLE_REASONS) < set(REASONS)
    assert all(text.strip() for text in REASONS.values())


# --------------------------------------------------------------------------------------------------
# DORIS remission
# --------------------------------------------------------------------------------------------------


def test_doris_met_at_its_edges_prednisolone_5_and_pga_below_half() -> None:
    frame = run([visit(180, pga=0.4, prednisone_mg_day=5.0)])
    assert outcome(frame, "doris_remission") == MET


def test_doris_pga_of_half_is_not_below_half() -> None:
    assert outcome(run([visit(180, pga=0.5)]), "doris_remission") == NOT_MET


def test_doris_strict_prednisolone_is_a_setting() -> None:
    strict = with_settings(doris_remission={"prednisone_mg_day": {"op": "lt", "value": 5}})
    assert outcome(run([visit(180, prednisone_mg_day=5.0)], definition=strict), "doris_remission") == NOT_MET


def test_doris_not_met_when_a_known_clinical_descriptor_is_present_even_with_others_unknown() -> None:
    frame = run([visit(180, items={"rash": True, "seizure": None, "arthritis": None})])
    assert outcome(frame, "doris_remission") == NOT_MET


def test_doris_unknown_clinical_descriptor_names_it() -> None:
    frame = run([visit(180, items={"seizure": None, "fever": None})])
    assert outcome(frame, "doris_remission") == (None, "INPUT_UNKNOWN", "item_seizure, item_fever")


def test_doris_ignores_serology_even_when_present_or_unknown() -> None:
    frame = run([visit(180, items={"low_complement": True, "increased_dna_binding": None})])
    assert outcome(frame, "doris_remission") == MET


def test_doris_unknown_pga_and_dose_are_named() -> None:
    frame = run([visit(180, pga=None, prednisone_mg_day=None)])
    assert outcome(frame, "doris_remission") == (None, "INPUT_UNKNOWN", "pga, prednisone_mg_day")


def test_doris_a_known_failure_decides_despite_unknown_inputs() -> None:
    assert outcome(run([visit(180, pga=None, prednisone_mg_day=20.0)]), "doris_remission") == NOT_MET


# --------------------------------------------------------------------------------------------------
# Drug-free DORIS remission
# --------------------------------------------------------------------------------------------------


def test_drug_free_doris_needs_no_glucocorticoid() -> None:
    frame = run([visit(180, prednisone_mg_day=2.5)])
    assert outcome(frame, "doris_remission") == MET
    assert outcome(frame, "drug_free_doris_remission") == NOT_MET


def test_drug_free_doris_needs_no_immunosuppressant() -> None:
    assert outcome(run([visit(180, immunosuppressants=1)]), "drug_free_doris_remission") == NOT_MET


def test_drug_free_doris_allows_antimalarials_by_default() -> None:
    assert outcome(run([visit(180, antimalarial=True)]), "drug_free_doris_remission") == MET


def test_drug_free_doris_without_antimalarials_is_a_setting() -> None:
    strict = with_settings(drug_free_doris_remission={"antimalarials_allowed": False})
    frame = run([visit(180, antimalarial=True)], definition=strict)
    assert outcome(frame, "drug_free_doris_remission") == NOT_MET
    frame = run([visit(180, antimalarial=None)], definition=strict)
    assert outcome(frame, "drug_free_doris_remission") == (None, "INPUT_UNKNOWN", "antimalarial")


def test_drug_free_doris_unknown_immunosuppressants_are_named() -> None:
    frame = run([visit(180, immunosuppressants=None)])
    assert outcome(frame, "drug_free_doris_remission") == (None, "INPUT_UNKNOWN", "immunosuppressants")


# --------------------------------------------------------------------------------------------------
# LLDAS
# --------------------------------------------------------------------------------------------------


def test_lldas_met_at_its_edges_sledai_4_pga_1_prednisolone_7_5() -> None:
    # Arthritis (4, not a major organ) at both visits: SLEDAI-2K 4, nothing new.
    frame = run(
        [visit(150, items={"arthritis": True}), visit(180, items={"arthritis": True}, pga=1.0, prednisone_mg_day=7.5)]
    )
    assert outcome(frame, "lldas") == MET


def test_lldas_serology_counts_towards_the_4() -> None:
    # Low complement 2 + DNA binding 2 + rash 2 = 6 > 4, all present before too.
    both = {"low_complement": True, "increased_dna_binding": True, "rash": True}
    assert outcome(run([visit(150, items=both), visit(180, items=both)]), "lldas") == NOT_MET
    two = {"low_complement": True, "increased_dna_binding": True}
    assert outcome(run([visit(150, items=two), visit(180, items=two)]), "lldas") == MET


def test_lldas_new_activity_since_the_previous_visit_fails() -> None:
    frame = run([visit(150), visit(180, items={"arthritis": True})])
    assert outcome(frame, "lldas") == NOT_MET


def test_lldas_new_activity_can_ignore_descriptors() -> None:
    lenient = with_settings(lldas={"new_activity_ignores": ["arthritis"]})
    assert outcome(run([visit(150), visit(180, items={"arthritis": True})], definition=lenient), "lldas") == MET


def test_lldas_without_a_previous_visit_is_unknown_only_if_something_is_present_now() -> None:
    assert outcome(run([visit(180)]), "lldas") == MET
    frame = run([visit(180, items={"arthritis": True})])
    assert outcome(frame, "lldas") == (None, "INPUT_UNKNOWN", "previous visit")


def test_lldas_an_unknown_descriptor_at_the_previous_visit_is_named() -> None:
    frame = run([visit(150, items={"arthritis": None}), visit(180, items={"arthritis": True})])
    assert outcome(frame, "lldas") == (None, "INPUT_UNKNOWN", "previous item_arthritis")


def test_lldas_major_organ_activity_fails_below_4() -> None:
    # Fever (1) is a major-organ descriptor for LLDAS; present at both visits.
    assert outcome(run([visit(150, items={"fever": True}), visit(180, items={"fever": True})]), "lldas") == NOT_MET


@pytest.mark.parametrize("flag", ["hemolytic_anemia", "gi_activity", "other_investigational_drug"])
def test_lldas_fails_on_hemolytic_anemia_gi_activity_or_an_investigational_drug(flag: str) -> None:
    assert outcome(run([visit(180, **{flag: True})]), "lldas") == NOT_MET
    assert outcome(run([visit(180, **{flag: None})]), "lldas") == (None, "INPUT_UNKNOWN", flag)


def test_lldas_pga_and_dose_limits() -> None:
    assert outcome(run([visit(180, pga=1.1)]), "lldas") == NOT_MET
    assert outcome(run([visit(180, prednisone_mg_day=7.6)]), "lldas") == NOT_MET


# --------------------------------------------------------------------------------------------------
# msri4
# --------------------------------------------------------------------------------------------------


def test_msri4_met_with_a_fall_of_exactly_4() -> None:
    # Baseline 10; now arthritis 4 + rash 2 = 6: down 4. PGA 2.0 -> 2.0.
    assert outcome(run([visit(180, items={"arthritis": True, "rash": True}, pga=2.0)]), "msri4") == MET


def test_msri4_not_met_with_a_fall_of_3() -> None:
    # Baseline 10; now arthritis 4 + rash 2 + fever 1 = 7: down 3.
    frame = run([visit(180, items={"arthritis": True, "rash": True, "fever": True}, pga=2.0)])
    assert outcome(frame, "msri4") == NOT_MET


def test_msri4_pga_worse_by_0_3_fails_even_in_floating_point() -> None:
    # 1.2 - 0.9 is 0.29999999999999993 in binary floating point: still a worsening of 0.3.
    frame = run([visit(180, pga=1.2)], baselines=[baseline(pga=0.9)])
    assert outcome(frame, "msri4") == NOT_MET
    frame = run([visit(180, pga=1.1)], baselines=[baseline(pga=0.9)])
    assert outcome(frame, "msri4") == MET


def test_msri4_baseline_minimum_6() -> None:
    assert outcome(run([visit(180)], baselines=[baseline(sledai_2k=6)]), "msri4") == MET
    assert outcome(run([visit(180)], baselines=[baseline(sledai_2k=5)]), "msri4") == (None, "NOT_APPLICABLE", None)


def test_msri4_unknown_baseline_is_named() -> None:
    frame = run([visit(180)], baselines=[baseline(sledai_2k=None)])
    assert outcome(frame, "msri4") == (None, "INPUT_UNKNOWN", "baseline sledai_2k")
    frame = run([visit(180)], baselines=[])  # no treatment-baseline row at all
    assert outcome(frame, "msri4") == (None, "INPUT_UNKNOWN", "baseline sledai_2k")


def test_msri4_unknown_descriptors_decide_through_bounds() -> None:
    # Baseline 10, limit 6. Known 0 with seizure (8) unknown: between 0 and 8: unknown.
    frame = run([visit(180, items={"seizure": None})])
    assert outcome(frame, "msri4") == (None, "INPUT_UNKNOWN", "item_seizure")
    # Known arthritis 4 + rash 2 + alopecia 2 = 8 > 6 whatever the unknown fever: not met.
    frame = run([visit(180, items={"arthritis": True, "rash": True, "alopecia": True, "fever": None})])
    assert outcome(frame, "msri4") == NOT_MET
    # Known 4; unknown fever (1) at most 5 <= 6: met.
    assert outcome(run([visit(180, items={"arthritis": True, "fever": None}, pga=2.0)]), "msri4") == MET


# --------------------------------------------------------------------------------------------------
# Renal responses
# --------------------------------------------------------------------------------------------------


def test_crr_upcr_must_be_below_half() -> None:
    assert outcome(run([visit(180, upcr=0.49)]), "complete_renal_response") == MET
    assert outcome(run([visit(180, upcr=0.5)]), "complete_renal_response") == NOT_MET


def test_perr_upcr_0_7_passes() -> None:
    assert outcome(run([visit(180, upcr=0.7)]), "perr") == MET
    assert outcome(run([visit(180, upcr=0.71)]), "perr") == NOT_MET


def test_crr_egfr_90_or_within_10_percent_of_baseline() -> None:
    # Baseline 88: 10 % below is 79.2.
    base = [baseline(egfr=88.0)]
    assert outcome(run([visit(180, egfr=80.0)], baselines=base), "complete_renal_response") == MET
    assert outcome(run([visit(180, egfr=79.0)], baselines=base), "complete_renal_response") == NOT_MET
    # Baseline 120: 10 % below is 108, but 95 >= 90 passes anyway.
    assert outcome(run([visit(180, egfr=95.0)], baselines=[baseline(egfr=120.0)]), "complete_renal_response") == MET


def test_perr_egfr_60_or_within_20_percent_of_baseline_at_its_edge() -> None:
    # Baseline 70: 20 % below is 56 (70 * 0.8 = 56.00000000000001 in floating point).
    base = [baseline(egfr=70.0)]
    assert outcome(run([visit(180, egfr=56.0)], baselines=base), "perr") == MET
    assert outcome(run([visit(180, egfr=55.0)], baselines=base), "perr") == NOT_MET
    assert outcome(run([visit(180, egfr=61.0)], baselines=[baseline(egfr=None)]), "perr") == MET


def test_renal_egfr_below_the_floor_without_a_baseline_is_unknown() -> None:
    frame = run([visit(180, egfr=80.0)], baselines=[baseline(egfr=None)])
    assert outcome(frame, "complete_renal_response") == (None, "INPUT_UNKNOWN", "baseline egfr")


def test_renal_censored_values_decide_only_when_their_comparator_does() -> None:
    assert outcome(run([visit(180, upcr=0.1, upcr_censoring="<")]), "complete_renal_response") == MET
    frame = run([visit(180, egfr=60.0, egfr_censoring=">")], baselines=[baseline(egfr=100.0)])
    assert outcome(frame, "perr") == MET  # > 60 passes >= 60
    assert outcome(frame, "complete_renal_response") == (None, "INPUT_UNKNOWN", "egfr")  # >= 90 or >= 90: unknown


def test_crr_steroids_from_week_24_to_the_landmark() -> None:
    # 12 mg/day on day 170 (after day 168) fails month 6; on day 160 (before) it does not.
    assert outcome(run([visit(170, prednisone_mg_day=12.0), visit(180)]), "complete_renal_response") == NOT_MET
    assert outcome(run([visit(160, prednisone_mg_day=12.0), visit(180)]), "complete_renal_response") == MET
    # A visit after the landmark visit does not count.
    assert outcome(run([visit(180), visit(200, prednisone_mg_day=12.0)]), "complete_renal_response") == MET


def test_crr_steroids_at_an_early_landmark_visit_itself() -> None:
    frame = run([visit(90, prednisone_mg_day=12.0)])
    assert outcome(frame, "complete_renal_response", "month_3") == NOT_MET
    frame = run([visit(90, prednisone_mg_day=10.0)])
    assert outcome(frame, "complete_renal_response", "month_3") == MET


def test_crr_unknown_steroid_dose_after_week_24_is_named() -> None:
    frame = run([visit(170, prednisone_mg_day=None), visit(180)])
    assert outcome(frame, "complete_renal_response") == (None, "INPUT_UNKNOWN", "prednisone_mg_day from day 168")


def test_renal_population_by_class_descriptor_or_upcr() -> None:
    outside = [subject(lupus_nephritis_class="NONE")]
    low = [baseline(upcr=0.3)]
    assert outcome(run([visit(180)], low, outside), "complete_renal_response") == (None, "NOT_APPLICABLE", None)
    assert outcome(run([visit(180)], [baseline(upcr=0.5)], outside), "perr") == MET  # UPCR >= 0.5
    with_hematuria = [baseline(upcr=0.3, items={"hematuria": True})]
    assert outcome(run([visit(180)], with_hematuria, outside), "perr") == MET
    assert outcome(run([visit(180)], low, [subject(lupus_nephritis_class="III+V")]), "perr") == MET
    assert outcome(run([visit(180)], low, [subject(lupus_nephritis_class="II")]), "perr") == (
        None,
        "NOT_APPLICABLE",
        None,
    )


def test_renal_population_unknown_names_what_is_missing() -> None:
    frame = run([visit(180)], [baseline(upcr=0.3)], [subject(lupus_nephritis_class=None)])
    assert outcome(frame, "complete_renal_response") == (None, "INPUT_UNKNOWN", "lupus_nephritis_class")


# --------------------------------------------------------------------------------------------------
# Windows, the tie rule, PENDING, NOT_INFUSED
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("on", "inside"), [(151, False), (152, True), (208, True), (209, False)])
def test_month_6_window_is_day_152_to_208_inclusive(on: int, inside: bool) -> None:
    row = at(run([visit(on)]), "doris_remission")
    assert row["reason"] == ("EVALUATED" if inside else "NO_VISIT_IN_WINDOW")
    assert row["visit_day"] == (on if inside else None)
    assert row["met"] is (True if inside else None)


def test_closest_visit_wins() -> None:
    assert at(run([visit(160), visit(185)]), "doris_remission")["visit_day"] == 185


def test_a_tie_goes_to_the_earlier_visit() -> None:
    frame = run([visit(190, pga=2.0), visit(170)])
    row = at(frame, "doris_remission")
    assert (row["visit_day"], row["met"]) == (170, True)


def test_the_closest_visit_is_chosen_regardless_of_completeness() -> None:
    frame = run([visit(180, pga=None), visit(182)])
    row = at(frame, "doris_remission")
    assert (row["visit_day"], row["reason"], row["reason_detail"]) == (180, "INPUT_UNKNOWN", "pga")


def test_pending_while_the_window_is_open_without_a_visit() -> None:
    frame = run([visit(100)], as_of=day(200))
    assert outcome(frame, "doris_remission") == (None, "PENDING", f"final on {day(208)}")
    assert outcome(run([visit(100)], as_of=day(208)), "doris_remission")[1] == "NO_VISIT_IN_WINDOW"


def test_pending_while_a_closer_visit_can_still_come() -> None:
    # Visit on day 170 (10 before the target): a visit on days 171-189 would be closer; day 190 would tie
    # and lose. So the choice is final from day 189 (a visit on day 190 can come only after as_of = 189).
    assert outcome(run([visit(170)], as_of=day(188)), "doris_remission") == (None, "PENDING", f"final on {day(189)}")
    assert outcome(run([visit(170)], as_of=day(189)), "doris_remission") == MET


def test_a_visit_after_the_target_is_final_at_once() -> None:
    assert outcome(run([visit(185)], as_of=day(185)), "doris_remission") == MET


def test_visits_after_as_of_are_ignored() -> None:
    frame = run([visit(150), visit(180, pga=2.0)], as_of=day(170))
    assert outcome(frame, "doris_remission", "month_3") == (None, "NO_VISIT_IN_WINDOW", None)
    assert outcome(frame, "doris_remission")[1] == "PENDING"


def test_not_infused_without_day_0() -> None:
    frame = run([visit(180)], subjects=[subject(day0=None)])
    assert set(frame["reason"]) == {"NOT_INFUSED"}
    assert frame["met"].null_count() == frame.height


# --------------------------------------------------------------------------------------------------
# Intercurrent events
# --------------------------------------------------------------------------------------------------


def test_treatment_failure_before_the_landmark_is_not_met_and_stays() -> None:
    frame = run([visit(90), visit(100, treatment_failure=True), visit(180, treatment_failure=False)])
    assert outcome(frame, "doris_remission") == (False, "TREATMENT_FAILURE", None)
    assert outcome(frame, "doris_remission", "month_12") == (False, "TREATMENT_FAILURE", None)  # no visit: still
    assert outcome(frame, "doris_remission", "month_3") == MET  # it came after the month-3 visit


def test_treatment_failure_at_the_landmark_visit_counts() -> None:
    assert outcome(run([visit(180, treatment_failure=True)]), "lldas")[:2] == (False, "TREATMENT_FAILURE")


def test_treatment_failure_before_infusion_does_not_count() -> None:
    assert outcome(run([visit(-5, treatment_failure=True), visit(180)]), "doris_remission") == MET


def test_unknown_treatment_failure_blocks_met_but_not_a_known_failure() -> None:
    frame = run([visit(100, treatment_failure=None), visit(180)])
    assert outcome(frame, "doris_remission") == (None, "INPUT_UNKNOWN", "treatment_failure")
    frame = run([visit(100, treatment_failure=None), visit(180, pga=2.0)])
    assert outcome(frame, "doris_remission") == NOT_MET


def test_treatment_failure_can_be_ignored() -> None:
    lenient = with_settings(intercurrent_events={"treatment_failure": "ignore"})
    frame = run([visit(100, treatment_failure=True), visit(180)], definition=lenient)
    assert outcome(frame, "doris_remission") == MET


def test_discontinued_before_the_landmark_is_not_met() -> None:
    frame = run([visit(90)], subjects=[subject(discontinued_date=day(150))])
    assert outcome(frame, "doris_remission") == (False, "DISCONTINUED", None)
    assert outcome(frame, "doris_remission", "month_3") == MET
    # Before the landmark visit, even inside the window.
    frame = run([visit(180)], subjects=[subject(discontinued_date=day(175))])
    assert outcome(frame, "doris_remission") == (False, "DISCONTINUED", None)


def test_discontinued_after_the_landmark_visit_keeps_its_assessment() -> None:
    frame = run([visit(170)], subjects=[subject(discontinued_date=day(175))], as_of=day(176))
    assert outcome(frame, "doris_remission") == MET  # and not PENDING: no visit follows a withdrawal


def test_discontinuation_can_be_ignored() -> None:
    lenient = with_settings(intercurrent_events={"discontinued": "ignore"})
    frame = run([visit(90)], subjects=[subject(discontinued_date=day(150))], definition=lenient)
    assert outcome(frame, "doris_remission") == (None, "NO_VISIT_IN_WINDOW", None)


def test_not_applicable_comes_before_an_intercurrent_event() -> None:
    frame = run([visit(100, treatment_failure=True)], baselines=[baseline(sledai_2k=4)])
    assert outcome(frame, "msri4") == (None, "NOT_APPLICABLE", None)
    assert outcome(frame, "doris_remission")[1] == "TREATMENT_FAILURE"


def test_subjects_are_evaluated_apart() -> None:
    frame = run(
        [visit(180, "S1"), visit(180, "S2", pga=2.0)],
        baselines=[baseline("S1"), baseline("S2")],
        subjects=[subject("S1"), subject("S2")],
    )
    assert at(frame, "doris_remission", subject_id="S1")["met"] is True
    assert at(frame, "doris_remission", subject_id="S2")["met"] is False


# --------------------------------------------------------------------------------------------------
# Censored comparisons (property) and renal values per visit
# --------------------------------------------------------------------------------------------------

_HALVES = st.integers(min_value=0, max_value=8).map(lambda n: n / 2)


@settings(max_examples=300, deadline=None)
@given(
    x=_HALVES,
    slack=st.integers(min_value=0, max_value=4).map(lambda n: n / 2),
    comparator=st.sampled_from(["<", "<=", ">", ">="]),
    op=st.sampled_from(["lt", "le", "gt", "ge"]),
    t=_HALVES,
)
def test_a_censored_value_never_decides_wrongly(x: float, slack: float, comparator: str, op: str, t: float) -> None:
    """For any true value x that the censored result allows, a decided comparison is x's own."""
    strict = comparator in ("<", ">")
    if strict and slack == 0:
        slack = 0.5
    v = x + slack if comparator.startswith("<") else x - slack  # x < v, x <= v, x > v or x >= v holds
    got = pl.select(threshold_met(pl.lit(v), op, t, pl.lit(comparator))).item()
    truth = {"lt": x < t, "le": x <= t, "gt": x > t, "ge": x >= t}[op]
    assert got is None or got == truth


def test_censored_comparisons_hand_worked() -> None:
    cases = [(0.1, "<", "lt", 0.5, True), (0.5, "<=", "lt", 0.5, None), (0.5, "<", "lt", 0.5, True)]
    cases += [(60.0, ">", "ge", 60.0, True), (60.0, ">", "ge", 90.0, None), (90.0, ">=", "lt", 90.0, False)]
    for v, comparator, op, t, expected in cases:
        assert pl.select(threshold_met(pl.lit(v), op, t, pl.lit(comparator))).item() is expected


def test_renal_values_take_the_latest_in_the_lookback_and_the_worst_of_a_day() -> None:
    activity = pl.DataFrame(
        {"study_id": ["ST", "ST"], "subject_id": ["S1", "S1"], "visit_date": [day(180), day(90)], "upcr": [9.0, 9.0]}
    )
    labs = pl.DataFrame(
        {
            "study_id": ["ST"] * 7,
            "subject_id": ["S1"] * 7,
            "analyte": ["upcr", "upcr", "upcr", "upcr", "egfr", "egfr", "c3"],
            "value": [0.8, 0.3, 0.6, 0.2, 95.0, 60.0, 0.5],
            "censoring": [None, None, None, None, None, ">", None],
            "collected_date": [day(172), day(175), day(175), day(181), day(169), day(88), day(180)],
        }
    )
    out = renal_values(activity, labs, lookback_days=10)
    # Day 180: UPCR 0.3 and 0.6 on day 175 (the latest): 0.6; day 181 is after the visit; eGFR of day 169 is
    # 11 days before: outside. Day 90: eGFR >60 of day 88, censoring kept.
    assert out.select("visit_date", "upcr", "upcr_censoring", "egfr", "egfr_censoring").rows() == [
        (day(180), 0.6, None, None, None),
        (day(90), None, None, 60.0, ">"),
    ]
    assert renal_values(activity, labs, lookback_days=11)["egfr"].to_list() == [95.0, 60.0]


# --------------------------------------------------------------------------------------------------
# Training outcomes
# --------------------------------------------------------------------------------------------------


def _endpoint_table() -> pl.DataFrame:
    """Five subjects at drug-free DORIS / month 6, written by hand, plus one row of another landmark."""
    rows = [
        ("S1", "month_6", True, "EVALUATED"),
        ("S2", "month_6", False, "EVALUATED"),
        ("S3", "month_6", False, "TREATMENT_FAILURE"),
        ("S4", "month_6", None, "PENDING"),
        ("S5", "month_6", None, "NOT_APPLICABLE"),
        ("S1", "month_3", None, "NO_VISIT_IN_WINDOW"),
    ]
    return pl.DataFrame(
        {
            "study_id": ["ST"] * len(rows),
            "subject_id": [r[0] for r in rows],
            "endpoint": ["drug_free_doris_remission"] * len(rows),
            "definition_version": ["1.0.0"] * len(rows),
            "landmark": [r[1] for r in rows],
            "met": [r[2] for r in rows],
            "reason": [r[3] for r in rows],
        }
    )


def test_derive_outcomes_keeps_met_and_not_met_and_counts_the_rest() -> None:
    outcomes, counts = derive_outcomes(_endpoint_table(), "drug_free_doris_remission", "month_6")
    assert outcomes.columns == ["study_id", "subject_id", "responded", "endpoint"]
    assert outcomes.rows() == [
        ("ST", "S1", True, "drug_free_doris_remission@month_6 v1.0.0"),
        ("ST", "S2", False, "drug_free_doris_remission@month_6 v1.0.0"),
        ("ST", "S3", False, "drug_free_doris_remission@month_6 v1.0.0"),
    ]
    assert counts.as_dict() == {
        "endpoint": "drug_free_doris_remission@month_6 v1.0.0",
        "definition_version": "1.0.0",
        "responded": 1,
        "not_responded": 2,
        "left_out": {
            "NOT_INFUSED": 0,
            "NOT_APPLICABLE": 1,
            "INPUT_UNKNOWN": 0,
            "PENDING": 1,
            "NO_VISIT_IN_WINDOW": 0,
        },
    }


@pytest.mark.parametrize(
    ("endpoint", "landmark", "listed"),
    [("doris", "month_6", "drug_free_doris_remission"), ("drug_free_doris_remission", "month_9", "month_6, month_3")],
)
def test_derive_outcomes_names_the_known_endpoints_and_landmarks(endpoint: str, landmark: str, listed: str) -> None:
    with pytest.raises(UnknownEndpointError, match=listed) as caught:
        derive_outcomes(_endpoint_table(), endpoint, landmark)
    assert isinstance(caught.value, SettingsError)


def test_derive_outcomes_from_a_real_run() -> None:
    frame = run(
        [visit(180, "S1"), visit(180, "S2", prednisone_mg_day=5.0)],
        baselines=[baseline("S1"), baseline("S2")],
        subjects=[subject("S1"), subject("S2"), subject("S3", day0=None)],
    )
    outcomes, counts = derive_outcomes(frame, "drug_free_doris_remission", "month_6")
    assert outcomes.select("subject_id", "responded").rows() == [("S1", True), ("S2", False)]
    assert (counts.responded, counts.not_responded, counts.left_out["NOT_INFUSED"]) == (1, 1, 1)


# --------------------------------------------------------------------------------------------------
# The definition
# --------------------------------------------------------------------------------------------------


def test_the_default_yaml_is_the_models_default() -> None:
    loaded = load_endpoint_definition()
    assert loaded.version == "1.0.0"
    assert loaded.model_dump(exclude={"description"}) == DEFAULT.model_dump(exclude={"description"})
    assert loaded.endpoints == ENDPOINT_NAMES
    assert {n: (lm.target_day, lm.half_width_days) for n, lm in loaded.landmarks.items()} == {
        "month_3": (90, 14),
        "month_6": (180, 28),
        "month_12": (365, 28),
    }


def test_the_definition_loads_from_a_protocol_section() -> None:
    definition = load_endpoint_definition(
        {"version": "2", "endpoints": ["lldas"], "landmarks": {"week_12": {"target_day": 84, "half_width_days": 7}}}
    )
    frame = run([visit(84)], definition=definition)
    assert frame.select("endpoint", "landmark", "definition_version", "met").rows() == [("lldas", "week_12", "2", True)]


@pytest.mark.parametrize(
    ("section", "setting"),
    [
        ({"landmarks": {"month_1": {"target_day": 10, "half_width_days": 10}}}, "landmarks.month_1"),
        ({"landmarks": {"Month 6": {"target_day": 180, "half_width_days": 28}}}, "landmarks"),
        ({"doris_remission": {"pga": {"op": "lt", "value": 0.5, "unit": "x"}}}, "doris_remission.pga.unit"),
        ({"renal_population": {"lupus_nephritis_classes": ["VII"]}}, "renal_population.lupus_nephritis_classes"),
        ({"endpoints": ["sri_4"]}, "endpoints.0"),
        ({"endpoints": ["lldas", "lldas"]}, "endpoints"),
    ],
)
def test_a_bad_setting_is_named(section: dict[str, Any], setting: str) -> None:
    with pytest.raises(SettingsError, match=rf"endpoint definition: {setting}"):
        load_endpoint_definition({"version": "1", **section})


def test_a_descriptor_the_table_lacks_is_a_settings_error() -> None:
    definition = with_settings(renal_population={"renal_descriptors": ["nephritis"]})
    with pytest.raises(SettingsError, match=re.escape("renal_population.renal_descriptors: unknown descriptor")):
        run([visit(180)], definition=definition)


def test_every_field_is_described_and_classes_match_the_contract() -> None:
    from immunostrat.config import endpoints as module
    from immunostrat.schemas.outputs import LN_CLASSES as CONTRACT_CLASSES

    models = [
        m
        for m in vars(module).values()
        if isinstance(m, type) and issubclass(m, BaseModel) and m.__module__ == module.__name__
    ]
    assert len(models) >= 9
    for model in models:
        for name, info in model.model_fields.items():
            assert (info.description or "").strip(), f"{model.__name__}.{name} has no description"
    assert LN_CLASSES == CONTRACT_CLASSES


# --------------------------------------------------------------------------------------------------
# The contract of endpoints.parquet
# --------------------------------------------------------------------------------------------------


def _mixed_run() -> pl.DataFrame:
    """A run with every reason code."""
    return run(
        [visit(90, "S1"), visit(100, "S1", treatment_failure=True), visit(180, "S2", pga=None), visit(80, "S3")],
        baselines=[baseline("S1"), baseline("S2", sledai_2k=4), baseline("S3")],
        subjects=[
            subject("S1"),
            subject("S2"),
            subject("S3", discontinued_date=day(85)),
            subject("S4", day0=None),
            subject("S5", day0=day(300)),  # month 12 (day 665) is after as_of (day 517)
        ],
    )


def test_the_contract_accepts_a_run() -> None:
    from immunostrat.schemas.endpoints import validate_endpoints

    frame = _mixed_run()
    assert {"EVALUATED", "INPUT_UNKNOWN", "PENDING", "TREATMENT_FAILURE", "DISCONTINUED", "NOT_INFUSED"} <= set(
        frame["reason"]
    )
    assert {"NOT_APPLICABLE", "NO_VISIT_IN_WINDOW"} <= set(frame["reason"])
    assert validate_endpoints(frame) is frame


@pytest.mark.parametrize(
    ("change", "check"),
    [
        (
            pl.when(pl.col("reason") == "PENDING").then(True).otherwise(pl.col("met")).alias("met"),
            "`met` is set for EVALUATED",
        ),
        (pl.lit(None, pl.String).alias("reason_detail"), "`reason_detail` is set exactly"),
        (pl.lit("SRI4").alias("endpoint"), "isin"),
        (pl.lit(None, pl.Int32).alias("visit_day"), "both set or both null"),
    ],
)
def test_the_contract_rejects_a_broken_table(change: pl.Expr, check: str) -> None:
    from immunostrat.schemas.endpoints import validate_endpoints
    from immunostrat.schemas.outputs import OutputContractError

    with pytest.raises(OutputContractError, match=re.escape(check)):
        validate_endpoints(_mixed_run().with_columns(change))


def test_every_contract_column_is_described() -> None:
    from immunostrat.schemas.endpoints import EndpointRow

    schema = EndpointRow.to_schema()
    assert list(schema.columns) == _mixed_run().columns
    assert all((c.description or "").strip() for c in schema.columns.values())
