"""Tests for immunostrat.config.run: self-documenting fields, protocol validation, scoring and baseline bounds."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from immunostrat.config import run as config_module
from immunostrat.config.followup import (
    CrsIcansConfig,
    EventsConfig,
    FollowUpConfig,
    IcahtConfig,
    ImmuneCourseConfig,
    LabGradesConfig,
)
from immunostrat.config.run import (
    BaselineConfig,
    Criterion,
    EvaluateParams,
    HarmoniseConfig,
    InputFiles,
    MonitorParams,
    Protocol,
    ReadersConfig,
    RunConfig,
    ScoringConfig,
    StratifyParams,
    TrainParams,
    ValidationConfig,
    VisitsConfig,
    default_protocol_path,
    load_protocol,
)
from immunostrat.errors import SettingsError
from immunostrat.sponsor.publish import PublishConfig

ALL_MODELS: tuple[type[BaseModel], ...] = (
    ReadersConfig,
    PublishConfig,
    HarmoniseConfig,
    VisitsConfig,
    ValidationConfig,
    BaselineConfig,
    ScoringConfig,
    RunConfig,
    InputFiles,
    StratifyParams,
    MonitorParams,
    TrainParams,
    EvaluateParams,
    Criterion,
    Protocol,
)


# --------------------------------------------------------------------------------------------------
# Every field is described (the project's config lint)
# --------------------------------------------------------------------------------------------------


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models inside a field annotation (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_nested_models(arg))
    return found


def _walk(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[tuple[type[BaseModel], str]]:
    """(model, field) pairs of a model and every model reachable from its fields."""
    if model in seen:
        return []
    seen.add(model)
    pairs: list[tuple[type[BaseModel], str]] = []
    for name, info in model.model_fields.items():
        pairs.append((model, name))
        for nested in _nested_models(info.annotation):
            pairs.extend(_walk(nested, seen))
    return pairs


def _all_fields() -> list[tuple[type[BaseModel], str]]:
    seen: set[type[BaseModel]] = set()
    pairs: list[tuple[type[BaseModel], str]] = []
    for model in ALL_MODELS:
        pairs.extend(_walk(model, seen))
    return pairs


def test_walk_reaches_every_model() -> None:
    """The walk covers the listed models and every pydantic model the config module defines."""
    reached = {model for model, _ in _all_fields()}
    defined = {
        obj
        for obj in vars(config_module).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == config_module.__name__
    }
    with_fields = {m for m in defined if m.model_fields and not m.__name__.startswith("_")}  # bases: via subclasses
    assert set(ALL_MODELS) <= reached
    assert with_fields <= reached, f"models not covered: {with_fields - reached}"
    # Nested models are reached through fields, not only through the explicit list.
    seen: set[type[BaseModel]] = set()
    from_run_config = {model for model, _ in _walk(RunConfig, seen)}
    assert from_run_config == {
        RunConfig,
        HarmoniseConfig,
        ValidationConfig,
        BaselineConfig,
        ScoringConfig,
        ReadersConfig,
        PublishConfig,
        VisitsConfig,
        FollowUpConfig,
        EventsConfig,
        ImmuneCourseConfig,
        LabGradesConfig,
        CrsIcansConfig,
        IcahtConfig,
    }
    assert Criterion in _nested_models(Protocol.model_fields["criteria"].annotation)
    assert RunConfig in _nested_models(StratifyParams.model_fields["config"].annotation)


@pytest.mark.parametrize(("model", "field"), _all_fields(), ids=lambda p: getattr(p, "__name__", p))
def test_every_field_has_a_description(model: type[BaseModel], field: str) -> None:
    """Each field carries a non-empty description (Prefect renders it in the run form)."""
    description = model.model_fields[field].description
    assert description is not None, f"{model.__name__}.{field} has no description"
    assert description.strip(), f"{model.__name__}.{field} has an empty description"


def test_every_model_has_a_docstring() -> None:
    """Models are documented too (their docstring is the form's section title)."""
    for model in ALL_MODELS:
        assert (model.__doc__ or "").strip(), model.__name__


def test_nested_models_found_through_optional_and_list() -> None:
    """The annotation walker sees through `X | None`, `list[X]` and plain classes."""
    assert _nested_models(Criterion) == [Criterion]
    assert _nested_models(list[Criterion]) == [Criterion]
    assert _nested_models(RunConfig | None) == [RunConfig]
    assert _nested_models(types.NoneType) == []
    assert _nested_models(list[str]) == []


# --------------------------------------------------------------------------------------------------
# Defaults and extra keys
# --------------------------------------------------------------------------------------------------


def test_run_config_defaults() -> None:
    """Defaults documented in BaselineConfig and ValidationConfig."""
    cfg = RunConfig()
    assert cfg.baseline.window_days_before == 90
    assert cfg.baseline.window_days_after == 0
    assert cfg.baseline.anti_dsdna_default_cutoff == 30.0
    assert cfg.baseline.c3_default_lln == 0.9
    assert cfg.baseline.c4_default_lln == 0.16
    assert cfg.validation.max_quarantine_fraction == 0.25
    assert cfg.scoring.model == "champion"
    assert cfg.scoring.possible_min is None


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (RunConfig, {"baselin": {}}),
        (RunConfig, {"baseline": {"window_days": 30}}),
        (BaselineConfig, {"c3_lln": 0.8}),
        (ScoringConfig, {"threshold": 0.5}),
        (HarmoniseConfig, {"alias": "x.csv"}),
        (ValidationConfig, {"asof": "2024-01-01"}),
        (StratifyParams, {"labs": ["l.csv"], "subjects": "s.csv", "out": "o", "protocl": "p.yaml"}),
        (TrainParams, {"labs": ["l.csv"], "subjects": "s.csv", "outcomes": "o.csv", "folds": 3}),
        (Criterion, {"id": "a", "description": "d", "column": "c", "op": "ge", "value": 1, "unit": "x"}),
        (Protocol, {"protocol_id": "p", "version": "1", "criteria": [], "owner": "me"}),
    ],
)
def test_extra_keys_are_rejected(model: type[BaseModel], data: dict[str, Any]) -> None:
    """A misspelt or unknown key is an error, not silently ignored."""
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(data)


