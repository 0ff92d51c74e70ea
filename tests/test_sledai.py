"""SLEDAI-2K from descriptors (issue 12, first step): weights as data, unknown is never absent, both encodings."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immunostrat.errors import SettingsError
from immunostrat.followup.sledai import ITEM_PREFIX, load_descriptors, parse_descriptor, sledai_scores

DESCRIPTORS = load_descriptors()
WEIGHT = {d.item: d.weight for d in DESCRIPTORS}


def _visit(**present: bool | None) -> pl.DataFrame:
    """One visit: every descriptor absent unless given (True present, None unknown)."""
    row = {ITEM_PREFIX + d.item: present.get(d.item, False) for d in DESCRIPTORS}
    return pl.DataFrame([row], schema={k: pl.Boolean for k in row})


def test_the_builtin_table_is_sledai_2k() -> None:
    """24 descriptors: 8 of weight 8, 6 of 4, 7 of 2 and 3 of 1, summing to 105 (Gladman 2002)."""
    weights = sorted(WEIGHT.values(), reverse=True)
    assert len(DESCRIPTORS) == 24 and sum(weights) == 105
    assert [weights.count(w) for w in (8, 4, 2, 1)] == [8, 6, 7, 3]
    assert WEIGHT["alopecia"] == 2  # a public tool scores it 1: wrong
    assert {d.item for d in DESCRIPTORS if d.kind == "serology"} == {"low_complement", "increased_dna_binding"}


def test_a_fully_assessed_visit_scores_its_weighted_sum() -> None:
    # arthritis 4 + rash 2 + low complement 2 + increased DNA binding 2 + thrombocytopenia 1 = 11; clinical 7.
    scores = sledai_scores(
        _visit(arthritis=True, rash=True, low_complement=True, increased_dna_binding=True, thrombocytopenia=True),
        DESCRIPTORS,
    ).row(0, named=True)
    assert scores == {
        "sledai_2k": 11,
        "sledai_2k_known": 11,
        "sledai_2k_max": 11,
        "sledai_items_missing": 0,
        "clinical_sledai_2k": 7,
    }


def test_an_unknown_descriptor_leaves_the_total_unknown_with_bounds() -> None:
    # Known present: rash 2. Unknown: seizure (8) and proteinuria (4): at most 2 + 8 + 4 = 14.
    scores = sledai_scores(_visit(rash=True, seizure=None, proteinuria=None), DESCRIPTORS).row(0, named=True)
    assert scores["sledai_2k"] is None and scores["clinical_sledai_2k"] is None
    assert (scores["sledai_2k_known"], scores["sledai_2k_max"], scores["sledai_items_missing"]) == (2, 14, 2)


def test_unknown_serology_leaves_the_clinical_score_known() -> None:
    scores = sledai_scores(_visit(arthritis=True, low_complement=None), DESCRIPTORS).row(0, named=True)
    assert scores["sledai_2k"] is None and scores["clinical_sledai_2k"] == 4
    assert (scores["sledai_2k_known"], scores["sledai_2k_max"]) == (4, 6)


def test_an_inactive_visit_scores_zero_not_unknown() -> None:
    assert sledai_scores(_visit(), DESCRIPTORS).row(0) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("cell", "value", "invalid"),
    [
        ("true", True, False), ("Y", True, False), (" yes ", True, False), ("1", True, False),
        ("false", False, False), ("N", False, False), ("no", False, False), ("0", False, False),
        ("", None, False), (None, None, False), ("maybe", None, True), ("2", None, True),
    ],
)  # fmt: skip
def test_boolean_cells(cell: str | None, value: bool | None, invalid: bool) -> None:
    got_value, got_invalid = parse_descriptor(pl.col("c"), 8, "boolean")
    row = pl.DataFrame({"c": [cell]}, schema={"c": pl.String}).select(got_value, got_invalid.alias("bad")).row(0)
    assert row == (value, invalid)


@pytest.mark.parametrize(
    ("cell", "weight", "value", "invalid"),
    [
        ("8", 8, True, False), ("8.0", 8, True, False), ("0", 8, False, False), ("", 8, None, False),
        ("4", 8, None, True), ("yes", 8, None, True), ("1", 1, True, False), ("2", 1, None, True),
    ],
)  # fmt: skip
def test_weight_cells(cell: str, weight: int, value: bool | None, invalid: bool) -> None:
    got_value, got_invalid = parse_descriptor(pl.col("c"), weight, "weight")
    row = pl.DataFrame({"c": [cell]}).select(got_value, got_invalid.alias("bad")).row(0)
    assert row == (value, invalid)


def test_weight_encoded_visits_score_the_sum_of_their_weights() -> None:
    """A source exporting each descriptor as its weight scores exactly the sum of the weights it gives."""
    cells = {d.item: "0" for d in DESCRIPTORS} | {"seizure": "8", "pleurisy": "2", "fever": "1"}
    raw = pl.DataFrame({d.item: [cells[d.item]] for d in DESCRIPTORS})
    items = raw.select(
        parse_descriptor(pl.col(d.item), d.weight, "weight")[0].alias(ITEM_PREFIX + d.item) for d in DESCRIPTORS
    )
    assert sledai_scores(items, DESCRIPTORS)["sledai_2k"].to_list() == [8 + 2 + 1]


def test_a_broken_descriptor_table_is_a_settings_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "sledai.csv"
    bad.write_text("item,weight,kind,major_organ,description\nrash,two,clinical,false,x\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="weight of 'rash'"):
        load_descriptors(bad)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=1, max_size=30), st.sampled_from(["boolean", "weight"])
)
def test_every_cell_is_read_as_exactly_one_of_present_absent_unknown_or_invalid(cells, encoding) -> None:  # type: ignore[no-untyped-def]
    value, invalid = parse_descriptor(pl.col("c"), 4, encoding)
    out = pl.DataFrame({"c": cells}, schema={"c": pl.String}).select(value.alias("v"), invalid.alias("bad"))
    assert out.height == len(cells)  # nothing lost
    assert out["bad"].null_count() == 0
    assert out.filter(pl.col("bad"))["v"].null_count() == out["bad"].sum()  # an invalid cell is never a value
