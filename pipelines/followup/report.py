"""The follow-up report of a monitor run: one self-contained HTML page, built from run.json aggregates.

Two audiences, one builder:

- the **team report** (`RUN/report.html`, always written): every section;
- the **sponsor report** (`RUN/sponsor/report.html`, with the follow-up snapshot): the same aggregate sections,
  nothing per subject.

Both show counts of subjects with small cells suppressed (`immunostrat.reporting.disclosure.suppress`: 1 to k-1 as
`<k`, then complementary `*`), no subject identifier, site or date. Rates by predicted group use the groups the
pre-infusion stratify run predicted (`--strata`), with that run's model id, never a re-scoring with today's model.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from immunostrat.followup.summary import endpoint_rows
from immunostrat.reporting.disclosure import suppress
from immunostrat.reporting.figures import SWIMMER_MARKS, figure_block, swimmer_figure, trajectory_figure
from immunostrat.reporting.page import Section, render_page
from immunostrat.reporting.quarantine import quarantine_section, read_quarantine
from immunostrat.reporting.report import GROUPS
from immunostrat.schemas.records import RunRecord, Summary, TableCounts, as_run_record, read_run_record

__all__ = ["FOLLOW_UP_SECTIONS", "TEAM_ONLY", "render_follow_up_report", "toxicity_by_grade", "trajectory_medians"]

#: Section ids and titles, in page order.
FOLLOW_UP_SECTIONS: tuple[tuple[str, str], ...] = (
    ("changes", "What changed since the last run"),
    ("summary", "Run"),
    ("accounting", "Inputs and row accounting"),
    ("endpoints", "Endpoints at landmarks"),
    ("by-group", "Endpoints by predicted responder group"),
    ("toxicity", "Toxicity by grade"),
    ("trajectories", "B cells and anti-dsDNA by predicted group"),
    ("swimmer", "Swimmer plot"),
    ("quarantine", "Quarantine"),
)
#: Sections the sponsor's copy leaves out: per-subject lanes, even pseudonymised.
TEAM_ONLY: frozenset[str] = frozenset({"changes", "swimmer"})
#: Grades a toxicity table shows, then "not assessable".
_GRADES = (0, 1, 2, 3, 4, 5)
_RATE_COLUMNS = ["endpoint", "landmark", "met", "not met", "not assessable", "subjects", "rate"]


def _summary(run: RunRecord, summary: Summary) -> Section:
    section = Section("summary", "Run", "What this monitor run covered, and with which definitions.")
    definition = summary.endpoint_definition
    section.add(
        "kv",
        pairs=[
            ("run", run.run_id),
            ("status", run.status),
            ("as of", run.as_of or "–"),
            ("endpoint definition", f"version {(definition.version if definition else None) or '–'}"),
        ],
    )
    if not run.completed:
        section.add("notice", text=f"The run stopped: {run.error or 'no reason recorded'}")
    return section


def _accounting(run: RunRecord) -> Section:
    section = Section(
        "accounting",
        "Inputs and row accounting",
        "Every input row ends in exactly one place: accepted, outside the panel (labs), or quarantined with a reason.",
    )
    counts = run.counts
    visits = counts.visits or TableCounts()
    subjects = counts.subjects or TableCounts()
    rows = [
        ["lab rows", counts.rows_read, counts.accepted, counts.outside_panel, counts.quarantined],
        # Subjects and visits have no panel: nothing of theirs is outside it.
        ["subjects", subjects.rows_read, subjects.accepted, 0, subjects.quarantined],
        ["visits", visits.rows_read, visits.accepted, 0, visits.quarantined],
    ]
    section.table(["input", "rows read", "accepted", "outside the panel", "quarantined"], rows)
    return section


def _table_rows(rows: Sequence[Mapping[str, Any]], group: bool = False) -> list[list[Any]]:
    keys = ["endpoint", "landmark", "met", "not_met", "not_assessable", "subjects", "rate"]
    return [[*([r["group"]] if group else []), *(r[k] for k in keys)] for r in rows]


def _endpoints(summary: Summary, k: int) -> Section:
    section = Section(
        "endpoints",
        "Endpoints at landmarks",
        "Per endpoint and landmark: subjects met, not met and not assessable (pending, outside the population, no "
        "visit in the window, an input unknown); the rate is met among the assessable.",
    )
    rows = endpoint_rows(summary.endpoints or [], k)
    if rows:
        section.table(_RATE_COLUMNS, _table_rows(rows), label_columns=2)
    else:
        section.add("text", text="No endpoint row was derived.")
    return section


def _by_group(summary: Summary, k: int) -> Section:
    section = Section(
        "by-group",
        "Endpoints by predicted responder group",
        "Observed endpoint rates by the responder group the pre-infusion stratify run predicted, with that run's "
        "model: the model is never re-run on today's data.",
    )
    by_group = summary.by_predicted_group
    if not by_group:
        section.add("text", text="No stratify run was given (--strata): rates by predicted group are not shown.")
        return section
    section.add(
        "kv",
        pairs=[
            ("stratify run", Path(by_group.strata_run or "–").name),
            ("model", by_group.model.model_id if by_group.model else "–"),
        ],
    )
    rows = endpoint_rows(by_group.rates, k, group="responder_group")
    section.table(["predicted group", *_RATE_COLUMNS], _table_rows(rows, group=True), label_columns=3)
    return section


def _changes(run: RunRecord) -> Section:
    section = Section(
        "changes",
        "What changed since the last run",
        "Findings a team acts on (treatment-emergent grade >= 3 toxicities, endpoints met, relapses) compared with "
        "the newest earlier monitor run of this output folder: new, resolved, or corrected by a data change.",
    )
    changes = run.changes
    if not changes:
        section.add("text", text="Not compared (no comparison was recorded for this run).")
        return section
    section.add("kv", pairs=[("compared with", changes.previous_run or "–")])
    if changes.not_compared:
        section.add("notice", text=f"Not compared: {changes.not_compared}.")
        return section
    section.table(
        ["finding", "new", "resolved", "corrected"],
        [[kind, c.get("new", 0), c.get("resolved", 0), c.get("corrected", 0)] for kind, c in changes.counts.items()],
        caption="Changes by kind of finding",
    )
    items = changes.items
    if items:
        section.table(
            ["subject", "finding", "item", "change", "day"],
            [[i.subject_pseudonym or "–", i.kind, i.item, i.change, i.day] for i in items],
            caption="Every change (subjects by pseudonym)",
            label_columns=1,
        )
    return section


def _read(run_dir: Path, name: str) -> pl.DataFrame | None:
    path = run_dir / name
    return pl.read_parquet(path) if path.is_file() else None


def toxicity_by_grade(toxicity: pl.DataFrame, k: int) -> pl.DataFrame:
    """Subjects by worst grade per measure (every `*_grade` column of toxicity.parquet), small cells suppressed.

    Returns:
        `measure`, then one column per grade 0-5, `not_assessable` and `subjects`, as display strings (`<k`, `*`
        where suppressed; see `immunostrat.reporting.disclosure.suppress`).
    """
    columns = [c for c in toxicity.columns if c.endswith("_grade")]
    counts = np.array(
        [[int((toxicity[c] == g).sum()) for g in _GRADES] + [toxicity[c].null_count()] for c in columns],
        dtype=np.int64,
    ).reshape(len(columns), len(_GRADES) + 1)
    values = np.column_stack([counts, counts.sum(axis=1)])
    shown = suppress(values, [[(i, j) for j in range(values.shape[1])] for i in range(len(columns))], k)
    names = [*(f"grade_{g}" for g in _GRADES), "not_assessable", "subjects"]
    return pl.DataFrame(
        {
            "measure": [c.removesuffix("_grade") for c in columns],
            **{name: [str(shown[i, j]) for i in range(len(columns))] for j, name in enumerate(names)},
        },
        schema={"measure": pl.String, **dict.fromkeys(names, pl.String)},
    )


def _toxicity(run_dir: Path, k: int) -> Section:
    section = Section(
        "toxicity",
        "Toxicity by grade",
        "Subjects by their worst grade per measure: CRS and ICANS (ASTCT 2019), ICAHT (EHA/EBMT 2023) and the "
        "worst treatment-emergent CTCAE v5 laboratory grade per term; small cells suppressed.",
    )
    table = _read(run_dir, "toxicity.parquet")
    if table is None or not any(c.endswith("_grade") for c in table.columns):
        section.add("text", text="No toxicity table in this run.")
        return section
    by_grade = toxicity_by_grade(table, k)
    section.table(
        ["measure", *(f"grade {g}" for g in _GRADES), "not assessable", "subjects"],
        [[row[0].replace("_", " "), *row[1:]] for row in by_grade.iter_rows()],
        caption="Subjects by worst grade",
    )
    return section


#: Day bins of the trajectories (days since infusion), labelled by their upper edge.
_BINS: tuple[tuple[int, int, str], ...] = (
    (-90, 0, "baseline"),
    (1, 30, "month 1"),
    (31, 90, "month 3"),
    (91, 180, "month 6"),
    (181, 365, "month 12"),
)


def trajectory_medians(run_dir: Path, run: RunRecord | Mapping[str, Any], k: int) -> pl.DataFrame | None:
    """Median CD19+ B cells and anti-dsDNA per predicted group and period since infusion (`_BINS`), with the
    number of subjects; both are null where fewer than `k` subjects contribute. None without the immune
    course or a readable stratify run."""
    summary = as_run_record(run).summary
    by_group = summary.by_predicted_group if summary else None
    strata_run = by_group.strata_run if by_group else None
    harmonised, course = run_dir / "harmonised.parquet", run_dir / "immune_course.parquet"
    strata = Path(str(strata_run)) / "strata.parquet" if strata_run else None
    if strata is None or not strata.is_file() or not harmonised.is_file() or not course.is_file():
        return None
    key = ["study_id", "subject_id"]
    day = (pl.col("collected_date") - pl.col("day0")).dt.total_days()
    period = pl.lit(None, pl.String)
    for low, high, label in reversed(_BINS):
        period = pl.when(day.is_between(low, high)).then(pl.lit(label)).otherwise(period)
    return (
        pl.scan_parquet(harmonised)
        .filter(pl.col("analyte").is_in(["cd19_b_cells", "anti_dsdna"]))
        .select(*key, "analyte", "value", "collected_date")
        .join(pl.scan_parquet(strata).select(*key, "responder_group"), on=key)
        .join(pl.scan_parquet(course).select(*key, "day0"), on=key)
        .with_columns(period=period)
        .filter(pl.col("period").is_not_null())
        .group_by("analyte", "responder_group", "period")
        .agg(median=pl.col("value").median(), subjects=pl.struct(key).n_unique())
        # Under k subjects neither the median nor the count is shown.
        .with_columns(
            median=pl.when(pl.col("subjects") >= k).then("median"),
            subjects=pl.when(pl.col("subjects") >= k).then("subjects"),
        )
        .sort("analyte", "responder_group", "period")
        .collect()
    )


def _trajectories(rows: pl.DataFrame | None) -> Section:
    """The trajectories section from `trajectory_medians` (None: the inputs it needs are missing)."""
    section = Section(
        "trajectories",
        "B cells and anti-dsDNA by predicted group",
        "Median CD19+ B cells (cells/uL) and anti-dsDNA (IU/mL) per period since infusion, by the responder group "
        "the pre-infusion stratify run predicted; a cell with fewer than the minimum subjects is suppressed.",
    )
    if rows is None:
        section.add("text", text="Needs the immune course and a readable stratify run (--strata).")
        return section
    labels = [b[2] for b in _BINS]
    panels = []
    for analyte, title in (("cd19_b_cells", "CD19+ B cells"), ("anti_dsdna", "anti-dsDNA")):
        table_rows = []
        by_group = {}
        for group in GROUPS:
            part = rows.filter((pl.col("analyte") == analyte) & (pl.col("responder_group") == group))
            by_period = dict(zip(part["period"], part["median"], strict=True))
            medians = [by_period.get(p) for p in labels]
            if any(m is not None for m in medians):
                by_group[group] = medians
                table_rows.append([analyte, group, *medians])
        panels.append((title, by_group))
        if table_rows:
            section.table(["analyte", "predicted group", *labels], table_rows, label_columns=2)
    chart = trajectory_figure(labels, panels)
    section.blocks.append(figure_block(chart, "Median B cells and anti-dsDNA over time by predicted group"))
    return section


def _lane_events(run_dir: Path, course: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """Per subject: follow-up end (death, discontinuation or re-treatment, else `as_of`), aplasia span, CRS/ICANS
    onset, first met endpoint, relapse (days since infusion)."""
    key = ["study_id", "subject_id"]
    frame = course.select(
        *key,
        end=pl.coalesce("course_end_day", (pl.lit(as_of) - pl.col("day0")).dt.total_days().cast(pl.Int32)),
        aplasia=pl.col("b_cell_aplasia_day"),
        aplasia_end=pl.coalesce("b_cell_return_day", "b_cell_censored_day"),
        relapse=pl.min_horizontal("serological_relapse_day", "first_flare_day"),
    )
    toxicity = _read(run_dir, "toxicity.parquet")
    if toxicity is not None:
        onsets = [c for c in ("crs_onset_day", "icans_onset_day") if c in toxicity.columns]
        frame = frame.join(toxicity.select(*key, *onsets), on=key, how="left")
    endpoints = _read(run_dir, "endpoints.parquet")
    if endpoints is not None:
        met = endpoints.filter(pl.col("met").fill_null(False)).group_by(key).agg(met_day=pl.col("visit_day").min())
        frame = frame.join(met, on=key, how="left")
    return frame


def _swimmer(run_dir: Path, as_of: dt.date, lanes: int, labels: Any = None) -> Section:
    section = Section(
        "swimmer",
        "Swimmer plot",
        f"One lane per subject (at most {lanes}, longest follow-up first): days since infusion, B-cell aplasia "
        "(bar), CRS and ICANS onset, the first endpoint met and the first relapse. Team only: never published.",
    )
    course = _read(run_dir, "immune_course.parquet")
    if course is None or course.height == 0:
        section.add("text", text="No immune course in this run.")
        return section
    frame = _lane_events(run_dir, course, as_of).filter(pl.col("end").is_not_null())
    frame = frame.sort("end", descending=True).head(lanes)
    names = labels(frame) if labels is not None else [f"lane {i + 1}" for i in range(frame.height)]
    marks = [m[0] for m in SWIMMER_MARKS if m[0] in frame.columns]
    lane_days = frame.select(
        "end", "aplasia", *marks, aplasia_stop=pl.coalesce("aplasia_end", "end", pl.lit(0, pl.Int32))
    )
    chart = swimmer_figure(names, lane_days)
    section.blocks.append(figure_block(chart, "Swimmer plot: one lane per subject over days since infusion"))
    return section


def render_follow_up_report(
    run_dir: str | Path,
    *,
    min_cell_count: int = 5,
    team: bool = True,
    swimmer_lanes: int = 40,
    lane_labels: Any = None,
    trajectories: pl.DataFrame | Literal["compute"] | None = "compute",
) -> str:
    """The follow-up report of a monitor run folder as one HTML string (see the module docstring).

    Args:
        run_dir: A monitor run folder (its `run.json`, tables and `quarantine.parquet` are read).
        min_cell_count: Counts of subjects below this are suppressed.
        team: The team's copy (every section) or the sponsor's (without `TEAM_ONLY` sections).
        swimmer_lanes: At most this many lanes in the swimmer plot.
        lane_labels: frame -> list of lane labels (e.g. pseudonyms); default "lane 1", "lane 2", ...
        trajectories: What `trajectory_medians` returned for this run folder at `min_cell_count`, when the caller
            has it already (the follow-up snapshot writes the same table); "compute" reads it from the run folder.
    """
    run_dir = Path(run_dir)
    run = read_run_record(run_dir)
    summary = run.summary or Summary()
    k = min_cell_count
    if isinstance(trajectories, str):
        trajectories = trajectory_medians(run_dir, run, k)
    sections = [
        _changes(run),
        _summary(run, summary),
        _accounting(run),
        _endpoints(summary, k),
        _by_group(summary, k),
        _toxicity(run_dir, k),
        _trajectories(trajectories),
        _swimmer(run_dir, dt.date.fromisoformat(str(run.as_of)), swimmer_lanes, lane_labels),
        quarantine_section(run, read_quarantine(run_dir), k),
    ]
    assert [(s.id, s.title) for s in sections] == list(FOLLOW_UP_SECTIONS)
    if not team:
        sections = [s for s in sections if s.id not in TEAM_ONLY]
    return render_page(
        title=f"immunostrat follow-up {run.run_id}",
        subtitle=f"Follow-up report · {run.status} · as of {run.as_of or '–'}",
        sections=sections,
    )
