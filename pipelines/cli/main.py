"""Command line: `immunostrat synth | validate | stratify | monitor | train | evaluate | models | publish | report |
serve`.

Quick commands (`validate`, `synth`, `models`, `publish`, `report`) call the stage functions directly and
never start Prefect.
`stratify` and `train` run as Prefect flows by default (`--engine prefect`), so research teams see them in
the Prefect UI; `--engine local` runs the same stages without Prefect.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from immunostrat.cli import options as cli_options
from immunostrat.cli.options import Command, Group, own, to
from immunostrat.config.run import MonitorParams, StratifyParams, TrainParams
from immunostrat.errors import EXIT_OK, EXIT_STOPPED, EXIT_UNUSABLE, SettingsError, UserError

EXIT_PROBLEMS = EXIT_STOPPED  # `validate` found problems

# Prefect settings for unattended runs on small machines. setdefault: a team's own settings win.
PREFECT_DEFAULTS = {
    # The temporary server needs 15-30 s to start on 2 cores; Prefect's default timeout is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # No network beyond package registries: telemetry only produces errors.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def _configure_prefect_env() -> None:
    """Prefect's defaults for small machines, and a Prefect home it can write (checked before it starts)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"Prefect's home folder {home} cannot be created ({exc.strerror or exc}): set PREFECT_HOME to a writable "
            "folder, or run with --engine local"
        ) from exc
    if not os.access(home, os.W_OK):
        raise SettingsError(
            f"Prefect's home folder {home} is not writable: set PREFECT_HOME to a writable folder, or run with "
            "--engine local"
        )


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests), generated from the command table."""
    parser = argparse.ArgumentParser(prog="immunostrat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (SYNTH, VALIDATE, STRATIFY, MONITOR, TRAIN, SERVE):
        cli_options.add_command(sub, command)

    from immunostrat.cli import publish as cli_publish

    cli_publish.register(sub)

    from immunostrat.cli import models as cli_models

    cli_models.register(sub)
    return parser


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> int:
    from immunostrat.synth import SynthConfig, generate_cohort, oracle_auroc, write_cohort

    cohort = generate_cohort(SynthConfig(n_subjects=args.subjects, seed=args.seed))
    paths = write_cohort(cohort, Path(args.out), fmt=args.format)
    print(f"synthetic cohort: {args.subjects} subjects, {cohort.labs.height} lab rows, seed {args.seed}")
    print(f"  response rate {cohort.outcomes['responded'].mean():.1%}; oracle AUROC {oracle_auroc(cohort):.3f}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return EXIT_OK


def _print_counts(counts: dict[str, Any]) -> None:
    print(f"{'file':<48} {'read':>9} {'accepted':>9} {'outside':>9} {'quarant.':>9}")
    for path, c in counts["per_file"].items():
        name = path if len(path) <= 48 else "..." + path[-45:]
        print(f"{name:<48} {c['rows_read']:>9} {c['accepted']:>9} {c['outside_panel']:>9} {c['quarantined']:>9}")
    print(
        f"{'total':<48} {counts['rows_read']:>9} {counts['accepted']:>9} "
        f"{counts['outside_panel']:>9} {counts['quarantined']:>9}"
    )
    if "subjects" in counts:
        s = counts["subjects"]
        fields = f"; {s['fields_quarantined']} bad optional field(s) emptied" if s.get("fields_quarantined") else ""
        print(f"subjects: {s['rows_read']} read, {s['accepted']} valid, {s['quarantined']} quarantined{fields}")


def cmd_validate(args: argparse.Namespace) -> int:
    import polars as pl

    from immunostrat.pipeline import run

    # No output folder, and the subjects file is optional: validate checks what it is given.
    params = cli_options.parse_model(StratifyParams, args, VALIDATE, base={"subjects": "", "out": ""})
    # Large inputs stream partition by partition (scratch files only; validate writes no output).
    checked = run.validate(params)
    counts, problems = checked.counts, checked.quarantine
    _print_counts(counts)
    if args.report:
        report = Path(args.report)
        flat = problems.with_columns(pl.col("reason_codes").list.join(";"))
        if report.suffix.lower() == ".json":
            report.write_text(json.dumps(flat.to_dicts(), indent=2, default=str) + "\n", encoding="utf-8")
        else:
            from immunostrat.ingest.csv_export import csv_safe

            csv_safe(flat).write_csv(report)  # no cell is read as a spreadsheet formula
        print(f"report: {report} ({problems.height} problem rows)")
    if problems.height == 0:
        print("no problems found")
        return EXIT_OK
    by_reason = problems.group_by("reason_code").len().sort("len", "reason_code", descending=[True, False])
    print("problems by reason:")
    for code, n in by_reason.iter_rows():
        print(f"  {code:<28} {n:>8}")
    print(f"first {min(args.show, problems.height)} problem(s):")
    for message in problems["message"].head(args.show).to_list():
        print(f"  {message}")
    return EXIT_PROBLEMS


def _print_run_summary(run_dir: str) -> None:
    manifest = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    _print_counts(manifest["counts"])
    summary = manifest.get("summary", {})
    if summary:
        e = summary["eligible"]
        print(
            f"subjects {summary['subjects']}: eligible {e['true']}, not eligible {e['false']}, "
            f"not assessable {e['not_assessable']}"
        )
        groups = ", ".join(f"{k} {v}" for k, v in summary["responder_groups"].items())
        print(f"responder groups: {groups}")
        model = manifest.get("model", {})
        print(f"model {model.get('model_id')} (cut-offs from {model.get('cutoffs_source')}: {model.get('cutoffs')})")
        if summary.get("drift"):
            print(summary["drift"])
    print(run_dir)


def cmd_stratify(args: argparse.Namespace) -> int:
    from immunostrat.pipeline import launch

    params = cli_options.parse_model(StratifyParams, args, STRATIFY)
    if args.engine == "local":
        from immunostrat.pipeline import run

        run_dir = str(run.execute(launch.plan_stratify(params)).run_dir)
    else:
        # Every launch check before Prefect is imported or a server starts; the flow's own plan loads the model.
        launch.plan_stratify(params, load_model=False)
        _configure_prefect_env()
        from immunostrat.flows.stratify import run_stratify_flow

        run_dir = run_stratify_flow(params)
    _print_run_summary(run_dir)
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    from immunostrat.pipeline import launch

    params = cli_options.parse_model(MonitorParams, args, MONITOR)
    if args.engine == "local":
        from immunostrat.pipeline import run

        run_dir = str(run.execute(launch.plan_monitor(params)).run_dir)
    else:
        launch.plan_monitor(params)  # every launch check before Prefect is imported or a server starts
        _configure_prefect_env()
        from immunostrat.flows.monitor import run_monitor_flow

        run_dir = run_monitor_flow(params)
    _print_monitor_summary(run_dir)
    return EXIT_OK


def _print_monitor_summary(run_dir: str) -> None:
    from immunostrat.followup.summary import monitor_summary

    manifest = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    _print_counts(manifest["counts"])
    markdown, _ = monitor_summary(manifest)
    print("\n".join(line for line in markdown.splitlines()[6:] if line.strip()))
    print(run_dir)


def cmd_train(args: argparse.Namespace) -> int:
    params = cli_options.parse_model(TrainParams, args, TRAIN)
    from immunostrat.pipeline import launch

    launch.plan_training(params)  # launch checks before Prefect
    if args.engine == "local":
        from immunostrat.modelling.training import train

        model_id = train(params)
    else:
        _configure_prefect_env()
        from immunostrat.flows.train import run_train_flow

        model_id = run_train_flow(params)
    from immunostrat.modelling.registry import load_model

    card = load_model(model_id, params.registry).card
    print(f"registered model {model_id}")
    print(json.dumps(card.get("metrics", {}), indent=2, default=str))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    _configure_prefect_env()
    from immunostrat.cli.serve import serve_schedules

    return serve_schedules(Path(args.schedules))


def _extra_commands() -> dict[str, Any]:
    from immunostrat.cli import models as cli_models
    from immunostrat.cli import publish as cli_publish

    return {**cli_publish.COMMANDS, **cli_models.COMMANDS}


COMMANDS = {
    "synth": cmd_synth,
    "validate": cmd_validate,
    "stratify": cmd_stratify,
    "monitor": cmd_monitor,
    "train": cmd_train,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `immunostrat` console script (exit codes: `immunostrat.errors`, docs/operations.md)."""
    args = build_parser().parse_args(argv)
    try:
        handler = COMMANDS.get(args.command) or _extra_commands()[args.command]
        return int(handler(args))
    except UserError as exc:
        # One line naming the problem and what to do; any other exception is a bug and keeps its traceback.
        print(f"{exc.label or f'immunostrat {args.command}'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # a command-line value outside its parameter's range
        first = exc.errors()[0]
        setting = ".".join(str(p) for p in first["loc"])
        print(f"immunostrat {args.command}: {setting}: {first['msg']}", file=sys.stderr)
        return EXIT_UNUSABLE


if __name__ == "__main__":
    raise SystemExit(main())
