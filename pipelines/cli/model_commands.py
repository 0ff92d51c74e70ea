"""The model lifecycle commands' handlers: ``immunostrat evaluate`` and ``immunostrat models ...``.

Their options are declared in ``immunostrat.cli.models``, which imports this module only when a model command runs.
Nothing here starts Prefect: evaluation and comparison run the same ingest-to-baseline stages as ``stratify``
in-process, so a model is evaluated on features derived exactly as it sees them when scoring.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from immunostrat.cli.options import parse_model
from immunostrat.config.run import EvaluateParams, InputFiles, ScoringConfig
from immunostrat.errors import EXIT_OK, EXIT_UNUSABLE
from immunostrat.modelling import drift, registry
from immunostrat.modelling.markdown import render_card_markdown, render_comparison_markdown, render_report_markdown
from immunostrat.modelling.registry_write import remove_alias, set_alias

__all__ = ["cmd_evaluate", "cmd_models"]


def _registry(args: argparse.Namespace) -> str | None:
    """The registry folder a `models` action names (None: the default registry)."""
    given = parse_model(ScoringConfig, args).registry
    return None if given is None else str(given)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _cell(m: Mapping[str, Any], signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"

    def f(v: Any) -> str:
        return "n/a" if v is None else fmt.format(v)

    if m.get("ci_low") is None:
        return f(m.get("estimate"))
    return f"{f(m.get('estimate'))} ({f(m['ci_low'])} to {f(m['ci_high'])})"


def _write_report(path: str, report: dict[str, Any], markdown: str) -> None:
    target = Path(path)
    if target.suffix.lower() == ".md":
        target.write_text(markdown, encoding="utf-8")
    else:
        target.write_bytes(registry.json_bytes(report))
    print(f"report: {target}")


def _labelled(params: EvaluateParams) -> tuple[Any, dict[str, Any]]:
    """The labelled strata of an evaluation's cohort, and their summary."""
    # start-up time: the pipeline (pandera) loads for evaluate and compare only, not for list/show/promote
    from immunostrat.modelling.training import labelled_strata

    # The same input options as stratify and train: formats, expression, crosswalk, study, patients.
    files = InputFiles.model_validate(params.model_dump(include=set(InputFiles.model_fields)))
    return labelled_strata(files, None, params.outcomes, params.config)


