"""Output contracts (schemas/outputs.py) and the generated data dictionary (immunostrat.reporting.datadict).

The good frames are real pipeline output: a tiny synthetic cohort run through prepare, baseline, eligibility and
scoring (with a model fitted in-process, no registry). Each rejection test corrupts one of them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandera.polars as pa
import polars as pl
import pytest
from pandera.errors import SchemaErrors

from immunostrat.config.features import DEFAULT_FEATURES, FeatureSpec, build_feature_frame
from immunostrat.config.run import RunConfig, TrainConfig, ValidationConfig, load_protocol
from immunostrat.ingest.inputs import read_inputs
from immunostrat.modelling.fitting import train_responder_model as fit
from immunostrat.modelling.registry import LoadedModel
from immunostrat.modelling.scoring import score_strata
from immunostrat.pipeline.selection import build_strata, prepare
from immunostrat.reporting import datadict
from immunostrat.schemas.outputs import (
    OUTPUT_MODELS,
    PANEL,
    REASON_CODES,
    HarmonisedLab,
    OutputContractError,
    Strata,
    _conforms,
    _lists_ids,
    _unique_rows,
    strata_model,
    validate_output,
)
from immunostrat.stages.harmonise import HARMONISED_COLUMNS
from immunostrat.stages.subjects import validate_outcomes
from immunostrat.synth import SynthConfig, generate_cohort, write_cohort

ROOT = Path(__file__).resolve().parents[1]
AS_OF = dt.date(2030, 1, 1)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    """harmonised, quarantine and strata frames of a 40-subject synthetic run."""
    paths = write_cohort(generate_cohort(SynthConfig(n_subjects=40, seed=3)), tmp_path_factory.mktemp("c"), fmt="csv")
    cfg = RunConfig(validation=ValidationConfig(as_of=AS_OF))
    prepared = prepare(read_inputs([paths["labs"]], paths["subjects"]), cfg)
    strata = build_strata(prepared, load_protocol(), cfg)
    features = build_feature_frame(strata, DEFAULT_FEATURES)
    labels = np.random.default_rng(0).integers(0, 2, strata.height)
    trained = fit(features, labels, TrainConfig(cv_folds=2))
    model = LoadedModel(
        model_id="test-model",
        sha256="a" * 64,
        estimator=trained.estimator,
        features=trained.feature_specs,
        card={},
        default_cutoffs={"possible_min": 0.4, "likely_min": 0.6},
    )
    scored = score_strata(strata, model).with_columns(run_id=pl.lit("20300101T000000Z-abcdef"))
    return {"harmonised": prepared.harmonised, "quarantine": prepared.quarantine, "strata": scored}


def _set(frame: pl.DataFrame, column: str, row: int, value: object) -> pl.DataFrame:
    """`frame` with one cell replaced (keeping the column's dtype)."""
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame[column].dtype))


def _rejects(name: str, frame: pl.DataFrame, *fragments: str) -> OutputContractError:
    with pytest.raises(OutputContractError) as caught:
        validate_output(name, frame)
    text = str(caught.value)
    assert f"{name}.parquet does not meet its output contract" in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return caught.value


# --------------------------------------------------------------------------------------------------
# Acceptance
# --------------------------------------------------------------------------------------------------


def test_pipeline_outputs_meet_their_contracts(outputs: dict[str, pl.DataFrame]) -> None:
    assert outputs["quarantine"].height > 0  # the synthetic cohort injects bad rows
    assert outputs["strata"]["responder_group"].n_unique() > 1
    for name, frame in outputs.items():
        assert validate_output(name, frame).equals(frame)
        assert validate_output(f"{name}.parquet", frame).height == frame.height


def test_tiny_hand_written_quarantine_frame_passes() -> None:
    frame = pl.DataFrame(
        {
            "source_file": ["subjects.csv"],
            "source_row": [3],
            "reason_code": ["SEX_INVALID"],
            "reason_codes": [["SEX_INVALID", "AGE_INVALID"]],
            "column": ["sex"],
            "value": ["X"],
            "message": ["subjects.csv row 3, column 'sex': value 'X' rejected (SEX_INVALID); expected F, M, U"],
            "input_kind": ["subjects"],
            "study_id": ["S1"],
            "subject_id": ["P1"],
            "sex": ["X"],
        }
    )
    assert validate_output("quarantine", frame).height == 1


