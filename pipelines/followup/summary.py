"""What a monitor run tells a team: endpoint rates per landmark, and by the responder group predicted before
infusion, as Markdown and table rows (Prefect artifacts, the command line). Small counts are suppressed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _cell(n: int, k: int) -> int | str:
    """A count as shown: suppressed below `k` (but 0 is shown: it discloses no one)."""
    return n if n == 0 or n >= k else f"<{k}"


def _rate(row: Mapping[str, Any], k: int) -> str:
    assessable = int(row["met"]) + int(row["not_met"])
    if assessable == 0:
        return "n/a"
    if (int(row["met"]) and int(row["met"]) < k) or (int(row["not_met"]) and int(row["not_met"]) < k):
        return "suppressed"
    return f"{int(row['met']) / assessable:.0%}"


def endpoint_rows(rates: list[Mapping[str, Any]], k: int, group: str | None = None) -> list[dict[str, Any]]:
    """Table rows (endpoint, landmark, met, not met, not assessable, rate) with counts below `k` suppressed."""
    rows = []
    for r in rates:
        row: dict[str, Any] = {"group": r[group]} if group else {}
        row.update(
            endpoint=r["endpoint"],
            landmark=r["landmark"],
            met=_cell(int(r["met"]), k),
            not_met=_cell(int(r["not_met"]), k),
            not_assessable=_cell(int(r["not_assessable"]), k),
            rate=_rate(r, k),
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
