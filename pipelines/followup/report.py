"""The follow-up report of a monitor run: one self-contained HTML page, built from run.json aggregates.

Two audiences, one builder:

- the **team report** (`RUN/report.html`, always written): every section;
- the **sponsor report** (`RUN/sponsor/report.html`, with the follow-up snapshot): the same aggregate sections,
  nothing per subject.

Both show counts of subjects with small cells suppressed (`immunostrat.report.suppress`: 1 to k-1 as `<k`, then
complementary `*`), no subject identifier, site or date. Rates by predicted group use the groups the pre-infusion
stratify run predicted (`--strata`), with that run's model id, never a re-scoring with today's model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from immunostrat.followup.summary import endpoint_rows
from immunostrat.report import Section, quarantine_section, read_quarantine, render_page

__all__ = ["FOLLOW_UP_SECTIONS", "render_follow_up_report"]

#: Section ids and titles, in page order.
FOLLOW_UP_SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Run"),
    ("accounting", "Inputs and row accounting"),
    ("endpoints", "Endpoints at landmarks"),
    ("by-group", "Endpoints by predicted responder group"),
    ("quarantine", "Quarantine"),
)
_RATE_COLUMNS = ["endpoint", "landmark", "met", "not met", "not assessable", "subjects", "rate"]


def _summary(run: Mapping[str, Any], definition: Mapping[str, Any]) -> Section:
    section = Section("summary", "Run", "What this monitor run covered, and with which definitions.")
    section.add(
        "kv",
        pairs=[
            ("run", run.get("run_id", "–")),
            ("status", run.get("status", "–")),
            ("as of", run.get("as_of", "–")),
            ("endpoint definition", f"version {definition.get('version', '–')}"),
        ],
    )
    if run.get("status") != "completed":
        section.add("notice", text=f"The run stopped: {run.get('error', 'no reason recorded')}")
    return section


def _accounting(run: Mapping[str, Any]) -> Section:
    section = Section(
        "accounting",
        "Inputs and row accounting",
        "Every input row ends in exactly one place: accepted, outside the panel (labs), or quarantined with a reason.",
    )
    counts = run.get("counts", {})
    visits = counts.get("visits", {})
    subjects = counts.get("subjects", {})
    fields = ("rows_read", "accepted", "outside_panel", "quarantined")
    rows = [
        ["lab rows", *(counts.get(f, 0) for f in fields)],
        ["subjects", *(subjects.get(f, 0) for f in fields)],
        ["visits", *(visits.get(f, 0) for f in fields)],
    ]
    section.table(["input", "rows read", "accepted", "outside the panel", "quarantined"], rows)
    return section


def _table_rows(rows: Sequence[Mapping[str, Any]], group: bool = False) -> list[list[Any]]:
    keys = ["endpoint", "landmark", "met", "not_met", "not_assessable", "subjects", "rate"]
    return [[*([r["group"]] if group else []), *(r[k] for k in keys)] for r in rows]


def _endpoints(summary: Mapping[str, Any], k: int) -> Section:
    section = Section(
        "endpoints",
        "Endpoints at landmarks",
        "Per endpoint and landmark: subjects met, not met and not assessable (pending, outside the population, no "
        "visit in the window, an input unknown); the rate is met among the assessable.",
    )
    rows = endpoint_rows(summary.get("endpoints", []), k)
    if rows:
        section.table(_RATE_COLUMNS, _table_rows(rows), label_columns=2)
    else:
        section.add("text", text="No endpoint row was derived.")
    return section


def _by_group(summary: Mapping[str, Any], k: int) -> Section:
    section = Section(
        "by-group",
        "Endpoints by predicted responder group",
        "Observed endpoint rates by the responder group the pre-infusion stratify run predicted, with that run's "
        "model: the model is never re-run on today's data.",
    )
    by_group = summary.get("by_predicted_group")
    if not by_group:
        section.add("text", text="No stratify run was given (--strata): rates by predicted group are not shown.")
        return section
    model = by_group.get("model", {})
    section.add(
        "kv",
        pairs=[
            ("stratify run", Path(str(by_group.get("strata_run", "–"))).name),
            ("model", model.get("model_id", "–")),
        ],
    )
    rows = endpoint_rows(by_group.get("rates", []), k, group="responder_group")
    section.table(["predicted group", *_RATE_COLUMNS], _table_rows(rows, group=True), label_columns=3)
    return section


def render_follow_up_report(run_dir: str | Path, *, min_cell_count: int = 5) -> str:
    """The follow-up report of a monitor run folder as one HTML string (see the module docstring).

    Args:
        run_dir: A monitor run folder (its `run.json` and `quarantine.parquet` are read).
        min_cell_count: Counts of subjects below this are suppressed.
    """
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    summary = run.get("summary", {})
    definition = summary.get("endpoint_definition", {})
    k = min_cell_count
    sections = [
        _summary(run, definition),
        _accounting(run),
        _endpoints(summary, k),
        _by_group(summary, k),
        quarantine_section(run, read_quarantine(run_dir), k),
    ]
    assert [(s.id, s.title) for s in sections] == list(FOLLOW_UP_SECTIONS)
    return render_page(
        title=f"immunostrat follow-up {run.get('run_id', '')}",
        subtitle=f"Follow-up report · {run.get('status', 'unknown')} · as of {run.get('as_of', '–')}",
        sections=sections,
    )
