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

from immunostrat import cli_options
from immunostrat.config import StratifyParams, TrainParams, read_yaml_mapping, validated
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(prog="immunostrat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate a synthetic cohort (labs, subjects, outcomes)")
    p.add_argument("--subjects", type=int, default=500, help="number of subjects (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet")

    p = sub.add_parser("validate", help="check input files only (no Prefect); exit 0 clean, 1 problems, 2 unusable")
    cli_options.add_inputs(p)
    p.add_argument("--subjects", help="subjects file; also checks that every lab row's subject is enrolled")
    p.add_argument("--report", help="write every problem to this file (.csv or .json)")
    p.add_argument("--show", type=int, default=10, help="problems to print (default 10)")
    cli_options.add_streaming(p)

    p = sub.add_parser("stratify", help="run the stratify pipeline and write a run folder")
    cli_options.add_inputs(p)
    p.add_argument("--subjects", required=True, help="subjects file")
    p.add_argument("--out", required=True, help="output folder; the run writes OUT/<run_id>/")
    p.add_argument("--model", help="model id or alias (default champion)")
    p.add_argument("--registry", help="model registry folder (default: the shipped models)")
    p.add_argument("--protocol", help="eligibility protocol YAML (default: built-in)")
    p.add_argument("--possible-min", type=float, help="override the model card's possible-group cut-off")
    p.add_argument("--likely-min", type=float, help="override the model card's likely-group cut-off")
    p.add_argument("--max-quarantine-fraction", type=float, help="fail above this quarantined fraction")
    cli_options.add_publishing(p)
    p.add_argument("--partitions", type=int, default=1, help="run per subject partition (Prefect: on Dask)")
    p.add_argument("--dask-address", help="Dask scheduler address for partitioned runs (default: local cluster)")
    cli_options.add_streaming(p)
    p.add_argument(
        "--engine",
        choices=["prefect", "local"],
        default="prefect",
        help="run as a Prefect flow (default) or directly",
    )

    p = sub.add_parser("monitor", help="follow-up: disease activity per visit and response endpoints at landmarks")
    cli_options.add_inputs(p)
    p.add_argument("--subjects", required=True, help="subjects file (infusion_date or first_exposure_date = day 0)")
    p.add_argument("--out", required=True, help="output folder; the run writes OUT/<run_id>/")
    p.add_argument(
        "--strata",
        metavar="RUN_DIR",
        help="the stratify run from before infusion (or its output folder: the newest run): rates by its groups",
    )
    p.add_argument("--protocol", help="protocol YAML with its endpoint definition (default: built-in)")
    p.add_argument("--max-quarantine-fraction", type=float, help="fail above this quarantined fraction")
    cli_options.add_publishing(p)
    p.add_argument("--partitions", type=int, default=1, help="run per subject partition (Prefect: on Dask)")
    p.add_argument("--dask-address", help="Dask scheduler address for partitioned runs (default: local cluster)")
    cli_options.add_streaming(p)
    p.add_argument(
        "--engine", choices=["prefect", "local"], default="prefect", help="run as a Prefect flow or directly"
    )

    p = sub.add_parser("train", help="train a responder model and register it")
    cli_options.add_inputs(p)
    p.add_argument("--subjects", required=True, help="subjects file")
    label = p.add_mutually_exclusive_group(required=True)
    label.add_argument("--outcomes", help="outcomes file (study_id, subject_id, responded, endpoint)")
    label.add_argument(
        "--endpoint", help="derive `responded` from this endpoint of the visits (e.g. drug_free_doris_remission)"
    )
    p.add_argument("--landmark", help="landmark of --endpoint (e.g. month_6; see the protocol's endpoints)")
    p.add_argument("--protocol", help="protocol YAML with its endpoint definition (default: built-in)")
    p.add_argument("--registry", help="model registry folder (default: the shipped models)")
    p.add_argument("--alias", help="point this alias (e.g. champion) at the new model")
    p.add_argument("--profile", choices=["full", "small"], help="training profile (default full; small for CI)")
    p.add_argument("--training-config", help="YAML file with a TrainingConfig (see docs/models.md)")
    p.add_argument("--seed", type=int, help="random seed of the cross-validation")
    p.add_argument("--cv-folds", type=int, help="cross-validation folds")
    p.add_argument("--cv-repeats", type=int, help="cross-validation repeats")
    p.add_argument("--n-bootstrap", type=int, help="bootstrap resamples for the metrics' intervals")
    p.add_argument("--engine", choices=["prefect", "local"], default="prefect")

    p = sub.add_parser("serve", help="serve scheduled stratify runs from a schedules file (needs a Prefect server)")
    p.add_argument("--schedules", required=True, help="YAML schedules file (see docs/operations.md)")

    from immunostrat import cli_publish

    cli_publish.register(sub)

    from immunostrat import cli_models

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

    from immunostrat import run

    params = StratifyParams(
        labs=list(args.labs),
        subjects=args.subjects or "",
        out="",
        config=cli_options.run_config(args),
        **cli_options.format_params(args),
    ).model_copy(update=cli_options.streaming_options(args))
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
            from immunostrat.safety import csv_safe

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
    from immunostrat import launch

    params = StratifyParams(
        labs=list(args.labs),
        subjects=args.subjects,
        out=args.out,
        protocol=args.protocol,
        config=cli_options.run_config(args),
        partitions=args.partitions,
        dask_address=args.dask_address,
        **cli_options.streaming_options(args),
        **cli_options.format_params(args),
    )
    if args.engine == "local":
        from immunostrat import run

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
    from immunostrat import launch
    from immunostrat.config import MonitorParams

    params = MonitorParams(
        labs=list(args.labs),
        subjects=args.subjects,
        out=args.out,
        protocol=args.protocol,
        strata=args.strata,
        config=cli_options.run_config(args),
        partitions=args.partitions,
        dask_address=args.dask_address,
        **cli_options.streaming_options(args),
        **cli_options.format_params(args),
    )
    if args.engine == "local":
        from immunostrat import run

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


