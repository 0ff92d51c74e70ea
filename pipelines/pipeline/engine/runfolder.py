"""The run folder: staged in a hidden folder, every file written temp-then-rename, renamed into place at the end."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat import __version__
from immunostrat.ingest.atomic import atomic_path, staged_folder
from immunostrat.ingest.io import sha256_file, write_json_atomic, write_parquet_atomic
from immunostrat.pipeline.engine.executors import OutputSource
from immunostrat.schemas.records import RUN_JSON, RunRecord, new_run_record


@dataclass(frozen=True)
class RunOutputs:
    """Where a finished run wrote its files."""

    run_dir: Path
    run_json: dict[str, Any]

    @property
    def record(self) -> RunRecord:
        """run.json as a typed record."""
        return RunRecord.model_validate(self.run_json)


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable, unique run id: UTC time plus a random suffix."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


@contextlib.contextmanager
def staged_run_folder(out_dir: str | Path, run_id: str) -> Iterator[Path]:
    """Yield a hidden staging folder that is renamed to `<out_dir>/<run_id>` when the block succeeds.

    A crash leaves no `<run_id>` folder at all (only a hidden `.<run_id>.partial`, removed here or by the next
    run's cleanup, `RunLock.remove_stale_staging`), so readers never see a half-written run. An existing
    `<run_id>` folder is never overwritten (FileExistsError).
    """
    with staged_folder(Path(out_dir) / run_id, f".{run_id}.partial") as staging:
        yield staging


def provenance_metadata(run_id: str) -> dict[str, str]:
    """Key-value metadata written into every output Parquet footer."""
    return {"immunostrat_run_id": run_id, "immunostrat_version": __version__}


def write_table(source: OutputSource, path: Path, run_id: str) -> dict[str, Any]:
    """Write one output table (an eager frame, or a lazy concatenation sunk by streaming) atomically."""
    metadata = provenance_metadata(run_id)
    if isinstance(source.frame, pl.LazyFrame):
        with atomic_path(path) as tmp:
            source.frame.sink_parquet(tmp, compression="zstd", metadata=metadata)
    else:
        write_parquet_atomic(source.frame, path, metadata=metadata)
    return {"rows": source.rows, "sha256": sha256_file(path)}


def write_manifest(staging: Path, run_id: str, manifest: dict[str, Any], outputs: dict[str, Any]) -> RunRecord:
    """Write run.json (the last file of a run folder) into the staging folder, as a validated `RunRecord`.

    Only the keys the run set are written (a stopped run has no `summary`), sorted, with `schema_version`.
    """
    record = new_run_record({**manifest, "run_id": run_id, "outputs": outputs})
    write_json_atomic(record.to_json_dict(), staging / RUN_JSON)
    return record


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """run.json of a run folder as written (a dict; `immunostrat.schemas.records.read_run_record` types it)."""
    result: dict[str, Any] = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    return result
