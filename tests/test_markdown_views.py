"""The Markdown views rendered from templates (model cards, evaluation and comparison reports, what changed):
exact text on small hand-built records, and the shipped model card's card.md reproduced from its card.json."""

from __future__ import annotations

import json
from pathlib import Path

from immunostrat.followup.summary import changes_markdown
from immunostrat.modelling.evaluation import METRICS
from immunostrat.modelling.markdown import (
    _LABELS,
    render_card_markdown,
    render_comparison_markdown,
    render_evaluation_markdown,
    render_report_markdown,
)
from immunostrat.modelling.registry import default_registry_dir, resolve

METRIC_NAMES = ("auroc", "auprc", "brier", "calibration_intercept", "calibration_slope")


def test_the_tables_list_every_evaluation_metric_in_report_order() -> None:
    assert tuple(_LABELS) == METRICS == METRIC_NAMES


def _cell(estimate: float | None, low: float | None = None, high: float | None = None) -> dict[str, float | None]:
    return {"estimate": estimate, "ci_low": low, "ci_high": high}


def test_the_champion_card_md_is_its_card_json_rendered() -> None:
    folder = default_registry_dir() / resolve("champion")
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    assert render_card_markdown(card) == (folder / "card.md").read_text(encoding="utf-8")


def test_an_evaluation_without_tables_is_its_heading_and_metrics() -> None:
    ev = {
        "kind": "external",
        "n": 10,
        "n_events": 4,
        "metrics": {"auroc": _cell(0.75, 0.5, 0.9), "brier": _cell(float("nan"))},
        "bootstrap": {"ci_level": 0.9, "n_resamples": 200, "seed": 7},
    }
    assert render_evaluation_markdown(ev, heading="###") == [
        "### Performance (external)",
        "",
        "10 subjects, 4 responders. Estimates with 90 % percentile bootstrap intervals (200 resamples, seed 7).",
        "",
        "| metric | estimate (95 % CI) |",
        "|---|---|",
        "| AUROC | 0.750 (0.500 to 0.900) |",
        "| Brier score | n/a |",
    ]


def test_an_external_validation_report_lists_inputs_groups_and_drift() -> None:
    report = {
        "model": {"model_id": "m1", "sha256": "abc"},
        "n_subjects": 12,
        "n": 10,
        "not_assessable": 2,
        "cutoffs_source": "model card",
        "cutoffs": {"possible_min": 0.3, "likely_min": 0.6},
        "data": {"inputs": [{"path": "labs.csv", "sha256": "def", "rows": 40}]},
        "subgroups_skipped": ["sex"],
        "kind": "external",
        "n_events": 4,
        "metrics": {"auroc": _cell(0.8)},
        "group_response": {"likely": {"n": 3, "responders": 2, "response_rate": 2 / 3, "ci_low": None}},
        "bootstrap": {"ci_level": 0.95, "n_resamples": 0, "seed": 0},
        "drift": {
            "reference_available": True,
            "threshold": 0.2,
            "missing_threshold": 0.1,
            "features": {"c3": {"psi": 0.25, "missing_rate": 0.0, "reference_missing_rate": 0.5, "flagged": True}},
        },
    }
    assert render_report_markdown(report) == (
        "# External validation of m1\n"
        "\n"
        "- Model sha256: `abc`\n"
        "- Subjects with an outcome: 12; scored: 10; not assessable (a feature missing): 2 (left out of every metric)\n"
        "- Cut-offs (model card): possible >= 0.3, likely >= 0.6\n"
        "- Input `labs.csv`: sha256 `def`, 40 rows\n"
        "- Subgroups skipped (column absent): sex\n"
        "\n"
        "## Performance (external)\n"
        "\n"
        "10 subjects, 4 responders. Estimates with 95 % percentile bootstrap intervals (0 resamples, seed 0).\n"
        "\n"
        "| metric | estimate (95 % CI) |\n"
        "|---|---|\n"
        "| AUROC | 0.800 |\n"
        "\n"
        "| predicted group | n | responders | observed response rate (95 % CI) |\n"
        "|---|---|---|---|\n"
        "| likely | 3 | 2 | 0.667 |\n"
        "\n"
        "## Drift against the training reference\n"
        "\n"
        "Flagged when PSI > 0.2 or missingness rises by more than 10%.\n"
        "\n"
        "| feature | PSI | missing | missing (training) | flagged |\n"
        "|---|---|---|---|---|\n"
        "| c3 | 0.250 | 0.000 | 0.500 | yes |\n"
    )


def test_a_comparison_has_one_column_per_model_and_per_difference() -> None:
    metrics = {name: _cell(0.5) for name in METRIC_NAMES}
    report = {
        "n": 8,
        "n_events": 3,
        "not_assessable_by_any": 1,
        "bootstrap": {"ci_level": 0.95, "n_resamples": 100},
        "models": [{"model_id": "a", "metrics": metrics}, {"model_id": "b", "metrics": metrics}],
        "differences": [{"model_id": "b", "versus": "a", "metrics": {n: _cell(0.0, -0.1, 0.1) for n in METRIC_NAMES}}],
    }
    lines = render_comparison_markdown(report).split("\n")
    assert lines[4:8] == [
        "| metric | a | b | b − a |",
        "|---|---|---|---|",
        "| AUROC | 0.500 | 0.500 | 0.000 (-0.100 to 0.100) |",
        "| AUPRC (average precision) | 0.500 | 0.500 | 0.000 (-0.100 to 0.100) |",
    ]
    assert lines[2].startswith("8 subjects scored by every model (3 responders); 1 left out")
    assert len(lines) == 4 + 2 + len(METRIC_NAMES) + 1  # title, blank, sentence, blank; table; final newline


def test_what_changed_lists_counts_then_items_by_short_pseudonym() -> None:
    changes = {
        "previous_run": "run-1",
        "counts": {"toxicity": {"new": 1, "resolved": 0, "corrected": 2}},
        "items": [{"change": "new", "kind": "toxicity", "item": "CRS", "subject_pseudonym": "0123456789ab", "day": 3}],
    }
    assert changes_markdown(changes) == [
        "## What changed since the last run",
        "",
        "Compared with run `run-1`.",
        "",
        "| finding | new | resolved | corrected |",
        "|---|---|---|---|",
        "| toxicity | 1 | 0 | 2 |",
        "- new: toxicity `CRS` (subject 01234567, day 3)",
    ]
    assert changes_markdown(None) == ["## What changed since the last run", "", "Not compared: no earlier run."]


def test_markdown_is_not_html_escaped() -> None:
    card_path = next(Path(default_registry_dir()).glob("*/card.json"))
    card = json.loads(card_path.read_text(encoding="utf-8")) | {"intended_use": "a < b & c"}
    assert "\na < b & c\n" in render_card_markdown(card)
