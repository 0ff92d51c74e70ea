"""Command-line options shared by several commands: inputs of every format, run configuration, streaming.

`immunostrat.cli` and `immunostrat.cli_models` both build their parsers from these, so an input option means
the same in `validate`, `stratify`, `train`, `evaluate` and `models compare`.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from immunostrat.config import InputFiles, RunConfig, read_yaml_mapping, validated


def add_publishing(p: argparse.ArgumentParser) -> None:
    """The sponsor-snapshot options of the commands that publish (stratify, monitor)."""
    p.add_argument("--key-file", help="pseudonym key file for the sponsor snapshot (or $IMMUNOSTRAT_PSEUDONYM_KEY)")
    p.add_argument("--demo-key", action="store_true", default=None, help="demo only: create/use a local key")
    p.add_argument("--no-publish", action="store_true", default=None, help="skip the sponsor snapshot")


def iso_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an ISO date YYYY-MM-DD, got {text!r}") from exc


def run_config(args: argparse.Namespace) -> RunConfig:
    """RunConfig from an optional YAML file, with command-line flags on top."""
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        data = read_yaml_mapping(args.config, "config file")

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
    put("visits", "descriptor_encoding", getattr(args, "descriptor_encoding", None))
    return validated(RunConfig, data, f"config file {args.config}" if getattr(args, "config", None) else "settings")


def add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labs", nargs="+", required=True, metavar="FILE", help="lab-result files (CSV or Parquet)")
    p.add_argument("--as-of", type=iso_date, help="the run's as_of date (default today); later dates are quarantined")
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
    v = p.add_argument_group("follow-up visits (see docs/input.md, Visits)")
    v.add_argument("--visits", metavar="FILE", help="visits file: SLEDAI-2K descriptors, PGA, treatment per visit")
    v.add_argument(
        "--descriptor-encoding",
        choices=["boolean", "weight"],
        help="how the visits file writes descriptors: true/false (default boolean) or 0/the SLEDAI weight",
    )
    v.add_argument("--events", metavar="FILE", help="events file: CRS and ICANS assessments (docs/input.md, Events)")


def add_streaming(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        help="out-of-core: split inputs on disk by subject and process one partition at a time (bounded memory); "
        "default: on above --partition-rows lab rows",
    )
    p.add_argument("--partition-rows", type=int, help="streaming: target lab rows per partition (default 1,000,000)")


def format_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "lab_format": args.lab_format,
        "expression": args.expression,
        "samples": args.samples,
        "patients": args.patients,
        "visits": args.visits,
        "events": args.events,
    }


def streaming_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"streaming": args.streaming}
    if args.partition_rows:
        options["partition_rows"] = args.partition_rows
    return options


def input_files(args: argparse.Namespace) -> InputFiles:
    """The input parameters of a command that reads labs, subjects and the other formats."""
    return InputFiles(labs=list(args.labs), subjects=args.subjects, **format_params(args))
