"""The sponsor snapshots' manifest.json: one declaration (`immunostrat.sponsor.manifest`) that the writer checks
and the data dictionary documents. The written manifests of both snapshots are checked in test_publish.py
(stratify) and test_monitor.py (follow-up)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from immunostrat.reporting.datadict import sponsor_manifest_keys
from immunostrat.sponsor.manifest import (
    FollowUpManifest,
    ManifestKeyError,
    SnapshotManifest,
    follow_up_only_keys,
    key_differences,
    manifest_keys,
    write_snapshot_manifest,
)

ROOT = Path(__file__).resolve().parents[1]


def declared_layout(model: type[SnapshotManifest]) -> dict[str, Any]:
    """Every declared key of `model` as a manifest-shaped dict: nested parts (counts, privacy) as dicts of None."""
    layout: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        part = field.annotation
        nested = isinstance(part, type) and issubclass(part, BaseModel)
        layout[name] = dict.fromkeys(part.model_fields) if nested else None  # type: ignore[union-attr]
    return layout


def test_key_differences_name_undeclared_and_missing_keys_at_every_level() -> None:
    manifest = declared_layout(SnapshotManifest)
    assert key_differences(SnapshotManifest, manifest) == []
    manifest["debug_path"] = "/home/me"  # a key added in code but not declared
    del manifest["as_of"]
    manifest["counts"]["published_subjects"] = 3
    del manifest["privacy"]["site"]
    assert key_differences(SnapshotManifest, manifest) == [
        "undeclared debug_path",
        "missing as_of",
        "undeclared counts.published_subjects",
        "missing privacy.site",
    ]
    # The follow-up snapshot declares two keys more: a stratify manifest misses exactly those.
    assert key_differences(FollowUpManifest, declared_layout(SnapshotManifest)) == [
        "missing endpoint_definition",
        "missing strata_run",
    ]


def _provenance(**extra: Any) -> dict[str, Any]:
    """The provenance part of a manifest: every declared key the writer does not add itself."""
    layout = declared_layout(SnapshotManifest)
    added = {"format", "published_at", "partitioning", "studies", "files"}
    provenance = {k: v for k, v in layout.items() if k not in added}
    provenance["counts"] = {"lab_rows": {}, "subject_rows": {}}
    return {**provenance, **extra}


def test_the_writer_refuses_an_undeclared_key_and_writes_nothing(tmp_path: Path) -> None:
    common: dict[str, Any] = {"study_files": {}, "rows": {"S1": 2, "S2": 3}, "files": {}}
    with pytest.raises(ManifestKeyError, match="undeclared debug_path"):
        write_snapshot_manifest(tmp_path, "f/1", provenance=_provenance(debug_path="x"), **common)
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ManifestKeyError, match="missing endpoint_definition; missing strata_run"):
        write_snapshot_manifest(tmp_path, "f/1", provenance=_provenance(), declared=FollowUpManifest, **common)
    written = write_snapshot_manifest(tmp_path, "f/1", provenance=_provenance(), **common)
    assert json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8")) == written
    assert set(written) == set(SnapshotManifest.model_fields) and key_differences(SnapshotManifest, written) == []
    assert written["counts"]["published_rows"] == 5  # 2 + 3
    assert written["counts"]["published_rows_by_study"] == {"S1": 2, "S2": 3}


def test_the_data_dictionary_documents_every_declared_key() -> None:
    documented = [key for key, _, _ in sponsor_manifest_keys()]
    nested = [f"{part}.{k}" for part in ("counts", "privacy") for k in declared_layout(SnapshotManifest)[part]]
    assert documented == [k["key"] for k in manifest_keys()] + follow_up_only_keys()
    assert set(documented) == set(SnapshotManifest.model_fields) | set(nested) | {"endpoint_definition", "strata_run"}
    output_md = (ROOT / "docs" / "output.md").read_text(encoding="utf-8")
    table = output_md.split("### sponsor/manifest.json", 1)[1].split("###", 1)[0]
    assert [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")] == documented
