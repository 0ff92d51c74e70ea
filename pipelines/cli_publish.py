"""Command line for the sponsor deliverable: `immunostrat publish RUN_DIR` and `immunostrat report RUN_DIR`.

`immunostrat.cli` adds both with `register(subparsers)` and dispatches through `COMMANDS`; `main` runs them on
their own (`python -m immunostrat.cli_publish publish RUN_DIR`), with the same exit codes: 0 done, 1 the command
failed with a message (no key, not a completed run, already published, contract violation).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["COMMANDS", "main", "publish_config", "register"]

EXIT_OK, EXIT_PROBLEMS = 0, 1


def _add_privacy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run folder (OUT/<run_id>)")
    p.add_argument(
        "--config", help="YAML run configuration; its `publish` section applies (default: the run's own settings)"
    )
    p.add_argument("--key-file", help="pseudonym key file (else $IMMUNOSTRAT_PSEUDONYM_KEY, or the config's key_file)")
    p.add_argument(
        "--demo-key",
        action="store_true",
        default=None,
        help="demo only: create/use a local key file outside the repository when no key is configured",
    )
    p.add_argument("--site", choices=["pseudonymise", "keep", "drop"], help="what the sponsor `site` column holds")
    p.add_argument("--dates", choices=["study_day", "shift"], help="also publish a keyed shifted reference date")
    p.add_argument("--min-cell-count", type=int, help="suppress counts of subjects below this in the report")


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the `publish` and `report` sub-commands to an argparse sub-parser group; returns their handlers."""
    p = subparsers.add_parser(
        "publish",
        help="publish a completed run for sponsors: pseudonymised hive dataset, manifest, dictionary, report",
    )
    _add_privacy_options(p)
    p.add_argument("--no-report", action="store_true", help="do not write report.html into the snapshot")
    p.add_argument("--force", action="store_true", help="replace this run's existing snapshot")
    current = p.add_mutually_exclusive_group()
    current.add_argument(
        "--make-current",
        dest="make_current",
        action="store_const",
        const=True,
        default=None,
        help="point every study of this run at it even when a newer run is current (rollback)",
    )
    current.add_argument(
        "--not-current",
        dest="make_current",
        action="store_const",
        const=False,
        help="write the snapshot but leave OUT/sponsor-manifest.json unchanged",
    )
    p.add_argument(
        "--allow-key-change", action="store_true", help="publish although a study was published with another key"
    )

    p = subparsers.add_parser("report", help="render a run's self-contained HTML report (default RUN_DIR/report.html)")
    _add_privacy_options(p)
    p.add_argument("--out", help="report file (default RUN_DIR/report.html)")
    return dict(COMMANDS)


def publish_config(args: argparse.Namespace) -> Any:
    """The PublishConfig of a command: the run's own settings, then the `--config` file, then the flags."""
    from immunostrat.publish import PublishConfig, publish_config_of

    run_json = Path(args.run_dir) / "run.json"
    if not run_json.is_file():
        raise ValueError(f"{args.run_dir} is not a run folder: it has no run.json")
    data: dict[str, Any] = publish_config_of(json.loads(run_json.read_text(encoding="utf-8"))).model_dump()
    if args.config:
        loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {args.config} must hold a mapping")
        data.update(loaded.get("publish") or {})
    flags = {
        "key_file": args.key_file,
        "demo_key": args.demo_key,
        "site": args.site,
        "dates": args.dates,
        "min_cell_count": args.min_cell_count,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if getattr(args, "no_report", False):
        data["report"] = False
    return PublishConfig.model_validate(data)


def cmd_publish(args: argparse.Namespace) -> int:
    """`immunostrat publish RUN_DIR`."""
    from immunostrat.publish import publish_run

    result = publish_run(
        args.run_dir,
        publish_config(args),
        force=args.force,
        make_current=args.make_current,
        allow_key_change=args.allow_key_change,
    )
    manifest = result.manifest
    print(
        f"published {result.snapshot_dir}: {result.rows} rows in {len(manifest['studies'])} studies "
        f"(schema {manifest['schema_version']}, pseudonym key id {result.key.key_id} from {result.key.source})"
    )
    if result.made_current:
        print(f"current for: {', '.join(result.made_current)} ({result.current_manifest})")
    else:
        print(f"not made current; {result.current_manifest} is unchanged")
    if result.report is not None:
        print(f"report: {result.report}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """`immunostrat report RUN_DIR`."""
    from immunostrat.publish import write_report

    path = write_report(args.run_dir, args.out, publish_config(args))
    print(f"report: {path}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"publish": cmd_publish, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Run `publish` or `report` on their own (the same sub-commands `immunostrat` offers)."""
    parser = argparse.ArgumentParser(prog="immunostrat", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, LookupError, RuntimeError, FileExistsError, OSError) as exc:
        print(f"immunostrat {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS


if __name__ == "__main__":
    raise SystemExit(main())
