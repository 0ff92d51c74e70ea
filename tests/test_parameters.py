"""One parameter surface: every documented command line parses, and flags land where the models say.

The command lines are read from README.md, docs/*.md and the Makefile, so a renamed or dropped flag fails here
before a user finds it. Fenced code blocks and Makefile recipes are whole command lines and are parsed as such;
inline mentions (`` `immunostrat train --endpoint ...` ``) are fragments, so only their flags are checked.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from immunostrat.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("synth", "validate", "stratify", "monitor", "train", "evaluate", "models", "publish", "report", "serve")
PLACEHOLDER = "placeholder"
#: The Makefile's variables with their defaults (`SUBJECTS ?= 500`), as `make demo` expands them.
MAKE_VARIABLES = dict(
    re.findall(r"^([A-Z_]+)\s*[?:]?=\s*(\S+)\s*$", (REPO / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
)


def _clean(line: str) -> str:
    """A documented line as a shell would see it: no comment, no optional-brackets, placeholders filled."""
    line = re.sub(r"\s#\s.*$", "", line).strip()
    line = re.sub(r"\[(--[^\]]+)\]", r"\1", line)  # `[--profile small]`: the optional part, given
    line = re.sub(r"\$\(BIN\)/immunostrat", "immunostrat", line)
    line = re.sub(r"\$\(([A-Z_]+)\)", lambda m: MAKE_VARIABLES.get(m.group(1), PLACEHOLDER), line)
    return " ".join(PLACEHOLDER if token == "..." else token for token in line.split())


def _alternatives(line: str) -> list[str]:
    """`immunostrat models list | show ID` is two commands: the later ones share the first one's command."""
    first, *rest = [part.strip() for part in line.split(" | ")]
    words = first.split()
    prefix = " ".join(words[:2]) if len(words) > 1 and words[1] == "models" else words[0]
    return [first, *(f"{prefix} {part}" for part in rest)]


def _joined(lines: list[str]) -> list[str]:
    """Lines with their backslash continuations joined."""
    out: list[str] = []
    pending = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def documented_command_lines() -> list[tuple[str, str]]:
    """(where, command line) for every whole `immunostrat COMMAND ...` line in code blocks and the Makefile."""
    found: list[tuple[str, str]] = []
    pattern = re.compile(r"^(?:\$\(BIN\)/)?immunostrat (" + "|".join(COMMANDS) + r")\b")
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        in_block = False
        block: list[str] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip().startswith("```"):
                if in_block:
                    for i, joined in enumerate(_joined(block)):
                        if pattern.match(joined.strip()):
                            found.extend((f"{path.name}#{i}", c) for c in _alternatives(_clean(joined)))
                in_block, block = not in_block, []
            elif in_block:
                block.append(line)
    recipe = [line.strip() for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines()]
    found.extend(("Makefile", _clean(line)) for line in _joined(recipe) if pattern.match(line))
    return found


def documented_fragments() -> list[tuple[str, str]]:
    """(where, fragment) for every inline `` `immunostrat COMMAND ...` `` mention in the Markdown pages."""
    pattern = re.compile(r"`immunostrat (" + "|".join(COMMANDS) + r")\b([^`]*)`")
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8").replace("\n", " ")
        found.extend((path.name, f"immunostrat {m.group(1)}{m.group(2)}") for m in pattern.finditer(text))
    return found


COMMAND_LINES = documented_command_lines()
FRAGMENTS = documented_fragments()


def test_the_docs_hold_the_command_lines_this_test_reads() -> None:
    commands = {line.split()[1] for _, line in COMMAND_LINES}
    assert set(COMMANDS) - {"report"} <= commands  # `report` appears as `publish RUN_DIR | report RUN_DIR`
    assert any(where == "Makefile" for where, _ in COMMAND_LINES)
    assert len(COMMAND_LINES) >= 25 and len(FRAGMENTS) >= 10


