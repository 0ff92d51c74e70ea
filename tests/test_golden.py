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

# run.json entries added since the fingerprints were taken (issue 11): named here, so nothing else may appear.
ADDED_KEYS = (
    "counts.subjects.fields_quarantined",  # bad optional subject fields, quarantined alone
    "counts.subjects.fields_quarantined_by_reason",
)


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    """Dotted paths to the leaves of nested dicts (per-test and per-reason tables count as leaves' parents)."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}.{key}").items()}
    return {prefix: value}


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
        was, now = _flat(value, key), _flat(got["run_json"][key], key)
        changed = {k for k in was if now.get(k, object()) != was[k]}
        assert not changed, f"{name}: run.json {sorted(changed)} changed"
        added = {k for k in now if k not in was and not k.startswith(ADDED_KEYS)}
        assert not added, f"{name}: run.json gained {sorted(added)}, not named in ADDED_KEYS"
