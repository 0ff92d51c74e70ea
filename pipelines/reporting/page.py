"""One self-contained HTML page of sections, rendered from the report template (inline styles, no script, a strict
Content-Security-Policy): the stratify report and the follow-up report both build `Section`s and call
`render_page`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from immunostrat import __version__
from immunostrat.reporting.templating import environment

__all__ = ["Section", "cell_text", "render_page"]

_TEMPLATE = "report.html.j2"


@dataclass
class Section:
    """One section of the page: an id, a title, an intro and its blocks (dicts the template renders)."""

    id: str
    title: str
    intro: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, **content: Any) -> None:
        """Append a block (`heading`, `note`, `notice`, `text`, `kv`, `table` or `figure`)."""
        self.blocks.append({"kind": kind, **content})

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        caption: str = "",
        label_columns: int = 1,
        note: str = "",
        css: Sequence[str] | None = None,
    ) -> None:
        """Append a table; `css` gives a class per row (e.g. `subtotal`)."""
        styles = list(css) if css is not None else [""] * len(rows)
        self.add(
            "table",
            columns=list(columns),
            rows=[{"cells": [cell_text(c) for c in row], "css": s} for row, s in zip(rows, styles, strict=True)],
            caption=caption,
            label_columns=label_columns,
            note=note,
        )


def cell_text(value: Any) -> str:
    """A value as a table cell shows it: a dash for missing, three significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_page(*, title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """One self-contained HTML page of sections (the report template: inline styles, no script, a strict CSP)."""
    generated = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    return (
        environment()
        .get_template(_TEMPLATE)
        .render(
            title=title,
            subtitle=subtitle,
            sections=sections,
            footer=f"Generated {generated} by immunostrat {__version__}. Research use only; the responder model is "
            "not validated for clinical decisions.",
        )
    )