def test_models_are_frozen() -> None:
    """Config objects are immutable once validated."""
    cfg = BaselineConfig()
    with pytest.raises(ValidationError):
        cfg.window_days_before = 10


@pytest.mark.parametrize(
    "data",
    [
        {"window_days_before": -1},
        {"window_days_after": -1},
        {"anti_dsdna_default_cutoff": 0},
        {"c3_default_lln": 0},
        {"c4_default_lln": -0.1},
    ],
)
def test_baseline_bounds(data: dict[str, Any]) -> None:
    """Negative windows and non-positive cut-offs are rejected."""
    with pytest.raises(ValidationError):
        BaselineConfig.model_validate(data)


@pytest.mark.parametrize("fraction", [-0.01, 1.01])
def test_quarantine_fraction_bounds(fraction: float) -> None:
    """max_quarantine_fraction lies in [0, 1]."""
    with pytest.raises(ValidationError):
        ValidationConfig(max_quarantine_fraction=fraction)


def test_stratify_params_need_at_least_one_labs_file() -> None:
    """An empty `labs` list is rejected."""
    with pytest.raises(ValidationError, match="labs"):
        StratifyParams(labs=[], subjects="s.csv", out="o")


@pytest.mark.parametrize(("folds", "repeats"), [(1, 1), (5, 0)])
def test_train_params_cv_bounds(folds: int, repeats: int) -> None:
    """At least 2 folds and 1 repeat."""
    with pytest.raises(ValidationError):
        TrainParams(
            labs=["l.csv"], subjects="s.csv", outcomes="o.csv", training={"cv_folds": folds, "cv_repeats": repeats}
        )


# --------------------------------------------------------------------------------------------------
# ScoringConfig
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("possible", "likely"), [(None, None), (0.2, 0.6), (0.4, 0.4), (0.0, 1.0)])
def test_scoring_thresholds_accepted(possible: float | None, likely: float | None) -> None:
    """Both unset, or both set with possible_min <= likely_min."""
    cfg = ScoringConfig(possible_min=possible, likely_min=likely)
    assert (cfg.possible_min, cfg.likely_min) == (possible, likely)


