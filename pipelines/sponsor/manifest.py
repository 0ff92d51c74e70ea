"""The sponsor snapshots' `manifest.json`: one typed declaration of its keys, and the writer that checks against it.

`SnapshotManifest` declares every key of a stratify snapshot's manifest and `FollowUpManifest` the keys a monitor
run's follow-up snapshot adds. Each field's `description` is the documentation: the manifest tables of
docs/output.md and docs/data-dictionary.json are generated from these models (`manifest_keys`), and
`write_snapshot_manifest` refuses a manifest whose keys differ from its model's, so a key cannot be written
without being documented, nor documented without being written.

The models only declare: the writer compares keys (`key_differences`) and writes the dict it built, so the file's
text does not depend on how pydantic would parse or serialise the values. This module imports pydantic and the I/O
helpers only, so the data dictionary (a layer below the publishers) may read the declaration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from immunostrat.ingest.io import sha256_file, write_json_atomic
from immunostrat.schemas.records import record_keys
from immunostrat.sponsor.snapshot import SNAPSHOT_MANIFEST

__all__ = [
    "FollowUpManifest",
    "ManifestKeyError",
    "SnapshotManifest",
    "follow_up_only_keys",
    "key_differences",
    "manifest_keys",
    "write_snapshot_manifest",
]


class _Declared(BaseModel):
    """A part of the manifest whose keys are all declared (`key_differences` compares them)."""

    model_config = ConfigDict(extra="forbid")


class ManifestCounts(_Declared):
    """`counts`: the run's row accounting and what was published."""

    lab_rows: dict[str, Any] = Field(
        description="Lab-row accounting: `rows_read`, `accepted`, `outside_panel`, `quarantined`, "
        "`quarantined_by_reason`, `outside_panel_by_test`."
    )
    subject_rows: dict[str, Any] = Field(description="Subjects file: `rows_read`, `accepted`, `quarantined`.")
    published_rows: int = Field(description="Rows of the sponsor table (all studies).")
    published_rows_by_study: dict[str, int] = Field(description="Rows per study.")


class ManifestPrivacy(_Declared):
    """`privacy`: how subjects, sites and dates were protected."""

    pseudonym: dict[str, Any] = Field(
        description="`method`, `key_id` (8 hex digits naming the key, never the key) and "
        "`key_source` (`environment`, `key file` or `demo key file`)."
    )
    site: str = Field(description="`pseudonymise`, `keep` or `drop`: what the `site` column holds.")
    dates: str = Field(description="`study_day`, or `shift` when `reference_date_shifted` is published.")
    max_shift_days: int | None = Field(description="With `shift`: the largest offset in days; else null.")
    age_bands: list[str] = Field(description="The labels `age_band` can take.")
    withheld_columns: dict[str, str] = Field(description="Strata columns not published as they are, and why.")


class SnapshotManifest(_Declared):
    """`RUN/sponsor/manifest.json` of a stratify run's snapshot, keys in the order they are written."""

    format: str = Field(
        description="`immunostrat-sponsor-snapshot/1` (a follow-up snapshot: `immunostrat-sponsor-follow-up/1`)."
    )
    schema_version: str = Field(description="Version of the sponsor dataset contract (semantic versioning).")
    run_id: str = Field(description="The run published.")
    as_of: str | None = Field(description="The run's as-of date.")
    started_at: str | None = Field(description="Start of the run (UTC).")
    finished_at: str | None = Field(description="End of the run (UTC).")
    code_version: str | None = Field(description="immunostrat version that ran the run.")
    publisher_version: str = Field(description="immunostrat version that wrote the snapshot.")
    versions: dict[str, str] = Field(description="Versions of the run's software stack (as in run.json).")
    model: dict[str, Any] = Field(
        description="The scoring model: `model_id`, `sha256`, `features`, `cutoffs`, `cutoffs_source`."
    )
    protocol: dict[str, Any] = Field(description="The eligibility protocol: `protocol_id`, `version`.")
    parameters: dict[str, Any] = Field(
        description="The run configuration (as in run.json; local paths reduced to file names)."
    )
    inputs: list[dict[str, Any]] = Field(
        description="Per input file: `kind`, `sha256`, `rows` (paths are not published)."
    )
    counts: ManifestCounts = Field(description="Row counts of the run and of the snapshot.")
    privacy: ManifestPrivacy = Field(description="The privacy settings the snapshot was published with.")
    published_at: str = Field(description="When this snapshot was written (UTC).")
    partitioning: dict[str, Any] = Field(description="`flavor` (`hive`) and `columns` (`study_id`: `string`).")
    studies: dict[str, Any] = Field(
        description="Per study: `path` (its partition folder), `rows`, `files` (`path`, `rows`, `sha256`)."
    )
    files: dict[str, dict[str, str]] = Field(
        description="Per other file of the snapshot (`report.html`, `data_dictionary.*`, the follow-up "
        "snapshot's aggregate tables): `sha256`."
    )


