"""The command line's data commands: `synth`, `validate`, `stratify`, `monitor`, `train` and `serve`.

`immunostrat.cli.main` declares their options and imports this module only when one of them runs, so `--help`,
`models` and `publish` never load the pipelines. Here the pipelines load at import; what only some runs use
(Prefect for `--engine prefect` and `serve`, the synthetic cohort generator) is imported where it is used.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl

from immunostrat.cli import options as cli_options
from immunostrat.config.run import MonitorParams, StratifyParams, TrainParams
from immunostrat.errors import EXIT_OK, EXIT_STOPPED, SettingsError
from immunostrat.ingest.csv_export import csv_safe
from immunostrat.pipeline import launch, run
from immunostrat.schemas.records import Counts, read_run_record

__all__ = ["COMMANDS", "EXIT_PROBLEMS", "PREFECT_DEFAULTS"]

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


def cmd_synth(args: argparse.Namespace) -> int:
    """`immunostrat synth`: a synthetic cohort (labs, subjects, outcomes) written to `--out`."""
    from immunostrat.synth import SynthConfig, generate_cohort, oracle_auroc, write_cohort  # start-up time

    cohort = generate_cohort(SynthConfig(n_subjects=args.subjects, seed=args.seed))
    paths = write_cohort(cohort, Path(args.out), fmt=args.format)
    print(f"synthetic cohort: {args.subjects} subjects, {cohort.labs.height} lab rows, seed {args.seed}")
    print(f"  response rate {cohort.outcomes['responded'].mean():.1%}; oracle AUROC {oracle_auroc(cohort):.3f}")
    for kind, path in paths.items():
        print(f"  {kind}: {path}")
    return EXIT_OK


def _print_counts(counts: Counts) -> None:
    """The row accounting per lab file and in total, and the subjects file's."""
    print(f"{'file':<48} {'read':>9} {'accepted':>9} {'outside':>9} {'quarant.':>9}")
    for path, c in counts.per_file.items():
        name = path if len(path) <= 48 else "..." + path[-45:]
        print(f"{name:<48} {c.rows_read:>9} {c.accepted:>9} {c.outside_panel:>9} {c.quarantined:>9}")
    print(f"{'total':<48} {counts.rows_read:>9} {counts.accepted:>9} {counts.outside_panel:>9} {counts.quarantined:>9}")
    s = counts.subjects
    if s is not None:
        fields = f"; {s.fields_quarantined} bad optional field(s) emptied" if s.fields_quarantined else ""
        print(f"subjects: {s.rows_read} read, {s.accepted} valid, {s.quarantined} quarantined{fields}")


def cmd_validate(args: argparse.Namespace) -> int:
    """`immunostrat validate`: check input files only; exit 0 clean, 1 problems (listed), 2 unusable."""
    # No output folder, and the subjects file is optional: validate checks what it is given.
    params = cli_options.parse_model(StratifyParams, args, base={"subjects": "", "out": ""})
    # Large inputs stream partition by partition (scratch files only; validate writes no output).
    checked = run.validate(params)
    problems = checked.quarantine
    _print_counts(Counts.model_validate(checked.counts))
    if args.report:
        report = Path(args.report)
        flat = problems.with_columns(pl.col("reason_codes").list.join(";"))
        if report.suffix.lower() == ".json":
            report.write_text(json.dumps(flat.to_dicts(), indent=2, default=str) + "\n", encoding="utf-8")
        else:
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
    """A stratify run's accounting, eligibility, groups, model and drift line, read from its run.json."""
    record = read_run_record(run_dir)
    _print_counts(record.counts)
    summary = record.summary
    if summary is not None:
        e = summary.eligible or {}
        print(
            f"subjects {summary.subjects}: eligible {e.get('true')}, not eligible {e.get('false')}, "
            f"not assessable {e.get('not_assessable')}"
        )
        groups = ", ".join(f"{k} {v}" for k, v in (summary.responder_groups or {}).items())
        print(f"responder groups: {groups}")
        model = record.model
        if model is None:
            print("model None (cut-offs from None: None)")
        else:
            print(f"model {model.model_id} (cut-offs from {model.cutoffs_source}: {model.cutoffs})")
        if summary.drift:
            print(summary.drift)
    print(run_dir)


def cmd_stratify(args: argparse.Namespace) -> int:
    """`immunostrat stratify`: one run folder (in this process, or as a Prefect flow)."""
    params = cli_options.parse_model(StratifyParams, args)
    if args.engine == "local":
        run_dir = str(run.execute(launch.plan_stratify(params)).run_dir)
    else:
        # Every launch check before Prefect is imported or a server starts; the flow's own plan loads the model.
        launch.plan_stratify(params, load_model=False)
        _configure_prefect_env()
        # Start-up time: Prefect loads only for --engine prefect, and only this command's flow (not train's sklearn).
        from immunostrat.flows.stratify import run_stratify_flow

        run_dir = run_stratify_flow(params)
    _print_run_summary(run_dir)
    return EXIT_OK


def _print_monitor_summary(run_dir: str) -> None:
    """A monitor run's accounting and its summary (endpoint rates, what changed), read from its run.json."""
    # Start-up time: the follow-up summary (its report's rates) loads only after a monitor run.
    from immunostrat.followup.summary import monitor_summary

    record = read_run_record(run_dir)
    _print_counts(record.counts)
    markdown, _ = monitor_summary(record)
    print("\n".join(line for line in markdown.splitlines()[6:] if line.strip()))
    print(run_dir)


def cmd_monitor(args: argparse.Namespace) -> int:
    """`immunostrat monitor`: one follow-up run folder (in this process, or as a Prefect flow)."""
    params = cli_options.parse_model(MonitorParams, args)
    if args.engine == "local":
        run_dir = str(run.execute(launch.plan_monitor(params)).run_dir)
    else:
        launch.plan_monitor(params)  # every launch check before Prefect is imported or a server starts
        _configure_prefect_env()
        from immunostrat.flows.monitor import run_monitor_flow  # start-up time: Prefect only for --engine prefect

        run_dir = run_monitor_flow(params)
    _print_monitor_summary(run_dir)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """`immunostrat train`: train a responder model and register it; prints its metrics."""
    # Start-up: training imports scikit-learn (~1.8 s), and the registry, which the other commands here never need.
    from immunostrat.modelling.registry import load_model
    from immunostrat.modelling.training import train  # start-up time (above)

    params = cli_options.parse_model(TrainParams, args)
    launch.plan_training(params)  # launch checks before Prefect
    if args.engine == "local":
        model_id = train(params)
    else:
        _configure_prefect_env()
        from immunostrat.flows.train import run_train_flow  # start-up time: Prefect only for --engine prefect

        model_id = run_train_flow(params)
    card = load_model(model_id, params.registry).card
    print(f"registered model {model_id}")
    print(json.dumps(card.get("metrics", {}), indent=2, default=str))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """`immunostrat serve`: serve the schedules file's deployments (needs a Prefect server)."""
    _configure_prefect_env()
    from immunostrat.cli.serve import serve_schedules  # start-up time: Prefect loads only when serving

    return serve_schedules(Path(args.schedules))


#: Handlers by command name, for `immunostrat.cli.main`.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "synth": cmd_synth,
    "validate": cmd_validate,
    "stratify": cmd_stratify,
    "monitor": cmd_monitor,
    "train": cmd_train,
    "serve": cmd_serve,
}
