"""The outputs of every run shape match the golden fingerprints taken before the one-pipeline redesign.

Each scenario (the demo cohort single-pass, partitioned and streamed; SDTM + FHIR + expression; the CDISC pilot)
runs through the command line and is reduced to order-independent table hashes and a declared subset of
run.json (`tests/golden/fingerprint.py`). A table or key added since is an addition, not a change; a table
that existed must match exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .golden.fingerprint import GOLDEN, SCENARIOS, available, fingerprint_scenario

EXPECTED: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("golden")


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_outputs_match_their_golden_fingerprint(name: str, work: Path) -> None:
    if not available(name):
        pytest.skip("the CDISC pilot samples are in ../shared beside the repository")
    got = fingerprint_scenario(name, work)
    expected = EXPECTED[name]
    for table, fingerprint in expected["tables"].items():
        assert table in got["tables"], f"{name}: {table} is no longer written"
        assert got["tables"][table] == fingerprint, f"{name}: {table} changed"
    for key, value in expected["run_json"].items():
        assert got["run_json"][key] == value, f"{name}: run.json {key} changed"
