"""Command line: `immunostrat synth | validate | stratify | train | evaluate | models | publish | report | serve`.

Quick commands (`validate`, `synth`, `models`, `publish`, `report`) call the stage functions directly and
never start Prefect.
`stratify` and `train` run as Prefect flows by default (`--engine prefect`), so research teams see them in
the Prefect UI; `--engine local` runs the same stages without Prefect.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from immunostrat.config import RunConfig, StratifyParams, TrainParams
from immunostrat.io import InputError

EXIT_OK, EXIT_PROBLEMS, EXIT_UNUSABLE = 0, 1, 2

# Prefect settings for unattended runs on small machines. setdefault: a team's own settings win.
PREFECT_DEFAULTS = {
    # The temporary server needs 15-30 s to start on 2 cores; Prefect's default timeout is 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # No network beyond package registries: telemetry only produces errors.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def _configure_prefect_env() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an ISO date YYYY-MM-DD, got {text!r}") from exc


def _run_config(args: argparse.Namespace) -> RunConfig:
    """RunConfig from an optional YAML file, with command-line flags on top."""
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise SystemExit(f"config file {args.config} must hold a mapping")
        data = loaded

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            data.setdefault(section, {})[key] = value

    put("validation", "as_of", getattr(args, "as_of", None))
    put("validation", "max_quarantine_fraction", getattr(args, "max_quarantine_fraction", None))
    put("harmonise", "alias_file", getattr(args, "alias_file", None))
    put("harmonise", "ifn_default_method", getattr(args, "ifn_default_method", None))
    put("scoring", "model", getattr(args, "model", None))
    put("scoring", "registry", getattr(args, "registry", None))
    put("scoring", "possible_min", getattr(args, "possible_min", None))
    put("scoring", "likely_min", getattr(args, "likely_min", None))
    put("publish", "key_file", getattr(args, "key_file", None))
    put("publish", "demo_key", getattr(args, "demo_key", None))
    if getattr(args, "no_publish", None):
        put("publish", "enabled", False)
    put("readers", "study_id", getattr(args, "study_id", None))
    put("readers", "crosswalk", getattr(args, "crosswalk", None))
    put("readers", "ifn_method", getattr(args, "ifn_method", None))
    put("readers", "ifn_genes", getattr(args, "ifn_genes", None))
    put("readers", "ifn_statistic", getattr(args, "ifn_statistic", None))
    put("readers", "min_controls", getattr(args, "min_controls", None))
    put("readers", "reference_date_from", getattr(args, "reference_date", None))
    return RunConfig.model_validate(data)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labs", nargs="+", required=True, metavar="FILE", help="lab-result files (CSV or Parquet)")
    p.add_argument("--as-of", type=_date, help="the run's as_of date (default today); later dates are quarantined")
    p.add_argument("--alias-file", help="extra test aliases CSV (code,analyte)")
    p.add_argument("--ifn-default-method", help="IFN method assumed for ifn_score rows without one")
    p.add_argument("--config", help="YAML file with run configuration (see docs/operations.md)")
    g = p.add_argument_group("other input formats (see docs/input.md)")
    g.add_argument(
        "--format", dest="lab_format", choices=["native", "sdtm", "fhir"], help="lab format (default: detect)"
    )
    g.add_argument("--study-id", help="study of FHIR rows the crosswalk does not map")
    g.add_argument("--crosswalk", help="CSV source,source_id,study_id,subject_id joining identifiers across sources")
    g.add_argument("--expression", nargs="+", default=[], metavar="MATRIX", help="expression matrices -> IFN scores")
    g.add_argument("--samples", help="sample sheet of the expression matrices")
    g.add_argument("--ifn-method", help="IFN method for expression scores (default MEDIAN_FC_4)")
    g.add_argument("--ifn-genes", nargs="+", help="gene set of a custom IFN method")
    g.add_argument("--ifn-statistic", choices=["median_fc", "mean_z"], help="statistic of a custom IFN method")
    g.add_argument("--min-controls", type=int, help="fewest healthy controls accepted (default 5)")
    g.add_argument("--patients", help="FHIR Patient resources filling missing sex and age")
    g.add_argument("--reference-date", choices=["RFSTDTC", "RFICDTC"], help="SDTM DM anchor date (default RFSTDTC)")


def _add_streaming(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        help="out-of-core: split inputs on disk by subject and process one partition at a time (bounded memory); "
        "default: on above --partition-rows lab rows",
    )
    p.add_argument("--partition-rows", type=int, help="streaming: target lab rows per partition (default 1,000,000)")


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
    _add_common(p)
    p.add_argument("--subjects", help="subjects file; also checks that every lab row's subject is enrolled")
    p.add_argument("--report", help="write every problem to this file (.csv or .json)")
    p.add_argument("--show", type=int, default=10, help="problems to print (default 10)")
    _add_streaming(p)

    p = sub.add_parser("stratify", help="run the stratify pipeline and write a run folder")
    _add_common(p)
    p.add_argument("--subjects", required=True, help="subjects file")
    p.add_argument("--out", required=True, help="output folder; the run writes OUT/<run_id>/")
    p.add_argument("--model", help="model id or alias (default champion)")
    p.add_argument("--registry", help="model registry folder (default: the shipped models)")
    p.add_argument("--protocol", help="eligibility protocol YAML (default: built-in)")
    p.add_argument("--possible-min", type=float, help="override the model card's possible-group cut-off")
    p.add_argument("--likely-min", type=float, help="override the model card's likely-group cut-off")
    p.add_argument("--max-quarantine-fraction", type=float, help="fail above this quarantined fraction")
    p.add_argument("--key-file", help="pseudonym key file for the sponsor snapshot (or $IMMUNOSTRAT_PSEUDONYM_KEY)")
    p.add_argument("--demo-key", action="store_true", default=None, help="demo only: create/use a local key")
    p.add_argument("--no-publish", action="store_true", default=None, help="skip the sponsor snapshot")
    p.add_argument("--partitions", type=int, default=1, help="run per subject partition (Prefect: on Dask)")
    p.add_argument("--dask-address", help="Dask scheduler address for partitioned runs (default: local cluster)")
    _add_streaming(p)
    p.add_argument(
        "--engine",
        choices=["prefect", "local"],
        default="prefect",
        help="run as a Prefect flow (default) or directly",
    )

    p = sub.add_parser("train", help="train a responder model and register it")
    _add_common(p)
    p.add_argument("--subjects", required=True, help="subjects file")
    p.add_argument("--outcomes", required=True, help="outcomes file")
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
        print(f"subjects: {s['rows_read']} read, {s['accepted']} valid, {s['quarantined']} quarantined")


def cmd_validate(args: argparse.Namespace) -> int:
    import polars as pl

    from immunostrat import run as pipeline
    from immunostrat import streaming

    cfg = _run_config(args)
    try:
        with tempfile.TemporaryDirectory(prefix="immunostrat-validate-") as scratch:
            # Large inputs stream partition by partition (scratch files only; validate writes no output).
            params = StratifyParams(
                labs=list(args.labs), subjects=args.subjects or "", out=scratch, config=cfg, **_format_params(args)
            ).model_copy(update=_streaming_options(args))
            if args.subjects and streaming.wanted(params):
                counts, problems = streaming.prepare_streaming(params, Path(scratch))
            else:
                inputs = pipeline.read_inputs(args.labs, args.subjects, **pipeline.input_options(params))
                prepared = pipeline.prepare(inputs, cfg)
                counts, problems = prepared.counts, prepared.quarantine
    except InputError as exc:
        print(f"unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
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


def _format_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "lab_format": args.lab_format,
        "expression": args.expression,
        "samples": args.samples,
        "patients": args.patients,
    }


def _streaming_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"streaming": args.streaming}
    if args.partition_rows:
        options["partition_rows"] = args.partition_rows
    return options


def cmd_stratify(args: argparse.Namespace) -> int:
    params = StratifyParams(
        labs=list(args.labs),
        subjects=args.subjects,
        out=args.out,
        protocol=args.protocol,
        config=_run_config(args),
        partitions=args.partitions,
        dask_address=args.dask_address,
        **_streaming_options(args),
        **_format_params(args),
    )
    if args.engine == "local":
        from immunostrat import run as pipeline

        run_dir = str(pipeline.stratify(params).run_dir)
    else:
        _configure_prefect_env()
        from immunostrat.flows import run_stratify_flow

        run_dir = run_stratify_flow(params)
    _print_run_summary(run_dir)
    return EXIT_OK


def _training_config(args: argparse.Namespace) -> Any:
    """TrainingConfig from an optional YAML file, with command-line flags on top."""
    from immunostrat.modeling import TrainingConfig

    data: dict[str, Any] = {}
    if args.training_config:
        data = yaml.safe_load(Path(args.training_config).read_text(encoding="utf-8")) or {}
    for key in ("profile", "seed", "cv_folds", "cv_repeats"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.n_bootstrap is not None:
        data.setdefault("evaluation", {})["n_bootstrap"] = args.n_bootstrap
    return TrainingConfig.model_validate(data)


def cmd_train(args: argparse.Namespace) -> int:
    params = TrainParams(
        labs=list(args.labs),
        subjects=args.subjects,
        outcomes=args.outcomes,
        registry=args.registry,
        alias=args.alias,
        training=_training_config(args),
        config=_run_config(args),
        **_format_params(args),
    )
    if args.engine == "local":
        from immunostrat.training import train

        model_id = train(params)
    else:
        _configure_prefect_env()
        from immunostrat.flows import train_flow

        model_id = train_flow(params)
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
    "train": cmd_train,
    "serve": cmd_serve,
}


def _reportable_errors() -> tuple[type[BaseException], ...]:
    """Errors shown as one clear line rather than a traceback (the registry's only if it was imported)."""
    errors: list[type[BaseException]] = [ValueError, LookupError, RuntimeError, OSError]
    registry = sys.modules.get("immunostrat.registry")
    if registry is not None:
        errors.append(registry.RegistryError)
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `immunostrat` console script."""
    args = build_parser().parse_args(argv)
    try:
        handler = COMMANDS.get(args.command) or _extra_commands()[args.command]
        return int(handler(args))
    except InputError as exc:
        print(f"unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except _reportable_errors() as exc:
        print(f"immunostrat {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":
    raise SystemExit(main())