def test_scoring_rejects_possible_above_likely() -> None:
    """possible_min > likely_min is an error naming both values."""
    with pytest.raises(ValidationError, match=r"possible_min \(0\.7\) must not exceed likely_min \(0\.3\)"):
        ScoringConfig(possible_min=0.7, likely_min=0.3)


@pytest.mark.parametrize("data", [{"possible_min": 0.3}, {"likely_min": 0.6}])
def test_scoring_rejects_only_one_threshold(data: dict[str, float]) -> None:
    """Setting only one of the two thresholds is an error."""
    with pytest.raises(ValidationError, match="set both possible_min and likely_min, or neither"):
        ScoringConfig.model_validate(data)


@pytest.mark.parametrize("data", [{"possible_min": -0.1, "likely_min": 0.5}, {"possible_min": 0.1, "likely_min": 1.5}])
def test_scoring_thresholds_are_probabilities(data: dict[str, float]) -> None:
    """Thresholds lie in [0, 1]."""
    with pytest.raises(ValidationError):
        ScoringConfig.model_validate(data)


# --------------------------------------------------------------------------------------------------
# Criterion / Protocol validation
# --------------------------------------------------------------------------------------------------


def _criterion(op: str, value: Any = None, cid: str = "c1") -> dict[str, Any]:
    return {"id": cid, "description": "d", "column": "x", "op": op, "value": value}


@pytest.mark.parametrize(
    ("op", "value", "message"),
    [
        ("is_true", True, "op is_true takes no value"),
        ("is_false", 0, "op is_false takes no value"),
        ("between", 5, r"op between needs value \[low, high\]"),
        ("between", [1], r"op between needs value \[low, high\]"),
        ("between", [1, 2, 3], r"op between needs value \[low, high\]"),
        ("between", None, r"op between needs value \[low, high\]"),
        ("between", [65, 18], "op between needs low <= high"),
        ("in", "IV", "op in needs a non-empty list value"),
        ("in", None, "op in needs a non-empty list value"),
        ("in", [], "op in needs a non-empty list value"),
        ("ge", None, "op ge needs a single value"),
        ("gt", [1, 2], "op gt needs a single value"),
        ("le", ["a"], "op le needs a single value"),
        ("lt", None, "op lt needs a single value"),
        ("eq", None, "op eq needs a single value"),
    ],
)
def test_criterion_value_must_fit_op(op: str, value: Any, message: str) -> None:
    """Operator/value mismatches are rejected with a message naming the criterion and the problem."""
    with pytest.raises(ValidationError, match=message) as info:
        Criterion.model_validate(_criterion(op, value))
    assert "'c1'" in str(info.value)


@pytest.mark.parametrize(
    ("op", "value", "parsed"),
    [
        ("ge", 8, 8.0),
        ("eq", "IV", "IV"),
        ("between", [18, 65], [18.0, 65.0]),
        ("between", [8, 8], [8.0, 8.0]),
        ("in", ["III", "IV"], ["III", "IV"]),
        ("in", [1, 2], [1.0, 2.0]),
        ("is_true", None, None),
        ("is_false", None, None),
    ],
)
def test_criterion_valid_values(op: str, value: Any, parsed: Any) -> None:
    """Well-formed criteria validate; numbers parse as floats."""
    assert Criterion.model_validate(_criterion(op, value)).value == parsed


def test_unknown_operator_rejected() -> None:
    """Only the nine documented operators exist."""
    with pytest.raises(ValidationError, match="op"):
        Criterion.model_validate(_criterion("ne", 1))


@pytest.mark.parametrize("missing", ["id", "description", "column", "op"])
def test_criterion_required_fields(missing: str) -> None:
    """id, description, column and op are required."""
    data = _criterion("ge", 1)
    del data[missing]
    with pytest.raises(ValidationError, match=missing):
        Criterion.model_validate(data)


def test_protocol_rejects_duplicate_ids() -> None:
    """Repeated criterion ids are named in the error."""
    data = {
        "protocol_id": "p",
        "version": "1",
        "criteria": [_criterion("ge", 1, "a"), _criterion("ge", 2, "b"), _criterion("le", 3, "a")],
    }
    with pytest.raises(ValidationError, match="criterion ids must be unique; repeated: a"):
        Protocol.model_validate(data)


