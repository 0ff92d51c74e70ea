"""The layout by capability (issue 14): one rule from import name to folder, and the old documented import paths
still working for one release."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOTS = {
    "immunostrat.schemas": ROOT / "schemas",
    "immunostrat.models": ROOT / "models",
    "immunostrat": ROOT / "pipelines",
}


def _folder_of(module: str) -> Path:
    """The rule: immunostrat.a.b is pipelines/a/b(.py); immunostrat.schemas.* schemas/; immunostrat.models.* models/."""
    for prefix, folder in ROOTS.items():
        if module == prefix or module.startswith(prefix + "."):
            return folder.joinpath(*module.removeprefix(prefix).strip(".").split(".")) if module != prefix else folder
    raise AssertionError(module)


@pytest.mark.parametrize(
    "module",
    [
        "immunostrat.cli.main",
        "immunostrat.config.run",
        "immunostrat.ingest.readers.sdtm",
        "immunostrat.pipeline.selection",
        "immunostrat.pipeline.engine.execute",
        "immunostrat.modelling.registry",
        "immunostrat.sponsor.publish",
        "immunostrat.reporting.report",
        "immunostrat.followup.endpoints",
        "immunostrat.schemas.outputs",
    ],
)
def test_an_import_name_names_its_file(module: str) -> None:
    loaded = importlib.import_module(module)
    assert loaded.__file__ is not None
    assert Path(loaded.__file__).resolve() == _folder_of(module).with_suffix(".py").resolve()


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("immunostrat.publish", "read_current", "immunostrat.sponsor.publish"),
        ("immunostrat.publish", "read_snapshot", "immunostrat.sponsor.publish"),
        ("immunostrat.followup_settings", "ImmuneCourseConfig", "immunostrat.config.followup"),
        ("immunostrat.followup_settings", "LabGradesConfig", "immunostrat.config.followup"),
        ("immunostrat.endpoint_definition", "load_endpoint_definition", "immunostrat.config.endpoints"),
        ("immunostrat.datadict", "main", "immunostrat.reporting.datadict"),
    ],
)
def test_documented_imports_of_the_last_release_still_work(old: str, name: str, new: str) -> None:
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_the_old_datadict_command_still_runs() -> None:
    command = [sys.executable, "-m", "immunostrat.datadict", "--check"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def test_no_folder_is_named_like_the_package() -> None:
    """setuptools' editable finder warns that a folder named like the package would shadow it on imports from
    the checkout; the Makefile filters that note, so this test keeps it true that there is no such folder."""
    root = Path(__file__).resolve().parents[1]
    assert not (root / "immunostrat").exists()
    assert not (root / "pipelines" / "immunostrat").exists()
