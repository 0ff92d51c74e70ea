"""The report's figures: matplotlib charts rendered to PNG and embedded as ``data:`` URIs, so a page opens offline.

The figures draw what they are given: the section builders in `immunostrat.reporting.report` decide what may be
shown (suppressed counts are passed as 0, groups too small for a box plot are left out), so no figure draws an
individual value. matplotlib is imported only when a figure is drawn (importing it takes about half a second).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "GROUP_COLOURS",
    "BoxPanel",
    "biomarker_boxes_figure",
    "box_stats",
    "calibration_roc_figure",
    "figure_block",
    "funnel_figure",
    "group_bars_figure",
    "new_figure",
]

#: Colour of each responder group, in every figure.
GROUP_COLOURS = {"likely": "#2f855a", "possible": "#d69e2e", "unlikely": "#4a6fa5", "not_assessable": "#a0aec0"}
_INK = "#1f2933"
_ACCENT = "#2f6f9f"
_IDEAL = "#9aa5b1"


def new_figure(width: float, height: float, layout: Literal["constrained", "tight"] | None = "constrained") -> Figure:
    """A matplotlib figure (not registered with pyplot, so nothing global is kept) of `width` x `height` inches."""
    from matplotlib.figure import Figure  # only when a figure is drawn: start-up time

    return Figure(figsize=(width, height), layout=layout)


def figure_block(fig: Figure, alt: str, caption: str = "") -> dict[str, Any]:
    """A page block holding the figure as an inline PNG (100 dpi, no software stamp), with its alt text."""
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


# --------------------------------------------------------------------------------------------------
# Eligibility funnel and responder groups
# --------------------------------------------------------------------------------------------------


def funnel_figure(ids: Sequence[str], remaining: Sequence[int], failed: Sequence[int], k: int) -> dict[str, Any]:
    """Bars of subjects remaining after each criterion (in protocol order) and failing each (over all subjects).

    Args:
        ids: Criterion ids, in protocol order.
        remaining: Subjects remaining after each criterion (one per id).
        failed: Subjects failing each criterion over the whole cohort (one per id).
        k: Counts below this are not drawn, and labelled ``<k``.
    """
    fig = new_figure(9.5, 0.5 * len(ids) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(ids))[::-1]
    shown_remaining = [v if v >= k else 0 for v in remaining]
    ax.barh(y, shown_remaining, color=_ACCENT, label="remaining after this step")
    shown_failed = [int(v) if v >= k else 0 for v in failed]
    ax.barh(y, shown_failed, left=shown_remaining, color="#e07b67", label="failed this criterion (of all)")
    for yi, value, fail in zip(y, remaining, failed, strict=True):
        label = f"{value}" if value >= k else f"<{k}"
        ax.text(1, yi, label, va="center", ha="left", color="white" if value >= k else _INK, fontsize=9)
        if 0 < fail < k:
            ax.text(value if value >= k else 0, yi, f"  failed <{k}", va="center", fontsize=8, color="#9b2c2c")
    ax.set_yticks(y, ids)
    ax.set_xlabel("subjects")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_block(
        fig,
        "Bar chart: subjects remaining after each eligibility criterion, and subjects failing each criterion",
        "Blue: subjects still eligible after applying the criteria in order; red: subjects failing that "
        "criterion over the whole cohort. Suppressed counts are not drawn.",
    )


def group_bars_figure(studies: Sequence[str], groups: Sequence[str], drawn: np.ndarray) -> dict[str, Any]:
    """Stacked bars of subjects per responder group for each study; `drawn[study, group]` is 0 where suppressed."""
    fig = new_figure(9.5, 0.55 * len(studies) + 1.6)
    ax = fig.add_subplot()
    y = np.arange(len(studies))[::-1]
    left = np.zeros(len(studies))
    for j, group in enumerate(groups):
        widths = np.asarray(drawn[:, j], dtype=np.float64)
        ax.barh(y, widths, left=left, color=GROUP_COLOURS[group], label=group.replace("_", " "))
        left += widths
    ax.set_yticks(y, studies)
    ax.set_xlabel("subjects")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=4, fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_block(
        fig,
        "Stacked bar chart of subjects per responder group for each study",
        "Responder groups per study; suppressed cells are not drawn.",
    )


# --------------------------------------------------------------------------------------------------
# Biomarkers by group
# --------------------------------------------------------------------------------------------------


def box_stats(values: np.ndarray) -> dict[str, Any]:
    """Quartiles and 5th/95th-percentile whiskers of one group, as `Axes.boxplot(whis=(5, 95))` computes them.

    Computed once, for the table and the figure (drawn with `Axes.bxp`); no individual value is kept (fliers
    are not drawn).
    """
    from matplotlib.cbook import boxplot_stats  # only when a figure is drawn: start-up time

    box: dict[str, Any] = boxplot_stats(values, whis=(5, 95))[0]
    box["fliers"] = np.empty(0)
    return box


BoxPanel = tuple[str, list[dict[str, Any]], list[str], bool]
"""One biomarker's panel: its label, the box of each group large enough, those groups, and a log axis."""


