"""Command line for the model lifecycle: ``immunostrat evaluate`` and
``immunostrat models list|show|verify|promote|unalias|compare``.

``immunostrat.cli.main`` calls :func:`register` from ``build_parser`` and dispatches ``args.command`` through
:data:`COMMANDS`; the handlers live in ``immunostrat.cli.model_commands``, imported when a model command runs
(so ``--help`` loads neither numpy nor the registry).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from immunostrat.cli.options import DEFAULT_ALIAS, INPUTS, Command, add_command, own, to
from immunostrat.config.run import EvaluateParams, ScoringConfig

__all__ = ["COMMANDS", "cmd_evaluate", "cmd_models", "register"]


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


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], *, only: str | None = None) -> None:
    """Add the ``evaluate`` and ``models`` commands to the ``immunostrat`` parser.

    Args:
        subparsers: The object returned by ``parser.add_subparsers(dest="command")`` in ``immunostrat.cli.main``. It
            must not already hold a ``models`` command (this one replaces the old list/show/promote parser).
        only: The command a run names: the other commands get their name and help only (None: every option).
    """
    add_command(subparsers, EVALUATE, with_options=only in (None, EVALUATE.name))
    models = subparsers.add_parser("models", help="list, show, promote or compare registry models")
    if only not in (None, "models"):
        return
    names = ",".join(c.name for c in MODEL_ACTIONS if c.name != "compare") + ",compare"
    actions = models.add_subparsers(dest="models_action", required=True, metavar="{" + names + "}")
    for command in MODEL_ACTIONS:
        add_command(actions, command)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``immunostrat evaluate``: external validation of one model on a labelled cohort it never saw."""
    # start-up time: the registry and numpy load only when a model command runs, not for `--help`
    from immunostrat.cli import model_commands

    return model_commands.cmd_evaluate(args)


def cmd_models(args: argparse.Namespace) -> int:
    """``immunostrat models list|show|verify|promote|unalias|compare``."""
    from immunostrat.cli import model_commands  # start-up time, as above

    return model_commands.cmd_models(args)


#: Handlers by command name, for ``immunostrat.cli.main``.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"evaluate": cmd_evaluate, "models": cmd_models}
