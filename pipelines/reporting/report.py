"""The stratify run report: one self-contained HTML file per run, written to be safe in sponsors' hands.

There is one report, and it is sponsor-safe by construction, so it can travel with the sponsor snapshot
(``RUN/sponsor/report.html``) and be shown to the team alike:

- it is built from the sponsor table (pseudonymised: no subject ids, no dates, sites as published), from
  ``run.json`` counts, and from ``quarantine.parquet`` reduced to reason, input kind, column and, for columns
  that cannot identify anyone, a truncated value; no subject id, site id, date, file path or message text ever
  reaches it;
- every count of subjects from 1 to ``min_cell_count - 1`` (default 5) is shown as ``<5``, and any further cell
  from which such a count could be recomputed through a displayed total is shown as ``*`` (complementary
  suppression, `immunostrat.reporting.disclosure`); groups smaller than that are left out of distribution
  plots. Counts of lab *rows* (not subjects) are shown as they are;
- it opens offline: figures are inline SVG drawn from aggregates (`immunostrat.reporting.figures`), styles are
  inline, there is no script, and a Content-Security-Policy forbids loading anything (`immunostrat.reporting.page`).

This module builds the report's sections from a run folder; the team's unsuppressed detail stays in the run
folder (``run.json``, ``quarantine.parquet``). The Prefect artifacts' summary is `immunostrat.reporting.artifacts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from immunostrat.reporting.disclosure import Cell, margin_lines, suppress, with_margins
from immunostrat.reporting.figures import (
    BoxPanel,
    biomarker_boxes_figure,
    box_stats,
    calibration_roc_figure,
    funnel_figure,
    group_bars_figure,
)
from immunostrat.reporting.page import Section, cell_text, render_page
from immunostrat.reporting.quarantine import quarantine_section, read_quarantine
from immunostrat.schemas.records import FileCounts, ModelCard, RunRecord, read_run_record

__all__ = [
    "GROUPS",
    "SECTIONS",
    "render_report",
    "report_columns",
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
#: Biomarkers plotted by group: column, label, log scale.
_BIOMARKERS: tuple[tuple[str, str, bool], ...] = (
    ("anti_dsdna_ratio", "Anti-dsDNA (x positivity cut-off)", True),
    ("c3", "C3 (g/L)", False),
    ("c4", "C4 (g/L)", False),
    ("ifn_ratio", "IFN score (x method cut-off)", True),
    ("cd19_b_cells", "CD19+ B cells (cells/uL)", True),
    ("cd4_cd8_ratio", "CD4/CD8 ratio", True),
)


def report_columns(columns: Sequence[str]) -> list[str]:
    """The sponsor-table columns the report reads (of `columns`): a large run hands over only these."""
    wanted = {"study_id", "site", "eligible", "responder_group", *(b[0] for b in _BIOMARKERS)}
    return [c for c in columns if c in wanted or c.startswith("criterion_")]


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
    section.add("kv", pairs=[(key, cell_text(value)) for key, value in items])
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
    full = with_margins(by_study.select("yes", "no", "unknown").to_numpy())
    shown = suppress(full, margin_lines(*full.shape), k)
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
    ids = [c.removeprefix("criterion_") for c in criteria]
    values = _criterion_counts(sponsor, criteria)
    funnel = (run.summary.eligibility_funnel if run.summary else None) or []
    described = {f.criterion: f.description for f in funnel}
    n = sponsor.height
    shown = suppress(values, [[(i, 0), (i, 1), (i, 2), (i, 3)] for i in range(len(criteria))], k)
    section.table(
        ["criterion", "description", "passed", "failed", "not assessable"],
        [[i, described.get(i, ""), *shown[r, :3]] for r, i in enumerate(ids)],
        caption=f"Per criterion, over all {n if n >= k else f'<{k}'} subjects",
        label_columns=2,
    )
    remaining = _remaining_after_each(sponsor, criteria)
    seq = np.array([[0, remaining[0]]] + [[remaining[i] - remaining[i + 1], remaining[i + 1]] for i in range(len(ids))])
    seq_lines = [[(i - 1, 1), (i, 0), (i, 1)] for i in range(1, seq.shape[0])]
    seq_shown = suppress(seq, seq_lines, k)
    section.table(
        ["step", "excluded at this step", "remaining"],
        [["all stratified subjects", "", seq_shown[0, 1]]] + [[i, *seq_shown[r + 1]] for r, i in enumerate(ids)],
        caption="Applied in protocol order",
    )
    # Drawn as the tables show them: a count hidden there is neither drawn nor labelled with its value.
    section.blocks.append(funnel_figure(ids, [str(v) for v in seq_shown[1:, 1]], [str(v) for v in shown[:, 1]]))
    return section


def _criterion_counts(sponsor: pl.DataFrame, criteria: Sequence[str]) -> np.ndarray:
    """Per criterion (a row each): subjects passed, failed, not assessable, and all subjects."""
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
    return np.array([[p["passed"], p["failed"], p["unknown"], n] for p in per], dtype=np.int64)


def _remaining_after_each(sponsor: pl.DataFrame, criteria: Sequence[str]) -> list[int]:
    """All subjects, then those still eligible after each criterion in protocol order (null does not pass)."""
    running = sponsor.select(
        pl.all_horizontal([pl.col(c).fill_null(False) for c in criteria[: i + 1]]).sum().alias(str(i))
        for i in range(len(criteria))
    ).row(0)
    return [sponsor.height, *map(int, running)]


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
    grid = _group_grid(counts, with_sites=sponsor["site"].null_count() < sponsor.height)
    shown = suppress(grid.table, grid.lines, k)
    section.table(
        ["study", "site", *(g.replace("_", " ") for g in GROUPS), "total"],
        [[*grid.labels[i], *shown[i]] for i in range(grid.table.shape[0])],
        caption="Subjects by predicted responder group",
        label_columns=2,
        css=grid.css,
    )
    # Per study (its subtotal row), the counts the table shows; a suppressed cell is not drawn.
    subtotals = grid.table[grid.subtotal_rows, : len(GROUPS)]
    drawn = np.where(shown[grid.subtotal_rows, : len(GROUPS)] == subtotals.astype(str), subtotals, 0)
    section.blocks.append(group_bars_figure(grid.studies, GROUPS, drawn))
    return section


@dataclass
class _GroupGrid:
    """The responder-group table: per study its sites and a subtotal row (or one row), then all studies.

    ``table`` holds the counts (a column per group, then the total), ``labels`` and ``css`` its row labels and
    styles, ``lines`` the sets of cells a reader can add up, ``subtotal_rows`` each study's total row.
    """

    studies: list[str] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    css: list[str] = field(default_factory=list)
    lines: list[list[Cell]] = field(default_factory=list)
    subtotal_rows: list[int] = field(default_factory=list)
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, len(GROUPS) + 1), dtype=np.int64))


def _group_grid(counts: pl.DataFrame, *, with_sites: bool) -> _GroupGrid:
    """Counts per study and site (with a total column) laid out as the table shows them, with its sum lines."""
    grid = _GroupGrid()
    grid.studies = sorted(counts["study_id"].unique().to_list())
    blocks: list[np.ndarray] = []
    width = len(GROUPS) + 1
    for study in grid.studies:
        part = counts.filter(pl.col("study_id") == study)
        cells = part.select(GROUPS).to_numpy().astype(np.int64)
        start = sum(b.shape[0] for b in blocks)
        if with_sites:
            site_rows = np.column_stack([cells, cells.sum(axis=1)])
            blocks += [site_rows, site_rows.sum(axis=0, keepdims=True)]
            grid.labels += [[study, _site_label(s)] for s in part["site"].to_list()] + [[study, "all sites"]]
            grid.css += [""] * part.height + ["subtotal"]
            end = start + part.height  # the subtotal row
            grid.lines += [[(i, j) for i in range(start, end + 1)] for j in range(width)]
            grid.subtotal_rows.append(end)
        else:
            row = cells.sum(axis=0, keepdims=True)
            blocks.append(np.column_stack([row, row.sum(axis=1)]))
            grid.labels.append([study, "–"])
            grid.css.append("subtotal")
            grid.subtotal_rows.append(start)
    table = np.vstack(blocks)
    grid.table = np.vstack([table, table[grid.subtotal_rows].sum(axis=0, keepdims=True)])
    last = grid.table.shape[0] - 1
    grid.labels.append(["all studies", ""])
    grid.css.append("subtotal")
    grid.lines += [[(i, j) for j in range(width)] for i in range(grid.table.shape[0])]
    grid.lines += [[*((r, j) for r in grid.subtotal_rows), (last, j)] for j in range(width)]
    return grid


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
    # One aggregation: the box statistics of every biomarker in every group (for the table and the figure).
    stats = sponsor.group_by("responder_group").agg(box_stats([b[0] for b in present]))
    by_group = {row["responder_group"]: row for row in stats.iter_rows(named=True)}
    rows = []
    panels: list[BoxPanel] = []
    for column, label, log in present:
        cells, panel = _biomarker_by_group(by_group, column, label, log, k)
        rows.append([label, *cells])
        panels.append(panel)
    section.table(
        ["biomarker", *(g.replace("_", " ") for g in GROUPS)],
        rows,
        caption="Median [interquartile range] (n) by responder group",
    )
    section.blocks.append(biomarker_boxes_figure(panels))
    return section


def _biomarker_by_group(
    by_group: Mapping[Any, Mapping[str, Any]], column: str, label: str, log: bool, k: int
) -> tuple[list[str], BoxPanel]:
    """One biomarker: a table cell per group (median [IQR] (n), or ``n<k``) and its box-plot panel.

    Groups with fewer than `k` finite values get no box; the axis is logarithmic only when asked for and every
    plotted value is positive.
    """
    boxes, names, cells = [], [], []
    positive = True  # every plotted value > 0: a log axis can show them
    for group in GROUPS:
        box: Mapping[str, Any] = by_group[group][column] if group in by_group else {"n": 0}
        n = box["n"]
        if n >= k:
            cells.append(f"{box['med']:.3g} [{box['q1']:.3g}–{box['q3']:.3g}] (n={n})")
            boxes.append(box)
            names.append(group.replace("_", " "))
            positive = positive and box["min"] > 0
        else:
            cells.append("0" if n == 0 else f"n<{k}")
    return cells, (label, boxes, names, log and positive)


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
    evaluation = card.evaluation or {}
    _model_facts(section, card, evaluation, model.cutoffs)
    calibration = evaluation.get("calibration")
    roc = evaluation.get("roc")
    calibration = calibration if isinstance(calibration, list) and len(calibration) > 0 else None
    roc = roc if isinstance(roc, Mapping) and len(roc.get("fpr") or []) > 1 else None
    if calibration is None:
        section.add("note", text="Calibration is not available in this model's card.")
    if roc is None:
        section.add("note", text="The ROC curve is not available in this model's card.")
    if calibration is None and roc is None:
        return section
    if calibration is not None:
        _calibration_table(section, calibration, k)
    section.blocks.append(calibration_roc_figure(calibration, roc, evaluation.get("kind")))
    return section


def _model_facts(section: Section, card: ModelCard, evaluation: Mapping[str, Any], cutoffs: Mapping[str, Any]) -> None:
    """The card's facts, its evaluation metrics with their intervals, and its limitations."""
    items = [
        ("model", card.model_id),
        ("intended use", card.intended_use),
        ("cross-validated AUROC", card.metrics.get("cv_auroc")),
        ("cross-validated Brier score", card.metrics.get("cv_brier")),
        ("group cut-offs", ", ".join(f"{a} {b}" for a, b in cutoffs.items())),
    ]
    if evaluation.get("kind"):
        items.append(("evaluation", evaluation["kind"]))
    section.add("kv", pairs=[(key, cell_text(value)) for key, value in items if value not in (None, "")])
    metric_rows = _metric_rows(evaluation)
    if metric_rows:
        level = (evaluation.get("bootstrap") or {}).get("ci_level", 0.95)
        section.table(
            ["metric", "estimate", f"{float(level):.0%} interval"],
            metric_rows,
            caption="Evaluation metrics (bootstrap percentile intervals)",
        )
    if card.limitations:
        section.add("note", text="Limitations: " + " ".join(str(x) for x in card.limitations))


def _calibration_table(section: Section, calibration: Sequence[Mapping[str, Any]], k: int) -> None:
    """Calibration by bin of predicted probability; the subjects per bin are suppressed below `k`."""
    n = np.array([[int(b.get("n", 0))] for b in calibration], dtype=np.int64)
    n_shown = suppress(n, [], k)
    section.table(
        ["bin", "mean predicted", "observed", "n"],
        [[b.get("bin"), b["mean_predicted"], b["observed"], n_shown[i, 0]] for i, b in enumerate(calibration)],
        caption="Calibration by bin of predicted probability",
    )


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


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _load_card(run: RunRecord) -> tuple[ModelCard | None, str | None]:
    """The card of the run's model from the registry run.json names, or why it is not available."""
    if not run.model:
        return None, "the run used no model"
    try:
        # The checksummed card, without deserialising the model file (no scikit-learn import).
        from immunostrat.modelling.registry import resolve_model_file

        registry = (run.parameters.get("scoring") or {}).get("registry")
        return resolve_model_file(run.model.model_id, registry).model_card, None
    except Exception as exc:  # a missing or moved registry must not stop the report
        return None, f"{type(exc).__name__}: {exc}"


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
