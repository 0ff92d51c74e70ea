"""The sponsor snapshot's layout on disk, and reading it back (for the report, artifacts and sponsors' code).

RUN/sponsor/manifest.json                 provenance, checksums, schema version
RUN/sponsor/data/study_id=<S>/*.parquet   the sponsor table, hive-partitioned by study
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

SNAPSHOT_DIR = "sponsor"
DATA_DIR = "data"
SNAPSHOT_MANIFEST = "manifest.json"


def scan_snapshot(snapshot_dir: str | Path) -> pl.LazyFrame:
    """One run's whole sponsor table (every study) as a lazy scan, `study_id` read from the hive folders as text:
    select the columns you need (the whole table is about 1.6 GB in memory at 1M subjects)."""
    return pl.scan_parquet(
        Path(snapshot_dir) / DATA_DIR / "**" / "*.parquet", hive_partitioning=True, hive_schema={"study_id": pl.String}
    )


def read_snapshot(snapshot_dir: str | Path) -> pl.DataFrame:
    """One run's whole sponsor table (every study), `study_id` read from the hive folders as text."""
    return scan_snapshot(snapshot_dir).collect()