def test_empty_quarantine_passes(outputs: dict[str, pl.DataFrame]) -> None:
    assert validate_output("quarantine", outputs["quarantine"].head(0)).height == 0


def test_criterion_columns_follow_the_protocol(outputs: dict[str, pl.DataFrame]) -> None:
    strata = outputs["strata"]
    renamed = strata.rename({"criterion_age_18_65": "criterion_any_new_id"}).with_columns(
        pl.col("criteria_failed").list.eval(pl.element().replace("age_18_65", "any_new_id")),
        pl.col("criteria_not_assessable").list.eval(pl.element().replace("age_18_65", "any_new_id")),
    )
    validate_output("strata", renamed)


def test_custom_model_features_get_their_own_contrib_columns(outputs: dict[str, pl.DataFrame]) -> None:
    strata = outputs["strata"]
    spec = FeatureSpec("c3_only", "c3", "identity", "g/L", "Baseline C3")
    custom = strata_model([spec])
    assert "contrib_c3_only" in custom.to_schema().columns
    assert "contrib_c3" not in custom.to_schema().columns
    _rejects("strata", strata.rename({"contrib_c3": "contrib_c3_only"}), "unexpected column", "contrib_c3_only")


# --------------------------------------------------------------------------------------------------
# Rejections with readable messages
# --------------------------------------------------------------------------------------------------


def test_strata_rejects_unknown_group_and_probability_above_one(outputs: dict[str, pl.DataFrame]) -> None:
    strata = outputs["strata"]
    scored = strata["responder_probability"].is_not_null().arg_true()
    bad = _set(_set(strata, "responder_group", 0, "maybe"), "responder_probability", int(scored[0]), 1.5)
    error = _rejects("strata", bad, "responder_group", "'maybe'", "responder_probability", "'1.5'", "in_range(0, 1)")
    assert {"responder_group", "responder_probability"} <= set(error.columns)


def test_strata_requires_the_stable_columns(outputs: dict[str, pl.DataFrame]) -> None:
    stable = ["study_id", "subject_id", "eligible", "responder_probability", "responder_group"]
    error = _rejects("strata", outputs["strata"].drop(stable), "missing column", *map(repr, stable))
    assert set(stable) <= set(error.columns)


def test_strata_rejects_inconsistent_rows(outputs: dict[str, pl.DataFrame]) -> None:
    strata = outputs["strata"]
    row = int(strata["responder_probability"].is_not_null().arg_true()[0])
    shifted = _set(strata, "contrib_c3", row, strata["contrib_c3"][row] + 1.0)
    _rejects("strata", shifted, "row check failed", "sum to the logit", f"0-based {row}")
    eligible = strata["eligible"].to_list()
    flipped = strata.with_columns(pl.Series("eligible", [not e if e is not None else True for e in eligible]))
    _rejects("strata", flipped, "`eligible` follows `criteria_failed`")
    _rejects("strata", pl.concat([strata, strata.head(1)]), "multiple_fields_uniqueness")


def test_strata_rejects_undeclared_and_mistyped_columns(outputs: dict[str, pl.DataFrame]) -> None:
    strata = outputs["strata"]
    _rejects("strata", strata.with_columns(extra=pl.lit(1)), "unexpected column", "'extra'")
    mistyped = strata.with_columns(pl.col("criterion_age_18_65").cast(pl.String))
    _rejects("strata", mistyped, "column 'criterion_age_18_65'", "dtype('Boolean')")
    _rejects("strata", _set(strata, "c3", 0, float("nan")), "column 'c3'", "'NaN'")


def test_harmonised_rejects_analyte_outside_panel_and_source_row_zero(outputs: dict[str, pl.DataFrame]) -> None:
    bad = _set(_set(outputs["harmonised"], "analyte", 0, "esr"), "source_row", 1, 0)
    error = _rejects("harmonised", bad, "column 'analyte'", "'esr'", "column 'source_row'", "'0'")
    assert {"analyte", "source_row"} <= set(error.columns)
    assert "greater_than_or_equal_to(1)" in str(error)


def test_harmonised_rejects_non_finite_value_and_wrong_unit(outputs: dict[str, pl.DataFrame]) -> None:
    harmonised = outputs["harmonised"]
    _rejects("harmonised", _set(harmonised, "value", 0, float("inf")), "column 'value'", "finite", "'inf'")
    c3 = int(harmonised["analyte"].eq("c3").arg_true()[0])
    _rejects("harmonised", _set(harmonised, "unit", c3, "mg/dL"), "column 'unit'", "canonical unit of `analyte`")