@pytest.mark.parametrize(("where", "line"), COMMAND_LINES, ids=[f"{w}:{c[:60]}" for w, c in COMMAND_LINES])
def test_every_documented_command_line_parses(where: str, line: str) -> None:
    words = shlex.split(line)[1:]
    args = build_parser().parse_args(words)
    assert args.command == line.split()[1]
    # A run builds only the options of the command it names (`main`): the same line parses to the same values.
    assert build_parser(only=words[0]).parse_args(words) == args


def test_a_run_generates_only_its_own_commands_options() -> None:
    """`only="validate"`: validate keeps its options; stratify and models are listed by name with `-h` alone."""
    action = next(a for a in build_parser(only="validate")._actions if a.dest == "command")
    flags = {name: [o for a in sub._actions for o in a.option_strings] for name, sub in action.choices.items()}
    assert "--labs" in flags["validate"] and "--report" in flags["validate"]
    assert flags["stratify"] == ["-h", "--help"]
    assert flags["models"] == ["-h", "--help"]
    assert set(flags) == set(COMMANDS)


def _subparser(command: str) -> object:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[command]  # type: ignore[index]


@pytest.mark.parametrize(("where", "fragment"), FRAGMENTS, ids=[f"{w}:{c[:60]}" for w, c in FRAGMENTS])
def test_every_flag_of_a_documented_fragment_exists(where: str, fragment: str) -> None:
    words = fragment.split()
    sub = _subparser(words[1])
    if words[1] == "models" and len(words) > 2 and not words[2].startswith("-"):
        action = next(a for a in sub._actions if a.dest == "models_action")  # type: ignore[attr-defined]
        sub = action.choices[words[2]]
    known = {s for a in sub._actions for s in a.option_strings}  # type: ignore[attr-defined]
    flags = {re.sub(r"[=\]|].*$", "", w) for w in words if w.startswith("--")}
    assert flags <= known, (where, fragment, sorted(flags - known))


# --------------------------------------------------------------------------------------------------
# The environment: one settings object
# --------------------------------------------------------------------------------------------------


def test_each_setting_reads_the_variable_its_module_documents() -> None:
    from immunostrat.config.data_roots import DATA_ROOTS_ENV
    from immunostrat.config.settings import env_name
    from immunostrat.modelling import registry
    from immunostrat.sponsor import pseudonym

    assert env_name("data_roots") == DATA_ROOTS_ENV == "IMMUNOSTRAT_DATA_ROOTS"
    assert env_name("model_registry") == registry.REGISTRY_ENV == "IMMUNOSTRAT_MODEL_REGISTRY"
    assert env_name("pseudonym_key") == pseudonym.KEY_ENV == "IMMUNOSTRAT_PSEUDONYM_KEY"
    assert env_name("pseudonym_key_file") == pseudonym.KEY_FILE_ENV == "IMMUNOSTRAT_PSEUDONYM_KEY_FILE"
    with pytest.raises(KeyError):
        env_name("data_root")


def test_data_roots_split_on_the_path_separator_and_blanks_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from immunostrat.config.settings import read_settings

    sep = os.pathsep
    monkeypatch.setenv("IMMUNOSTRAT_DATA_ROOTS", f"/srv/a{sep} {sep}{sep}/srv/b")
    assert read_settings().data_roots == (Path("/srv/a"), Path("/srv/b"))
    monkeypatch.setenv("IMMUNOSTRAT_DATA_ROOTS", "")  # empty is unset, as before: no confinement
    assert read_settings().data_roots == ()


def test_an_explicit_mapping_replaces_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from immunostrat.config.settings import read_settings

    monkeypatch.setenv("IMMUNOSTRAT_MODEL_REGISTRY", "/from/the/shell")
    monkeypatch.setenv("IMMUNOSTRAT_DATA_ROOTS", "/shell-root")
    got = read_settings({"IMMUNOSTRAT_DATA_ROOTS": "/schedules-root", "UNRELATED": "x"})
    assert got.data_roots == (Path("/schedules-root"),)
    assert got.model_registry is None  # not mixed with the shell's
    assert read_settings().model_registry == Path("/from/the/shell")  # the environment is read again after


