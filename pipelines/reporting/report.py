"""The run report: one self-contained HTML file per run, written to be safe in sponsors' hands.

There is one report, and it is sponsor-safe by construction, so it can travel with the sponsor snapshot
(``RUN/sponsor/report.html``) and be shown to the team alike:

- it is built from the sponsor table (pseudonymised: no subject ids, no dates, sites as published), from
  ``run.json`` counts, and from ``quarantine.parquet`` reduced to reason, input kind, column and, for columns
  that cannot identify anyone, a truncated value; no subject id, site id, date, file path or message text ever
  reaches it;
- every count of subjects from 1 to ``min_cell_count - 1`` (default 5) is shown as ``<5``, and any further cell
  from which such a count could be recomputed through a displayed total is shown as ``*`` (complementary
  suppression); groups smaller than that are left out of distribution plots. Counts of lab *rows* (not
  subjects) are shown as they are;
- it opens offline: figures are matplotlib PNGs embedded as ``data:`` URIs, styles are inline, there is no
  script, and a Content-Security-Policy forbids loading anything.

The team's unsuppressed detail stays in the run folder (``run.json``, ``quarantine.parquet``).
:func:`artifact_summary` gives the Markdown summary and the group-count rows that the Prefect flow publishes as
artifacts.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from immunostrat import __version__
from immunostrat.reporting.templating import environment
from immunostrat.schemas.records import FileCounts, ModelCard, RunRecord, read_run_record
from immunostrat.sponsor.snapshot import SNAPSHOT_DIR, SNAPSHOT_MANIFEST, read_snapshot

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


__all__ = [
    "GROUPS",
    "SECTIONS",
    "Section",
    "artifact_summary",
    "render_page",
    "render_report",
    "suppress",
]

#: Section ids, in page order (the browser test checks each one).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Run"),
    ("cohort", "Cohort and row accounting"),
    ("funnel", "Eligibility funnel"),
    ("groups", "Responder groups by study and site"),
    ("biomarkers", "Biomarkers by group"),
    ("model", "Model calibration and ROC"),
    ("drift", "Drift"),
    ("quarantine", "Quarantine"),
)
#: Responder groups, highest first, then not assessable.
GROUPS: tuple[str, ...] = ("likely", "possible", "unlikely", "not_assessable")
_GROUP_COLOURS = {"likely": "#2f855a", "possible": "#d69e2e", "unlikely": "#4a6fa5", "not_assessable": "#a0aec0"}
#: Quarantine columns whose offending value is shown (truncated); every other column's value is withheld.
SHOWN_VALUE_COLUMNS = frozenset(
    {
        "test",
        "result",
        "unit",
        "method",
        "ref_low",
        "ref_high",
        "sex",
        "sledai_2k",
        "prior_immunosuppressant_failures",
        "lupus_nephritis_class",
        "egfr",
        "active_cns_lupus",
    }
)
_VALUE_WIDTH = 24
_EXAMPLES_PER_REASON = 3
#: Biomarkers plotted by group: column, label, log scale.
_BIOMARKERS: tuple[tuple[str, str, bool], ...] = (
    ("anti_dsdna_ratio", "Anti-dsDNA (x positivity cut-off)", True),
    ("c3", "C3 (g/L)", False),
    ("c4", "C4 (g/L)", False),
    ("ifn_ratio", "IFN score (x method cut-off)", True),
    ("cd19_b_cells", "CD19+ B cells (cells/uL)", True),
    ("cd4_cd8_ratio", "CD4/CD8 ratio", True),
)
_TEMPLATE = "report.html.j2"


def report_columns(columns: Sequence[str]) -> list[str]:
    """The sponsor-table columns the report reads (of `columns`): a large run hands over only these."""
    wanted = {"study_id", "site", "eligible", "responder_group", *(b[0] for b in _BIOMARKERS)}
    return [c for c in columns if c in wanted or c.startswith("criterion_")]


# --------------------------------------------------------------------------------------------------
# Small-cell suppression
# --------------------------------------------------------------------------------------------------

Cell = tuple[int, int]


def suppress(values: np.ndarray, lines: Sequence[Sequence[Cell]], min_cell_count: int) -> np.ndarray:
    """Display strings for a table of subject counts, small cells suppressed.

    Primary suppression hides every count from 1 to ``min_cell_count - 1`` (shown as ``<k``). Complementary
    suppression then hides, on any line (a set of cells a reader can add up, e.g. a row with its displayed total)
    that has exactly one hidden cell, the smallest visible non-zero cell of that line (shown as ``*``), until no
    line gives a hidden cell away. Zeros are shown.

    Args:
        values: Non-negative integer counts (totals included as ordinary cells).
        lines: Each a sequence of (row, column) cells whose sum relation is visible to a reader.
        min_cell_count: The threshold k.

    Returns:
        An array of strings of the same shape.
    """
    counts = np.asarray(values, dtype=np.int64)
    primary = (counts > 0) & (counts < min_cell_count)
    hidden = primary.copy()
    changed = True
    while changed:
        changed = False
        for line in lines:
            if sum(bool(hidden[c]) for c in line) != 1:
                continue
            options = [c for c in line if not hidden[c] and counts[c] > 0]
            if options:
                hidden[min(options, key=lambda c: (int(counts[c]), c))] = True
                changed = True
    out = counts.astype(str).astype(object)
    out[hidden] = "*"
    out[primary] = f"<{min_cell_count}"
    return out


def _margin_lines(rows: int, cols: int) -> list[list[Cell]]:
    """Lines of a table whose last row and last column are totals."""
    lines = [[(i, j) for j in range(cols)] for i in range(rows)]
    lines += [[(i, j) for i in range(rows)] for j in range(cols)]
    return lines


def _with_margins(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    full = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.int64)
    full[:-1, :-1] = values
    full[:-1, -1] = values.sum(axis=1)
    full[-1, :] = full[:-1, :].sum(axis=0)
    return full


# --------------------------------------------------------------------------------------------------
# Page blocks
# --------------------------------------------------------------------------------------------------


@dataclass
class Section:
    """One section of the page: an id, a title, an intro and its blocks (dicts the template renders)."""

    id: str
    title: str
    intro: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, **content: Any) -> None:
        """Append a block (`heading`, `note`, `notice`, `text`, `kv`, `table` or `figure`)."""
        self.blocks.append({"kind": kind, **content})

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        caption: str = "",
        label_columns: int = 1,
        note: str = "",
        css: Sequence[str] | None = None,
    ) -> None:
        """Append a table; `css` gives a class per row (e.g. `subtotal`)."""
        styles = list(css) if css is not None else [""] * len(rows)
        self.add(
            "table",
            columns=list(columns),
            rows=[{"cells": [_text(c) for c in row], "css": s} for row, s in zip(rows, styles, strict=True)],
            caption=caption,
            label_columns=label_columns,
            note=note,
        )


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def figure_block(fig: Figure, alt: str, caption: str = "") -> dict[str, Any]:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    width, height = (round(float(v)) for v in fig.get_size_inches() * 100)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {
        "kind": "figure",
        "src": f"data:image/png;base64,{encoded}",
        "alt": alt,
        "caption": caption,
        "width": width,
        "height": height,
    }


def new_figure(width: float, height: float, layout: Literal["constrained", "tight"] | None = "constrained") -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=layout)


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


def _summary(run: RunRecord, provenance: Mapping[str, Any] | None, k: int) -> Section:
    section = Section("summary", "Run", "What was run, on which model and protocol, and how this report protects.")
    model = run.model
    protocol = run.protocol or {}
    items = [
        ("run id", run.run_id),
        ("status", run.status),
        ("as-of date", run.as_of),
        ("finished", run.finished_at),
        ("immunostrat", run.versions.get("immunostrat")),
        ("model", f"{model.model_id} (sha256 {model.sha256[:12]}…)" if model else "–"),
        ("protocol", f"{protocol.get('protocol_id', '–')} version {protocol.get('version', '–')}"),
    ]
    if provenance:
        privacy = provenance.get("privacy", {})
        items += [
            ("sponsor schema", provenance.get("schema_version")),
            ("pseudonym key id", privacy.get("pseudonym", {}).get("key_id")),
            ("sites", privacy.get("site")),
            ("dates", privacy.get("dates")),
        ]
    section.add("kv", pairs=[(key, _text(value)) for key, value in items])
    if not run.completed:
        section.add("note", text=f"This run did not complete: {run.error or 'no reason recorded'}")
    section.add(
        "notice",
        text=f"Counts of 1 to {k - 1} subjects are shown as <{k}; a cell that would reveal one through a total is "
        "shown as *. Subject identifiers, dates and free text do not appear in this report.",
    )
    return section


def _cohort(run: RunRecord, sponsor: pl.DataFrame | None, k: int) -> Section:
    section = Section(
        "cohort",
        "Cohort and row accounting",
        "Every lab row ends in exactly one place: accepted, outside the panel, or quarantined.",
    )
    counts = run.counts
    section.table(
        ["lab rows", "count"],
        [
            ["read", counts.rows_read],
            ["accepted", counts.accepted],
            ["outside the panel", counts.outside_panel],
            ["quarantined", counts.quarantined],
        ],
        caption="Lab rows (rows, not subjects: not suppressed)",
    )
    files = [i for i in run.inputs if i.kind == "labs"]
    if len(files) > 1:
        rows = []
        for n, item in enumerate(files, start=1):
            c = counts.per_file.get(item.path) or FileCounts()
            rows.append(
                [
                    f"labs file {n} ({(item.sha256 or '')[:12]}…)",
                    c.rows_read,
                    c.accepted,
                    c.outside_panel,
                    c.quarantined,
                ]
            )
        section.table(
            ["input", "read", "accepted", "outside panel", "quarantined"], rows, caption="Lab rows per input file"
        )
    subjects = counts.subjects
    if subjects:
        values = np.array([[subjects.accepted], [subjects.quarantined]], dtype=np.int64)
        full = np.vstack([values, values.sum(axis=0, keepdims=True)])
        shown = suppress(full, [[(0, 0), (1, 0), (2, 0)]], k)
        section.table(
            ["subjects file", "subjects"],
            [["valid", shown[0, 0]], ["quarantined", shown[1, 0]], ["read", shown[2, 0]]],
            caption="Subjects",
        )
    if sponsor is None or sponsor.height == 0:
        section.add("note", text="No stratified subjects in this run.")
        return section
    studies = sorted(sponsor["study_id"].unique().to_list())
    by_study = (
        sponsor.group_by("study_id")
        .agg(
            yes=(pl.col("eligible") == True).sum(),  # noqa: E712
            no=(pl.col("eligible") == False).sum(),  # noqa: E712
            unknown=pl.col("eligible").is_null().sum(),
        )
        .sort("study_id")
    )
    full = _with_margins(by_study.select("yes", "no", "unknown").to_numpy())
    shown = suppress(full, _margin_lines(*full.shape), k)
    rows = [[s, *shown[i]] for i, s in enumerate(studies)] + [["all studies", *shown[-1]]]
    section.table(
        ["study", "eligible", "not eligible", "not assessable", "subjects"],
        rows,
        caption="Stratified subjects by study and eligibility",
        css=[""] * len(studies) + ["subtotal"],
    )
    return section


def _funnel(run: RunRecord, sponsor: pl.DataFrame | None, k: int) -> Section:
    section = Section(
        "funnel",
        "Eligibility funnel",
        "Each protocol criterion counted over all subjects, then applied in protocol order (a subject stays in the "
        "funnel only while every criterion so far has passed; not assessable does not pass).",
    )
    criteria = [c for c in (sponsor.columns if sponsor is not None else []) if c.startswith("criterion_")]
    if sponsor is None or not criteria or sponsor.height == 0:
        section.add("note", text="No eligibility results in this run.")
        return section
    funnel = (run.summary.eligibility_funnel if run.summary else None) or []
    described = {f.criterion: f.description for f in funnel}
    n = sponsor.height
    per = sponsor.select(
        *(
            pl.struct(
                passed=(pl.col(c) == True).sum(),  # noqa: E712
                failed=(pl.col(c) == False).sum(),  # noqa: E712
                unknown=pl.col(c).is_null().sum(),
            ).alias(c)
            for c in criteria
        )
    ).row(0)
    values = np.array([[p["passed"], p["failed"], p["unknown"], n] for p in per], dtype=np.int64)
    shown = suppress(values, [[(i, 0), (i, 1), (i, 2), (i, 3)] for i in range(len(criteria))], k)
    ids = [c.removeprefix("criterion_") for c in criteria]
    section.table(
        ["criterion", "description", "passed", "failed", "not assessable"],
        [[i, described.get(i, ""), *shown[r, :3]] for r, i in enumerate(ids)],
        caption=f"Per criterion, over all {n if n >= k else f'<{k}'} subjects",
        label_columns=2,
    )
    running = sponsor.select(
        pl.all_horizontal([pl.col(c).fill_null(False) for c in criteria[: i + 1]]).sum().alias(str(i))
        for i in range(len(criteria))
    ).row(0)
    remaining = [n, *map(int, running)]
    seq = np.array([[0, remaining[0]]] + [[remaining[i] - remaining[i + 1], remaining[i + 1]] for i in range(len(ids))])
    seq_lines = [[(i - 1, 1), (i, 0), (i, 1)] for i in range(1, seq.shape[0])]
    seq_shown = suppress(seq, seq_lines, k)
    section.table(
        ["step", "excluded at this step", "remaining"],
        [["all stratified subjects", "", seq_shown[0, 1]]] + [[i, *seq_shown[r + 1]] for r, i in enumerate(ids)],
        caption="Applied in protocol order",
    )
    fig = new_figure(9.5, 0.5 * len(ids) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(ids))[::-1]
    shown_remaining = [v if v >= k else 0 for v in remaining[1:]]
    ax.barh(y, shown_remaining, color="#2f6f9f", label="remaining after this step")
    failed = [int(v[1]) if v[1] >= k else 0 for v in values]
    ax.barh(y, failed, left=shown_remaining, color="#e07b67", label="failed this criterion (of all)")
    for yi, value, fail in zip(y, remaining[1:], values[:, 1], strict=True):
        label = f"{value}" if value >= k else f"<{k}"
        ax.text(1, yi, label, va="center", ha="left", color="white" if value >= k else "#1f2933", fontsize=9)
        if 0 < fail < k:
            ax.text(value if value >= k else 0, yi, f"  failed <{k}", va="center", fontsize=8, color="#9b2c2c")
    ax.set_yticks(y, ids)
    ax.set_xlabel("subjects")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    section.blocks.append(
        figure_block(
            fig,
            "Bar chart: subjects remaining after each eligibility criterion, and subjects failing each criterion",
            "Blue: subjects still eligible after applying the criteria in order; red: subjects failing that "
            "criterion over the whole cohort. Suppressed counts are not drawn.",
        )
    )
    return section


def _site_label(value: Any) -> str:
    return "(not sent)" if value is None else str(value)


def _groups(sponsor: pl.DataFrame | None, k: int) -> Section:
    section = Section(
        "groups",
        "Responder groups by study and site",
        "Predicted responder group of every stratified subject. Sites appear as published to sponsors.",
    )
    if sponsor is None or sponsor.height == 0:
        section.add("note", text="No scored subjects in this run.")
        return section
    counts = (
        sponsor.group_by("study_id", "site")
        .agg(*((pl.col("responder_group") == g).sum().alias(g) for g in GROUPS))
        .sort("study_id", "site", nulls_last=True)
    )
    with_sites = sponsor["site"].null_count() < sponsor.height
    studies = sorted(counts["study_id"].unique().to_list())
    labels: list[list[str]] = []
    blocks: list[np.ndarray] = []
    css: list[str] = []
    lines: list[list[Cell]] = []
    subtotal_rows: list[int] = []
    for study in studies:
        part = counts.filter(pl.col("study_id") == study)
        cells = part.select(GROUPS).to_numpy().astype(np.int64)
        start = sum(b.shape[0] for b in blocks)
        if with_sites:
            site_rows = np.column_stack([cells, cells.sum(axis=1)])
            subtotal = site_rows.sum(axis=0, keepdims=True)
            blocks += [site_rows, subtotal]
            labels += [[study, _site_label(s)] for s in part["site"].to_list()] + [[study, "all sites"]]
            css += [""] * part.height + ["subtotal"]
            end = start + part.height  # the subtotal row
            lines += [[(i, j) for i in range(start, end + 1)] for j in range(len(GROUPS) + 1)]
            subtotal_rows.append(end)
        else:
            row = cells.sum(axis=0, keepdims=True)
            blocks.append(np.column_stack([row, row.sum(axis=1)]))
            labels.append([study, "–"])
            css.append("subtotal")
            subtotal_rows.append(start)
    table = np.vstack(blocks)
    grand = table[subtotal_rows].sum(axis=0, keepdims=True)
    table = np.vstack([table, grand])
    last = table.shape[0] - 1
    labels.append(["all studies", ""])
    css.append("subtotal")
    lines += [[(i, j) for j in range(len(GROUPS) + 1)] for i in range(table.shape[0])]
    lines += [[*((r, j) for r in subtotal_rows), (last, j)] for j in range(len(GROUPS) + 1)]
    shown = suppress(table, lines, k)
    section.table(
        ["study", "site", *(g.replace("_", " ") for g in GROUPS), "total"],
        [[*labels[i], *shown[i]] for i in range(table.shape[0])],
        caption="Subjects by predicted responder group",
        label_columns=2,
        css=css,
    )
    fig = new_figure(9.5, 0.55 * len(studies) + 1.6)
    ax = fig.add_subplot()
    y = np.arange(len(studies))[::-1]
    left = np.zeros(len(studies))
    for j, group in enumerate(GROUPS):
        widths = np.array(
            [table[r, j] if shown[r, j] == str(table[r, j]) else 0 for r in subtotal_rows], dtype=np.float64
        )
        ax.barh(y, widths, left=left, color=_GROUP_COLOURS[group], label=group.replace("_", " "))
        left += widths
    ax.set_yticks(y, studies)
    ax.set_xlabel("subjects")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    section.blocks.append(
        figure_block(
            fig,
            "Stacked bar chart of subjects per responder group for each study",
            "Responder groups per study; suppressed cells are not drawn.",
        )
    )
    return section


def _biomarkers(sponsor: pl.DataFrame | None, k: int) -> Section:
    section = Section(
        "biomarkers",
        "Biomarkers by group",
        "Baseline biomarkers by predicted responder group: boxes span the quartiles, whiskers the 5th to 95th "
        f"percentiles; individual values are never drawn. Groups with fewer than {k} values are left out.",
    )
    present = [b for b in _BIOMARKERS if sponsor is not None and b[0] in sponsor.columns]
    if sponsor is None or sponsor.height == 0 or not present:
        section.add("note", text="No baseline biomarkers in this run.")
        return section
    rows_of_plots = (len(present) + 2) // 3
    fig = new_figure(10.5, 3.0 * rows_of_plots, layout=None)  # fixed margins: constrained layout costs seconds here
    fig.subplots_adjust(
        left=0.06, right=0.99, top=1 - 0.3 / (3.0 * rows_of_plots), bottom=0.08, wspace=0.25, hspace=0.35
    )
    axes = fig.subplots(rows_of_plots, 3, squeeze=False).ravel()
    # One narrow split by group instead of a filter of the whole table per biomarker and group.
    by_group = sponsor.select("responder_group", *(b[0] for b in present)).partition_by("responder_group", as_dict=True)
    rows = []
    for ax, (column, label, log) in zip(axes, present, strict=False):
        boxes, names, cells = [], [], []
        positive = True  # every plotted value > 0: a log axis can show them
        for group in GROUPS:
            part = by_group.get((group,))
            series = part[column] if part is not None else pl.Series(column, [], pl.Float64)
            values = series.filter(series.is_finite()).to_numpy().astype(np.float64)
            if values.size >= k:
                box = _box_stats(values)
                cells.append(f"{box['med']:.3g} [{box['q1']:.3g}–{box['q3']:.3g}] (n={values.size})")
                boxes.append(box)
                names.append(group.replace("_", " "))
                positive = positive and float(np.min(values)) > 0
            else:
                cells.append("0" if values.size == 0 else f"n<{k}")
        rows.append([label, *cells])
        _boxplot(ax, boxes, names, label, log and positive)
    for ax in axes[len(present) :]:
        ax.set_visible(False)
    section.table(
        ["biomarker", *(g.replace("_", " ") for g in GROUPS)],
        rows,
        caption="Median [interquartile range] (n) by responder group",
    )
    section.blocks.append(figure_block(fig, "Box plots of baseline biomarkers by predicted responder group"))
    return section


def _box_stats(values: np.ndarray) -> dict[str, Any]:
    """Quartiles and 5th/95th-percentile whiskers of one group, as `Axes.boxplot(whis=(5, 95))` computes them.

    Computed once, for the table and the figure (drawn with `Axes.bxp`); no individual value is kept (fliers
    are not drawn).
    """
    from matplotlib.cbook import boxplot_stats

    box: dict[str, Any] = boxplot_stats(values, whis=(5, 95))[0]
    box["fliers"] = np.empty(0)
    return box


def _boxplot(ax: Axes, boxes: list[dict[str, Any]], names: list[str], label: str, log: bool) -> None:
    ax.set_title(label, fontsize=10)
    if not boxes:
        ax.text(0.5, 0.5, "no group large enough", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    parts = ax.bxp(
        boxes,
        showfliers=False,
        patch_artist=True,
        widths=0.6,
        boxprops={"linestyle": "solid"},  # what `Axes.boxplot` passes with patch_artist
        medianprops={"color": "#1f2933", "linewidth": 1.5},
    )
    for patch, name in zip(parts["boxes"], names, strict=True):
        patch.set_facecolor(_GROUP_COLOURS[name.replace(" ", "_")])
        patch.set_alpha(0.75)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.spines[["top", "right"]].set_visible(False)


def _model(run: RunRecord, card: ModelCard | None, card_error: str | None, k: int) -> Section:
    section = Section(
        "model",
        "Model calibration and ROC",
        "How the scoring model performed where it was evaluated, as recorded in its model card.",
    )
    model = run.model
    if not model:
        section.add("note", text="This run did not score subjects, so no model was used.")
        return section
    if card is None:
        section.add("note", text=f"The model card is not available: {card_error or 'unknown reason'}.")
        return section
    items = [
        ("model", card.model_id),
        ("intended use", card.intended_use),
        ("cross-validated AUROC", card.metrics.get("cv_auroc")),
        ("cross-validated Brier score", card.metrics.get("cv_brier")),
        ("group cut-offs", ", ".join(f"{a} {b}" for a, b in model.cutoffs.items())),
    ]
    evaluation = card.evaluation or {}
    if evaluation.get("kind"):
        items.append(("evaluation", evaluation["kind"]))
    section.add("kv", pairs=[(key, _text(value)) for key, value in items if value not in (None, "")])
    metric_rows = _metric_rows(evaluation)
    if metric_rows:
        level = (evaluation.get("bootstrap") or {}).get("ci_level", 0.95)
        section.table(
            ["metric", "estimate", f"{float(level):.0%} interval"],
            metric_rows,
            caption="Evaluation metrics (bootstrap percentile intervals)",
        )
    limitations = card.limitations
    if limitations:
        section.add("note", text="Limitations: " + " ".join(str(x) for x in limitations))
    calibration = evaluation.get("calibration")
    roc = evaluation.get("roc")
    has_cal = isinstance(calibration, list) and len(calibration) > 0
    has_roc = isinstance(roc, Mapping) and len(roc.get("fpr") or []) > 1
    if not has_cal:
        section.add("note", text="Calibration is not available in this model's card.")
    if not has_roc:
        section.add("note", text="The ROC curve is not available in this model's card.")
    if not (has_cal or has_roc):
        return section
    fig = new_figure(10, 4.2)
    ax_cal, ax_roc = fig.subplots(1, 2)
    if has_cal:
        assert isinstance(calibration, list)
        predicted = [float(b["mean_predicted"]) for b in calibration]
        observed = [float(b["observed"]) for b in calibration]
        ax_cal.plot([0, 1], [0, 1], ls="--", color="#9aa5b1", lw=1, label="ideal")
        ax_cal.plot(predicted, observed, marker="o", color="#2f6f9f", label="model")
        ax_cal.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed response rate")
        ax_cal.set_title("Calibration", fontsize=10)
        ax_cal.legend(fontsize=8, frameon=False)
        n = np.array([[int(b.get("n", 0))] for b in calibration], dtype=np.int64)
        n_shown = suppress(n, [], k)
        section.table(
            ["bin", "mean predicted", "observed", "n"],
            [[b.get("bin"), b["mean_predicted"], b["observed"], n_shown[i, 0]] for i, b in enumerate(calibration)],
            caption="Calibration by bin of predicted probability",
        )
    else:
        ax_cal.set_visible(False)
    if has_roc:
        assert isinstance(roc, Mapping)
        fpr = np.asarray(roc["fpr"], dtype=np.float64)
        tpr = np.asarray(roc["tpr"], dtype=np.float64)
        area = float(np.trapezoid(tpr, fpr))
        ax_roc.plot([0, 1], [0, 1], ls="--", color="#9aa5b1", lw=1)
        ax_roc.plot(fpr, tpr, color="#2f6f9f", label=f"AUC {area:.3f}")
        ax_roc.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
        ax_roc.set_title("ROC", fontsize=10)
        ax_roc.legend(loc="lower right", fontsize=8, frameon=False)
    else:
        ax_roc.set_visible(False)
    kind = evaluation.get("kind")
    section.blocks.append(
        figure_block(
            fig,
            "Calibration plot and ROC curve of the scoring model",
            f"From the model card; evaluation: {kind}." if kind else "From the model card.",
        )
    )
    return section


_METRIC_LABELS = {
    "auroc": "AUROC",
    "auprc": "AUPRC (average precision)",
    "brier": "Brier score",
    "calibration_intercept": "calibration intercept",
    "calibration_slope": "calibration slope",
}


def _metric_rows(evaluation: Mapping[str, Any]) -> list[list[str]]:
    """[label, estimate, interval] for each evaluation metric the card has (estimate with its CI)."""
    rows = []
    metrics = evaluation.get("metrics") or {}
    for name, label in _METRIC_LABELS.items():
        metric = metrics.get(name)
        if not isinstance(metric, Mapping) or metric.get("estimate") is None:
            continue
        low, high = metric.get("ci_low"), metric.get("ci_high")
        interval = f"{float(low):.3f}–{float(high):.3f}" if low is not None and high is not None else "–"
        rows.append([label, f"{float(metric['estimate']):.3f}", interval])
    return rows


def _drift(run: RunRecord) -> Section:
    section = Section(
        "drift",
        "Drift",
        "Whether this cohort's model features differ from the model's training data (population stability index "
        "and missingness).",
    )
    drift = run.drift
    if drift is None or not drift.features:
        section.add("note", text="Drift was not assessed for this run.")
        return section
    flagged = drift.flagged
    features = drift.features
    if flagged:
        section.add("note", text="Flagged: " + ", ".join(str(f) for f in flagged))
    else:
        section.add("text", text="No feature is flagged.")
    names = sorted(features, key=lambda f: (not features[f].flagged, f))
    section.table(
        ["feature", "PSI", "missing", "missing in training", "flagged"],
        [
            [
                f,
                features[f].psi,
                _percent(features[f].missing_rate),
                _percent(features[f].reference_missing_rate),
                "yes" if features[f].flagged else "no",
            ]
            for f in names
        ],
        css=["flagged" if features[f].flagged else "" for f in names],
    )
    return section


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def quarantine_section(run: RunRecord, quarantine: pl.DataFrame | None, k: int) -> Section:
    section = Section(
        "quarantine",
        "Quarantine",
        "Rows rejected by validation, by reason. Examples show the reason, the column and, for columns that cannot "
        "identify anyone, the offending value (truncated); identifiers and dates are withheld.",
    )
    counts = run.counts
    by_reason = _most_first(counts.quarantined_by_reason)
    if by_reason:
        section.table(["reason", "lab rows"], by_reason, caption="Quarantined lab rows by reason")
    else:
        section.add("text", text="No lab row was quarantined.")
    subject_reasons = dict(_most_first(counts.subjects.quarantined_by_reason if counts.subjects else {}))
    if subject_reasons:
        values = np.array([[n] for n in subject_reasons.values()] + [[sum(subject_reasons.values())]])
        shown = suppress(values, [[(i, 0) for i in range(values.shape[0])]], k)
        section.table(
            ["reason", "subjects"],
            [[r, shown[i, 0]] for i, r in enumerate(subject_reasons)] + [["all reasons", shown[-1, 0]]],
            caption="Quarantined subjects by reason",
            css=[""] * len(subject_reasons) + ["subtotal"],
        )
    outside = _most_first(counts.outside_panel_by_test)
    if outside:
        section.table(
            ["reported test", "lab rows"],
            outside,
            caption="Rows outside the panel, by reported test (not errors)",
        )
    if quarantine is not None and quarantine.height:
        subjects_path = counts.subjects.path if counts.subjects else None
        examples = (
            quarantine.with_columns(
                pl.when(pl.col("source_file") == pl.lit(subjects_path))
                .then(pl.lit("subjects"))
                .otherwise(pl.lit("labs"))
                .alias("input")
            )
            .sort("reason_code", "source_file", "source_row")
            .group_by("reason_code", maintain_order=True)
            .head(_EXAMPLES_PER_REASON)
            .select("reason_code", "input", "column", "value")
        )
        rows = [[code, kind, column, _shown_value(column, value)] for code, kind, column, value in examples.iter_rows()]
        section.table(
            ["reason", "input", "column", "value"],
            rows,
            caption=f"Example rows (up to {_EXAMPLES_PER_REASON} per reason)",
            label_columns=4,
        )
    return section


def _most_first(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """(key, count) pairs, most frequent first, ties by key (run.json stores its keys sorted)."""
    return [(str(k), int(v)) for k, v in sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))]


def _shown_value(column: str, value: str | None) -> str:
    if column not in SHOWN_VALUE_COLUMNS:
        return "(withheld)"
    if value is None or value == "":
        return "(empty)"
    return value if len(value) <= _VALUE_WIDTH else value[: _VALUE_WIDTH - 1] + "…"


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _load_card(run: RunRecord) -> tuple[ModelCard | None, str | None]:
    if not run.model:
        return None, "the run used no model"
    try:
        from immunostrat.modelling.registry import load_model

        registry = (run.parameters.get("scoring") or {}).get("registry")
        return load_model(run.model.model_id, registry).model_card, None
    except Exception as exc:  # a missing or moved registry must not stop the report
        return None, f"{type(exc).__name__}: {exc}"


def read_quarantine(run_dir: Path) -> pl.DataFrame | None:
    path = run_dir / "quarantine.parquet"
    if not path.is_file():
        return None
    return pl.read_parquet(path, columns=["source_file", "source_row", "reason_code", "column", "value"])


_NOT_GIVEN: Any = object()


def render_report(
    run_dir: str | Path,
    *,
    sponsor: pl.DataFrame | None,
    min_cell_count: int = 5,
    provenance: Mapping[str, Any] | None = None,
    card: ModelCard | Mapping[str, Any] | None = _NOT_GIVEN,
) -> str:
    """The report of a run as one HTML string.

    Args:
        run_dir: The run folder (its `run.json` and `quarantine.parquet` are read).
        sponsor: The run's sponsor table (pseudonymised), or None for a run without strata.
        min_cell_count: Counts of subjects below this are suppressed.
        provenance: The snapshot's provenance (schema version, key id, privacy settings), when published.
        card: The model card; default: loaded from the registry named in run.json (None: not available).
    """
    run_dir = Path(run_dir)
    run = read_run_record(run_dir)
    card_error = None
    model_card: ModelCard | None = None
    if card is _NOT_GIVEN:
        model_card, card_error = _load_card(run)
    elif card is None:
        card_error = "no card was given"
    else:
        model_card = card if isinstance(card, ModelCard) else ModelCard.model_validate(card)
    k = min_cell_count
    sections = [
        _summary(run, provenance, k),
        _cohort(run, sponsor, k),
        _funnel(run, sponsor, k),
        _groups(sponsor, k),
        _biomarkers(sponsor, k),
        _model(run, model_card, card_error, k),
        _drift(run),
        quarantine_section(run, read_quarantine(run_dir), k),
    ]
    assert [(s.id, s.title) for s in sections] == list(SECTIONS)
    return render_page(
        title=f"immunostrat run {run.run_id}",
        subtitle=f"Stratification report · {run.status} · as of {run.as_of or '–'}",
        sections=sections,
    )


def render_page(*, title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page of sections (the report template: inline styles, no script, a strict CSP)."""
    generated = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    template = environment().get_template(_TEMPLATE)
    return template.render(
        title=title,
        subtitle=subtitle,
        sections=sections,
        footer=f"Generated {generated} by immunostrat {__version__}. Research use only; the responder model is "
        "not validated for clinical decisions.",
    )


# --------------------------------------------------------------------------------------------------
# Prefect artifacts
# --------------------------------------------------------------------------------------------------


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
    frame: pl.DataFrame | None = None
    if published:
        frame = read_snapshot(snapshot).select("study_id", "responder_group")
    elif (run_dir / "strata.parquet").is_file():
        frame = pl.read_parquet(run_dir / "strata.parquet", columns=["study_id", "responder_group"])
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
    if frame is not None and frame.height:
        table = (
            frame.group_by("study_id")
            .agg(*((pl.col("responder_group") == g).sum().alias(g) for g in GROUPS))
            .sort("study_id")
        )
        full = _with_margins(table.select(GROUPS).to_numpy())
        shown = suppress(full, _margin_lines(*full.shape), k)
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
