"""Tests run in an environment of their own (tests/conftest.py), whatever the shell that starts them exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from immunostrat.modelling.registry import default_registry_dir
from immunostrat.sponsor.pseudonym import KEY_FILE_ENV, load_key

from .conftest import TEST_KNOBS

REPO = Path(__file__).resolve().parents[1]

#: What a developer's shell might export (the values of the issue-11 report and worse).
AMBIENT = {
    "IMMUNOSTRAT_PSEUDONYM_KEY": "something-ambient-0123456789abcdef0123456789abcdef",
    "IMMUNOSTRAT_PSEUDONYM_KEY_FILE": "/nonexistent/ambient-pseudonym.key",
    "IMMUNOSTRAT_DATA_ROOTS": "/nonexistent",
    "IMMUNOSTRAT_MODEL_REGISTRY": "/nonexistent",
    "PREFECT_API_URL": "http://127.0.0.1:9/api",
    "PREFECT_API_KEY": "ambient-api-key",
    "PREFECT_PROFILE": "ambient-profile",
    "PREFECT_HOME": "/nonexistent/prefect-home",
}

# Prints the Prefect settings a child process resolves (what `immunostrat stratify` started by a test would use).
PREFECT_SETTINGS = """
import json, os
from prefect.context import get_settings_context
ctx = get_settings_context()
print(json.dumps({"home": str(ctx.settings.home), "api_url": ctx.settings.api.url,
                  "api_key": ctx.settings.api.key is not None, "profile": ctx.profile.name,
                  "env": {k: v for k, v in os.environ.items() if k.startswith(("PREFECT_", "IMMUNOSTRAT_"))}}))
"""


def product_variables() -> set[str]:
    """Every IMMUNOSTRAT_* name the product's code mentions (the variables it may read)."""
    names: set[str] = set()
    for path in (REPO / "pipelines").rglob("*.py"):
        names |= set(re.findall(r"\bIMMUNOSTRAT_[A-Z0-9_]+", path.read_text(encoding="utf-8")))
    return names


def test_the_product_reads_no_test_knob() -> None:
    found = product_variables()
    assert {"IMMUNOSTRAT_PSEUDONYM_KEY", "IMMUNOSTRAT_MODEL_REGISTRY", "IMMUNOSTRAT_DATA_ROOTS"} <= found
    assert not found & set(TEST_KNOBS)  # conftest keeps the knobs: the product must never read them


def test_the_session_environment_is_isolated() -> None:
    """Also run under an ambient environment by the test below: nothing of it may show here."""
    for name in product_variables() - {KEY_FILE_ENV}:
        assert name not in os.environ, name
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        assert name not in os.environ, name
    home = Path(os.environ["PREFECT_HOME"])
    assert home.is_dir() and home != Path.home() / ".prefect" and home.name == "prefect"
    assert Path(os.environ["XDG_CONFIG_HOME"]).parent == home.parent
    key = load_key()  # the fixed test key, not one from the shell
    assert key.source == "key file" and key.path == Path(os.environ[KEY_FILE_ENV])
    assert key.path.read_text(encoding="utf-8").startswith("immunostrat-tests-only-")
    assert (default_registry_dir() / "registry.json").is_file()  # the packaged registry, not $..._MODEL_REGISTRY


def test_subprocesses_inherit_the_isolated_environment() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PREFECT_SETTINGS], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["home"] == os.environ["PREFECT_HOME"]
    assert got["api_url"] is None and not got["api_key"]  # ephemeral Prefect, never the user's server
    assert got["profile"] != AMBIENT["PREFECT_PROFILE"]
    assert got["env"]["IMMUNOSTRAT_PSEUDONYM_KEY_FILE"] == os.environ[KEY_FILE_ENV]
    assert not set(got["env"]) & (set(AMBIENT) - {"IMMUNOSTRAT_PSEUDONYM_KEY_FILE", "PREFECT_HOME"})


def test_an_ambient_environment_does_not_reach_the_tests() -> None:
    """The two tests above, in a pytest started from a shell that exports every variable of AMBIENT."""
    here = Path(__file__).relative_to(REPO).as_posix()
    tests = [
        f"{here}::test_the_session_environment_is_isolated",
        f"{here}::test_subprocesses_inherit_the_isolated_environment",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO,
        env={**os.environ, **AMBIENT},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout
