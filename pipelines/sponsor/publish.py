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

import contextlib
import datetime as dt
import fcntl
import itertools
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import polars as pl

from immunostrat import __version__
from immunostrat.config.run import PublishConfig
from immunostrat.errors import UserError
from immunostrat.ingest.atomic import rename_into_place
from immunostrat.schemas.records import RUN_JSON, EndpointRate, RunRecord, Summary, as_run_record, read_run_record
from immunostrat.sponsor.pseudonym import PseudonymKey, date_shifts, load_key, site_pseudonyms, subject_pseudonyms
from immunostrat.sponsor.snapshot import DATA_DIR, SNAPSHOT_DIR, SNAPSHOT_MANIFEST, read_snapshot

if TYPE_CHECKING:
    from immunostrat.config.features import FeatureSpec

__all__ = [
    "CURRENT_MANIFEST",
    "DATA_DIR",
    "SNAPSHOT_DIR",
    "PublishConfig",
    "PublishError",
    "PublishResult",
    "age_band_labels",
    "publish_config_of",
    "publish_follow_up",
    "publish_run",
    "read_current",
    "read_snapshot",
    "run_features",
    "sponsor_table",
    "write_report",
]

PART_FILE = "part-0.parquet"
DICTIONARY_JSON = "data_dictionary.json"
DICTIONARY_MD = "data_dictionary.md"
REPORT_FILE = "report.html"
CURRENT_MANIFEST = "sponsor-manifest.json"
SNAPSHOT_FORMAT = "immunostrat-sponsor-snapshot/1"
CURRENT_FORMAT = "immunostrat-sponsor-current/1"
#: run.json parameters that hold local paths: only their file name is published.
_PATH_PARAMETERS = frozenset({"alias_file", "ifn_methods_file", "registry", "key_file"})


class PublishError(UserError, RuntimeError):
    """The run cannot be published (not completed, already published, or the key changed for a study)."""


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
# The sponsor table
# --------------------------------------------------------------------------------------------------


def age_band_labels(edges: Sequence[int]) -> list[str]:
    """Band labels for lower edges, e.g. (18, 30, 65) -> ['<18', '18-29', '30-64', '65+']."""
    inner = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)]
    return [f"<{edges[0]}", *inner, f"{edges[-1]}+"]


def _age_band(column: str, edges: Sequence[int]) -> pl.Expr:
    labels = age_band_labels(edges)
    age = pl.col(column).floor()
    expr: Any = pl.when(age < edges[0]).then(pl.lit(labels[0]))
    for hi, label in zip(edges[1:], labels[1:-1], strict=True):
        expr = expr.when(age < hi).then(pl.lit(label))
    return expr.when(age >= edges[-1]).then(pl.lit(labels[-1])).otherwise(pl.lit(None, pl.String))


def run_features(run: RunRecord | Mapping[str, Any]) -> tuple[FeatureSpec, ...]:
    """The scoring model's features of a run (its run.json): the defaults, or the specs from its model card."""
    from immunostrat.config.features import DEFAULT_FEATURES, FeatureSpec

    record = as_run_record(run)
    names = list(record.model.features) if record.model else []
    if not record.model or not names or names == [f.name for f in DEFAULT_FEATURES]:
        return DEFAULT_FEATURES
    try:
        from immunostrat.modelling.registry import resolve_model_file  # the checksummed card; nothing deserialised

        registry = (record.parameters.get("scoring") or {}).get("registry")
        specs = resolve_model_file(record.model.model_id, registry).features
        if [f.name for f in specs] == names:
            return specs
    except Exception:  # the card only adds descriptions; the names are what the contract needs
        pass
    return tuple(FeatureSpec(n, n, "identity", "see the model card", f"Model feature `{n}`.") for n in names)


def sponsor_table(
    strata: pl.DataFrame,
    key: PseudonymKey,
    cfg: PublishConfig | None = None,
    features: Sequence[FeatureSpec] | None = None,
) -> pl.DataFrame:
    """Pseudonymise a strata table into the sponsor table (validated against the sponsor contract).

    Args:
        strata: A run's `strata.parquet`.
        key: The project's pseudonym key.
        cfg: Privacy settings (site, dates, age bands); defaults when None.
        features: The scoring model's features (default: `DEFAULT_FEATURES`).

    Returns:
        One row per subject, columns in contract order, sorted by study and pseudonym (so the row order tells
        nothing about enrolment order or site).

    Raises:
        OutputContractError: The result does not meet the sponsor contract.
    """
    from immunostrat.config.features import DEFAULT_FEATURES
    from immunostrat.schemas.sponsor import validate_sponsor

    features = tuple(features or DEFAULT_FEATURES)
    rows = sponsor_rows(strata, key, cfg, features)
    return validate_sponsor(rows.sort("study_id", "subject_pseudonym"), features=features)


def sponsor_rows(
    strata: pl.DataFrame,
    key: PseudonymKey,
    cfg: PublishConfig | None = None,
    features: Sequence[FeatureSpec] | None = None,
) -> pl.DataFrame:
    """The sponsor table's rows for these strata rows, in their order, not yet checked: see `sponsor_table`."""
    from immunostrat.config.features import DEFAULT_FEATURES
    from immunostrat.schemas.sponsor import DAY_COLUMNS, sponsor_model

    cfg = cfg or PublishConfig()
    features = tuple(features or DEFAULT_FEATURES)
    if cfg.site == "pseudonymise":
        site: pl.Series | pl.Expr = site_pseudonyms(key, strata["study_id"], strata["site_id"])
    elif cfg.site == "keep":
        site = pl.col("site_id")
    else:
        site = pl.lit(None, pl.String)
    days = [
        (pl.col(src) - pl.col("reference_date")).dt.total_days().cast(pl.Int32).alias(dst)
        for src, dst in DAY_COLUMNS.items()
        if src in strata.columns
    ]
    frame = strata.with_columns(
        subject_pseudonyms(key, strata["study_id"], strata["subject_id"]),
        site.alias("site"),
        _age_band("age_years", cfg.age_bands).alias("age_band"),
        *days,
    )
    if cfg.dates == "shift":
        shift = date_shifts(key, strata["study_id"], strata["subject_id"], cfg.max_shift_days)
        frame = frame.with_columns(reference_date_shifted=pl.col("reference_date") + pl.duration(days=shift))
    order: list[str] = []
    for name, column in sponsor_model(features).to_schema().columns.items():
        if column.regex:
            order += [c for c in frame.columns if c.startswith("criterion_")]
        elif name in frame.columns:
            order.append(name)
    return frame.select(order)


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


