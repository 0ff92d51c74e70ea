"""The modelling package split by job (issue 14): scoring and the registry import no scikit-learn, and the names
``immunostrat.modelling.model`` documented in the last release still import from their new homes."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("name", "new"),
    [
        ("train_responder_model", "immunostrat.modelling.fitting"),
        ("TrainingConfig", "immunostrat.config.run"),
        ("score_strata", "immunostrat.modelling.scoring"),
        ("linear_logit_parts", "immunostrat.modelling.estimator"),
    ],
)
def test_the_old_model_module_re_exports_its_names(name: str, new: str) -> None:
    old = importlib.import_module("immunostrat.modelling.model")
    assert getattr(old, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(
    "module",
    [
        "immunostrat.modelling.scoring",
        "immunostrat.modelling.registry",
        "immunostrat.modelling.drift",
        "immunostrat.modelling.markdown",
        "immunostrat.modelling.card",
    ],
)
def test_scoring_and_the_registry_import_no_scikit_learn(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('sklearn', 'skops') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
