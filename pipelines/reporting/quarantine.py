"""The quarantine section both reports show (stratify and follow-up): rows rejected by validation by reason, with a
few examples whose values are shown only for columns that cannot identify anyone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import polars as pl

from immunostrat.reporting.disclosure import shown_value, suppress
from immunostrat.reporting.page import Section
from immunostrat.schemas.records import RunRecord

__all__ = ["quarantine_section", "read_quarantine"]

_EXAMPLES_PER_REASON = 3


def quarantine_section(run: RunRecord, quarantine: pl.DataFrame | None, k: int) -> Section:
    """Quarantined rows by reason (lab rows as counted, subjects suppressed) and a few examples per reason."""
    section = Section(
        "quarantine",
        "Quarantine",
        "Rows rejected by validation, by reason. Examples show the reason, the column and, for columns that cannot "
        "identify anyone, the offending value (truncated); identifiers and dates are withheld.",
    )
    counts = run.counts
    by_reason = _most_first(counts.quarantined_by_reason)
    if by_reason:
        section.table(["reason", "lab rows"], by_reason, caption="Quarantined lab rows by reason")
    else:
        section.add("text", text="No lab row was quarantined.")
    subject_reasons = dict(_most_first(counts.subjects.quarantined_by_reason if counts.subjects else {}))
    if subject_reasons:
        values = np.array([[n] for n in subject_reasons.values()] + [[sum(subject_reasons.values())]])
        shown = suppress(values, [[(i, 0) for i in range(values.shape[0])]], k)
        section.table(
            ["reason", "subjects"],
            [[r, shown[i, 0]] for i, r in enumerate(subject_reasons)] + [["all reasons", shown[-1, 0]]],
            caption="Quarantined subjects by reason",
            css=[""] * len(subject_reasons) + ["subtotal"],
        )
    outside = _most_first(counts.outside_panel_by_test)
    if outside:
        section.table(
            ["reported test", "lab rows"],
            outside,
            caption="Rows outside the panel, by reported test (not errors)",
        )
    if quarantine is not None and quarantine.height:
        subjects_path = counts.subjects.path if counts.subjects else None
        examples = (
            quarantine.with_columns(
                pl.when(pl.col("source_file") == pl.lit(subjects_path))
                .then(pl.lit("subjects"))
                .otherwise(pl.lit("labs"))
                .alias("input")
            )
            .sort("reason_code", "source_file", "source_row")
            .group_by("reason_code", maintain_order=True)
            .head(_EXAMPLES_PER_REASON)
            .select("reason_code", "input", "column", "value")
        )
        rows = [[code, kind, column, shown_value(column, value)] for code, kind, column, value in examples.iter_rows()]
        section.table(
            ["reason", "input", "column", "value"],
            rows,
            caption=f"Example rows (up to {_EXAMPLES_PER_REASON} per reason)",
            label_columns=4,
        )
    return section


def _most_first(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """(key, count) pairs, most frequent first, ties by key (run.json stores its keys sorted)."""
    return [(str(k), int(v)) for k, v in sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))]


def read_quarantine(run_dir: Path) -> pl.DataFrame | None:
    """The columns of a run's quarantine.parquet a report reads (None when the run has none)."""
    path = run_dir / "quarantine.parquet"
    if not path.is_file():
        return None
    return pl.read_parquet(path, columns=["source_file", "source_row", "reason_code", "column", "value"])
