"""Scoring from the card's coefficient form: the arithmetic, its agreement with the skops estimator, when each
form is checked, and that the stratify path never imports skops, scikit-learn or scipy."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from immunostrat.modelling.handle import SCORED_FROM_COEFFICIENTS, SCORED_FROM_MODEL_FILE, ModelHandle
from immunostrat.modelling.registry import (
    CardModel,
    LoadedModel,
    ModelIntegrityError,
    default_registry_dir,
    json_bytes,
    list_models,
    load_model,
    resolve_model_file,
    sha256_hex,
)
from immunostrat.modelling.scoring import CoefficientForm, expit

from .support import AS_OF, Cohort

CHAMPION = "responder-lr-20261121-5dfef19c"  # card version 2: holds the coefficient form
OLD_CARD = "responder-lr-20261121-e236e0fc"  # card version 1: coefficients and intercept only, no means/scales


# ------------------------------------------------------------------------------------------ the arithmetic

# Hand-worked probabilities agree to 1e-12, relative. exp and log come from the platform's libm or numpy's SIMD
# kernels, which are only faithful to a few ulp and differ between machines; 1e-15 was 4-7 ulp of these values,
# too tight to hold everywhere. 1e-12 is what the card's form promises against predict_proba (below), and a wrong
# formula (a sign, a missing intercept or scale) misses these values by more than 1e-2.
HAND_RTOL = 1e-12


def test_expit_is_the_logistic_function_and_stable_at_the_extremes() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp only ever sees -|t|: no overflow
        p = expit(np.array([0.0, math.log(3.0), -math.log(3.0), 800.0, -800.0]))
    # 1 / (1 + 1/3) = 3/4 and 1/3 / (1 + 1/3) = 1/4; exp(-800) underflows to 0 without a warning.
    np.testing.assert_allclose(p, [0.5, 0.75, 0.25, 1.0, 0.0], rtol=HAND_RTOL, atol=0)


def test_a_coefficient_form_scores_by_hand() -> None:
    form = CoefficientForm(
        mean=np.array([1.0, 2.0]), scale=np.array([2.0, 4.0]), coef=np.array([0.5, -1.0]), intercept=math.log(3.0)
    )
    X = np.array([[3.0, 6.0], [1.0, 2.0], [5.0, 2.0]])
    contrib = form.contributions(X)
    # z = (x - mean) / scale: row 1 (1, 1), row 2 (0, 0), row 3 (2, 0); contributions = coef * z.
    np.testing.assert_array_equal(contrib, [[0.5, -1.0], [0.0, 0.0], [1.0, 0.0]])
    # logits: ln 3 - 0.5, ln 3, ln 3 + 1; p = 3 e^s / (1 + 3 e^s) for s = -0.5, 0, 1.
    expected = [3 * math.exp(s) / (1 + 3 * math.exp(s)) for s in (-0.5, 0.0, 1.0)]
    np.testing.assert_allclose(form.probability(contrib), expected, rtol=HAND_RTOL)
    assert expected[1] == pytest.approx(0.75)


def _card(**estimator: Any) -> dict[str, Any]:
    return {"estimator": estimator}


def test_the_form_is_read_from_a_card_in_the_models_feature_order() -> None:
    card = _card(
        standardised_coefficients={"b": 2.0, "a": 1.0},
        intercept=-0.5,
        feature_means={"a": 10.0, "b": 20.0},
        feature_scales={"b": 4.0, "a": 3.0},
    )
    form = CoefficientForm.from_card(card, ["a", "b"])
    assert form is not None
    assert form.coef.tolist() == [1.0, 2.0] and form.mean.tolist() == [10.0, 20.0]
    assert form.scale.tolist() == [3.0, 4.0] and form.intercept == -0.5
    # A version-1 card (no means or scales) holds no form: never guessed, the skops file scores instead.
    assert CoefficientForm.from_card(_card(standardised_coefficients={"a": 1.0}, intercept=0.0), ["a"]) is None


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        ({"feature_means": {"a": 0.0}}, "one value per feature"),
        ({"feature_scales": {"a": 1.0, "b": 0.0}}, "positive"),
        ({"intercept": float("nan")}, "finite number"),
        ({"standardised_coefficients": {"a": "1", "b": 1.0}}, "finite number"),
    ],
)
def test_a_card_with_a_broken_form_is_refused(estimator: dict[str, Any], message: str) -> None:
    good = {
        "standardised_coefficients": {"a": 1.0, "b": 1.0},
        "intercept": 0.0,
        "feature_means": {"a": 0.0, "b": 0.0},
        "feature_scales": {"a": 1.0, "b": 1.0},
    }
    with pytest.raises(ValueError, match=message):
        CoefficientForm.from_card(_card(**{**good, **estimator}), ["a", "b"])


def test_forms_differ_only_beyond_the_tolerance() -> None:
    form = CoefficientForm(mean=np.array([1.0]), scale=np.array([2.0]), coef=np.array([0.5]), intercept=0.25)
    assert form.differences(form) == []
    near = CoefficientForm(mean=np.array([1.0 + 1e-15]), scale=np.array([2.0]), coef=np.array([0.5]), intercept=0.25)
    assert near.differences(form) == []  # an operation-order difference (a few ulp) is the same model
    off = CoefficientForm(mean=np.array([1.0]), scale=np.array([2.0]), coef=np.array([0.5]), intercept=0.25 + 1e-9)
    assert off.differences(form) == ["intercept"]


# ------------------------------------------------------------------------------------------ the shipped models


@pytest.mark.parametrize("model_id", [m["model_id"] for m in list_models()])
def test_each_shipped_models_coefficient_form_gives_the_skops_estimators_probabilities(model_id: str) -> None:
    file = resolve_model_file(model_id)
    loaded = file.deserialise()  # checks that the card's form (if any) equals the estimator's parameters
    form = file.coefficient_form if file.coefficient_form is not None else loaded.coefficient_form
    if model_id == OLD_CARD:
        assert file.coefficient_form is None and ModelHandle(file).scored_from == SCORED_FROM_MODEL_FILE
    else:
        assert ModelHandle(file).scored_from == SCORED_FROM_COEFFICIENTS
    rng = np.random.default_rng(20261203)
    # Inputs spread over +-4 standard deviations of the training data, so logits reach several units.
    X = form.mean + rng.normal(0.0, 2.0, (2000, form.mean.size)) * form.scale
    ours = form.probability(form.contributions(X))
    theirs = loaded.estimator.predict_proba(X)[:, 1]
    # Both compute the same logit in float64 in a different order (scikit-learn: a BLAS dot product of the
    # standardised row with the uncalibrated coefficients, then Platt's a*d + b; here: the calibrated coefficients'
    # products summed, plus the calibrated intercept). Each of the ~3k+3 roundings (k = 6 features) is at most
    # 2^-53 of a term no larger than ~|coef| * 8 + |intercept| (< 10 here), so the logits differ by < 1e-13 in any
    # summation order or FMA use a BLAS chooses, and dp/dlogit = p(1 - p) <= 1/4. 1e-12 leaves a 10x margin.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert np.abs(ours - theirs).max() < 1e-12


def _copy_registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(default_registry_dir(), root, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    return root


def _rewrite_card(root: Path, model_id: str, change: Any, *, checksum: bool = True) -> None:
    """Change a card in a registry copy and (by default) record its new checksum, as a valid registration would."""
    path = root / model_id / "card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    change(card)
    data = json_bytes(card)
    path.write_bytes(data)
    reg = json.loads((root / "registry.json").read_text(encoding="utf-8"))
    if checksum:
        reg["models"][model_id]["card_sha256"] = sha256_hex(data)
    else:
        reg["models"][model_id].pop("card_sha256")
    (root / "registry.json").write_bytes(json_bytes(reg))


def test_a_card_whose_form_disagrees_with_the_skops_file_is_refused_whenever_skops_is_read(tmp_path: Path) -> None:
    root = _copy_registry(tmp_path)

    def nudge(card: dict[str, Any]) -> None:
        card["estimator"]["intercept"] += 1e-6

    _rewrite_card(root, CHAMPION, nudge)
    with pytest.raises(ModelIntegrityError, match=r"differs from the skops estimator in \['intercept'\]"):
        load_model(CHAMPION, root)
    # A run's launch checks both checksums only (registry.json vouches for both files); `models verify`,
    # `models promote` and registration are where the two forms are compared.
    assert resolve_model_file(CHAMPION, root).coefficient_form is not None


def test_an_unchecksummed_card_is_not_scored_from(tmp_path: Path) -> None:
    root = _copy_registry(tmp_path)
    _rewrite_card(root, CHAMPION, lambda card: None, checksum=False)
    handle = ModelHandle(resolve_model_file(CHAMPION, root))
    assert handle.scored_from == SCORED_FROM_MODEL_FILE
    assert handle.file.no_form_reason == "registry.json holds no card checksum"
    assert isinstance(handle.start_loading().for_scoring(), LoadedModel)


def test_the_champion_scores_from_its_card_and_ships_its_form_to_workers() -> None:
    handle = ModelHandle(resolve_model_file("champion")).start_loading()
    assert handle._future is None  # nothing deserialised in the background: the card's form is enough
    received = pickle.loads(pickle.dumps(handle))  # a Dask worker in another process
    model = received.for_scoring()
    assert isinstance(model, CardModel) and received._loaded is None and received._future is None
    assert model.coefficient_form.differences(handle.file.card_model().coefficient_form) == []
    assert model.sha256 == handle.sha256 and model.features == handle.features


def test_scores_from_the_card_equal_scores_from_the_estimator(small_cohort: Cohort) -> None:
    from immunostrat.config.run import RunConfig, ValidationConfig, load_protocol
    from immunostrat.ingest.inputs import read_inputs
    from immunostrat.modelling.scoring import score_strata
    from immunostrat.pipeline.selection import build_strata, prepare

    cfg = RunConfig(validation=ValidationConfig(as_of=AS_OF))
    prepared = prepare(read_inputs([str(small_cohort.labs)], str(small_cohort.subjects)), cfg)
    strata = build_strata(prepared, load_protocol(), cfg)
    file = resolve_model_file("champion")
    from_card = score_strata(strata, file.card_model())
    from_skops = score_strata(strata, file.deserialise())
    exact = [c for c in from_card.columns if c.startswith("contrib_") or c in ("top_features", "responder_group")]
    assert from_card.select(exact).equals(from_skops.select(exact))  # the same operations, bit for bit
    assert from_card["responder_probability"].null_count() < strata.height  # subjects were scored
    diff = (from_card["responder_probability"] - from_skops["responder_probability"]).abs().max()
    assert isinstance(diff, float) and diff < 1e-12


# ------------------------------------------------------------------------------------------ the stratify path

_FORBIDDEN = ("sklearn", "skops", "scipy")


def test_stratify_imports_no_skops_scikit_learn_or_scipy(small_cohort: Cohort, tmp_path: Path) -> None:
    # A fresh interpreter: this test session has imported scikit-learn long ago. Both a single pass and
    # in-process partitions (the path a Dask worker takes: scoring from the shipped handle).
    code = textwrap.dedent(
        f"""
        import json, sys
        from immunostrat.cli.main import main
        common = ["stratify", "--engine", "local", "--no-publish", "--as-of", "{AS_OF.isoformat()}",
                  "--labs", {str(small_cohort.labs)!r}, "--subjects", {str(small_cohort.subjects)!r}]
        codes = [main([*common, "--out", {str(tmp_path / "single")!r}]),
                 main([*common, "--partitions", "2", "--out", {str(tmp_path / "parts")!r}])]
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({_FORBIDDEN!r}))
        print(json.dumps({{"codes": codes, "loaded": loaded}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0], "loaded": []}, done.stderr
    for name in ("single", "parts"):
        (run_json,) = (tmp_path / name).glob("*/run.json")
        assert json.loads(run_json.read_text(encoding="utf-8"))["model"]["scored_from"] == SCORED_FROM_COEFFICIENTS


def test_a_model_without_a_coefficient_form_is_scored_from_skops_and_the_run_says_so(
    small_cohort: Cohort, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from immunostrat.cli.main import main

    args = ["stratify", "--engine", "local", "--no-publish", "--as-of", AS_OF.isoformat(), "--model", OLD_CARD]
    code = main(
        [*args, "--labs", str(small_cohort.labs), "--subjects", str(small_cohort.subjects), "--out", str(tmp_path)]
    )
    assert code == 0
    (run_json,) = tmp_path.glob("*/run.json")
    run = json.loads(run_json.read_text(encoding="utf-8"))
    assert run["model"]["scored_from"] == SCORED_FROM_MODEL_FILE
    assert "card (version 1) has no coefficient form" in caplog.text
    # That card has no training reference either: the drift gate says so rather than failing the run.
    assert run["drift"]["reference_available"] is False and "no training reference" in run["drift"]["note"]


def test_models_verify_compares_the_two_forms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from immunostrat.cli.main import main

    assert main(["models", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ok {CHAMPION}" in out and "agree with the skops estimator; runs score from the card" in out
    assert f"ok {OLD_CARD}" in out and "no coefficient form; runs deserialise the skops file" in out
    root = _copy_registry(tmp_path)

    def nudge(card: dict[str, Any]) -> None:
        card["estimator"]["feature_scales"]["c3"] *= 1.001

    _rewrite_card(root, CHAMPION, nudge)
    assert main(["models", "verify", CHAMPION, "--registry", str(root)]) == 2
    assert f"FAILED {CHAMPION}" in capsys.readouterr().out
