"""Parsing YAML settings files (protocols, endpoint definitions, --config files) with libyaml when it is there.

PyYAML's pure-Python parser takes about 60 ms for the built-in protocol and endpoint definition, paid by every
stratify and monitor run; its C parser (libyaml, in PyYAML's wheels) builds the same objects with the same
safe constructor, and raises the same `yaml.YAMLError`s.
"""

from __future__ import annotations

from typing import Any

import yaml

#: The safe loader, in C when PyYAML was built with libyaml.
SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """`yaml.safe_load(text)`, parsed by libyaml when available (raises `yaml.YAMLError` as it does)."""
    return yaml.load(text, Loader=SafeLoader)  # a safe loader: it builds no Python objects
