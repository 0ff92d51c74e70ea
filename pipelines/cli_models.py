"""Command line for the model lifecycle: ``immunostrat evaluate`` and ``immunostrat models list|show|promote|compare``.

``immunostrat.cli`` calls :func:`register` from ``build_parser`` and dispatches ``args.command`` through
:data:`COMMANDS`. Nothing here starts Prefect: evaluation and comparison run the same ingest-to-baseline stages as
``stratify`` in-process, so a model is evaluated on features derived exactly as it sees them when scoring.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from immunostrat.cli_options import add_inputs, input_files, run_config
from immunostrat.errors import EXIT_OK, EXIT_UNUSABLE

__all__ = ["COMMANDS", "cmd_evaluate", "cmd_models", "register"]


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--subjects", required=True, help="subjects file")
    p.add_argument("--outcomes", required=True, help="outcomes file (study_id, subject_id, responded, endpoint)")
    p.add_argument("--registry", help="model registry folder (default: the shipped models)")
    p.add_argument("--report", help="write the full report to this file (.json, or .md for Markdown)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` and ``models`` commands to the ``immunostrat`` parser.

    Args:
        subparsers: The object returned by ``parser.add_subparsers(dest="command")`` in ``immunostrat.cli``. It
            must not already hold a ``models`` command (this one replaces the old list/show/promote parser).
    """
    p = subparsers.add_parser(
        "evaluate",
        help="external validation: score a labelled cohort with a registry model and report metrics with intervals",
    )
    add_inputs(p)
    p.add_argument("--model", default="champion", help="model id or alias (default champion)")
    p.add_argument("--drift-threshold", type=float, default=0.2, help="PSI above which a feature is flagged")
    _eval_options(p)

    models = subparsers.add_parser("models", help="list, show, promote or compare registry models")
    actions = models.add_subparsers(dest="models_action", required=True, metavar="{list,show,promote,compare,unalias}")
    q = actions.add_parser("list", help="every registered model, its aliases and validation AUROC")
    q.add_argument("--registry", help="model registry folder")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = actions.add_parser("show", help="print a model card")
    q.add_argument("model", help="model id or alias")
    q.add_argument("--registry", help="model registry folder")
    q.add_argument("--json", action="store_true", help="print card.json instead of the Markdown card")
    q = actions.add_parser("promote", help="point an alias (default champion) at a model")
    q.add_argument("model", help="model id or alias")
    q.add_argument("--alias", default="champion", help="alias to set (default champion)")
    q.add_argument("--registry", help="model registry folder")
    q = actions.add_parser("unalias", help="remove an alias (not champion); the model stays registered")
    q.add_argument("alias", help="alias to remove")
    q.add_argument("--registry", help="model registry folder")
    q = actions.add_parser("compare", help="two (or more) models' metrics side by side on the same labelled data")
    q.add_argument("models", nargs="+", metavar="MODEL", help="model ids or aliases, the reference first")
    add_inputs(q)
    _eval_options(q)


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
    from immunostrat.registry import json_bytes

    target = Path(path)
    if target.suffix.lower() == ".md":
        target.write_text(markdown, encoding="utf-8")
    else:
        target.write_bytes(json_bytes(report))
    print(f"report: {target}")


def _labelled(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from immunostrat.training import labelled_strata

    # The same input options as stratify and train: formats, expression, crosswalk, study, patients.
    return labelled_strata(input_files(args), None, args.outcomes, run_config(args))


def _eval_config(args: argparse.Namespace) -> Any:
    from immunostrat.evaluation import EvaluationConfig

    return EvaluationConfig(n_bootstrap=args.n_bootstrap, seed=args.seed)


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``immunostrat evaluate``: external validation of one model on a labelled cohort it never saw."""
    from immunostrat import drift
    from immunostrat.evaluation import METRICS, evaluate_model, render_report_markdown
    from immunostrat.registry import load_model

    model = load_model(args.model, args.registry)
    labelled, summary = _labelled(args)
    report = evaluate_model(model, labelled, _eval_config(args), drift_threshold=args.drift_threshold)
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
    from immunostrat.registry import RegistryError, read_card

    try:
        card = read_card(model_id, registry_dir)
    except RegistryError:
        return "card unreadable"
    ev = card.get("evaluation", {}).get("metrics", {}).get("auroc")
    if ev:
        return f"AUROC {_cell(ev)}"
    auroc = card.get("metrics", {}).get("cv_auroc")
    return f"AUROC {_fmt(auroc)}" if auroc is not None else "AUROC n/a"


def _models_list(args: argparse.Namespace) -> int:
    from immunostrat import registry

    entries = registry.list_models(args.registry)
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return EXIT_OK
    for entry in entries:
        aliases = ", ".join(entry.get("aliases", [])) or "-"
        print(
            f"{entry['model_id']:<36} {entry.get('created_at', ''):<26} {_card_auroc(args.registry, entry['model_id'])}"
            f"   aliases: {aliases}"
        )
    return EXIT_OK


def _models_show(args: argparse.Namespace) -> int:
    from immunostrat import registry

    card = registry.load_model(args.model, args.registry).card
    print(json.dumps(card, indent=2) if args.json else registry.render_card_markdown(card))
    return EXIT_OK


def _models_promote(args: argparse.Namespace) -> int:
    from immunostrat import registry

    model_id = registry.resolve(args.model, args.registry)
    registry.load_model(model_id, args.registry)  # never promote a model that would fail to load
    previous = {e["model_id"] for e in registry.list_models(args.registry) if args.alias in e.get("aliases", [])}
    registry.set_alias(args.alias, model_id, args.registry)
    was = f" (was {', '.join(sorted(previous))})" if previous and model_id not in previous else ""
    print(f"{args.alias} -> {model_id}{was}")
    return EXIT_OK


def _models_unalias(args: argparse.Namespace) -> int:
    from immunostrat import registry

    target = registry.remove_alias(args.alias, args.registry)
    print(f"removed alias {args.alias} (was {target}); {target} stays registered")
    return EXIT_OK


def _models_compare(args: argparse.Namespace) -> int:
    from immunostrat.evaluation import METRICS, compare_models, render_comparison_markdown
    from immunostrat.registry import load_model

    if len(args.models) < 2:
        print("models compare needs at least two models", file=sys.stderr)
        return EXIT_UNUSABLE
    models = [load_model(ref, args.registry) for ref in args.models]
    labelled, summary = _labelled(args)
    report = compare_models(models, labelled, _eval_config(args))
    report["data"] = summary
    print(
        f"{report['n']} subjects scored by every model ({report['n_events']} responders; "
        f"{report['not_assessable_by_any']} not assessable by at least one), same {args.n_bootstrap} resamples"
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
    "promote": _models_promote,
    "unalias": _models_unalias,
    "compare": _models_compare,
}


def cmd_models(args: argparse.Namespace) -> int:
    """``immunostrat models list|show|promote|unalias|compare``."""
    return _MODEL_ACTIONS[args.models_action](args)


#: Handlers by command name, for ``immunostrat.cli.COMMANDS``.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"evaluate": cmd_evaluate, "models": cmd_models}
