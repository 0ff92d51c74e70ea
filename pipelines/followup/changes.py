"""What changed since the last monitor run: findings a team acts on, compared between two runs (issue 13).

A **finding** is one fact about one subject that a team is told about when it appears or disappears:

- `toxicity`: a treatment-emergent grade >= 3 (CTCAE term from `lab_grades.parquet`, or `crs` / `icans` from
  `crs_icans.parquet`), first dated on its onset day;
- `endpoint`: an endpoint met at a landmark (`endpoints.parquet`, `met` true), dated by its landmark visit;
- `relapse`: a serological relapse or a clinical flare (`relapse_events`), dated by its day.

`findings(...)` builds them from a run's tables, the same way for the current run (its merged tables) and the
previous one (read back from its folder), so the two sides are comparable by construction. `compare_findings`
then sorts every difference into exactly one change:

- `new`: present now, absent before, and dated after the previous run's `as_of` (new data);
- `resolved`: an endpoint met before that is now evaluated and not met (the landmark was re-assessed);
- `corrected`: anything else that differs: present before and gone now (the data behind it changed or was
  removed), present now but dated on or before the previous `as_of` (late or corrected data for a period the
  last run had already seen), or the same finding with another onset day.

Two runs are comparable only when the previous one completed, covers the study, and used the same endpoint
definition (version and content hash); otherwise the change list is empty and the reason says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import polars as pl

__all__ = ["CHANGES", "FINDING_KINDS", "change_counts", "comparable", "compare_findings", "findings"]

KEY = ["study_id", "subject_id"]
FINDING_KINDS: tuple[str, ...] = ("toxicity", "endpoint", "relapse")
CHANGES: dict[str, str] = {
    "new": "Present now, absent before, dated after the previous run's as_of.",
    "resolved": "An endpoint met before that is now evaluated and not met.",
    "corrected": "Gone since the previous run, appeared for a period it had already seen, or moved to another day.",
}
_SCHEMA: dict[str, pl.DataType] = {
    "study_id": pl.String(),
    "subject_id": pl.String(),
    "kind": pl.String(),
    "item": pl.String(),
    "day": pl.Int64(),
    "date": pl.Date(),
}
#: A finding's grade threshold: a toxicity a team must hear about.
SEVERE_GRADE = 3


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=_SCHEMA)


def _first(frame: pl.DataFrame) -> pl.DataFrame:
    """One finding per (subject, kind, item): the earliest."""
    return (
        frame.select(list(_SCHEMA))
        .cast(_SCHEMA)  # type: ignore[arg-type]
        .sort([*KEY, "kind", "item", "day", "date"], nulls_last=True)
        .unique([*KEY, "kind", "item"], keep="first", maintain_order=True)
    )


def _lab_toxicities(lab_grades: pl.DataFrame) -> pl.DataFrame:
    emergent = (pl.col("grade") >= SEVERE_GRADE) & (
        pl.col("baseline_grade").is_null() | (pl.col("grade") > pl.col("baseline_grade"))
    )
    return lab_grades.filter(emergent.fill_null(False) & (pl.col("days_since_infusion") >= 1)).select(
        *KEY,
        kind=pl.lit("toxicity"),
        item=pl.col("term"),
        day=pl.col("days_since_infusion"),
        date=pl.col("collected_date"),
    )


def _event_toxicities(crs_icans: pl.DataFrame) -> pl.DataFrame:
    parts = [
        crs_icans.filter((pl.col(f"{name}_grade") >= SEVERE_GRADE).fill_null(False)).select(
            *KEY,
            kind=pl.lit("toxicity"),
            item=pl.lit(name),
            day=pl.col("days_since_infusion"),
            date=pl.col("assessed_at").cast(pl.Date),
        )
        for name in ("crs", "icans")
    ]
    return pl.concat(parts)


def findings(
    *,
    endpoints: pl.DataFrame | None = None,
    lab_grades: pl.DataFrame | None = None,
    crs_icans: pl.DataFrame | None = None,
    relapses: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The findings of one run (see the module docstring) from whichever of its tables it has.

    Returns:
        `study_id`, `subject_id`, `kind`, `item`, `day` (days since infusion), `date`; one row per subject, kind
        and item (the earliest).
    """
    parts = [_empty()]
    if endpoints is not None:
        met = endpoints.filter(pl.col("met").fill_null(False))
        parts.append(
            met.select(
                *KEY,
                kind=pl.lit("endpoint"),
                item=pl.format("{}@{}", "endpoint", "landmark"),
                day=pl.col("visit_day"),
                date=pl.col("visit_date"),
            )
        )
    if lab_grades is not None:
        parts.append(_lab_toxicities(lab_grades))
    if crs_icans is not None:
        parts.append(_event_toxicities(crs_icans))
    if relapses is not None:
        parts.append(
            relapses.select(*KEY, kind=pl.lit("relapse"), item=pl.col("kind"), day="day", date=pl.lit(None, pl.Date))
        )
    return _first(pl.concat([p.cast(_SCHEMA) for p in parts], how="vertical"))  # type: ignore[arg-type]