def test_protocol_needs_criteria() -> None:
    """A protocol without criteria is rejected."""
    with pytest.raises(ValidationError, match="criteria"):
        Protocol.model_validate({"protocol_id": "p", "version": "1", "criteria": []})


# --------------------------------------------------------------------------------------------------
# load_protocol
# --------------------------------------------------------------------------------------------------

VALID_YAML = """\
protocol_id: tiny
version: "2"
criteria:
  - id: adult
    description: Adult
    column: age_years
    op: ge
    value: 18
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "protocol.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_default_protocol() -> None:
    """The built-in protocol file exists and validates."""
    assert default_protocol_path().is_file()
    prot = load_protocol()
    assert prot.protocol_id == "cart-sle-default"
    assert len(prot.criteria) == 6
    assert load_protocol(default_protocol_path()) == prot


def test_load_valid_protocol_file(tmp_path: Path) -> None:
    """A small valid file loads; the quoted version stays a string."""
    prot = load_protocol(_write(tmp_path, VALID_YAML))
    assert prot.protocol_id == "tiny"
    assert prot.version == "2"
    assert prot.description == ""
    assert prot.criteria[0].value == 18.0


def test_load_missing_file(tmp_path: Path) -> None:
    """A missing file is a SettingsError (exit 2) naming the path."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError, match=r"cannot read protocol file .*nope\.yaml"):
        load_protocol(missing)


def test_load_non_yaml(tmp_path: Path) -> None:
    """Unparseable text is reported as not valid YAML."""
    with pytest.raises(SettingsError, match="is not valid YAML"):
        load_protocol(_write(tmp_path, "protocol_id: [unclosed\n  - : :\n"))


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("", "NoneType")])
def test_load_non_mapping(tmp_path: Path, text: str, kind: str) -> None:
    """A YAML list, scalar or empty file is rejected: the file must hold a mapping."""
    with pytest.raises(SettingsError, match=f"must hold a mapping, got {kind}"):
        load_protocol(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            VALID_YAML + "  - id: adult\n    description: again\n    column: x\n    op: le\n    value: 1\n",
            "repeated: adult",
        ),
        (VALID_YAML.replace("op: ge\n    value: 18", "op: between\n    value: 18"), "op between needs value"),
        (VALID_YAML.replace("value: 18", "value: [18, 65]"), "op ge needs a single value"),
        (VALID_YAML.replace("op: ge\n    value: 18", "op: is_true\n    value: yes"), "op is_true takes no value"),
        (VALID_YAML + "extra_key: 1\n", "Extra inputs are not permitted"),
        (VALID_YAML.replace("op: ge", "op: greater"), "op"),
    ],
)
def test_load_invalid_protocol(tmp_path: Path, text: str, message: str) -> None:
    """Structurally invalid protocols fail validation with a clear message naming the file and setting."""
    with pytest.raises(SettingsError, match=message):
        load_protocol(_write(tmp_path, text))


def test_an_unset_as_of_is_today_in_the_given_time_zone() -> None:
    """Kiritimati (UTC+14) and Pago Pago (UTC-11) are 25 hours apart: at any moment their dates differ by one
    day, so each zone's own date (read before and after, in case midnight passes) is what a run gets."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from immunostrat.config.run import ValidationConfig

    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        before = dt.datetime.now(ZoneInfo(zone)).date()
        got = ValidationConfig(as_of_timezone=zone).as_of
        after = dt.datetime.now(ZoneInfo(zone)).date()
        assert got in (before, after)
    assert ValidationConfig(as_of="2025-01-02", as_of_timezone="Pacific/Kiritimati").as_of == dt.date(2025, 1, 2)


def test_an_unknown_time_zone_is_refused_with_an_example() -> None:
    from pydantic import ValidationError

    from immunostrat.config.run import ValidationConfig

    with pytest.raises(ValidationError, match="unknown IANA time zone 'Mars/Olympus'"):
        ValidationConfig(as_of_timezone="Mars/Olympus")
