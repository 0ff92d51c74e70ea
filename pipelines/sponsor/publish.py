"""Publish a run for sponsors: a pseudonymised, versioned, self-describing snapshot inside the run folder.

``publish_run(RUN)`` reads ``RUN/strata.parquet`` and ``RUN/run.json`` and writes::

    OUT/
      sponsor-manifest.json                 the current snapshot per study (updated atomically, under a lock)
      <run_id>/
        sponsor/                            this run's complete snapshot (folder renamed into place at the end)
          data/study_id=<study>/part-0.parquet   hive-partitioned sponsor table, one folder per study
          manifest.json                     provenance, privacy settings, counts, files with rows and SHA-256
          data_dictionary.json / .md        every column: type, unit, allowed values, description
          report.html                       the self-contained report (sponsor-safe, see immunostrat.reporting.report)

The sponsor contract (``immunostrat.schemas.sponsor``) is enforced before anything is written. Pseudonyms
come from ``immunostrat.sponsor.pseudonym`` (HMAC-SHA256 under the project key; the key id is recorded, never the key).
Consumers read ``OUT/sponsor-manifest.json`` and then exactly the folders it names (:func:`read_current`), so
they never read two runs of a study as one. See docs/sponsor.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl

from immunostrat import __version__
from immunostrat.config.features import FeatureSpec
from immunostrat.config.run import PublishConfig
from immunostrat.ingest.atomic import staged_folder
from immunostrat.ingest.io import sha256_file, write_json_atomic, write_parquet_atomic, write_text_atomic
from immunostrat.reporting.datadict import render_sponsor_markdown, sponsor_dictionary
from immunostrat.reporting.report import render_report, report_columns
from immunostrat.schemas.records import RUN_JSON, RunRecord, as_run_record, read_run_record
from immunostrat.schemas.sponsor import SPONSOR_SCHEMA_VERSION, WITHHELD, validate_sponsor
from immunostrat.sponsor.current import (
    CURRENT_MANIFEST,
    PublishError,
    current_entries,
    key_change_error,
    key_conflicts,
    locked,
    read_current,
    read_current_manifest,
    update_current,
)
from immunostrat.sponsor.manifest import write_snapshot_manifest
from immunostrat.sponsor.pseudonym import PseudonymKey, load_key
from immunostrat.sponsor.snapshot import DATA_DIR, SNAPSHOT_DIR, SNAPSHOT_MANIFEST, read_snapshot
from immunostrat.sponsor.table import (
    age_band_labels,
    read_strata_for_sponsor,
    run_features,
    sponsor_rows,
    sponsor_table,
    strata_columns_for_sponsor,
)

# `read_current` and `read_snapshot` are re-exported: docs/sponsor.md imports them from here.
__all__ = [
    "CURRENT_MANIFEST",
    "DATA_DIR",
    "SNAPSHOT_DIR",
    "PublishConfig",
    "PublishError",
    "PublishResult",
    "age_band_labels",
    "provenance_of",
    "publication",
    "publish_config_of",
    "publish_run",
    "read_current",
    "read_snapshot",
    "run_features",
    "sponsor_table",
    "write_partitions",
    "write_report",
]

PART_FILE = "part-0.parquet"
DICTIONARY_JSON = "data_dictionary.json"
DICTIONARY_MD = "data_dictionary.md"
REPORT_FILE = "report.html"
SNAPSHOT_FORMAT = "immunostrat-sponsor-snapshot/1"
#: run.json parameters that hold local paths: only their file name is published.
_PATH_PARAMETERS = frozenset({"alias_file", "ifn_methods_file", "registry", "key_file"})


@dataclass(frozen=True)
class PublishResult:
    """What a publish wrote.

    Attributes:
        snapshot_dir: ``RUN/sponsor``.
        manifest: The snapshot manifest (``RUN/sponsor/manifest.json``).
        current_manifest: ``OUT/sponsor-manifest.json``.
        made_current: Studies whose current snapshot is now this run.
        key: The pseudonym key used (its id and source; ``key.created`` when the demo key was created now).
        report: The report, when written.
    """

    snapshot_dir: Path
    manifest: dict[str, Any]
    current_manifest: Path
    made_current: list[str]
    key: PseudonymKey
    report: Path | None

    @property
    def rows(self) -> int:
        """Rows published over all studies."""
        return int(self.manifest["counts"]["published_rows"])


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def _strip_paths(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _strip_paths(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_paths(v, key) for v in value]
    if key in _PATH_PARAMETERS and isinstance(value, str):
        return Path(value).name
    return value


def provenance_of(run: RunRecord, cfg: PublishConfig, key: PseudonymKey) -> dict[str, Any]:
    """Everything a sponsor needs to trust the data, and nothing that identifies a subject or a local path."""
    counts = run.counts
    subjects = counts.subjects
    return {
        "schema_version": SPONSOR_SCHEMA_VERSION,
        "run_id": run.run_id,
        "as_of": run.as_of,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "code_version": run.versions.get("immunostrat"),
        "publisher_version": __version__,
        "versions": run.versions,
        "model": run.model.model_dump(exclude_unset=True) if run.model else {},
        "protocol": run.protocol or {},
        "parameters": _strip_paths(run.parameters),
        "inputs": [{"kind": i.kind, "sha256": i.sha256, "rows": i.rows} for i in run.inputs],
        "counts": {
            "lab_rows": {
                k: getattr(counts, k)
                for k in (
                    "rows_read",
                    "accepted",
                    "outside_panel",
                    "quarantined",
                    "quarantined_by_reason",
                    "outside_panel_by_test",
                )
            },
            "subject_rows": {
                k: getattr(subjects, k) if subjects else None for k in ("rows_read", "accepted", "quarantined")
            },
        },
        "privacy": {
            "pseudonym": {
                "method": "HMAC-SHA256 over (study_id, subject_id), first 32 hex digits",
                "key_id": key.key_id,
                "key_source": key.source,
            },
            "site": cfg.site,
            "dates": cfg.dates,
            "max_shift_days": cfg.max_shift_days if cfg.dates == "shift" else None,
            "age_bands": age_band_labels(cfg.age_bands),
            "withheld_columns": WITHHELD,
        },
    }


def _parquet_metadata(provenance: dict[str, Any], study: str) -> dict[str, str]:
    model = provenance.get("model", {})
    return {
        "immunostrat_run_id": str(provenance["run_id"]),
        "immunostrat_version": str(provenance.get("code_version")),
        "immunostrat_schema_version": str(provenance["schema_version"]),
        "immunostrat_model_id": str(model.get("model_id")),
        "immunostrat_model_sha256": str(model.get("sha256")),
        "immunostrat_pseudonym_key_id": str(provenance["privacy"]["pseudonym"]["key_id"]),
        "immunostrat_study_id": study,
        "immunostrat_provenance": json.dumps(provenance, sort_keys=True, default=str),
    }


# --------------------------------------------------------------------------------------------------
# Publish
# --------------------------------------------------------------------------------------------------


def _read_run(run_dir: Path) -> RunRecord:
    if not (run_dir / RUN_JSON).is_file():
        raise PublishError(f"{run_dir} is not a run folder: it has no run.json")
    run = read_run_record(run_dir)
    if not run.completed:
        raise PublishError(f"run {run.run_id} did not complete (status {run.status!r}): nothing to publish")
    return run


def _checked_strata(run_dir: Path, run: RunRecord) -> Path:
    path = run_dir / "strata.parquet"
    if not path.is_file():
        raise PublishError(f"{path} is missing")
    written = run.outputs.get("strata.parquet")
    expected = written.sha256 if written else None
    if expected and sha256_file(path) != expected:
        raise PublishError(f"{path} does not match the SHA-256 in run.json: the run folder was changed after the run")
    return path


def publish_config_of(run: RunRecord | Mapping[str, Any]) -> PublishConfig:
    """The publish settings a run was made with (run.json `parameters.publish`), else the defaults."""
    saved = as_run_record(run).parameters.get("publish")
    return PublishConfig.model_validate(saved) if isinstance(saved, dict) else PublishConfig()


def write_partitions(
    table: pl.DataFrame, data_dir: Path, provenance: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, int]]:
    studies: dict[str, Any] = {}
    rows: dict[str, int] = {}
    for (study,), part in table.group_by("study_id", maintain_order=True):
        folder = f"study_id={quote(str(study), safe='')}"
        path = write_parquet_atomic(
            part.drop("study_id"), data_dir / folder / PART_FILE, metadata=_parquet_metadata(provenance, str(study))
        )
        rel = f"{DATA_DIR}/{folder}/{PART_FILE}"
        studies[str(study)] = {
            "path": f"{DATA_DIR}/{folder}",
            "rows": part.height,
            "files": [{"path": rel, "rows": part.height, "sha256": sha256_file(path)}],
        }
        rows[str(study)] = part.height
    return studies, rows


@dataclass(frozen=True)
class _ChunkedStrata:
    """A run too large to pseudonymise in one piece: its strata file, read `cfg.chunk_subjects` rows at a time."""

    path: Path
    rows: int
    key: PseudonymKey


def _write_chunked(
    strata: _ChunkedStrata,
    data_dir: Path,
    provenance: dict[str, Any],
    cfg: PublishConfig,
    features: Sequence[FeatureSpec],
) -> tuple[dict[str, Any], dict[str, int], pl.DataFrame]:
    """`_write_partitions` with bounded memory; also returns the columns the report reads.

    Pass 1 pseudonymises chunk after chunk, checks each chunk against the sponsor contract and spills each
    study's rows into 16 buckets by the first hex digit of the pseudonym; pass 2 sorts each bucket, checks that
    its pseudonyms are unique (the one rule that spans chunks) and writes it as one file. Bucket files in name
    order are in pseudonym order, so a study's files together hold exactly what one sorted file would.
    """
    scratch = data_dir.parent / ".chunks"
    columns = strata_columns_for_sponsor(strata.path, features)
    report_parts, spilled = [], set()
    for i, start in enumerate(range(0, strata.rows, cfg.chunk_subjects)):
        chunk = pl.scan_parquet(strata.path).slice(start, cfg.chunk_subjects).select(columns).collect()
        # The contract once per chunk (every row is in exactly one), not per bucket: a check's fixed cost is
        # paid 4 times at 1M subjects instead of 48.
        rows = validate_sponsor(sponsor_rows(chunk, strata.key, cfg, features), features=tuple(features))
        report_parts.append(rows.select(report_columns(rows.columns)))
        buckets = rows.with_columns(_bucket=pl.col("subject_pseudonym").str.head(1))
        for (study, bucket), part in buckets.partition_by("study_id", "_bucket", as_dict=True).items():
            spill = scratch / quote(str(study), safe="") / str(bucket)
            spill.mkdir(parents=True, exist_ok=True)
            part.drop("_bucket").write_ipc(spill / f"{i:05d}.ipc", compression="lz4")
            spilled.add((str(study), str(bucket)))
        del chunk, rows, buckets
    studies: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for study, bucket in sorted(spilled):
        folder = f"study_id={quote(study, safe='')}"
        files = sorted((scratch / quote(study, safe="") / bucket).glob("*.ipc"))
        part = pl.concat([pl.read_ipc(f) for f in files]).sort("subject_pseudonym")
        if part["subject_pseudonym"].is_duplicated().any():  # a study's pseudonyms differ across buckets
            validate_sponsor(part, features=tuple(features))  # raises, naming the duplicates
        name = f"part-{bucket}.parquet"
        path = write_parquet_atomic(
            part.drop("study_id"), data_dir / folder / name, metadata=_parquet_metadata(provenance, study)
        )
        entry = studies.setdefault(study, {"path": f"{DATA_DIR}/{folder}", "rows": 0, "files": []})
        entry["rows"] += part.height
        entry["files"].append({"path": f"{DATA_DIR}/{folder}/{name}", "rows": part.height, "sha256": sha256_file(path)})
        counts[study] = entry["rows"]
    shutil.rmtree(scratch)
    return studies, counts, pl.concat(report_parts, how="vertical")


def _write_snapshot(
    run_dir: Path,
    table: pl.DataFrame | _ChunkedStrata,
    *,
    features: Sequence[FeatureSpec],
    cfg: PublishConfig,
    key: PseudonymKey,
    run: RunRecord,
) -> dict[str, Any]:
    """Stage the whole snapshot in a hidden folder, then rename it to RUN/sponsor (swapping out an old one)."""
    provenance = provenance_of(run, cfg, key)
    with staged_folder(run_dir / SNAPSHOT_DIR, replace=True) as staging:
        if isinstance(table, _ChunkedStrata):
            study_files, rows, sponsor = _write_chunked(table, staging / DATA_DIR, provenance, cfg, features)
        else:
            (study_files, rows), sponsor = write_partitions(table, staging / DATA_DIR, provenance), table
        files = {
            DICTIONARY_JSON: write_json_atomic(sponsor_dictionary(features), staging / DICTIONARY_JSON),
            DICTIONARY_MD: write_text_atomic(render_sponsor_markdown(features), staging / DICTIONARY_MD),
        }
        if cfg.report:
            html = render_report(run_dir, sponsor=sponsor, min_cell_count=cfg.min_cell_count, provenance=provenance)
            files[REPORT_FILE] = write_text_atomic(html, staging / REPORT_FILE)
        return write_snapshot_manifest(
            staging, SNAPSHOT_FORMAT, provenance=provenance, study_files=study_files, rows=rows, files=files
        )


def publication(
    run_dir: Path, cfg: PublishConfig | None, key: PseudonymKey | None, force: bool
) -> tuple[RunRecord, PublishConfig, PseudonymKey, Path]:
    """A completed run not yet published (unless `force`): its run.json, settings, key and snapshot folder."""
    run = _read_run(run_dir)
    cfg = cfg or publish_config_of(run)
    final = run_dir / SNAPSHOT_DIR
    if final.exists() and not force:
        raise PublishError(f"{final} exists: run {run.run_id} is already published (--force replaces it)")
    key = key or load_key(cfg.key_file, demo=cfg.demo_key)
    if key.created:
        print(
            f"immunostrat: created the demo pseudonym key {key.path} (mode 0600, outside the repository); "
            "it is for the synthetic demo only",
            file=sys.stderr,
        )
    return run, cfg, key, final


def publish_run(
    run_dir: str | Path,
    cfg: PublishConfig | None = None,
    *,
    key: PseudonymKey | None = None,
    force: bool = False,
    make_current: bool | None = None,
    allow_key_change: bool = False,
) -> PublishResult:
    """Publish a completed run: sponsor snapshot in ``RUN/sponsor/``, then ``OUT/sponsor-manifest.json``.

    Args:
        run_dir: A completed run folder.
        cfg: Publish settings; default: the run's own (`parameters.publish` in run.json), else the defaults.
        key: The pseudonym key; default: :func:`immunostrat.sponsor.pseudonym.load_key` with `cfg.key_file` and
            `cfg.demo_key`.
        force: Replace an existing snapshot of this run (it is swapped atomically).
        make_current: True: point every study of this run at it, even when a newer run is current (a rollback);
            False: leave the current manifest alone; None (default): move a study only when this run is at least
            as new as its current one.
        allow_key_change: Publish although a study's current snapshot used another key (key rotation).

    Returns:
        Where the snapshot went and which studies now point at it.

    Raises:
        PublishError: Not a completed run, already published (without `force`), or the key changed.
        PseudonymKeyError: No usable key.
        OutputContractError: The sponsor table does not meet its contract (nothing is written).
    """
    run_dir = Path(run_dir)
    run, cfg, key, final = publication(run_dir, cfg, key, force)
    features = run_features(run)
    strata = _checked_strata(run_dir, run)
    n = int(pl.scan_parquet(strata).select(pl.len()).collect().item())
    if n == 0:
        raise PublishError(f"run {run.run_id} stratified no subject: there is nothing to publish")
    table: pl.DataFrame | _ChunkedStrata
    if n > cfg.chunk_subjects:  # contract enforced per chunk, before its file is written
        table = _ChunkedStrata(strata, n, key)
        studies = pl.scan_parquet(strata).select(pl.col("study_id").unique().sort()).collect().to_series().to_list()
    else:
        frame = sponsor_table(read_strata_for_sponsor(strata, features), key, cfg, features)  # contract enforced
        studies = frame["study_id"].unique(maintain_order=True).to_list()
        table = frame
    out_dir = run_dir.parent
    with locked(out_dir):  # one publication at a time per OUT: snapshot swap and current manifest together
        if final.exists() and not force:
            raise PublishError(f"{final} exists: run {run.run_id} is already published (--force replaces it)")
        conflicts = key_conflicts(read_current_manifest(out_dir / CURRENT_MANIFEST), studies, key)
        if conflicts and not allow_key_change and make_current is not False:
            raise key_change_error(conflicts, key)  # before anything is written
        for stale in [*run_dir.glob(f".{SNAPSHOT_DIR}.partial-*"), *run_dir.glob(f".{SNAPSHOT_DIR}.replaced-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed publication of this run
        manifest = _write_snapshot(run_dir, table, features=features, cfg=cfg, key=key, run=run)
        moved: list[str] = []
        if make_current is not False:
            entries = current_entries(run, final, manifest["studies"], manifest, key)
            moved = update_current(out_dir, entries, key, make_current, allow_key_change)
    return PublishResult(
        snapshot_dir=final,
        manifest=manifest,
        current_manifest=out_dir / CURRENT_MANIFEST,
        made_current=moved,
        key=key,
        report=final / REPORT_FILE if cfg.report else None,
    )


# --------------------------------------------------------------------------------------------------
# Reading (for consumers and tests)
# --------------------------------------------------------------------------------------------------


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    cfg: PublishConfig | None = None,
    *,
    key: PseudonymKey | None = None,
) -> Path:
    """Render a run's report to a file (default ``RUN/report.html``).

    The sponsor table comes from the run's published snapshot when there is one (no key needed), else it is
    built from ``strata.parquet`` with the pseudonym key (``cfg.key_file`` / ``cfg.demo_key`` / the environment).
    A run without strata (failed) gets a report of its accounting and quarantine only.
    """
    run_dir = Path(run_dir)
    run = read_run_record(run_dir)
    cfg = cfg or publish_config_of(run)
    snapshot = run_dir / SNAPSHOT_DIR
    provenance: dict[str, Any] | None = None
    sponsor: pl.DataFrame | None = None
    if (snapshot / SNAPSHOT_MANIFEST).is_file():
        provenance = json.loads((snapshot / SNAPSHOT_MANIFEST).read_text(encoding="utf-8"))
        sponsor = read_snapshot(snapshot)
    elif (run_dir / "strata.parquet").is_file():
        key = key or load_key(cfg.key_file, demo=cfg.demo_key)
        features = run_features(run)
        sponsor = sponsor_table(read_strata_for_sponsor(run_dir / "strata.parquet", features), key, cfg, features)
    html = render_report(run_dir, sponsor=sponsor, min_cell_count=cfg.min_cell_count, provenance=provenance)
    return write_text_atomic(html, Path(out) if out is not None else run_dir / "report.html")