def _registry_of(params: EvaluateParams) -> str | None:
    folder = params.config.scoring.registry
    return None if folder is None else str(folder)


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``immunostrat evaluate``: external validation of one model on a labelled cohort it never saw."""
    # Start-up: evaluation imports scikit-learn (~1.8 s); `models list/show/promote` never need it.
    from immunostrat.modelling.evaluation import METRICS, evaluate_model

    params = parse_model(EvaluateParams, args)
    model = registry.load_model(params.config.scoring.model, _registry_of(params))
    labelled, summary = _labelled(params)
    report = evaluate_model(model, labelled, params.evaluation, drift_threshold=params.config.scoring.drift_threshold)
    report["data"] = summary
    print(f"model {model.model_id} (sha256 {model.sha256[:12]}...) on {labelled.height} labelled subjects")
    print(f"  scored {report['n']} ({report['n_events']} responders); not assessable {report['not_assessable']}")
    for name in METRICS:
        print(f"  {name:<22} {_cell(report['metrics'][name])}")
    for group, row in report["group_response"].items():
        cell = {"estimate": row["response_rate"], **row}
        print(f"  observed rate {group:<9} {_cell(cell)}  (n={row['n']})")
    print(f"  {drift.summary_line(report['drift'])}")
    if args.report:
        _write_report(args.report, report, render_report_markdown(report))
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------


def _card_auroc(registry_dir: str | None, model_id: str) -> str:
    try:
        card = registry.read_card(model_id, registry_dir)
    except registry.RegistryError:
        return "card unreadable"
    ev = card.get("evaluation", {}).get("metrics", {}).get("auroc")
    if ev:
        return f"AUROC {_cell(ev)}"
    auroc = card.get("metrics", {}).get("cv_auroc")
    return f"AUROC {_fmt(auroc)}" if auroc is not None else "AUROC n/a"


def _models_list(args: argparse.Namespace) -> int:
    registry_dir = _registry(args)
    entries = registry.list_models(registry_dir)
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return EXIT_OK
    for entry in entries:
        aliases = ", ".join(entry.get("aliases", [])) or "-"
        print(
            f"{entry['model_id']:<36} {entry.get('created_at', ''):<26} {_card_auroc(registry_dir, entry['model_id'])}"
            f"   aliases: {aliases}"
        )
    return EXIT_OK


def _models_show(args: argparse.Namespace) -> int:
    card = registry.load_model(args.model, _registry(args)).card
    print(json.dumps(card, indent=2) if args.json else render_card_markdown(card))
    return EXIT_OK


def _models_verify(args: argparse.Namespace) -> int:
    """Deserialise each model (every check of ``load_model``, the two forms' agreement included); one line each."""
    registry_dir = _registry(args)
    refs = args.models or [e["model_id"] for e in registry.list_models(registry_dir)]
    failed = 0
    for ref in refs:
        try:
            file = registry.resolve_model_file(ref, registry_dir)
            file.deserialise()
        except registry.RegistryError as exc:
            failed += 1
            print(f"FAILED {ref}: {exc}")
            continue
        how = (
            "the card's coefficients agree with the skops estimator; runs score from the card"
            if file.coefficient_form is not None
            else f"{file.no_form_reason}; runs deserialise the skops file"
        )
        print(f"ok {file.model_id} (sha256 {file.sha256[:12]}...): {how}")
    return EXIT_UNUSABLE if failed else EXIT_OK


def _models_promote(args: argparse.Namespace) -> int:
    registry_dir = _registry(args)
    model_id = registry.resolve(args.model, registry_dir)
    registry.load_model(model_id, registry_dir)  # never promote a model that would fail to load
    previous = {e["model_id"] for e in registry.list_models(registry_dir) if args.alias in e.get("aliases", [])}
    set_alias(args.alias, model_id, registry_dir)
    was = f" (was {', '.join(sorted(previous))})" if previous and model_id not in previous else ""
    print(f"{args.alias} -> {model_id}{was}")
    return EXIT_OK


def _models_unalias(args: argparse.Namespace) -> int:
    target = remove_alias(args.alias, _registry(args))
    print(f"removed alias {args.alias} (was {target}); {target} stays registered")
    return EXIT_OK


def _models_compare(args: argparse.Namespace) -> int:
    # Start-up: evaluation imports scikit-learn (~1.8 s); `models list/show/promote` never need it.
    from immunostrat.modelling.evaluation import METRICS, compare_models

    if len(args.models) < 2:
        print("models compare needs at least two models", file=sys.stderr)
        return EXIT_UNUSABLE
    params = parse_model(EvaluateParams, args)
    models = [registry.load_model(ref, _registry_of(params)) for ref in args.models]
    labelled, summary = _labelled(params)
    report = compare_models(models, labelled, params.evaluation)
    report["data"] = summary
    print(
        f"{report['n']} subjects scored by every model ({report['n_events']} responders; "
        f"{report['not_assessable_by_any']} not assessable by at least one), "
        f"same {params.evaluation.n_bootstrap} resamples"
    )
    ref = report["models"][0]
    for row, diff in zip(report["models"][1:], report["differences"], strict=True):
        print(f"{'metric':<22} {ref['model_id']:<32} {row['model_id']:<32} difference (2nd - 1st)")
        for name in METRICS:
            print(
                f"{name:<22} {_cell(ref['metrics'][name]):<32} {_cell(row['metrics'][name]):<32} "
                f"{_cell(diff['metrics'][name], signed=True)}"
            )
    if args.report:
        _write_report(args.report, report, render_comparison_markdown(report))
    return EXIT_OK


_MODEL_ACTIONS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _models_list,
    "show": _models_show,
    "verify": _models_verify,
    "promote": _models_promote,
    "unalias": _models_unalias,
    "compare": _models_compare,
}


def cmd_models(args: argparse.Namespace) -> int:
    """``immunostrat models list|show|verify|promote|unalias|compare``."""
    return _MODEL_ACTIONS[args.models_action](args)
