"""The one Jinja environment behind every rendered document: the HTML report and the Markdown views (model cards,
evaluation and comparison reports, what changed), all templates in ``reporting/templates/``."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

__all__ = ["TEMPLATE_DIR", "environment", "markdown_environment", "render_markdown"]

TEMPLATE_DIR = Path(__file__).parent / "templates"


@cache
def environment() -> Environment:
    """The HTML environment: autoescaping, strict about undefined names, block tags leave no blank lines."""
    return Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def markdown_environment() -> Environment:
    """The same loader and settings for Markdown (``*.md.j2``): text is written as given (no HTML escaping), and a
    template's final newline is kept, so a template's lines are the document's lines."""
    return environment().overlay(autoescape=False, keep_trailing_newline=True)


def render_markdown(template: str, **context: Any) -> str:
    """Render a ``*.md.j2`` template; every line of the result, the last included, ends with a newline."""
    return markdown_environment().get_template(template).render(**context)
