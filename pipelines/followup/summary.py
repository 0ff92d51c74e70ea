"""What a monitor run tells a team: endpoint rates per landmark, and by the responder group predicted before
infusion, as Markdown and table rows (Prefect artifacts, the command line). Small counts are suppressed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from immunostrat.report import suppress


def endpoint_rows(rates: list[Mapping[str, Any]], k: int, group: str | None = None) -> list[dict[str, Any]]:
    """Table rows (endpoint, landmark, met, not met, not assessable, subjects, rate), small counts suppressed.

    Each row's three counts add up to its `subjects`, so a reader could recompute one hidden count from the others:
    `immunostrat.report.suppress` hides counts from 1 to k-1 (`<k`) and then, on a row with one hidden count, the
    next smallest (`*`). The rate (met among the assessable) is shown only when met and not met both are.
    """
    if not rates:
        return []
    counts = np.array([[int(r["met"]), int(r["not_met"]), int(r["not_assessable"])] for r in rates], dtype=np.int64)
    values = np.column_stack([counts, counts.sum(axis=1)])
    shown = suppress(values, [[(i, j) for j in range(4)] for i in range(len(rates))], k)
    rows = []
    for i, r in enumerate(rates):
        row: dict[str, Any] = {"group": r[group]} if group else {}
        met, not_met = counts[i, 0], counts[i, 1]
        visible = str(shown[i, 0]) == str(met) and str(shown[i, 1]) == str(not_met)
        row.update(
            endpoint=r["endpoint"],
            landmark=r["landmark"],
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


def changes_markdown(changes: Mapping[str, Any]) -> list[str]:
    """What changed since the previous monitor run, as Markdown lines (counts; subjects by pseudonym)."""
    lines = ["## What changed since the last run", ""]
    if not changes.get("previous_run") or changes.get("not_compared"):
        return [*lines, f"Not compared: {changes.get('not_compared', 'no earlier run')}."]
    lines.append(f"Compared with run `{changes['previous_run']}`.")
    lines += ["", "| finding | new | resolved | corrected |", "|---|---|---|---|"]
    for kind, by_change in changes.get("counts", {}).items():
        lines.append(f"| {kind} | {by_change['new']} | {by_change['resolved']} | {by_change['corrected']} |")
    for item in changes.get("items", [])[:50]:
        who = str(item.get("subject_pseudonym", ""))[:8]
        lines.append(f"- {item['change']}: {item['kind']} `{item['item']}` (subject {who}, day {item.get('day')})")
    if changes.get("note"):
        lines.append(changes["note"])
    return lines


def monitor_summary(run: Mapping[str, Any], *, min_cell_count: int = 5) -> tuple[str, list[dict[str, Any]]]:
    """(markdown, rows) for a monitor run's run.json: counts, endpoint rates, and by predicted group."""
    k = min_cell_count
    counts = run.get("counts", {})
    visits = counts.get("visits", {})
    summary = run.get("summary", {})
    lines = [
        f"# Monitor run `{run.get('run_id')}`",
        "",
        f"Status **{run.get('status')}**, as of {run.get('as_of')}.",
        "",
        f"Lab rows read {counts.get('rows_read', 0)} = accepted {counts.get('accepted', 0)} + outside panel "
        f"{counts.get('outside_panel', 0)} + quarantined {counts.get('quarantined', 0)}; visit rows read "
        f"{visits.get('rows_read', 0)} = accepted {visits.get('accepted', 0)} + quarantined "
        f"{visits.get('quarantined', 0)}.",
    ]
    if run.get("status") != "completed":
        lines += ["", f"Stopped: {run.get('error', '')}"]
    lines += ["", *changes_markdown(run.get("changes", {}))]
    rows = endpoint_rows(summary.get("endpoints", []), k)
    lines += ["", "## Endpoints (rate among assessable subjects)", "", *_markdown_table(rows)]
    by_group = summary.get("by_predicted_group")
    if by_group:
        model = by_group.get("model", {})
        lines += [
            "",
            f"## By the responder group predicted before infusion (model `{model.get('model_id')}`, run "
            f"`{by_group.get('strata_run')}`)",
            "",
            *_markdown_table(endpoint_rows(by_group["rates"], k, group="responder_group")),
        ]
    return "\n".join(lines) + "\n", rows
