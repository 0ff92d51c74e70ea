"""The current-snapshot manifest, ``OUT/sponsor-manifest.json``: which snapshot of each study is current (stratify
snapshots under ``studies``, follow-up snapshots under ``follow_up``), updated under a lock, and read back by
sponsors' code (:func:`read_current`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.errors import UserError
from immunostrat.ingest.io import sha256_file, write_json_atomic
from immunostrat.schemas.records import RunRecord
from immunostrat.sponsor.pseudonym import PseudonymKey
from immunostrat.sponsor.snapshot import SNAPSHOT_MANIFEST

__all__ = [
    "CURRENT_FORMAT",
    "CURRENT_MANIFEST",
    "PublishError",
    "current_entries",
    "key_change_error",
    "key_conflicts",
    "locked",
    "read_current",
    "read_current_manifest",
    "update_current",
]

CURRENT_MANIFEST = "sponsor-manifest.json"
CURRENT_FORMAT = "immunostrat-sponsor-current/1"


class PublishError(UserError, RuntimeError):
    """The run cannot be published (not completed, already published, or the key changed for a study)."""


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Exclusive, waiting lock on OUT/.sponsor-manifest.lock (created once, never deleted) for one publication."""
    with open(out_dir / ".sponsor-manifest.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_current_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"format": CURRENT_FORMAT, "studies": {}}
    current = json.loads(path.read_text(encoding="utf-8"))
    if current.get("format") != CURRENT_FORMAT:
        raise PublishError(f"{path}: unknown format {current.get('format')!r} (expected {CURRENT_FORMAT})")
    return dict(current)


def key_conflicts(
    current: dict[str, Any], studies: Sequence[str], key: PseudonymKey, section: str = "studies"
) -> list[str]:
    """Studies whose current snapshot (stratify's `studies`, or `follow_up`) used another key: pseudonyms differ."""
    entries = {**current.get("studies", {}), **current.get(section, {})}
    return [
        f"{s} (current key id {entries[s]['key_id']}, run {entries[s]['run_id']})"
        for s in studies
        if s in entries and entries[s].get("key_id") != key.key_id
    ]


def key_change_error(conflicts: list[str], key: PseudonymKey) -> PublishError:
    return PublishError(
        f"the pseudonym key changed (this key id: {key.key_id}) for: {', '.join(conflicts)}. Every subject would "
        "get a new pseudonym. Use the project's key, or pass --allow-key-change to rotate the key on purpose."
    )


def update_current(
    out_dir: Path,
    entries: dict[str, dict[str, Any]],
    key: PseudonymKey,
    make_current: bool | None,
    allow_key_change: bool,
    *,
    section: str = "studies",
) -> list[str]:
    """Point studies at this run in OUT/sponsor-manifest.json; the caller holds `locked(out_dir)`.

    `section` is `studies` (stratify snapshots) or `follow_up` (monitor snapshots): each study has at most one
    current snapshot of each kind, side by side.
    """
    path = out_dir / CURRENT_MANIFEST
    current = read_current_manifest(path)
    conflicts = key_conflicts(current, list(entries), key, section)
    if conflicts and not allow_key_change:
        raise key_change_error(conflicts, key)
    current.setdefault(section, {})
    moved = []
    for study, entry in entries.items():
        previous = current[section].get(study)
        newer = previous is None or str(entry["run_id"]) >= str(previous["run_id"])
        if make_current or (make_current is None and newer):
            current[section][study] = entry
            moved.append(study)
    if moved:
        current["format"] = CURRENT_FORMAT
        current["updated_at"] = dt.datetime.now(dt.UTC).isoformat()
        current[section] = dict(sorted(current[section].items()))
        write_json_atomic(current, path)
    return moved


def current_entries(
    run: RunRecord, final: Path, studies: Mapping[str, Any], manifest: Mapping[str, Any], key: PseudonymKey
) -> dict[str, dict[str, Any]]:
    """The OUT/sponsor-manifest.json entry of each study of a snapshot (paths relative to OUT)."""
    out_dir = final.parent.parent
    return {
        study: {
            "run_id": run.run_id,
            "snapshot": os.path.relpath(final, out_dir),
            "data": os.path.relpath(final / info["path"], out_dir),
            "manifest": os.path.relpath(final / SNAPSHOT_MANIFEST, out_dir),
            "rows": info["rows"],
            "schema_version": manifest["schema_version"],
            "key_id": key.key_id,
            "published_at": manifest["published_at"],
        }
        for study, info in studies.items()
    }


def read_current(out_dir: str | Path, studies: Sequence[str] | None = None, *, verify: bool = True) -> pl.DataFrame:
    """The current snapshot of each study named in ``OUT/sponsor-manifest.json``, as one table.

    Args:
        out_dir: The folder holding the runs and `sponsor-manifest.json`.
        studies: Only these studies (default: all in the manifest).
        verify: Check every file's SHA-256 against its snapshot manifest first.

    Raises:
        PublishError: No manifest, an unknown study, a checksum mismatch, or studies on different major
            schema versions.
    """
    out = Path(out_dir)
    current = read_current_manifest(out / CURRENT_MANIFEST)
    if not current["studies"]:
        raise PublishError(f"{out / CURRENT_MANIFEST} names no published study")
    wanted = list(studies) if studies is not None else list(current["studies"])
    unknown = [s for s in wanted if s not in current["studies"]]
    if unknown:
        raise PublishError(f"not published in {out}: {', '.join(unknown)}; known: {', '.join(current['studies'])}")
    majors = {str(current["studies"][s]["schema_version"]).split(".")[0] for s in wanted}
    if len(majors) > 1:
        raise PublishError(f"the current snapshots of {', '.join(wanted)} have different major schema versions")
    frames = []
    for study in wanted:
        entry = current["studies"][study]
        snapshot = json.loads((out / entry["manifest"]).read_text(encoding="utf-8"))
        if verify:
            for item in snapshot["studies"][study]["files"]:
                path = out / entry["snapshot"] / item["path"]
                if sha256_file(path) != item["sha256"]:
                    raise PublishError(f"{path} does not match the SHA-256 in its snapshot manifest")
        part = pl.read_parquet(out / entry["data"] / "*.parquet")
        frames.append(part.with_columns(study_id=pl.lit(study, pl.String)))
    return pl.concat(frames, how="diagonal_relaxed")