def test_the_pseudonym_key_never_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    from immunostrat.config.settings import read_settings

    secret = "do-not-print-0123456789abcdef0123456789"
    monkeypatch.setenv("IMMUNOSTRAT_PSEUDONYM_KEY", secret)
    settings = read_settings()
    assert settings.pseudonym_key is not None and settings.pseudonym_key.get_secret_value() == secret
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        assert secret not in shown


def test_scoped_settings_apply_inside_the_block_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from immunostrat.config.data_roots import data_roots_from_env
    from immunostrat.config.settings import Settings, read_settings, scoped

    monkeypatch.setenv("IMMUNOSTRAT_DATA_ROOTS", "/env-root")
    with scoped(Settings.model_validate({"data_roots": ["/served-root"]})):
        assert data_roots_from_env() == [Path("/served-root")]
        assert data_roots_from_env({}) == []  # an explicit mapping ignores the scope too
    assert read_settings().data_roots == (Path("/env-root"),)


# --------------------------------------------------------------------------------------------------
# The parameter table: help and defaults from the models, values back into them
# --------------------------------------------------------------------------------------------------


def _parse(line: str) -> argparse.Namespace:
    return build_parser().parse_args(shlex.split(line))


def _help_of(command: str, flag: str) -> str:
    sub = _subparser(command)
    (action,) = (a for a in sub._actions if flag in a.option_strings)  # type: ignore[attr-defined]
    return str(action.help)


def test_help_is_the_field_description_with_its_default() -> None:
    from immunostrat.config.run import ScoringConfig, ValidationConfig

    text = _help_of("stratify", "--max-quarantine-fraction")
    assert text.startswith(str(ValidationConfig.model_fields["max_quarantine_fraction"].description))
    assert "Default: 0.25." in text and "[config: validation.max_quarantine_fraction]" in text
    assert _help_of("stratify", "--possible-min") == (
        f"{ScoringConfig.model_fields['possible_min'].description} [config: scoring.possible_min]"
    )  # no default shown: None means "the model card's"
    assert "Default: 1,000,000." in _help_of("stratify", "--partition-rows")
    assert _help_of("stratify", "--no-publish").startswith("Turns off: publish the sponsor snapshot")


def test_every_command_renders_its_help() -> None:
    """argparse formats help with %: a description holding one (`95 %`) must not break `--help`."""
    sub = _subparser("evaluate")
    assert "95 %" in sub.format_help()  # type: ignore[attr-defined]
    for command in COMMANDS:
        assert _subparser(command).format_help()  # type: ignore[attr-defined]


def test_flags_write_through_their_paths_and_win_over_the_config_file(tmp_path: Path) -> None:
    from immunostrat.cli import main as cli
    from immunostrat.cli import options as cli_options
    from immunostrat.config.run import StratifyParams

    config = tmp_path / "run.yaml"
    config.write_text("validation: {max_quarantine_fraction: 0.5}\nscoring: {model: from-file, likely_min: 0.9}\n")
    args = _parse(
        f"stratify --labs a.csv b.csv --subjects s.csv --out runs --config {config} --max-quarantine-fraction 0.1 "
        "--possible-min 0.2 --likely-min 0.6 --format fhir --no-publish --partitions 4 --no-streaming"
    )
    params = cli_options.parse_model(StratifyParams, args, cli.STRATIFY)
    assert params.labs == ["a.csv", "b.csv"] and params.lab_format == "fhir" and params.partitions == 4
    assert params.config.validation.max_quarantine_fraction == 0.1  # the flag wins over the file's 0.5
    assert params.config.scoring.model == "from-file"  # the file's value, no flag given
    assert (params.config.scoring.possible_min, params.config.scoring.likely_min) == (0.2, 0.6)
    assert params.config.publish.enabled is False and params.streaming is False
    plain = cli_options.parse_model(StratifyParams, _parse("stratify --labs a --subjects s --out o"), cli.STRATIFY)
    assert plain.config.publish.enabled is True and plain.streaming is None and plain.partition_rows == 1_000_000
    assert plain.config.scoring.model == "champion" and plain.expression == []