def biomarker_boxes_figure(panels: Sequence[BoxPanel]) -> dict[str, Any]:
    """Box plots of baseline biomarkers by responder group, three panels a row (`box_stats` gives the boxes)."""
    rows_of_plots = (len(panels) + 2) // 3
    fig = new_figure(10.5, 3.0 * rows_of_plots, layout=None)  # fixed margins: constrained layout costs seconds here
    fig.subplots_adjust(
        left=0.06, right=0.99, top=1 - 0.3 / (3.0 * rows_of_plots), bottom=0.08, wspace=0.25, hspace=0.35
    )
    axes = fig.subplots(rows_of_plots, 3, squeeze=False).ravel()
    for ax, (label, boxes, names, log) in zip(axes, panels, strict=False):
        _boxplot(ax, boxes, names, label, log)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return figure_block(fig, "Box plots of baseline biomarkers by predicted responder group")


def _boxplot(ax: Axes, boxes: list[dict[str, Any]], names: list[str], label: str, log: bool) -> None:
    """One biomarker's panel: a box per group (coloured by group), or a note when no group is large enough."""
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
        medianprops={"color": _INK, "linewidth": 1.5},
    )
    for patch, name in zip(parts["boxes"], names, strict=True):
        patch.set_facecolor(GROUP_COLOURS[name.replace(" ", "_")])
        patch.set_alpha(0.75)
    ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # only for a log axis: start-up time

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.spines[["top", "right"]].set_visible(False)


# --------------------------------------------------------------------------------------------------
# Model calibration and ROC
# --------------------------------------------------------------------------------------------------


def calibration_roc_figure(
    calibration: Sequence[Mapping[str, Any]] | None, roc: Mapping[str, Any] | None, kind: str | None
) -> dict[str, Any]:
    """The calibration plot and the ROC curve from a model card, side by side; a missing one leaves its panel empty."""
    fig = new_figure(10, 4.2)
    ax_cal, ax_roc = fig.subplots(1, 2)
    if calibration:
        predicted = [float(b["mean_predicted"]) for b in calibration]
        observed = [float(b["observed"]) for b in calibration]
        ax_cal.plot([0, 1], [0, 1], ls="--", color=_IDEAL, lw=1, label="ideal")
        ax_cal.plot(predicted, observed, marker="o", color=_ACCENT, label="model")
        ax_cal.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed response rate")
        ax_cal.set_title("Calibration", fontsize=10)
        ax_cal.legend(fontsize=8, frameon=False)
    else:
        ax_cal.set_visible(False)
    if roc:
        fpr = np.asarray(roc["fpr"], dtype=np.float64)
        tpr = np.asarray(roc["tpr"], dtype=np.float64)
        area = float(np.trapezoid(tpr, fpr))
        ax_roc.plot([0, 1], [0, 1], ls="--", color=_IDEAL, lw=1)
        ax_roc.plot(fpr, tpr, color=_ACCENT, label=f"AUC {area:.3f}")
        ax_roc.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
        ax_roc.set_title("ROC", fontsize=10)
        ax_roc.legend(loc="lower right", fontsize=8, frameon=False)
    else:
        ax_roc.set_visible(False)
    return figure_block(
        fig,
        "Calibration plot and ROC curve of the scoring model",
        f"From the model card; evaluation: {kind}." if kind else "From the model card.",
    )
