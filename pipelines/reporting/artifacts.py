"""What the Prefect UI shows of a stratify run: a Markdown summary and the group-count table rows, with the same
small-cell suppression as the report (`immunostrat.reporting.disclosure`).

Plain data only: the flow (`immunostrat.flows.stratify.publish_artifacts`) hands them to Prefect, so this module
never imports Prefect (see the import contract).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from immunostrat.reporting.disclosure import margin_lines, suppress, with_margins
from immunostrat.reporting.report import GROUPS
from immunostrat.schemas.records import read_run_record
from immunostrat.sponsor.snapshot import SNAPSHOT_DIR, SNAPSHOT_MANIFEST, scan_snapshot

__all__ = ["artifact_summary"]


def artifact_summary(
    run_dir: str | Path, *, min_cell_count: int = 5, report: str | Path | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown summary and the group-count table rows for the Prefect UI (same suppression as the report).

    Counts come from the published snapshot when there is one, else from `strata.parquet` (study and group only;
    no key is needed).

    Returns:
        (markdown, rows), rows as ``{"study_id", "responder_group", "subjects"}`` where ``subjects`` is an int or
        a suppressed ``"<5"`` / ``"*"``; the last rows (``study_id`` ``all studies``) are the totals per group.
    """
    run_dir = Path(run_dir)
    run = read_run_record(run_dir)
    k = min_cell_count
    snapshot = run_dir / SNAPSHOT_DIR
    manifest_path = snapshot / SNAPSHOT_MANIFEST
    published = manifest_path.is_file()
    # Scanned, two columns only: the snapshot's other columns are 1.6 GB in memory at 1M subjects.
    source: pl.LazyFrame | None = None
    if published:
        source = scan_snapshot(snapshot)
    elif (run_dir / "strata.parquet").is_file():
        source = pl.scan_parquet(run_dir / "strata.parquet")
    table = (
        source.group_by("study_id")
        .agg(*((pl.col("responder_group") == g).sum().alias(g) for g in GROUPS))
        .sort("study_id")
        .collect()
        if source is not None
        else None
    )
    counts = run.counts
    lines = [
        f"# Stratify run `{run.run_id}`",
        "",
        f"Status **{run.status}**, as of {run.as_of}; run folder `{run_dir}`.",
        "",
        f"Lab rows read {counts.rows_read} = accepted {counts.accepted} + outside panel "
        f"{counts.outside_panel} + quarantined {counts.quarantined}.",
    ]
    if not run.completed:
        lines += ["", f"Stopped: {run.error or ''}"]
    rows: list[dict[str, Any]] = []
    if table is not None and table.height:
        full = with_margins(table.select(GROUPS).to_numpy())
        shown = suppress(full, margin_lines(*full.shape), k)
        studies = [*table["study_id"].to_list(), "all studies"]
        for i, study in enumerate(studies):
            for j, group in enumerate(GROUPS):
                value = shown[i, j]
                rows.append(
                    {"study_id": study, "responder_group": group, "subjects": int(value) if value.isdigit() else value}
                )
        eligible = (run.summary.eligible if run.summary else None) or {}
        e = suppress(np.array([[eligible.get(x, 0) for x in ("true", "false", "not_assessable")]]), [], k)[0]
        lines += [
            "",
            f"Subjects stratified: {shown[-1, -1]} (eligible {e[0]}, not eligible {e[1]}, not assessable {e[2]}).",
            "",
            "| responder group | subjects |",
            "|---|---|",
            *(f"| {g.replace('_', ' ')} | {shown[-1, j]} |" for j, g in enumerate(GROUPS)),
            "",
            f"Model `{run.model.model_id if run.model else '-'}`. Counts of 1 to {k - 1} subjects show as <{k}.",
        ]
    if published:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        lines += [
            "",
            f"Sponsor snapshot: `{snapshot}` (schema {manifest.get('schema_version')}, "
            f"{manifest.get('counts', {}).get('published_rows')} rows, pseudonym key id "
            f"`{manifest.get('privacy', {}).get('pseudonym', {}).get('key_id')}`).",
        ]
    report_path = Path(report) if report is not None else snapshot / "report.html"
    if report_path.is_file():
        lines += ["", f"Report: `{report_path}` ({report_path.resolve().as_uri()})"]
    return "\n".join(lines), rows