def _provenance(run: RunRecord, cfg: PublishConfig, key: PseudonymKey) -> dict[str, Any]:
    """Everything a sponsor needs to trust the data, and nothing that identifies a subject or a local path."""
    from immunostrat.schemas.sponsor import SPONSOR_SCHEMA_VERSION, WITHHELD

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
# The current-snapshot manifest (OUT/sponsor-manifest.json)
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """Exclusive, waiting lock on OUT/.sponsor-manifest.lock (created once, never deleted) for one publication."""
    with open(out_dir / ".sponsor-manifest.lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_current(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"format": CURRENT_FORMAT, "studies": {}}
    current = json.loads(path.read_text(encoding="utf-8"))
    if current.get("format") != CURRENT_FORMAT:
        raise PublishError(f"{path}: unknown format {current.get('format')!r} (expected {CURRENT_FORMAT})")
    return dict(current)


def _key_conflicts(
    current: dict[str, Any], studies: Sequence[str], key: PseudonymKey, section: str = "studies"
) -> list[str]:
    """Studies whose current snapshot (stratify's `studies`, or `follow_up`) used another key: pseudonyms differ."""
    entries = {**current.get("studies", {}), **current.get(section, {})}
    return [
        f"{s} (current key id {entries[s]['key_id']}, run {entries[s]['run_id']})"
        for s in studies
        if s in entries and entries[s].get("key_id") != key.key_id
    ]


def _key_change_error(conflicts: list[str], key: PseudonymKey) -> PublishError:
    return PublishError(
        f"the pseudonym key changed (this key id: {key.key_id}) for: {', '.join(conflicts)}. Every subject would "
        "get a new pseudonym. Use the project's key, or pass --allow-key-change to rotate the key on purpose."
    )


def _update_current(
    out_dir: Path,
    entries: dict[str, dict[str, Any]],
    key: PseudonymKey,
    make_current: bool | None,
    allow_key_change: bool,
    *,
    section: str = "studies",
) -> list[str]:
    """Point studies at this run in OUT/sponsor-manifest.json; the caller holds `_locked(out_dir)`.

    `section` is `studies` (stratify snapshots) or `follow_up` (monitor snapshots): each study has at most one
    current snapshot of each kind, side by side.
    """
    from immunostrat.ingest.io import write_json_atomic

    path = out_dir / CURRENT_MANIFEST
    current = _read_current(path)
    conflicts = _key_conflicts(current, list(entries), key, section)
    if conflicts and not allow_key_change:
        raise _key_change_error(conflicts, key)
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


def strata_columns_for_sponsor(path: Path, features: Sequence[FeatureSpec]) -> list[str]:
    """The columns of a strata file that `sponsor_table` reads (scores and flags, not the analytes' details)."""
    from immunostrat.schemas.sponsor import DAY_COLUMNS, sponsor_model

    schema = sponsor_model(features).to_schema().columns
    needed = {"study_id", "subject_id", "site_id", "age_years", "reference_date", *DAY_COLUMNS, *schema}
    return [c for c in pl.read_parquet_schema(path) if c in needed or c.startswith("criterion_")]


def read_strata_for_sponsor(path: Path, features: Sequence[FeatureSpec]) -> pl.DataFrame:
    """A strata file's columns that `sponsor_table` reads."""
    return pl.read_parquet(path, columns=strata_columns_for_sponsor(path, features))


def _checked_strata(run_dir: Path, run: RunRecord) -> Path:
    from immunostrat.ingest.io import sha256_file

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


def _write_partitions(
    table: pl.DataFrame, data_dir: Path, provenance: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, int]]:
    from immunostrat.ingest.io import sha256_file, write_parquet_atomic

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

    Pass 1 pseudonymises chunk after chunk and spills each study's rows into 16 buckets by the first hex digit
    of the pseudonym; pass 2 sorts and checks each bucket and writes it as one file. Bucket files in name
    order are in pseudonym order, so a study's files together hold exactly what one sorted file would.
    """
    from immunostrat.ingest.io import sha256_file, write_parquet_atomic
    from immunostrat.reporting.report import report_columns
    from immunostrat.schemas.sponsor import validate_sponsor

    scratch = data_dir.parent / ".chunks"
    columns = strata_columns_for_sponsor(strata.path, features)
    report_parts, spilled = [], set()
    for i, start in enumerate(range(0, strata.rows, cfg.chunk_subjects)):
        chunk = pl.scan_parquet(strata.path).slice(start, cfg.chunk_subjects).select(columns).collect()
        rows = sponsor_rows(chunk, strata.key, cfg, features)
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
        validate_sponsor(part, features=tuple(features))  # contract per bucket: pseudonyms differ across buckets
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
    from immunostrat.ingest.io import sha256_file, write_json_atomic, write_text_atomic
    from immunostrat.reporting.datadict import render_sponsor_markdown, sponsor_dictionary

    final = run_dir / SNAPSHOT_DIR
    provenance = _provenance(run, cfg, key)
    staging = run_dir / f".{SNAPSHOT_DIR}.partial-{secrets.token_hex(3)}"
    staging.mkdir()
    try:
        if isinstance(table, _ChunkedStrata):
            study_files, rows, sponsor = _write_chunked(table, staging / DATA_DIR, provenance, cfg, features)
        else:
            (study_files, rows), sponsor = _write_partitions(table, staging / DATA_DIR, provenance), table
        files = {
            DICTIONARY_JSON: write_json_atomic(sponsor_dictionary(features), staging / DICTIONARY_JSON),
            DICTIONARY_MD: write_text_atomic(render_sponsor_markdown(features), staging / DICTIONARY_MD),
        }
        if cfg.report:
            from immunostrat.reporting.report import render_report

            html = render_report(run_dir, sponsor=sponsor, min_cell_count=cfg.min_cell_count, provenance=provenance)
            files[REPORT_FILE] = write_text_atomic(html, staging / REPORT_FILE)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            **provenance,
            "published_at": dt.datetime.now(dt.UTC).isoformat(),
            "partitioning": {"flavor": "hive", "columns": {"study_id": "string"}},
            "counts": {**provenance["counts"], "published_rows": sum(rows.values()), "published_rows_by_study": rows},
            "studies": study_files,
            "files": {name: {"sha256": sha256_file(p)} for name, p in files.items()},
        }
        write_json_atomic(manifest, staging / SNAPSHOT_MANIFEST)
        _swap_in(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _publication(
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


def _swap_in(staging: Path, final: Path) -> None:
    """Rename a staged snapshot into place; with `force`, swap the old one out first (never half of each)."""
    rename_into_place(staging, final)


def _current_entries(
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
    run, cfg, key, final = _publication(run_dir, cfg, key, force)
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
        table = sponsor_table(read_strata_for_sponsor(strata, features), key, cfg, features)  # contract enforced
        studies = table["study_id"].unique(maintain_order=True).to_list()
    out_dir = run_dir.parent
    with _locked(out_dir):  # one publication at a time per OUT: snapshot swap and current manifest together
        if final.exists() and not force:
            raise PublishError(f"{final} exists: run {run.run_id} is already published (--force replaces it)")
        conflicts = _key_conflicts(_read_current(out_dir / CURRENT_MANIFEST), studies, key)
        if conflicts and not allow_key_change and make_current is not False:
            raise _key_change_error(conflicts, key)  # before anything is written
        for stale in [*run_dir.glob(f".{SNAPSHOT_DIR}.partial-*"), *run_dir.glob(f".{SNAPSHOT_DIR}.replaced-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed publication of this run
        manifest = _write_snapshot(run_dir, table, features=features, cfg=cfg, key=key, run=run)
        moved: list[str] = []
        if make_current is not False:
            entries = _current_entries(run, final, manifest["studies"], manifest, key)
            moved = _update_current(out_dir, entries, key, make_current, allow_key_change)
    return PublishResult(
        snapshot_dir=final,
        manifest=manifest,
        current_manifest=out_dir / CURRENT_MANIFEST,
        made_current=moved,
        key=key,
        report=final / REPORT_FILE if cfg.report else None,
    )


# --------------------------------------------------------------------------------------------------
# The follow-up snapshot (monitor runs)
# --------------------------------------------------------------------------------------------------

FOLLOW_UP_FORMAT = "immunostrat-sponsor-follow-up/1"
FOLLOW_UP_SECTION = "follow_up"
RATES_FILE = "endpoint_rates.parquet"


def sponsor_endpoints(endpoints: pl.DataFrame, key: PseudonymKey) -> pl.DataFrame:
    """Pseudonymise endpoint rows: `subject_pseudonym` for `subject_id`, study days only (no `visit_date`).

    Sorted by study, pseudonym, endpoint and landmark; checked against the sponsor endpoint contract.
    """
    from immunostrat.schemas.endpoints import SPONSOR_WITHHELD, validate_sponsor_endpoints

    rows = endpoints.with_columns(subject_pseudonyms(key, endpoints["study_id"], endpoints["subject_id"]))
    kept = [c for c in endpoints.columns if c not in SPONSOR_WITHHELD]
    ordered = rows.select("study_id", "subject_pseudonym", *kept[1:])
    return validate_sponsor_endpoints(ordered.sort("study_id", "subject_pseudonym", "endpoint", "landmark"))


def sponsor_endpoint_rates(summary: Summary | Mapping[str, Any], min_cell_count: int) -> pl.DataFrame:
    """Endpoint rates overall and by predicted group, as a table with small counts suppressed (null + flag).

    The counts come from run.json (`summary.endpoints`, `summary.by_predicted_group.rates`), suppressed exactly
    as the report shows them (`immunostrat.followup.summary.endpoint_rows`).
    """
    from immunostrat.followup.summary import endpoint_rows

    def rows(rates: Sequence[EndpointRate], group: str | None) -> list[dict[str, Any]]:
        out = []
        for r in endpoint_rows(rates, min_cell_count, group=group):
            counts = {c: r[c] for c in ("met", "not_met", "not_assessable", "subjects")}
            out.append(
                {
                    "predicted_group": r.get("group"),
                    "endpoint": r["endpoint"],
                    "landmark": r["landmark"],
                    **{c: int(v) if str(v).isdigit() else None for c, v in counts.items()},
                    "suppressed": any(not str(v).isdigit() for v in counts.values()),
                    "rate": float(r["rate"].rstrip("%")) / 100 if r["rate"].endswith("%") else None,
                }
            )
        return out

    typed = summary if isinstance(summary, Summary) else Summary.model_validate(summary)
    by_group = typed.by_predicted_group
    table = rows(typed.endpoints or [], None) + rows(by_group.rates if by_group else [], "responder_group")
    schema = {
        "predicted_group": pl.String,
        "endpoint": pl.String,
        "landmark": pl.String,
        "met": pl.Int64,
        "not_met": pl.Int64,
        "not_assessable": pl.Int64,
        "subjects": pl.Int64,
        "suppressed": pl.Boolean,
        "rate": pl.Float64,
    }
    return pl.DataFrame(table, schema=schema)


#: Aggregate tables of the follow-up snapshot beside the endpoint rates (small cells suppressed).
TOXICITY_FILE = "toxicity_by_grade.parquet"
TRAJECTORY_FILE = "trajectories.parquet"


def _follow_up_aggregates(run_dir: Path, run: RunRecord, k: int, staging: Path) -> dict[str, Path]:
    """Subjects by worst toxicity grade (suppressed cells as `<k` / `*`) and the B-cell and anti-dsDNA medians
    by predicted group (null under k subjects): aggregates only, study days, no subject."""
    from immunostrat.followup.report import toxicity_by_grade, trajectory_medians
    from immunostrat.ingest.io import write_parquet_atomic

    files: dict[str, Path] = {}
    if (run_dir / "toxicity.parquet").is_file():
        table = toxicity_by_grade(pl.read_parquet(run_dir / "toxicity.parquet"), k)
        files[TOXICITY_FILE] = write_parquet_atomic(table, staging / TOXICITY_FILE)
    medians = trajectory_medians(run_dir, run, k)
    if medians is not None:
        files[TRAJECTORY_FILE] = write_parquet_atomic(medians, staging / TRAJECTORY_FILE)
    return files


def publish_follow_up(
    run_dir: str | Path,
    cfg: PublishConfig | None = None,
    *,
    key: PseudonymKey | None = None,
    force: bool = False,
    make_current: bool | None = None,
    allow_key_change: bool = False,
) -> PublishResult:
    """Publish a completed monitor run: its follow-up snapshot in ``RUN/sponsor/``, then the ``follow_up`` section
    of ``OUT/sponsor-manifest.json``.

    The snapshot holds the pseudonymised endpoint rows (``data/study_id=<study>/part-0.parquet``, same pseudonyms
    as the stratify snapshot under the same key), ``endpoint_rates.parquet`` (aggregates, small cells
    suppressed), ``manifest.json`` (provenance, the endpoint definition, the stratify run and model the groups
    came from) and the sponsor report. In ``OUT/sponsor-manifest.json`` a study's current follow-up snapshot
    sits under ``follow_up``, beside its current stratify snapshot under ``studies``: the two never replace each
    other. Arguments as :func:`publish_run`.
    """
    from immunostrat.followup.report import render_follow_up_report
    from immunostrat.ingest.io import sha256_file, write_json_atomic, write_parquet_atomic, write_text_atomic
    from immunostrat.schemas.endpoints import FOLLOW_UP_SCHEMA_VERSION

    run_dir = Path(run_dir)
    run, cfg, key, final = _publication(run_dir, cfg, key, force)
    table = sponsor_endpoints(pl.read_parquet(run_dir / "endpoints.parquet"), key)
    summary = run.summary or Summary()
    definition = summary.endpoint_definition
    by_group = summary.by_predicted_group
    provenance = {
        **_provenance(run, cfg, key),
        "schema_version": FOLLOW_UP_SCHEMA_VERSION,
        "endpoint_definition": definition.model_dump(exclude_unset=True) if definition else {},
        "strata_run": {
            "run_id": Path((by_group.strata_run if by_group else None) or "").name or None,
            "model": by_group.model.model_dump(exclude_unset=True) if by_group and by_group.model else None,
        },
    }
    out_dir = run_dir.parent
    with _locked(out_dir):
        studies = table["study_id"].unique(maintain_order=True).to_list()
        conflicts = _key_conflicts(_read_current(out_dir / CURRENT_MANIFEST), studies, key, FOLLOW_UP_SECTION)
        if conflicts and not allow_key_change and make_current is not False:
            raise _key_change_error(conflicts, key)
        staging = run_dir / f".{SNAPSHOT_DIR}.partial-{secrets.token_hex(3)}"
        staging.mkdir()
        try:
            study_files, rows = _write_partitions(table, staging / DATA_DIR, provenance)
            files = {
                RATES_FILE: write_parquet_atomic(
                    sponsor_endpoint_rates(summary, cfg.min_cell_count), staging / RATES_FILE
                ),
                **_follow_up_aggregates(run_dir, run, cfg.min_cell_count, staging),
            }
            if cfg.report:
                html = render_follow_up_report(run_dir, min_cell_count=cfg.min_cell_count, team=cfg.team_sections)
                files[REPORT_FILE] = write_text_atomic(html, staging / REPORT_FILE)
            manifest = {
                "format": FOLLOW_UP_FORMAT,
                **provenance,
                "published_at": dt.datetime.now(dt.UTC).isoformat(),
                "partitioning": {"flavor": "hive", "columns": {"study_id": "string"}},
                "counts": {
                    **provenance["counts"],
                    "published_rows": sum(rows.values()),
                    "published_rows_by_study": rows,
                },
                "studies": study_files,
                "files": {name: {"sha256": sha256_file(p)} for name, p in files.items()},
            }
            write_json_atomic(manifest, staging / SNAPSHOT_MANIFEST)
            _swap_in(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        moved: list[str] = []
        if make_current is not False:
            entries = _current_entries(run, final, study_files, manifest, key)
            moved = _update_current(out_dir, entries, key, make_current, allow_key_change, section=FOLLOW_UP_SECTION)
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
    from immunostrat.ingest.io import write_text_atomic
    from immunostrat.reporting.report import render_report

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
    from immunostrat.ingest.io import sha256_file

    out = Path(out_dir)
    current = _read_current(out / CURRENT_MANIFEST)
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