def test_quarantine_rejects_empty_or_unknown_reason(outputs: dict[str, pl.DataFrame]) -> None:
    quarantine = outputs["quarantine"]
    _rejects("quarantine", _set(quarantine, "reason_code", 0, ""), "column 'reason_code'", "isin", "starts with")
    _rejects("quarantine", _set(quarantine, "reason_code", 0, "OOPS"), "'OOPS'")
    _rejects("quarantine", _set(quarantine, "reason_codes", 0, []), "column 'reason_codes'", "at least one item")
    _rejects("quarantine", _set(quarantine, "source_row", 0, 0), "column 'source_row'")


def test_lazy_frames_and_unknown_tables_are_refused(outputs: dict[str, pl.DataFrame]) -> None:
    with pytest.raises(TypeError, match="eager"):
        validate_output("strata", outputs["strata"].lazy())
    with pytest.raises(KeyError, match="unknown output table"):
        validate_output("scores", outputs["strata"])


# --------------------------------------------------------------------------------------------------
# Descriptions and the data dictionary
# --------------------------------------------------------------------------------------------------


def test_every_column_of_every_contract_is_described() -> None:
    custom = strata_model([FeatureSpec("x", "c3", "identity", "g/L", "Baseline C3")])
    for model in [*OUTPUT_MODELS.values(), custom]:
        for name, column in model.to_schema().columns.items():
            assert (column.description or "").strip(), f"{model.__name__}.{name} has no description"
    for file_name, table in datadict.data_dictionary().items():
        assert table["description"], file_name
        for column in table["columns"]:
            assert column["description"].strip(), f"{file_name}: {column['name']}"
            assert column["type"], f"{file_name}: {column['name']}"


def test_strata_columns_are_generated_from_reference_and_features() -> None:
    columns = Strata.to_schema().columns
    analytes = pl.read_csv(ROOT / "schemas" / "reference" / "analytes.csv", infer_schema=False)
    selection = analytes.filter(pl.col("panel_group") == "selection")["analyte"]
    assert tuple(selection.to_list()) == PANEL
    for analyte in PANEL:
        for name in (analyte, f"{analyte}_date", f"{analyte}_censoring"):
            assert name in columns, name
    # Follow-up analytes are in the harmonised table only: the strata keep the selection panel.
    for analyte in ("platelets", "urine_rbc", "car_t_cells", "creatinine"):
        assert analyte not in columns and f"{analyte}_date" not in columns, analyte
    assert "platelets" in HarmonisedLab.to_schema().columns["analyte"].checks[0].statistics["allowed_values"]
    for feature in (*DEFAULT_FEATURES, None):
        assert f"contrib_{feature.name if feature else 'intercept'}" in columns
    assert columns["c3"].metadata == {"unit": "g/L"}
    assert columns[r"^criterion_.+$"].regex


def test_harmonised_contract_matches_the_stage_projection() -> None:
    assert tuple(HarmonisedLab.to_schema().columns) == HARMONISED_COLUMNS


def test_committed_output_doc_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert datadict.main(["--check", "--out", str(ROOT / "docs" / "output.md")]) == 0
    assert "up to date" in capsys.readouterr().out


def test_datadict_check_fails_on_drift_and_rewrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "output.md"
    assert datadict.main(["--check", "--out", str(out)]) == 1
    assert datadict.main(["--out", str(out)]) == 0
    assert datadict.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("`responder_group`", "`group`", 1), encoding="utf-8")
    assert datadict.main(["--check", "--out", str(out)]) == 1
    assert (
        "regenerate it with: python -m immunostrat.reporting.datadict --out docs/output.md" in capsys.readouterr().err
    )


def test_output_doc_covers_every_column_and_run_json_key() -> None:
    text = datadict.render_markdown()
    for file_name, model in OUTPUT_MODELS.items():
        assert f"## {file_name}" in text
        for name, column in model.to_schema().columns.items():
            assert (f"`{name}`" in text) or column.regex, name
    for key in ("run_id", "status", "counts.per_file", "model.cutoffs_source", "summary.eligibility_funnel", "outputs"):
        assert f"| `{key}` |" in text