class FollowUpManifest(SnapshotManifest):
    """`RUN/sponsor/manifest.json` of a monitor run's follow-up snapshot: the stratify snapshot's keys and these."""

    endpoint_definition: dict[str, Any] = Field(description="The endpoint definition the endpoints were derived with.")
    strata_run: dict[str, Any] = Field(
        description="The stratify run the predicted groups came from: `run_id` and its `model`."
    )


class ManifestKeyError(RuntimeError):
    """A manifest about to be written does not have exactly its declared keys (a programming error)."""


def manifest_keys(model: type[SnapshotManifest] = SnapshotManifest) -> list[dict[str, str]]:
    """The documented keys of a snapshot manifest (dotted for nested parts): key, JSON type, meaning."""
    return record_keys(model)


def follow_up_only_keys() -> list[str]:
    """The keys a follow-up snapshot's manifest has beyond the stratify snapshot's."""
    return [k for k in FollowUpManifest.model_fields if k not in SnapshotManifest.model_fields]


def key_differences(model: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """How the keys of `data` differ from those `model` declares, nested parts included (empty: they match).

    Only keys are compared, never values: a manifest is checked for being documented, not re-validated.
    """
    fields = model.model_fields
    problems = [f"undeclared {prefix}{k}" for k in data if k not in fields]
    problems += [f"missing {prefix}{k}" for k in fields if k not in data]
    for name, field in fields.items():
        part = field.annotation
        if isinstance(part, type) and issubclass(part, BaseModel) and isinstance(data.get(name), Mapping):
            problems += key_differences(part, data[name], f"{prefix}{name}.")
    return problems


def write_snapshot_manifest(
    staging: Path,
    snapshot_format: str,
    *,
    provenance: Mapping[str, Any],
    study_files: Mapping[str, Any],
    rows: Mapping[str, int],
    files: Mapping[str, Path],
    declared: type[SnapshotManifest] = SnapshotManifest,
) -> dict[str, Any]:
    """Write a staged snapshot's manifest, last (the stratify and the follow-up snapshots share its layout): the
    provenance, the published row counts, each study's data files and the sha256 of every other file.

    Raises:
        ManifestKeyError: The manifest's keys are not exactly those `declared` (its model) documents.
    """
    manifest = {
        "format": snapshot_format,
        **provenance,
        "published_at": dt.datetime.now(dt.UTC).isoformat(),
        "partitioning": {"flavor": "hive", "columns": {"study_id": "string"}},
        "counts": {**provenance["counts"], "published_rows": sum(rows.values()), "published_rows_by_study": dict(rows)},
        "studies": study_files,
        "files": {name: {"sha256": sha256_file(p)} for name, p in files.items()},
    }
    problems = key_differences(declared, manifest)
    if problems:
        raise ManifestKeyError(f"{SNAPSHOT_MANIFEST} keys differ from {declared.__name__}: " + "; ".join(problems))
    write_json_atomic(manifest, staging / SNAPSHOT_MANIFEST)
    return manifest
