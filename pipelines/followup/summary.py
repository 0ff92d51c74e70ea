"""What a monitor run tells a team: endpoint rates per landmark, and by the responder group predicted before
infusion, as Markdown and table rows (Prefect artifacts, the command line). Small counts are suppressed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from immunostrat.reporting.disclosure import suppress
from immunostrat.reporting.templating import render_markdown
from immunostrat.schemas.records import Changes, EndpointRate, RunRecord, TableCounts, as_run_record


def endpoint_rows(
    rates: Sequence[EndpointRate | Mapping[str, Any]], k: int, group: str | None = None
) -> list[dict[str, Any]]:
    """Table rows (endpoint, landmark, met, not met, not assessable, subjects, rate), small counts suppressed.

    Each row's three counts add up to its `subjects`, so a reader could recompute one hidden count from the others:
    `immunostrat.reporting.disclosure.suppress` hides counts from 1 to k-1 (`<k`) and then, on a row with one hidden
    count, the next smallest (`*`). The rate (met among the assessable) is shown only when met and not met both are.
    """
    if not rates:
        return []
    typed = [EndpointRate.model_validate(r) if isinstance(r, Mapping) else r for r in rates]
    counts = np.array([[r.met, r.not_met, r.not_assessable] for r in typed], dtype=np.int64)
    values = np.column_stack([counts, counts.sum(axis=1)])
    shown = suppress(values, [[(i, j) for j in range(4)] for i in range(len(rates))], k)
    rows = []
    for i, r in enumerate(typed):
        row: dict[str, Any] = {"group": getattr(r, group)} if group else {}
        met, not_met = counts[i, 0], counts[i, 1]
        visible = str(shown[i, 0]) == str(met) and str(shown[i, 1]) == str(not_met)
        row.update(
            endpoint=r.endpoint,
            landmark=r.landmark,
            met=shown[i, 0],
            not_met=shown[i, 1],
            not_assessable=shown[i, 2],
            subjects=shown[i, 3],
            rate="n/a" if met + not_met == 0 else f"{met / (met + not_met):.0%}" if visible else "suppressed",
        )
        rows.append(row)
    return rows


def _markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(none)"]
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows]
    return lines


def changes_markdown(changes: Changes | Mapping[str, Any] | None) -> list[str]:
    """What changed since the previous monitor run, as Markdown lines (counts; subjects by pseudonym)."""
    record = changes if isinstance(changes, Changes) else Changes.model_validate(changes or {})
    return render_markdown("changes.md.j2", changes=record).split("\n")[:-1]


def monitor_summary(run: RunRecord | Mapping[str, Any], *, min_cell_count: int = 5) -> tuple[str, list[dict[str, Any]]]:
    """(markdown, rows) for a monitor run's run.json (a `RunRecord` or its dict): counts, endpoint rates, and by
    predicted group."""
    k = min_cell_count
    record = as_run_record(run)
    counts = record.counts
    visits = counts.visits or TableCounts()
    lines = [
        f"# Monitor run `{record.run_id}`",
        "",
        f"Status **{record.status}**, as of {record.as_of}.",
        "",
        f"Lab rows read {counts.rows_read} = accepted {counts.accepted} + outside panel "
        f"{counts.outside_panel} + quarantined {counts.quarantined}; visit rows read "
        f"{visits.rows_read} = accepted {visits.accepted} + quarantined {visits.quarantined}.",
    ]
    if not record.completed:
        lines += ["", f"Stopped: {record.error or ''}"]
    lines += ["", *changes_markdown(record.changes)]
    summary = record.summary
    rows = endpoint_rows((summary.endpoints or []) if summary else [], k)
    lines += ["", "## Endpoints (rate among assessable subjects)", "", *_markdown_table(rows)]
    by_group = summary.by_predicted_group if summary else None
    if by_group:
        model_id = by_group.model.model_id if by_group.model else None
        lines += [
            "",
            f"## By the responder group predicted before infusion (model `{model_id}`, run `{by_group.strata_run}`)",
            "",
            *_markdown_table(endpoint_rows(by_group.rates, k, group="responder_group")),
        ]
    return "\n".join(lines) + "\n", rows
