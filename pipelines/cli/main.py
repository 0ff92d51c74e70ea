"""Command line: `immunostrat synth | validate | stratify | monitor | train | evaluate | models | publish | report |
serve`.

Quick commands (`validate`, `synth`, `models`, `publish`, `report`) call the stage functions directly and
never start Prefect.
`stratify` and `train` run as Prefect flows by default (`--engine prefect`), so research teams see them in
the Prefect UI; `--engine local` runs the same stages without Prefect.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from immunostrat.cli import models as cli_models
from immunostrat.cli import options as cli_options
from immunostrat.cli import publish as cli_publish
from immunostrat.cli.options import Command, Group, own, to
from immunostrat.config.run import MonitorParams, StratifyParams, TrainParams
from immunostrat.errors import EXIT_OK, EXIT_STOPPED, EXIT_UNUSABLE, UserError

__all__ = ["EXIT_OK", "EXIT_PROBLEMS", "EXIT_UNUSABLE", "build_parser", "console_main", "main"]

EXIT_PROBLEMS = EXIT_STOPPED  # `validate` found problems


# --------------------------------------------------------------------------------------------------
# The commands' parameter table (immunostrat.cli.options generates the parsers from it)
# --------------------------------------------------------------------------------------------------

SYNTH = Command(
    "synth",
    "generate a synthetic cohort (labs, subjects, outcomes)",
    None,  # SynthConfig's module loads numpy: its two options are declared here, so `--help` stays fast
    (
        own("--subjects", "number of subjects", type=int, default=500),
        own("--seed", "random seed", type=int, default=0),
        own("--out", "output folder", required=True),
        own("--format", "file format", choices=("parquet", "csv"), default="parquet"),
    ),
)

VALIDATE = Command(
    "validate",
    "check input files only (no Prefect); exit 0 clean, 1 problems, 2 unusable",
    StratifyParams,
    (
        *cli_options.INPUTS,
        to("--subjects", "subjects", help="validate also checks that every lab row's subject is enrolled."),
        own("--report", "write every problem to this file (.csv or .json)"),
        own("--show", "problems to print (default 10)", type=int, default=10),
        *cli_options.STREAMING,
    ),
)

STRATIFY = Command(
    "stratify",
    "run the stratify pipeline and write a run folder",
    StratifyParams,
    (
        *cli_options.INPUTS,
        to("--subjects", "subjects", required=True),
        to("--out", "out", required=True),
        to("--model", "config.scoring.model"),
        to("--registry", "config.scoring.registry"),
        to("--protocol", "protocol"),
        to("--possible-min", "config.scoring.possible_min"),
        to("--likely-min", "config.scoring.likely_min"),
        to("--max-quarantine-fraction", "config.validation.max_quarantine_fraction"),
        *cli_options.PUBLISHING,
        *cli_options.PARTITIONS,
        *cli_options.STREAMING,
        cli_options.ENGINE,
    ),
)

MONITOR = Command(
    "monitor",
    "follow-up: disease activity per visit and response endpoints at landmarks",
    MonitorParams,
    (
        *cli_options.INPUTS,
        to("--subjects", "subjects", required=True),
        to("--out", "out", required=True),
        to("--strata", "strata", metavar="RUN_DIR"),
        to("--protocol", "protocol"),
        to("--max-quarantine-fraction", "config.validation.max_quarantine_fraction"),
        *cli_options.PUBLISHING,
        *cli_options.PARTITIONS,
        *cli_options.STREAMING,
        cli_options.ENGINE,
    ),
)

TRAIN = Command(
    "train",
    "train a responder model and register it",
    TrainParams,
    (
        *cli_options.INPUTS,
        to("--subjects", "subjects", required=True),
        Group(exclusive=True, required=True, options=(to("--outcomes", "outcomes"), to("--endpoint", "endpoint"))),
        to("--landmark", "landmark"),
        to("--protocol", "protocol"),
        # The registry the model is written to is also the one the run's configuration names.
        to("--registry", "registry", "config.scoring.registry"),
        to("--alias", "alias"),
        to("--profile", "training.profile"),
        own("--training-config", "YAML file with a TrainingConfig (see docs/models.md)"),
        to("--seed", "training.seed"),
        to("--cv-folds", "training.cv_folds"),
        to("--cv-repeats", "training.cv_repeats"),
        to("--n-bootstrap", "training.evaluation.n_bootstrap"),
        cli_options.ENGINE,
    ),
)

SERVE = Command(
    "serve",
    "serve scheduled stratify runs from a schedules file (needs a Prefect server)",
    None,
    (own("--schedules", "YAML schedules file (see docs/operations.md)", required=True),),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests), generated from the command table.

    With `only` (the command a run names), the other commands are listed by name and help without their options:
    generating every command's options from the pydantic fields costs a run about 0.05 s. An `only` that names no
    command lists them all that way, so argparse's error and help name every command as before.
    """
    parser = argparse.ArgumentParser(prog="immunostrat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (SYNTH, VALIDATE, STRATIFY, MONITOR, TRAIN, SERVE):
        cli_options.add_command(sub, command, with_options=only in (None, command.name))
    cli_publish.register(sub, only=only)
    cli_models.register(sub, only=only)
    return parser


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs `command`. The data commands' module is imported here, when one of them runs."""
    if command in cli_publish.COMMANDS:
        return cli_publish.COMMANDS[command]
    if command in cli_models.COMMANDS:
        return cli_models.COMMANDS[command]
    from immunostrat.cli import runs  # start-up time: `--help`, `models` and `publish` load no pipeline (pandera)

    return runs.COMMANDS[command]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `immunostrat` console script (exit codes: `immunostrat.errors`, docs/operations.md)."""
    given = list(sys.argv[1:] if argv is None else argv)
    # The first word is the command (the top level has no option but --help): only its options are generated.
    args = build_parser(only=given[0] if given else None).parse_args(given)
    try:
        return int(handler(args.command)(args))
    except UserError as exc:
        # One line naming the problem and what to do; any other exception is a bug and keeps its traceback.
        print(f"{exc.label or f'immunostrat {args.command}'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # a command-line value outside its parameter's range
        first = exc.errors()[0]
        setting = ".".join(str(p) for p in first["loc"])
        print(f"immunostrat {args.command}: {setting}: {first['msg']}", file=sys.stderr)
        return EXIT_UNUSABLE


def console_main() -> int:
    """The `immunostrat` console script: `main`, then an exit without the interpreter's last sweep of its objects.

    At exit Python clears every module and collects again and again over everything a run loaded (190k objects
    with Prefect, 90k without): 1-2 s on a busy 2-core machine. Freezing them first leaves that sweep out; output
    files are closed, and logs and Prefect's events flushed (atexit handlers still run), before it would begin.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(console_main())