def _date(day: pl.Expr, date: pl.Expr, day0: pl.Expr) -> pl.Expr:
    """A finding's date: its own, else day 0 plus its day."""
    return pl.coalesce(date, day0 + pl.duration(days=day))


def compare_findings(
    previous: pl.DataFrame,
    current: pl.DataFrame,
    previous_as_of: dt.date,
    *,
    day0: pl.DataFrame | None = None,
    endpoints_now: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every difference between two runs' findings, each with exactly one change (see the module docstring).

    Args:
        previous, current: `findings(...)` of the previous and the current run.
        previous_as_of: the previous run's data cut-off.
        day0: `study_id`, `subject_id`, `day0` (dates findings that carry only a day, such as relapses).
        endpoints_now: the current endpoint rows (`met`, `reason`), to tell a re-assessed endpoint (`resolved`).

    Returns:
        `study_id`, `subject_id`, `kind`, `item`, `change`, `day` (now, else before), `day_before`; sorted.
    """
    keys = [*KEY, "kind", "item"]
    joined = previous.join(current, on=keys, how="full", coalesce=True, suffix="_now")
    anchors = day0 if day0 is not None else pl.DataFrame(schema={**dict.fromkeys(KEY, pl.String), "day0": pl.Date})
    joined = joined.join(anchors.select(*KEY, "day0").unique(KEY), on=KEY, how="left")
    if endpoints_now is not None:
        not_met = endpoints_now.filter(pl.col("met").eq(False).fill_null(False)).select(
            *KEY, item=pl.format("{}@{}", "endpoint", "landmark"), _not_met=pl.lit(True)
        )
        joined = joined.join(not_met, on=[*KEY, "item"], how="left")
    else:
        joined = joined.with_columns(_not_met=pl.lit(None, pl.Boolean))
    before, now = (
        pl.col("day").is_not_null() | pl.col("date").is_not_null(),
        pl.col("day_now").is_not_null() | (pl.col("date_now").is_not_null()),
    )
    after_cut = _date(pl.col("day_now"), pl.col("date_now"), pl.col("day0")) > pl.lit(previous_as_of)
    resolved = (pl.col("kind") == "endpoint") & pl.col("_not_met").fill_null(False)
    change = (
        pl.when(now & ~before)
        .then(pl.when(after_cut.fill_null(False)).then(pl.lit("new")).otherwise(pl.lit("corrected")))
        .when(before & ~now)
        .then(pl.when(resolved).then(pl.lit("resolved")).otherwise(pl.lit("corrected")))
        .when(pl.col("day").ne_missing(pl.col("day_now")))
        .then(pl.lit("corrected"))
    )
    return (
        joined.with_columns(change=change)
        .filter(pl.col("change").is_not_null())
        .select(*keys, "change", day=pl.coalesce("day_now", "day"), day_before=pl.col("day"))
        .sort(keys)
    )


def change_counts(changes: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Counts per kind and change, every kind and change present (zeros included), for run.json and events."""
    counts: dict[str, dict[str, int]] = {k: dict.fromkeys(CHANGES, 0) for k in FINDING_KINDS}
    for row in changes.group_by("kind", "change").len().iter_rows(named=True):
        counts[row["kind"]][row["change"]] = int(row["len"])
    return counts


def comparable(previous_run: Mapping[str, Any] | None, current_definition: Mapping[str, Any]) -> str | None:
    """None when a previous monitor run can be compared with this one, else why not (in words)."""
    if previous_run is None:
        return "no earlier completed monitor run in this output folder"
    before = previous_run.get("summary", {}).get("endpoint_definition", {})
    if before.get("sha256") != current_definition.get("sha256"):
        return (
            f"the endpoint definition changed (version {before.get('version')} -> {current_definition.get('version')})"
            ": findings are not compared"
        )
    return None
