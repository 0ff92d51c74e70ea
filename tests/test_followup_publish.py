"""The follow-up snapshot of a monitor run and its report (issue 12): small-cell suppression worked by hand, the
pseudonymised endpoint rows, and the current manifest's follow_up section beside the stratify snapshots."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from immunostrat.followup.summary import endpoint_rows
from immunostrat.schemas.outputs import OutputContractError
from immunostrat.sponsor.follow_up import sponsor_endpoint_rates, sponsor_endpoints
from immunostrat.sponsor.pseudonym import PseudonymKey, key_id, subject_pseudonyms

KEY_TEXT = "test-only-pseudonym-key-" + "7" * 40
KEY = PseudonymKey(secret=KEY_TEXT.encode(), key_id=key_id(KEY_TEXT.encode()), source="test")


def _rate(met: int, not_met: int, not_assessable: int, **extra: str) -> dict[str, object]:
    return {"endpoint": "doris_remission", "landmark": "month_6", "met": met, "not_met": not_met} | {
        "not_assessable": not_assessable,
        **extra,
    }


def test_counts_and_rates_shown_when_every_cell_is_large() -> None:
    (row,) = endpoint_rows([_rate(12, 8, 5)], k=5)
    assert (row["met"], row["not_met"], row["not_assessable"], row["subjects"]) == ("12", "8", "5", "25")
    assert row["rate"] == "60%"  # 12 / (12 + 8)


def test_a_small_count_hides_the_next_smallest_of_its_row_and_the_rate() -> None:
    """met 3 < 5 is primary (`<5`); with the total 30 shown it could be recomputed from 20 + 7, so the smallest
    other count (7) is hidden too (`*`); the rate needs met, so it is suppressed."""
    (row,) = endpoint_rows([_rate(3, 20, 7)], k=5)
    assert (row["met"], row["not_met"], row["not_assessable"], row["subjects"]) == ("<5", "20", "*", "30")
    assert row["rate"] == "suppressed"


def test_zero_is_shown_and_a_rate_without_assessable_subjects_is_not_a_number() -> None:
    (row,) = endpoint_rows([_rate(0, 0, 9)], k=5)
    assert (row["met"], row["not_met"], row["subjects"], row["rate"]) == ("0", "0", "9", "n/a")


def test_sponsor_rates_turn_hidden_counts_into_nulls_with_a_flag() -> None:
    summary = {
        "endpoints": [_rate(12, 8, 5)],
        "by_predicted_group": {"rates": [_rate(3, 20, 7, responder_group="likely")]},
    }
    table = sponsor_endpoint_rates(summary, min_cell_count=5)
    assert table.to_dicts() == [
        {
            "predicted_group": None,
            "endpoint": "doris_remission",
            "landmark": "month_6",
            "met": 12,
            "not_met": 8,
            "not_assessable": 5,
            "subjects": 25,
            "suppressed": False,
            "rate": pytest.approx(0.6),
        },
        {
            "predicted_group": "likely",
            "endpoint": "doris_remission",
            "landmark": "month_6",
            "met": None,
            "not_met": 20,
            "not_assessable": None,
            "subjects": 30,
            "suppressed": True,
            "rate": None,
        },
    ]


def _endpoint_rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "study_id": ["S1", "S1"],
            "subject_id": ["P001", "P002"],
            "endpoint": ["doris_remission", "doris_remission"],
            "definition_version": ["1.0.0", "1.0.0"],
            "landmark": ["month_6", "month_6"],
            "target_day": [180, 180],
            "visit_date": [dt.date(2025, 7, 1), None],
            "visit_day": [182, None],
            "met": [True, None],
            "reason": ["EVALUATED", "NO_VISIT_IN_WINDOW"],
            "reason_detail": [None, None],
        },
        schema_overrides={"target_day": pl.Int32, "visit_day": pl.Int32, "reason_detail": pl.String},
    )


def test_sponsor_endpoint_rows_carry_pseudonyms_and_study_days_only() -> None:
    rows = _endpoint_rows()
    published = sponsor_endpoints(rows, KEY)
    assert "subject_id" not in published.columns and "visit_date" not in published.columns
    expected = subject_pseudonyms(KEY, rows["study_id"], rows["subject_id"]).to_list()
    assert sorted(published["subject_pseudonym"].to_list()) == sorted(expected)
    assert published.columns[:2] == ["study_id", "subject_pseudonym"]
    by_pseudonym = dict(zip(published["subject_pseudonym"], published["visit_day"], strict=True))
    assert by_pseudonym[expected[0]] == 182 and by_pseudonym[expected[1]] is None


def test_sponsor_endpoint_rows_keep_the_endpoint_contract_checks() -> None:
    """An EVALUATED row without its landmark visit breaks the contract on the sponsor side too."""
    broken = _endpoint_rows().with_columns(reason=pl.lit("EVALUATED"), met=pl.lit(True))
    with pytest.raises(OutputContractError, match="an EVALUATED row has its landmark visit"):
        sponsor_endpoints(broken, KEY)
