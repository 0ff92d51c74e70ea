"""The docs hold together with the code: every documented command line parses; the README's stage table is the
pipeline definition's, and so are the Prefect flow's tasks (tests/test_flows.py counts them on a real run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from immunostrat.cli.main import build_parser
from immunostrat.pipeline.engine.definition import Phase
from immunostrat.pipeline.selection import STRATIFY

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]
_COMMAND = re.compile(r"(?:^|[\s`(]|\$\(BIN\)/)immunostrat\s+([a-z].*)$")


def _joined_lines(text: str) -> list[str]:
    """Lines with shell continuations (a trailing backslash) joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def documented_commands() -> list[tuple[str, str]]:
    """(where, argument string) for every `immunostrat ...` command line in the README, the docs and the Makefile."""
    found = []
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^(\w+)\s*\??=\s*(\S+)\s*$", makefile, flags=re.MULTILINE))
    for path in DOCUMENTS:
        fenced = path.suffix != ".md"  # the Makefile is all commands; Markdown only inside code blocks
        inside = fenced
        for number, line in enumerate(_joined_lines(path.read_text(encoding="utf-8")), start=1):
            if path.suffix == ".md" and line.lstrip().startswith("```"):
                inside = not inside
                continue
            match = _COMMAND.search(line) if inside else None
            if match is None:
                continue
            command = re.sub(r"\s+#\s.*$", "", match.group(1)).strip().rstrip("`")
            command = re.sub(r"\$\((\w+)\)", lambda m: defaults.get(m.group(1), m.group(1)), command)
            for alternative in _alternatives(command):
                found.append((f"{path.relative_to(ROOT)}:{number}", alternative))
    return found


def _alternatives(command: str) -> list[str]:
    """`models list | show ID | promote ID` documents three commands; `[--flag value]` is an optional part."""
    command = command.replace("[", "").replace("]", "")
    if " | " not in command:
        return [command]
    first, *rest = [part.strip() for part in command.split(" | ")]
    head = first.split()[0]
    commands = _top_level_commands()
    return [first, *(part if part.split()[0] in commands else f"{head} {part}" for part in rest)]


def _top_level_commands() -> set[str]:
    import argparse

    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_the_docs_name_commands() -> None:
    where = {w.split(":")[0] for w, _ in documented_commands()}
    assert {"README.md", "Makefile", "docs/operations.md"} <= where


@pytest.mark.parametrize(("where", "command"), documented_commands())
def test_every_documented_command_line_parses(where: str, command: str) -> None:
    parser = build_parser()
    try:
        parser.parse_args(shlex.split(command))
    except SystemExit as exc:  # argparse exits 2 on an unknown flag or a missing value
        raise AssertionError(f"{where}: `immunostrat {command}` does not parse") from exc


def _readme_stages() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## What a run does", 1)[1].split("\n\n", 2)[1]
    return [row.split("|")[1].strip() for row in table.splitlines()[2:] if row.startswith("|")]


def test_the_readme_stage_table_is_the_pipeline_definition() -> None:
    """README rows, in order: ingest (producing partitions), each step's stages, write, then the finishing steps."""
    stages = ["ingest", *(stage for step in STRATIFY.steps for stage in step.stages), "write"]
    stages += [stage for step in STRATIFY.finish for stage in step.stages]
    assert _readme_stages() == stages


def test_every_phase_and_gate_says_what_it_does() -> None:
    for step in STRATIFY.steps:
        assert step.description and step.name == step.name.lower().replace(" ", "-")
        if isinstance(step, Phase):
            assert set(step.reads) and set(step.writes)
