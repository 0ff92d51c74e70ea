"""`immunostrat.config.yaml_files`: the libyaml loader builds what PyYAML's pure-Python safe loader builds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from immunostrat.config.endpoints import default_endpoint_definition_path
from immunostrat.config.run import default_protocol_path
from immunostrat.config.yaml_files import safe_load


def test_values_are_typed_as_the_safe_loader_types_them() -> None:
    text = "a: 1\nb: '2'\nc: 2.5\nd: 2026-11-01\ne: [x, null, true]\nf: {g: ~}\n"
    assert safe_load(text) == {
        "a": 1,
        "b": "2",
        "c": 2.5,
        "d": dt.date(2026, 11, 1),
        "e": ["x", None, True],
        "f": {"g": None},
    }


def test_an_empty_document_is_none() -> None:
    assert safe_load("") is None


def test_python_tags_are_refused() -> None:
    with pytest.raises(yaml.YAMLError):
        safe_load("!!python/object/apply:os.system ['true']\n")


def test_broken_yaml_fails_with_the_same_first_line_as_the_pure_python_loader() -> None:
    text = "protocol_id: [unclosed\n  - : :\n"
    with pytest.raises(yaml.YAMLError) as fast:
        safe_load(text)
    with pytest.raises(yaml.YAMLError) as slow:
        yaml.safe_load(text)
    assert str(fast.value).splitlines()[0] == str(slow.value).splitlines()[0]


@pytest.mark.parametrize("path", [default_protocol_path(), default_endpoint_definition_path()])
def test_the_shipped_settings_files_load_as_before(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert safe_load(text) == yaml.safe_load(text)
