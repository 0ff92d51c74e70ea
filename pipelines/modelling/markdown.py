"""Markdown views of the modelling records: evaluation and comparison reports and model cards, rendered from the
``*.md.j2`` templates beside the HTML report's (``immunostrat/reporting/templates``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from immunostrat.reporting.templating import render_markdown

__all__ = [
    "render_card_markdown",
    "render_comparison_markdown",
    "render_evaluation_markdown",
    "render_report_markdown",
]

#: Row labels of the metrics tables, in report order (``immunostrat.modelling.evaluation.METRICS``; a test holds
#: the two together: this module is imported by the registry, which must not import scikit-learn).
_LABELS = {
    "auroc": "AUROC",
    "auprc": "AUPRC (average precision)",
    "brier": "Brier score",
    "calibration_intercept": "Calibration intercept (in-the-large; 0 ideal)",
    "calibration_slope": "Calibration slope (1 ideal)",
}


def _f(value: Any, digits: int = 3) -> str:
    """A metric to 3 decimals; n/a when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(cell: Mapping[str, Any]) -> str:
    """``estimate (low to high)``, or the estimate alone when there is no interval."""
    if cell.get("ci_low") is None:
        return _f(cell.get("estimate"))
    return f"{_f(cell.get('estimate'))} ({_f(cell['ci_low'])} to {_f(cell['ci_high'])})"


def _fmt(value: Any) -> str:
    """A model card value: floats to 4 significant digits, None as n/a."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "n/a"
    return str(value)


def _to_json(obj: Any) -> str:
    """A card section as indented JSON (values JSON cannot hold as their text)."""
    return json.dumps(obj, indent=2, default=str)


#: What every modelling template may call: metric order and labels, and the number formats above.
_HELPERS: dict[str, Any] = {
    "metrics": tuple(_LABELS),
    "labels": _LABELS,
    "f": _f,
    "ci": _ci,
    "fmt": _fmt,
    "to_json": _to_json,
}


def render_evaluation_markdown(ev: Mapping[str, Any], heading: str = "##") -> list[str]:
    """Markdown lines for an :func:`~immunostrat.modelling.evaluation.evaluate_predictions` result (used in model
    cards and evaluate reports)."""
    return render_markdown("evaluation.md.j2", ev=ev, heading=heading, **_HELPERS).split("\n")[:-1]


def render_report_markdown(report: Mapping[str, Any]) -> str:
    """A readable external-validation report (the output of
    :func:`~immunostrat.modelling.evaluation.evaluate_model`, plus ``data`` if present)."""
    return render_markdown("external_validation.md.j2", report=report, **_HELPERS)


def render_comparison_markdown(report: Mapping[str, Any]) -> str:
    """Side-by-side Markdown table of :func:`~immunostrat.modelling.evaluation.compare_models` output."""
    return render_markdown("model_comparison.md.j2", report=report, **_HELPERS)


def render_card_markdown(card: Mapping[str, Any]) -> str:
    """Render a model card dict (as written to ``card.json``) as Markdown, in TRIPOD order where it applies.

    Cards of schema version 1 (no evaluation, reference or analysis sections) render with those sections left out.
    """
    return render_markdown("model_card.md.j2", card=card, **_HELPERS)
