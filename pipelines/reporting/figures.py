"""The reports' figures: inline SVG charts (`immunostrat.reporting.svg`) drawn from aggregates, so a page opens offline.

The figures draw what they are given: the section builders (`immunostrat.reporting.report`,
`immunostrat.followup.report`) decide what may be shown (suppressed counts are passed as 0, groups too small for
a box plot are left out), so no figure draws an individual value. Box statistics are one polars aggregation
(`box_stats`), shared by the table and the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from immunostrat.reporting.svg import INK, Axis, Chart, Panel, text_width

__all__ = [
    "GROUP_COLOURS",
    "BoxPanel",
    "biomarker_boxes_figure",
    "box_stats",
    "calibration_roc_figure",
    "figure_block",
    "funnel_figure",
    "group_bars_figure",
    "swimmer_figure",
    "trajectory_figure",
]

#: Colour of each responder group, in every figure.
GROUP_COLOURS = {"likely": "#2f855a", "possible": "#d69e2e", "unlikely": "#4a6fa5", "not_assessable": "#a0aec0"}
_ACCENT = "#2f6f9f"
_FAILED = "#e07b67"
_IDEAL = "#9aa5b1"
_WIDTH = 950  # pixels: the page's content width


def figure_block(chart: Chart, alt: str, caption: str = "") -> dict[str, Any]:
    """A page block holding the chart as inline SVG, with its alt text (title and aria-label) and caption."""
    return {"kind": "figure", "svg": chart.render(alt), "alt": alt, "caption": caption}


def _label_margin(labels: Sequence[str], size: float = 10) -> float:
    """Left margin that fits the longest category label."""
    return 16 + max((text_width(label, size) for label in labels), default=0)


# --------------------------------------------------------------------------------------------------
# Eligibility funnel and responder groups
# --------------------------------------------------------------------------------------------------


def funnel_figure(ids: Sequence[str], remaining: Sequence[str], failed: Sequence[str]) -> dict[str, Any]:
    """Bars of subjects remaining after each criterion (in protocol order) and failing each (over all subjects).

    Args:
        ids: Criterion ids, in protocol order.
        remaining: Subjects remaining after each criterion, as the funnel table shows them (one per id).
        failed: Subjects failing each criterion over the whole cohort, as the criterion table shows them.

    A count the tables suppress (``<k``, or ``*`` where it would reveal one through a total) is not drawn and
    is labelled as the table shows it.
    """
    shown_remaining = [int(v) if v.isdigit() else 0 for v in remaining]
    shown_failed = [int(v) if v.isdigit() else 0 for v in failed]
    left, top, lane = _label_margin(ids), 14, 40
    chart = Chart(_WIDTH, top + lane * len(ids) + 70)
    longest = max([a + b for a, b in zip(shown_remaining, shown_failed, strict=True)] + [1])
    x = Axis(0, longest * 1.05, 0, 0)
    panel = chart.panel((left, top, _WIDTH - left - 20, lane * len(ids)), x, Axis(0, len(ids), 0, 0))
    for row, (value, fail, shown, shown_fail) in enumerate(
        zip(remaining, failed, shown_remaining, shown_failed, strict=True)
    ):
        centre = len(ids) - row - 0.5  # the first criterion on top
        panel.rect(0, shown, centre - 0.4, centre + 0.4, _ACCENT)
        panel.rect(shown, shown + shown_fail, centre - 0.4, centre + 0.4, _FAILED)
        chart.text(panel.x(0) + 4, panel.y(centre) + 4, value, size=10, colour="white" if shown else INK)
        if not fail.isdigit():
            chart.text(panel.x(shown) + 40, panel.y(centre) + 4, f"failed {fail}", size=9, colour="#9b2c2c")
    panel.frame(y_ticks=[(len(ids) - i - 0.5, name) for i, name in enumerate(ids)], x_label="subjects")
    chart.legend(
        [("remaining after this step", _ACCENT, "box"), ("failed this criterion (of all)", _FAILED, "box")],
        left,
        chart.height - 8,
    )
    return figure_block(
        chart,
        "Bar chart: subjects remaining after each eligibility criterion, and subjects failing each criterion",
        "Blue: subjects still eligible after applying the criteria in order; red: subjects failing that "
        "criterion over the whole cohort. Suppressed counts are not drawn.",
    )


def group_bars_figure(studies: Sequence[str], groups: Sequence[str], drawn: np.ndarray) -> dict[str, Any]:
    """Stacked bars of subjects per responder group for each study; `drawn[study, group]` is 0 where suppressed."""
    left, top, lane = _label_margin(studies), 14, 44
    chart = Chart(_WIDTH, top + lane * len(studies) + 70)
    totals = np.asarray(drawn, dtype=np.float64).sum(axis=1) if len(studies) else np.zeros(0)
    x = Axis(0, max(float(totals.max(initial=0)), 1.0) * 1.05, 0, 0)
    panel = chart.panel((left, top, _WIDTH - left - 20, lane * len(studies)), x, Axis(0, len(studies), 0, 0))
    for row in range(len(studies)):
        centre = len(studies) - row - 0.5
        start = 0.0
        for j, group in enumerate(groups):
            width = float(drawn[row, j])
            panel.rect(start, start + width, centre - 0.4, centre + 0.4, GROUP_COLOURS[group])
            start += width
    panel.frame(y_ticks=[(len(studies) - i - 0.5, s) for i, s in enumerate(studies)], x_label="subjects")
    chart.legend([(g.replace("_", " "), GROUP_COLOURS[g], "box") for g in groups], left, chart.height - 8)
    return figure_block(
        chart,
        "Stacked bar chart of subjects per responder group for each study",
        "Responder groups per study; suppressed cells are not drawn.",
    )


# --------------------------------------------------------------------------------------------------
# Biomarkers by group
# --------------------------------------------------------------------------------------------------


def box_stats(columns: Sequence[str]) -> list[pl.Expr]:
    """Per column, a struct of box statistics over its finite values, for `group_by(...).agg(...)`.

    `n`, quartiles `q1`/`med`/`q3` (linear interpolation, as numpy's percentile), whiskers `whislo`/`whishi` at
    the most extreme values inside the 5th and 95th percentiles (never inside the box: Tukey's rule with
    percentile fences, as `matplotlib.cbook.boxplot_stats(whis=(5, 95))`), and the smallest value `min` (a log
    axis needs it positive). Individual values beyond the whiskers are never drawn.
    """
    exprs = []
    for column in columns:
        values = pl.col(column).filter(pl.col(column).is_finite())
        q1, q3 = values.quantile(0.25, "linear"), values.quantile(0.75, "linear")
        inside_low = values.filter(values >= values.quantile(0.05, "linear")).min()
        inside_high = values.filter(values <= values.quantile(0.95, "linear")).max()
        exprs.append(
            pl.struct(
                n=values.len(),
                q1=q1,
                med=values.quantile(0.5, "linear"),
                q3=q3,
                whislo=pl.min_horizontal(inside_low, q1),
                whishi=pl.max_horizontal(inside_high, q3),
                min=values.min(),
            ).alias(column)
        )
    return exprs


BoxPanel = tuple[str, list[Mapping[str, Any]], list[str], bool]
"""One biomarker's panel: its label, the box of each group large enough, those groups, and a log axis."""


def biomarker_boxes_figure(panels: Sequence[BoxPanel]) -> dict[str, Any]:
    """Box plots of baseline biomarkers by responder group, three panels a row (`box_stats` gives the boxes)."""
    rows_of_plots = (len(panels) + 2) // 3
    cell_width, cell_height = _WIDTH / 3, 300
    chart = Chart(_WIDTH, cell_height * rows_of_plots)
    for n, (label, boxes, names, log) in enumerate(panels):
        left, top = (n % 3) * cell_width + 62, (n // 3) * cell_height + 30
        _boxplot(chart, (left, top, cell_width - 80, cell_height - 70), boxes=boxes, names=names, label=label, log=log)
    return figure_block(chart, "Box plots of baseline biomarkers by predicted responder group")


def _boxplot(
    chart: Chart,
    area: tuple[float, float, float, float],
    *,
    boxes: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    label: str,
    log: bool,
) -> None:
    """One biomarker's panel: a box per group (coloured by group), or a note when no group is large enough."""
    left, top, width, height = area
    if not boxes:
        chart.text(left + width / 2, top - 8, label, size=12, anchor="middle", bold=True)
        chart.text(left + width / 2, top + height / 2, "no group large enough", size=11, anchor="middle")
        return
    lo, hi = Axis.padded(min(b["whislo"] for b in boxes), max(b["whishi"] for b in boxes), log=log)
    panel = chart.panel((left, top, width, height), Axis(0.5, len(boxes) + 0.5, 0, 0), Axis(lo, hi, 0, 0, log))
    for i, (box, name) in enumerate(zip(boxes, names, strict=True), start=1):
        colour = GROUP_COLOURS[name.replace(" ", "_")]
        panel.segment((i, box["whislo"]), (i, box["q1"]))
        panel.segment((i, box["q3"]), (i, box["whishi"]))
        for end in ("whislo", "whishi"):
            panel.segment((i - 0.15, box[end]), (i + 0.15, box[end]))
        panel.rect(i - 0.3, i + 0.3, box["q1"], box["q3"], colour, opacity=0.75)
        panel.segment((i - 0.3, box["med"]), (i + 0.3, box["med"]), width=1.5)
    panel.frame(x_ticks=[(i, name) for i, name in enumerate(names, start=1)], title=label, tick_size=9)


# --------------------------------------------------------------------------------------------------
# Model calibration and ROC
# --------------------------------------------------------------------------------------------------


def calibration_roc_figure(
    calibration: Sequence[Mapping[str, Any]] | None, roc: Mapping[str, Any] | None, kind: str | None
) -> dict[str, Any]:
    """The calibration plot and the ROC curve from a model card, side by side; a missing one leaves its panel empty."""
    chart = Chart(_WIDTH, 400)
    unit = Axis(0, 1, 0, 0)
    if calibration:
        panel = chart.panel((70, 30, 360, 300), unit, unit)
        predicted = [float(b["mean_predicted"]) for b in calibration]
        observed = [float(b["observed"]) for b in calibration]
        panel.line([(0, 0), (1, 1)], _IDEAL, width=1, dash="5 4")
        panel.line(list(zip(predicted, observed, strict=True)), _ACCENT, markers=True)
        panel.frame(x_label="mean predicted probability", y_label="observed response rate", title="Calibration")
        _legend_in(chart, panel, [("ideal", _IDEAL, "line"), ("model", _ACCENT, "circle")])
    if roc:
        fpr = np.asarray(roc["fpr"], dtype=np.float64)
        tpr = np.asarray(roc["tpr"], dtype=np.float64)
        area = float(np.trapezoid(tpr, fpr))
        panel = chart.panel((_WIDTH / 2 + 70, 30, 360, 300), unit, unit)
        panel.line([(0, 0), (1, 1)], _IDEAL, width=1, dash="5 4")
        panel.line(list(zip(fpr.tolist(), tpr.tolist(), strict=True)), _ACCENT)
        panel.frame(x_label="false positive rate", y_label="true positive rate", title="ROC")
        _legend_in(chart, panel, [(f"AUC {area:.3f}", _ACCENT, "line")], bottom=True)
    return figure_block(
        chart,
        "Calibration plot and ROC curve of the scoring model",
        f"From the model card; evaluation: {kind}." if kind else "From the model card.",
    )


def _legend_in(chart: Chart, panel: Panel, items: Sequence[tuple[str, str, str]], *, bottom: bool = False) -> None:
    """A legend inside a panel's top-left (or bottom-right) corner, one entry a line."""
    for n, item in enumerate(items):
        if bottom:
            x, y = panel.x.end - 110, panel.y.start - 12 - 16 * (len(items) - 1 - n)
        else:
            x, y = panel.x.start + 10, panel.y.end + 16 + 16 * n
        chart.legend([item], x, y)


# --------------------------------------------------------------------------------------------------
# Follow-up: trajectories and the swimmer plot
# --------------------------------------------------------------------------------------------------


def trajectory_figure(periods: Sequence[str], panels: Sequence[tuple[str, Mapping[str, Sequence[Any]]]]) -> Chart:
    """Medians per period, a line per predicted group, one panel per analyte side by side (a None median breaks
    the line); returns the chart (`figure_block` wraps it)."""
    chart = Chart(_WIDTH, 330)
    groups_drawn: dict[str, None] = {}
    x = Axis(-0.3, len(periods) - 0.7, 0, 0)
    for n, (title, by_group) in enumerate(panels):
        values = [float(v) for medians in by_group.values() for v in medians if v is not None]
        lo, hi = Axis.padded(min(values), max(values)) if values else (0.0, 1.0)
        panel = chart.panel((n * _WIDTH / len(panels) + 70, 30, _WIDTH / len(panels) - 100, 240), x, Axis(lo, hi, 0, 0))
        for group, medians in by_group.items():
            points = [(i, None if v is None else float(v)) for i, v in enumerate(medians)]
            panel.line(points, GROUP_COLOURS[group], markers=True)
            groups_drawn[group] = None
        panel.frame(x_ticks=list(enumerate(periods)), title=title, tick_size=9)
    chart.legend([(g, GROUP_COLOURS[g], "line") for g in groups_drawn], 70, chart.height - 8)
    return chart


#: Swimmer-plot events: column, legend label, marker shape and colour.
SWIMMER_MARKS: tuple[tuple[str, str, str, str], ...] = (
    ("crs_onset_day", "CRS", "triangle_up", "#dd6b20"),
    ("icans_onset_day", "ICANS", "triangle_down", "#805ad5"),
    ("met_day", "endpoint met", "star", "#2f855a"),
    ("relapse", "relapse", "cross", "#c53030"),
)


def swimmer_figure(names: Sequence[str], lanes: pl.DataFrame) -> Chart:
    """One lane per subject (`names`, top to bottom): follow-up to `end`, B-cell aplasia from `aplasia` to
    `aplasia_stop`, and a marker per `SWIMMER_MARKS` column present; returns the chart."""
    left, top, lane = _label_margin(names, 8), 14, 22
    height = lane * max(lanes.height, 4)
    chart = Chart(_WIDTH, top + height + 80)
    days = [c for c in ("end", "aplasia_stop", *(m[0] for m in SWIMMER_MARKS)) if c in lanes.columns]
    longest = max([float(v) for v in lanes.select(pl.max_horizontal(days).max()).row(0) if v is not None] + [1.0])
    x = Axis(min(0.0, float(lanes.select(pl.col("aplasia").min()).item() or 0)), longest * 1.03, 0, 0)
    panel = chart.panel((left, top, _WIDTH - left - 20, height), x, Axis(0, max(lanes.height, 4), 0, 0))
    for row, lane_days in enumerate(lanes.iter_rows(named=True)):
        centre = max(lanes.height, 4) - row - 0.5
        panel.rect(0, lane_days["end"] or 0, centre - 0.35, centre + 0.35, "#e2e8f0")
        if lane_days["aplasia"] is not None:
            panel.rect(lane_days["aplasia"], lane_days["aplasia_stop"], centre - 0.18, centre + 0.18, "#90cdf4")
        for column, _, shape, colour in SWIMMER_MARKS:
            if lane_days.get(column) is not None:
                panel.marker(lane_days[column], centre, shape, colour)
    ticks = [(max(lanes.height, 4) - i - 0.5, name) for i, name in enumerate(names)]
    panel.frame(y_ticks=ticks, x_label="days since infusion", tick_size=8)
    legend = [("B-cell aplasia", "#90cdf4", "box")]
    legend += [(label, colour, shape) for column, label, shape, colour in SWIMMER_MARKS if column in lanes.columns]
    chart.legend(legend, left, chart.height - 8)
    return chart
