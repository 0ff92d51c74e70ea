"""Command line for the model lifecycle: ``immunostrat evaluate`` and
``immunostrat models list|show|verify|promote|unalias|compare``.

``immunostrat.cli.main`` calls :func:`register` from ``build_parser`` and dispatches ``args.command`` through
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

from pydantic import Field

from immunostrat.cli.options import DEFAULT_ALIAS, INPUTS, Command, add_command, own, parse_model, to
from immunostrat.config.run import EvaluationConfig, InputFiles, RunConfig, ScoringConfig
from immunostrat.errors import EXIT_OK, EXIT_UNUSABLE

__all__ = ["COMMANDS", "EvaluateParams", "cmd_evaluate", "cmd_models", "register"]


class EvaluateParams(InputFiles):
    """Inputs and options of `evaluate` and `models compare`: a labelled cohort, its run configuration (the model,
    registry and drift threshold are its `scoring` settings) and the evaluation settings."""

    outcomes: str = Field(description="Outcomes file (study_id, subject_id, responded, endpoint).")
    config: RunConfig = Field(default_factory=RunConfig, description="Harmonisation, validation, baseline, scoring.")
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="Bootstrap intervals, subgroups and calibration table."
    )


# Labelled data and the evaluation settings, shared by `evaluate` and `models compare`.
LABELLED = (
    to("--subjects", "subjects", required=True),
    to("--outcomes", "outcomes", required=True),
    to("--registry", "config.scoring.registry"),
    own("--report", "write the full report to this file (.json, or .md for Markdown)"),
    to("--n-bootstrap", "evaluation.n_bootstrap"),
    to("--seed", "evaluation.seed"),
)

EVALUATE = Command(
    "evaluate",
    "external validation: score a labelled cohort with a registry model and report metrics with intervals",
    EvaluateParams,
    (
        *INPUTS,
        to("--model", "config.scoring.model"),
        to("--drift-threshold", "config.scoring.drift_threshold"),
        *LABELLED,
    ),
)

# `models` actions other than compare only name the registry (ScoringConfig.registry) and their own arguments.
REGISTRY = to("--registry", "registry")
MODEL_ACTIONS = (
    Command(
        "list",
        "every registered model, its aliases and validation AUROC",
        ScoringConfig,
        (REGISTRY, own("--json", "print JSON", kind="true", default=False)),
    ),
    Command(
        "show",
        "print a model card",
        ScoringConfig,
        (
            own("model", "model id or alias"),
            REGISTRY,
            own("--json", "print card.json instead of the Markdown card", kind="true", default=False),
        ),
    ),
    Command(
        "verify",
        "check models' files and that the card's coefficients (what runs score with) equal the skops estimator",
        ScoringConfig,
        (own("models", "model ids or aliases (default: every registered model)", nargs="*", metavar="MODEL"), REGISTRY),
    ),
    Command(
        "promote",
        f"point an alias (default {DEFAULT_ALIAS}) at a model",
        ScoringConfig,
        (
            own("model", "model id or alias"),
            own(
                "--alias",
                f"alias to set (default {DEFAULT_ALIAS}, the alias stratify scores with)",
                default=DEFAULT_ALIAS,
            ),
            REGISTRY,
        ),
    ),
    Command(
        "unalias",
        f"remove an alias (not {DEFAULT_ALIAS}); the model stays registered",
        ScoringConfig,
        (own("alias", "alias to remove"), REGISTRY),
    ),
    Command(
        "compare",
        "two (or more) models' metrics side by side on the same labelled data",
        EvaluateParams,
        (own("models", "model ids or aliases, the reference first", nargs="+", metavar="MODEL"), *INPUTS, *LABELLED),
    ),
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evaluate`` and ``models`` commands to the ``immunostrat`` parser.

    Args:
        subparsers: The object returned by ``parser.add_subparsers(dest="command")`` in ``immunostrat.cli.main``. It
            must not already hold a ``models`` command (this one replaces the old list/show/promote parser).
    """
    add_command(subparsers, EVALUATE)
    models = subparsers.add_parser("models", help="list, show, promote or compare registry models")
    names = ",".join(c.name for c in MODEL_ACTIONS if c.name != "compare") + ",compare"
    actions = models.add_subparsers(dest="models_action", required=True, metavar="{" + names + "}")
    for command in MODEL_ACTIONS:
        add_command(actions, command)


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
    from immunostrat.modelling.registry import json_bytes

    target = Path(path)
    if target.suffix.lower() == ".md":
        target.write_text(markdown, encoding="utf-8")
    else:
        target.write_bytes(json_bytes(report))
    print(f"report: {target}")


def _labelled(params: EvaluateParams) -> tuple[Any, dict[str, Any]]:
    from immunostrat.modelling.training import labelled_strata

    # The same input options as stratify and train: formats, expression, crosswalk, study, patients.
    files = InputFiles.model_validate(params.model_dump(include=set(InputFiles.model_fields)))
    return labelled_strata(files, None, params.outcomes, params.config)


def _registry_of(params: EvaluateParams) -> str | None:
    registry = params.config.scoring.registry
    return None if registry is None else str(registry)


# --------------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``immunostrat evaluate``: external validation of one model on a labelled cohort it never saw."""
    from immunostrat.modelling import drift
    from immunostrat.modelling.evaluation import METRICS, evaluate_model
    from immunostrat.modelling.markdown import render_report_markdown
    from immunostrat.modelling.registry import load_model

    params = parse_model(EvaluateParams, args)
    model = load_model(params.config.scoring.model, _registry_of(params))
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
    from immunostrat.modelling.registry import RegistryError, read_card

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
    from immunostrat.modelling import registry

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
    from immunostrat.modelling import registry
    from immunostrat.modelling.markdown import render_card_markdown

    card = registry.load_model(args.model, _registry(args)).card
    print(json.dumps(card, indent=2) if args.json else render_card_markdown(card))
    return EXIT_OK


def _models_verify(args: argparse.Namespace) -> int:
    """Deserialise each model (every check of ``load_model``, the two forms' agreement included); one line each."""
    from immunostrat.modelling import registry

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
    from immunostrat.modelling import registry
    from immunostrat.modelling.registry_write import set_alias

    registry_dir = _registry(args)
    model_id = registry.resolve(args.model, registry_dir)
    registry.load_model(model_id, registry_dir)  # never promote a model that would fail to load
    previous = {e["model_id"] for e in registry.list_models(registry_dir) if args.alias in e.get("aliases", [])}
    set_alias(args.alias, model_id, registry_dir)
    was = f" (was {', '.join(sorted(previous))})" if previous and model_id not in previous else ""
    print(f"{args.alias} -> {model_id}{was}")
    return EXIT_OK


def _models_unalias(args: argparse.Namespace) -> int:
    from immunostrat.modelling.registry_write import remove_alias

    target = remove_alias(args.alias, _registry(args))
    print(f"removed alias {args.alias} (was {target}); {target} stays registered")
    return EXIT_OK


def _models_compare(args: argparse.Namespace) -> int:
    from immunostrat.modelling.evaluation import METRICS, compare_models
    from immunostrat.modelling.markdown import render_comparison_markdown
    from immunostrat.modelling.registry import load_model

    if len(args.models) < 2:
        print("models compare needs at least two models", file=sys.stderr)
        return EXIT_UNUSABLE
    params = parse_model(EvaluateParams, args)
    models = [load_model(ref, _registry_of(params)) for ref in args.models]
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


#: Handlers by command name, for ``immunostrat.cli.main.COMMANDS``.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"evaluate": cmd_evaluate, "models": cmd_models}