def test_a_flag_outside_its_range_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from immunostrat.cli.main import main
    from immunostrat.errors import EXIT_UNUSABLE

    code = main(["stratify", "--labs", "a", "--subjects", "s", "--out", "o", "--max-quarantine-fraction", "1.5"])
    assert code == EXIT_UNUSABLE
    assert "validation.max_quarantine_fraction" in capsys.readouterr().err


def test_train_registry_sets_the_registry_and_the_run_configuration() -> None:
    from immunostrat.cli import main as cli
    from immunostrat.cli import options as cli_options
    from immunostrat.config.run import TrainParams

    args = _parse("train --labs a --subjects s --outcomes o --registry reg --n-bootstrap 7 --profile small")
    params = cli_options.parse_model(TrainParams, args, cli.TRAIN)
    assert params.registry == "reg" and params.config.scoring.registry == Path("reg")
    assert params.training.evaluation.n_bootstrap == 7  # the flag wins over the small profile's 200
    assert params.training.cv_repeats == 1  # the small profile's preset, no flag given


def test_evaluate_defaults_are_the_models_defaults() -> None:
    from immunostrat.cli import options as cli_options
    from immunostrat.config.run import EvaluateParams

    params = cli_options.parse_model(EvaluateParams, _parse("evaluate --labs a --subjects s --outcomes o"))
    assert params.config.scoring.model == "champion" and params.config.scoring.drift_threshold == 0.2
    assert (params.evaluation.n_bootstrap, params.evaluation.seed) == (1000, 0)
    given = cli_options.parse_model(
        EvaluateParams, _parse("models compare A B --labs a --subjects s --outcomes o --n-bootstrap 5 --seed 3")
    )
    assert (given.evaluation.n_bootstrap, given.evaluation.seed) == (5, 3)


def test_publish_flags_override_the_runs_own_settings_and_only_those_given(tmp_path: Path) -> None:
    import json

    from immunostrat.cli.publish import publish_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps(
            {"run_id": "r1", "status": "completed", "parameters": {"publish": {"min_cell_count": 4, "site": "keep"}}}
        )
    )
    kept = publish_config(_parse(f"report {run}"))
    assert (kept.min_cell_count, kept.site, kept.report) == (4, "keep", True)
    changed = publish_config(_parse(f"publish {run} --site drop --no-report --demo-key"))
    assert (changed.min_cell_count, changed.site, changed.report, changed.demo_key) == (4, "drop", False, True)


def test_an_option_must_name_a_field_with_a_command_line_form() -> None:
    from immunostrat.cli.options import Command, add_command, to
    from immunostrat.config.run import RunConfig

    sub = argparse.ArgumentParser().add_subparsers()
    with pytest.raises(KeyError, match="no field"):
        add_command(sub, Command("x", "x", RunConfig, (to("--nope", "scoring.nope"),)))
    with pytest.raises(TypeError, match="no command-line form"):  # a mapping of words to intervals
        add_command(sub, Command("y", "y", RunConfig, (to("--words", "harmonise.urine_count_words"),)))


# --------------------------------------------------------------------------------------------------
# serve: the data roots are bound into the served flows, not passed through os.environ or the parameters
# --------------------------------------------------------------------------------------------------

# A served run, as Prefect's runner starts one: the pickled flow object in a fresh process, here with an
# environment that holds no data roots. It prints the final state's message.
RUN_PICKLED_FLOW = """
import os, pickle, sys
assert "IMMUNOSTRAT_DATA_ROOTS" not in os.environ
from immunostrat.config.run import StratifyParams
flow = pickle.loads(open(sys.argv[1], "rb").read())
params = StratifyParams.model_validate_json(open(sys.argv[2]).read())
print(flow.fn(params).message)
"""