def test_input_doc_explains_every_reason_code() -> None:
    text = (ROOT / "docs" / "input.md").read_text(encoding="utf-8")
    outcome = validate_outcomes(
        pl.DataFrame(
            {
                "study_id": ["", "S", "S", "S"],
                "subject_id": ["", "", "P", "P"],
                "responded": ["x", "x", "yes", "no"],
                "endpoint": ["e"] * 4,
                "source_file": ["o.csv"] * 4,
                "source_row": [1, 2, 3, 4],
            }
        )
    ).quarantine
    codes = {*REASON_CODES, *outcome["reason_codes"].explode().to_list()}
    assert {"RESPONDED_INVALID", "OUTCOME_DUPLICATE"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in text)
    assert not missing, f"docs/input.md does not explain {missing}"


# --------------------------------------------------------------------------------------------------
# The one-pass check (`_conforms`) decides as pandera does
# --------------------------------------------------------------------------------------------------


def _pandera_accepts(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> bool:
    try:
        schema.validate(frame, lazy=True)
    except (SchemaErrors, pl.exceptions.PolarsError):
        return False
    return True


def test_valid_outputs_skip_pandera(outputs: dict[str, pl.DataFrame], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pandera ran on a valid frame")

    monkeypatch.setattr(pa.DataFrameSchema, "validate", refuse)
    for name, frame in outputs.items():
        assert validate_output(name, frame) is frame  # no copy
    shuffled = outputs["harmonised"].sample(fraction=1.0, shuffle=True, seed=1)  # unique by row hashes
    assert validate_output("harmonised", shuffled) is shuffled


def test_one_pass_check_agrees_with_pandera(outputs: dict[str, pl.DataFrame]) -> None:
    harmonised, strata, quarantine = outputs["harmonised"], outputs["strata"], outputs["quarantine"]
    failed = int(strata["criteria_failed"].list.len().arg_max() or 0)
    cases = {
        "harmonised": [
            harmonised,
            harmonised.reverse(),
            _set(harmonised, "value", 0, float("nan")),  # NaN counts as null in a non-nullable float
            _set(harmonised, "study_id", 0, None),
            _set(harmonised, "method", 0, "elisa"),
            _set(harmonised, "collected_date", 0, dt.date(1999, 1, 1)),
            pl.concat([harmonised, harmonised.head(1)]),
            pl.concat([harmonised.head(1), harmonised]),
            harmonised.with_columns(pl.col("source_row").cast(pl.Int32)),
            harmonised.drop("site_id"),
        ],
        "quarantine": [quarantine, quarantine.drop(quarantine.columns[-1]), _set(quarantine, "reason_codes", 0, ["X"])],
        "strata": [
            strata,
            _set(strata, "criteria_failed", failed, list(reversed(strata["criteria_failed"][failed]))),
            _set(strata, "criteria_failed", failed, ["\x1f".join(strata["criteria_failed"][failed])]),
            _set(strata, "criteria_not_assessable", 0, [None]),
            strata.drop([c for c in strata.columns if c.startswith("criterion_")]),
            _set(strata, "c3", 0, -1.0),
        ],
    }
    for name, frames in cases.items():
        schema = OUTPUT_MODELS[f"{name}.parquet"].to_schema()
        for i, frame in enumerate(frames):
            assert _conforms(schema, frame) == _pandera_accepts(schema, frame), (name, i)


def test_criteria_lists_with_the_separator_in_an_id(outputs: dict[str, pl.DataFrame]) -> None:
    ids = ["a\x1fb", "c"]
    frame = pl.DataFrame(
        {"criterion_a\x1fb": [False, False, True], "criterion_c": [False, True, False]},
    ).with_columns(
        criteria_failed=pl.Series([["a\x1fb", "c"], ["a", "b"], ["c"]]),
    )
    check = _lists_ids("criteria_failed", ids, lambda c: c == False)  # noqa: E712
    assert frame.select(check.fill_null(False)).to_series().to_list() == [True, False, True]


def test_uniqueness_proofs() -> None:
    assert _unique_rows(pl.DataFrame({"a": ["x", "x", "y"], "b": [1, 2, 1]}), ["a", "b"])  # sorted
    assert _unique_rows(pl.DataFrame({"a": ["y", "x", "x"], "b": [1, 2, 1]}), ["a", "b"])  # hashes
    assert not _unique_rows(pl.DataFrame({"a": ["x", "y", "x"], "b": [1, 1, 1]}), ["a", "b"])
    assert not _unique_rows(pl.DataFrame({"a": [None, None], "b": [1, 1]}), ["a", "b"])
    assert not _unique_rows(pl.DataFrame({"a": [0.0, 1.0]}), ["a"])  # floats: left to pandera