def _training_config(args: argparse.Namespace) -> Any:
    """TrainingConfig from an optional YAML file, with command-line flags on top."""
    from immunostrat.config import TrainingConfig

    data: dict[str, Any] = {}
    if args.training_config:
        data = read_yaml_mapping(args.training_config, "training config")
    for key in ("profile", "seed", "cv_folds", "cv_repeats"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.n_bootstrap is not None:
        data.setdefault("evaluation", {})["n_bootstrap"] = args.n_bootstrap
    return validated(TrainingConfig, data, f"training config {args.training_config or ''}".strip())


def cmd_train(args: argparse.Namespace) -> int:
    params = TrainParams(
        labs=list(args.labs),
        subjects=args.subjects,
        outcomes=args.outcomes,
        endpoint=args.endpoint,
        landmark=args.landmark,
        protocol=args.protocol,
        registry=args.registry,
        alias=args.alias,
        training=_training_config(args),
        config=cli_options.run_config(args),
        **cli_options.format_params(args),
    )
    from immunostrat import launch

    launch.plan_training(params)  # launch checks before Prefect
    if args.engine == "local":
        from immunostrat.training import train

        model_id = train(params)
    else:
        _configure_prefect_env()
        from immunostrat.flows.train import run_train_flow

        model_id = run_train_flow(params)
    from immunostrat.registry import load_model

    card = load_model(model_id, args.registry).card
    print(f"registered model {model_id}")
    print(json.dumps(card.get("metrics", {}), indent=2, default=str))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    _configure_prefect_env()
    from immunostrat.serve import serve_schedules

    return serve_schedules(Path(args.schedules))


def _extra_commands() -> dict[str, Any]:
    from immunostrat import cli_models, cli_publish

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