@pytest.mark.parametrize(("inside", "expected"), [(False, "outside the configured data roots"), (True, "not found")])
def test_a_served_run_checks_its_paths_against_the_schedules_roots(tmp_path: Path, inside: bool, expected: str) -> None:
    import subprocess
    import sys

    import cloudpickle

    from immunostrat.cli.serve import confined_flow
    from immunostrat.config.run import StratifyParams
    from immunostrat.flows.stratify import stratify_flow

    data = tmp_path / "data"
    data.mkdir()
    labs = (data if inside else tmp_path) / "labs.csv"  # edited in the UI to a file outside the roots
    params = StratifyParams.model_validate(
        {
            "labs": [str(labs)],
            "subjects": str(data / "s.csv"),
            "out": str(data / "runs"),
            "config": {"publish": {"enabled": False}},
        }
    )
    (tmp_path / "flow.pickle").write_bytes(cloudpickle.dumps(confined_flow(stratify_flow, [str(data)])))
    (tmp_path / "params.json").write_text(params.model_dump_json())
    out = subprocess.run(
        [sys.executable, "-c", RUN_PICKLED_FLOW, str(tmp_path / "flow.pickle"), str(tmp_path / "params.json")],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert expected in out, out
    assert "IMMUNOSTRAT_DATA_ROOTS" not in os.environ  # nothing leaked into this process either


def test_a_served_flow_keeps_the_flows_name_parameters_and_options() -> None:
    from immunostrat.cli.serve import confined_flow
    from immunostrat.flows.monitor import monitor_flow
    from immunostrat.flows.stratify import stratify_flow

    for flow in (stratify_flow, monitor_flow):
        served = confined_flow(flow, ["/data"])
        assert served.name == flow.name and served.parameters == flow.parameters  # the UI's run form
        assert served.flow_run_name is flow.flow_run_name and served.log_prints is True


def test_a_deployment_leaves_as_of_to_each_run_in_the_schedules_time_zone(tmp_path: Path) -> None:
    from immunostrat.cli.serve import deployment_options, load_schedules

    text = (
        "data_roots: [/data]\nschedules:\n  - {name: nightly, cron: '0 2 * * *', timezone: Europe/Berlin, "
        "tags: [st1], flow: stratify, parameters: {labs: [/data/l.csv], subjects: /data/s.csv, out: /data/runs}}\n"
    )
    (tmp_path / "s.yaml").write_text(text)
    (schedule,) = load_schedules(tmp_path / "s.yaml").schedules
    options = deployment_options(schedule)
    assert options["name"] == "nightly" and options["tags"] == ["st1"]
    assert options["parameters"] == {
        "params": {
            "labs": ["/data/l.csv"],
            "subjects": "/data/s.csv",
            "out": "/data/runs",
            "config": {"validation": {"as_of_timezone": "Europe/Berlin"}},
        }
    }
    (cron,) = options["schedules"]
    assert (cron.cron, cron.timezone) == ("0 2 * * *", "Europe/Berlin")


@pytest.mark.flow
def test_a_run_of_a_served_deployment_with_edited_parameters_stays_in_the_roots(
    prefect_harness: None, tmp_path: Path
) -> None:
    """Through Prefect's runner (its own process per run), as `immunostrat serve` starts runs."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner

    from immunostrat.cli.serve import confined_flow
    from immunostrat.flows.stratify import stratify_flow

    data = tmp_path / "data"
    data.mkdir()
    runner = Runner()
    runner.add_flow(confined_flow(stratify_flow, [str(data)]), name="confined")
    edited = {"labs": [str(tmp_path / "elsewhere.csv")], "subjects": str(data / "s.csv"), "out": str(data / "runs")}
    flow_run = run_deployment(name="stratify/confined", parameters={"params": edited}, timeout=0)
    asyncio.run(runner.execute_flow_run(flow_run.id))

    async def final_state() -> Any:
        async with get_client() as client:
            return (await client.read_flow_run(flow_run.id)).state

    state = asyncio.run(final_state())
    assert state.is_failed() and "outside the configured data roots" in state.message, state
