"""Command line for the sponsor deliverable: `immunostrat publish RUN_DIR` and `immunostrat report RUN_DIR`.

`immunostrat.cli.main` adds both with `register(subparsers)` and dispatches through `COMMANDS`; `main` runs them on
their own (`python -m immunostrat.cli.publish publish RUN_DIR`), with the same exit codes: 0 done, 1 the command
failed with a message (no key, not a completed run, already published, contract violation).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from immunostrat.cli.options import Command, Group, add_command, own, parse_model, to
from immunostrat.config.run import PublishConfig
from immunostrat.config.yaml_files import safe_load

__all__ = ["COMMANDS", "main", "publish_config", "register"]

EXIT_OK, EXIT_PROBLEMS = 0, 1


# The sponsor commands' options: the privacy flags set fields of `PublishConfig` (their help is its descriptions).
PRIVACY = (
    own("run_dir", "a completed run folder (OUT/<run_id>)", metavar="RUN_DIR"),
    own("--config", "YAML run configuration; its `publish` section applies (default: the run's own settings)"),
    to("--key-file", "key_file"),
    to("--demo-key", "demo_key", kind="true"),
    to("--site", "site"),
    to("--dates", "dates"),
    to("--min-cell-count", "min_cell_count"),
)

PUBLISH = Command(
    "publish",
    "publish a completed run for sponsors: pseudonymised hive dataset, manifest, dictionary, report",
    PublishConfig,
    (
        *PRIVACY,
        to("--no-report", "report", kind="false"),
        own("--force", "replace this run's existing snapshot", kind="true", default=False),
        Group(
            exclusive=True,
            options=(
                own(
                    "--make-current",
                    "point every study of this run at it even when a newer run is current (rollback)",
                    kind="true",
                    dest="make_current",
                ),
                own(
                    "--not-current",
                    "write the snapshot but leave OUT/sponsor-manifest.json unchanged",
                    kind="false",
                    dest="make_current",
                ),
            ),
        ),
        own(
            "--allow-key-change", "publish although a study was published with another key", kind="true", default=False
        ),
    ),
    show_defaults=False,  # a flag not given keeps the run's own setting (or the --config file's)
)

REPORT = Command(
    "report",
    "render a run's self-contained HTML report (default RUN_DIR/report.html)",
    PublishConfig,
    (*PRIVACY, own("--out", "report file (default RUN_DIR/report.html)")),
    show_defaults=False,
)


def register(subparsers: Any, *, only: str | None = None) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the `publish` and `report` sub-commands to an argparse sub-parser group; returns their handlers.
    With `only` (the command a run names), the others get their name and help only."""
    for command in (PUBLISH, REPORT):
        add_command(subparsers, command, with_options=only in (None, command.name))
    return dict(COMMANDS)


def publish_config(args: argparse.Namespace) -> PublishConfig:
    """The PublishConfig of a command: the run's own settings, then the `--config` file, then the flags."""
    # start-up time: the sponsor contract (pandera) and the report load only when a sponsor command runs
    from immunostrat.sponsor.publish import publish_config_of

    run_json = Path(args.run_dir) / "run.json"
    if not run_json.is_file():
        raise ValueError(f"{args.run_dir} is not a run folder: it has no run.json")
    data: dict[str, Any] = publish_config_of(json.loads(run_json.read_text(encoding="utf-8"))).model_dump()
    if args.config:
        loaded = safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {args.config} must hold a mapping")
        data.update(loaded.get("publish") or {})
    return parse_model(PublishConfig, args, base=data)


def cmd_publish(args: argparse.Namespace) -> int:
    """`immunostrat publish RUN_DIR`."""
    from immunostrat.sponsor.publish import publish_run  # start-up time, as above

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
    from immunostrat.sponsor.publish import write_report  # start-up time, as above

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
