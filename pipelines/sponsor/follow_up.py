"""The follow-up snapshot of a monitor run: pseudonymised endpoint rows, endpoint rates and aggregate tables with
small cells suppressed, and its report, in ``RUN/sponsor/``; then the ``follow_up`` section of
``OUT/sponsor-manifest.json`` (``immunostrat.sponsor.current``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.config.run import PublishConfig
from immunostrat.followup.report import render_follow_up_report, toxicity_by_grade, trajectory_medians
from immunostrat.followup.summary import endpoint_rows
from immunostrat.ingest.atomic import staged_folder
from immunostrat.ingest.io import write_parquet_atomic, write_text_atomic
from immunostrat.schemas.endpoints import FOLLOW_UP_SCHEMA_VERSION, SPONSOR_WITHHELD, validate_sponsor_endpoints
from immunostrat.schemas.records import EndpointRate, RunRecord, Summary
from immunostrat.sponsor.current import (
    CURRENT_MANIFEST,
    current_entries,
    key_change_error,
    key_conflicts,
    locked,
    read_current_manifest,
    update_current,
)
from immunostrat.sponsor.manifest import FollowUpManifest, write_snapshot_manifest
from immunostrat.sponsor.pseudonym import PseudonymKey, subject_pseudonyms
from immunostrat.sponsor.publish import (
    REPORT_FILE,
    PublishResult,
    provenance_of,
    publication,
    write_partitions,
)
from immunostrat.sponsor.snapshot import DATA_DIR, SNAPSHOT_DIR

__all__ = [
    "FOLLOW_UP_FORMAT",
    "FOLLOW_UP_SECTION",
    "RATES_FILE",
    "TOXICITY_FILE",
    "TRAJECTORY_FILE",
    "publish_follow_up",
    "sponsor_endpoint_rates",
    "sponsor_endpoints",
]

FOLLOW_UP_FORMAT = "immunostrat-sponsor-follow-up/1"
FOLLOW_UP_SECTION = "follow_up"
RATES_FILE = "endpoint_rates.parquet"


def sponsor_endpoints(endpoints: pl.DataFrame, key: PseudonymKey) -> pl.DataFrame:
    """Pseudonymise endpoint rows: `subject_pseudonym` for `subject_id`, study days only (no `visit_date`).

    Sorted by study, pseudonym, endpoint and landmark; checked against the sponsor endpoint contract.
    """
    rows = endpoints.with_columns(subject_pseudonyms(key, endpoints["study_id"], endpoints["subject_id"]))
    kept = [c for c in endpoints.columns if c not in SPONSOR_WITHHELD]
    ordered = rows.select("study_id", "subject_pseudonym", *kept[1:])
    return validate_sponsor_endpoints(ordered.sort("study_id", "subject_pseudonym", "endpoint", "landmark"))


def sponsor_endpoint_rates(summary: Summary | Mapping[str, Any], min_cell_count: int) -> pl.DataFrame:
    """Endpoint rates overall and by predicted group, as a table with small counts suppressed (null + flag).

    The counts come from run.json (`summary.endpoints`, `summary.by_predicted_group.rates`), suppressed exactly
    as the report shows them (`immunostrat.followup.summary.endpoint_rows`).
    """

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


def _follow_up_aggregates(run_dir: Path, medians: pl.DataFrame | None, k: int, staging: Path) -> dict[str, Path]:
    """Subjects by worst toxicity grade (suppressed cells as `<k` / `*`) and the B-cell and anti-dsDNA medians
    by predicted group (`trajectory_medians`, null under k subjects): aggregates only, study days, no subject."""
    files: dict[str, Path] = {}
    if (run_dir / "toxicity.parquet").is_file():
        table = toxicity_by_grade(pl.read_parquet(run_dir / "toxicity.parquet"), k)
        files[TOXICITY_FILE] = write_parquet_atomic(table, staging / TOXICITY_FILE)
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
    run_dir = Path(run_dir)
    run, cfg, key, final = publication(run_dir, cfg, key, force)
    table = sponsor_endpoints(pl.read_parquet(run_dir / "endpoints.parquet"), key)
    out_dir = run_dir.parent
    with locked(out_dir):
        studies = table["study_id"].unique(maintain_order=True).to_list()
        conflicts = key_conflicts(read_current_manifest(out_dir / CURRENT_MANIFEST), studies, key, FOLLOW_UP_SECTION)
        if conflicts and not allow_key_change and make_current is not False:
            raise key_change_error(conflicts, key)  # before anything is written
        manifest = _write_follow_up_snapshot(run_dir, table, run=run, cfg=cfg, key=key)
        moved: list[str] = []
        if make_current is not False:
            entries = current_entries(run, final, manifest["studies"], manifest, key)
            moved = update_current(out_dir, entries, key, make_current, allow_key_change, section=FOLLOW_UP_SECTION)
    return PublishResult(
        snapshot_dir=final,
        manifest=manifest,
        current_manifest=out_dir / CURRENT_MANIFEST,
        made_current=moved,
        key=key,
        report=final / REPORT_FILE if cfg.report else None,
    )


def _follow_up_provenance(run: RunRecord, cfg: PublishConfig, key: PseudonymKey) -> dict[str, Any]:
    """The stratify snapshot's provenance, with the endpoint definition and the stratify run and model the
    predicted groups came from."""
    summary = run.summary or Summary()
    definition = summary.endpoint_definition
    by_group = summary.by_predicted_group
    return {
        **provenance_of(run, cfg, key),
        "schema_version": FOLLOW_UP_SCHEMA_VERSION,
        "endpoint_definition": definition.model_dump(exclude_unset=True) if definition else {},
        "strata_run": {
            "run_id": Path((by_group.strata_run if by_group else None) or "").name or None,
            "model": by_group.model.model_dump(exclude_unset=True) if by_group and by_group.model else None,
        },
    }


def _write_follow_up_snapshot(
    run_dir: Path, table: pl.DataFrame, *, run: RunRecord, cfg: PublishConfig, key: PseudonymKey
) -> dict[str, Any]:
    """Stage the follow-up snapshot in a hidden folder, then rename it to RUN/sponsor; returns its manifest."""
    provenance = _follow_up_provenance(run, cfg, key)
    with staged_folder(run_dir / SNAPSHOT_DIR, replace=True) as staging:
        study_files, rows = write_partitions(table, staging / DATA_DIR, provenance)
        rates = sponsor_endpoint_rates(run.summary or Summary(), cfg.min_cell_count)
        # One pass over the harmonised labs serves both the trajectories table and the report's section.
        medians = trajectory_medians(run_dir, run, cfg.min_cell_count)
        files = {
            RATES_FILE: write_parquet_atomic(rates, staging / RATES_FILE),
            **_follow_up_aggregates(run_dir, medians, cfg.min_cell_count, staging),
        }
        if cfg.report:
            html = render_follow_up_report(
                run_dir, min_cell_count=cfg.min_cell_count, team=cfg.team_sections, trajectories=medians
            )
            files[REPORT_FILE] = write_text_atomic(html, staging / REPORT_FILE)
        return write_snapshot_manifest(
            staging,
            FOLLOW_UP_FORMAT,
            provenance=provenance,
            study_files=study_files,
            rows=rows,
            files=files,
            declared=FollowUpManifest,
        )
