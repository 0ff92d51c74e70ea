"""The identifier crosswalk: (source, source id) -> (study_id, subject_id), across SDTM, FHIR and expression data.

One subject can appear as an SDTM USUBJID, a FHIR Patient id and a sample-sheet subject code. The crosswalk
file joins them. It applies to a source only when it has at least one row for that source; then every
identifier of that source must be in it. An identifier it does not know is never guessed: the reader reports
it (in `notes["crosswalk"]`) and quarantines its panel rows as SUBJECT_NOT_IN_CROSSWALK.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.ingest.io import InputError, read_input

CROSSWALK_COLUMNS = ("source", "source_id", "study_id", "subject_id")
#: How many unmapped identifiers run.json lists by name (all of them are counted).
MAX_LISTED_IDS = 50
_FHIR_PREFIX = r"^Patient/"


def normalise_source(source: str) -> str:
    """Source labels are matched trimmed and case-insensitively (`fhir`, `FHIR ` and `Fhir` are one source)."""
    return source.strip().upper()


def source_id_expr(expr: pl.Expr, source: str) -> pl.Expr:
    """A source identifier as matched: trimmed; for FHIR without a leading `Patient/`."""
    text = expr.cast(pl.String).str.strip_chars()
    if normalise_source(source) == "FHIR":
        text = text.str.replace(_FHIR_PREFIX, "")
    return text


@dataclass(frozen=True)
class Crosswalk:
    """A loaded crosswalk: `table` has source (upper-case), source_id, study_id, subject_id."""

    table: pl.DataFrame
    path: str | None = None
    sha256: str | None = None

    def covers(self, source: str) -> bool:
        """Whether the crosswalk has rows for this source (and so must know every identifier of it)."""
        return normalise_source(source) in set(self.table["source"].to_list())

    def for_source(self, source: str) -> pl.DataFrame:
        """(_xw_id, _xw_study, _xw_subject) rows of one source."""
        key = normalise_source(source)
        return self.table.filter(pl.col("source") == key).select(
            pl.col("source_id").alias("_xw_id"),
            pl.col("study_id").alias("_xw_study"),
            pl.col("subject_id").alias("_xw_subject"),
        )


def crosswalk_from_frame(frame: pl.DataFrame, path: str | Path = "<crosswalk>", sha256: str | None = None) -> Crosswalk:
    """Check and normalise a crosswalk table (columns source, source_id, study_id, subject_id; all String).

    Raises:
        InputError: a value is empty, or one (source, source_id) maps to two different subjects.
    """
    missing = [c for c in CROSSWALK_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(path, f"crosswalk lacks column(s): {', '.join(missing)}", column=missing[0])
    table = frame.with_row_index("_row", offset=1).select(
        "_row",
        pl.col("source").cast(pl.String).str.strip_chars().str.to_uppercase(),
        pl.col("source_id").cast(pl.String).str.strip_chars(),
        pl.col("study_id").cast(pl.String).str.strip_chars(),
        pl.col("subject_id").cast(pl.String).str.strip_chars(),
    )
    table = table.with_columns(
        pl.when(pl.col("source") == "FHIR")
        .then(pl.col("source_id").str.replace(_FHIR_PREFIX, ""))
        .otherwise(pl.col("source_id"))
    )
    empty = table.filter(pl.any_horizontal(pl.col(c).fill_null("") == "" for c in CROSSWALK_COLUMNS))
    if empty.height:
        rows = ", ".join(str(r) for r in empty["_row"].head(10).to_list())
        raise InputError(path, f"crosswalk row(s) {rows}: every column must have a value", column="source_id")
    clashes = (
        table.group_by("source", "source_id")
        .agg(pl.struct("study_id", "subject_id").n_unique().alias("n"), pl.col("_row").sort().alias("rows"))
        .filter(pl.col("n") > 1)
        .sort("source", "source_id")
    )
    if clashes.height:
        first = clashes.row(0, named=True)
        raise InputError(
            path,
            f"crosswalk maps {first['source']} id {first['source_id']!r} to more than one subject (rows "
            f"{', '.join(str(r) for r in first['rows'])}); {clashes.height} identifier(s) are ambiguous",
            column="source_id",
        )
    return Crosswalk(table=table.drop("_row").unique(maintain_order=True), path=str(path), sha256=sha256)


def read_crosswalk(path: str | Path) -> Crosswalk:
    """Read a crosswalk CSV or Parquet file (header names normalised like every input)."""
    table = read_input(path, CROSSWALK_COLUMNS, (), kind="crosswalk")
    return crosswalk_from_frame(table.frame.drop("source_file", "source_row"), table.path, table.sha256)


def as_crosswalk(value: Crosswalk | str | Path | None) -> Crosswalk | None:
    """A Crosswalk from a path or an already loaded one."""
    if value is None or isinstance(value, Crosswalk):
        return value
    return read_crosswalk(value)


def map_identifiers(
    rows: pl.DataFrame,
    *,
    source: str,
    crosswalk: Crosswalk | None,
    source_id: str = "_source_id",
    source_study: str = "_source_study",
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Add `study_id`, `subject_id` and `_unmapped` (True for an identifier the crosswalk does not know).

    Without a crosswalk for this source, study and subject are the source's own (`source_study`, `source_id`).
    With one, they come from the crosswalk; an unknown identifier keeps its source values (so the quarantine
    shows what was sent) and is flagged, never matched to anything else.

    Returns:
        The rows and the notes for run.json (`applied`, rows mapped and unmapped, the unmapped identifiers).
    """
    ids = source_id_expr(pl.col(source_id), source)
    rows = rows.with_columns(_xw_key=ids)
    notes: dict[str, Any] = {"source": normalise_source(source), "applied": False}
    if crosswalk is None or not crosswalk.covers(source):
        out = rows.with_columns(
            study_id=pl.col(source_study).cast(pl.String),
            subject_id=pl.col("_xw_key"),
            _unmapped=pl.lit(False),
        ).drop("_xw_key")
        if crosswalk is not None:
            notes["reason"] = f"the crosswalk has no rows for source {normalise_source(source)}; identifiers as sent"
        return out, notes
    joined = rows.join(
        crosswalk.for_source(source), left_on="_xw_key", right_on="_xw_id", how="left", maintain_order="left"
    )
    known = pl.col("_xw_subject").is_not_null()
    out = joined.with_columns(
        study_id=pl.when(known).then(pl.col("_xw_study")).otherwise(pl.col(source_study).cast(pl.String)),
        subject_id=pl.when(known).then(pl.col("_xw_subject")).otherwise(pl.col("_xw_key")),
        _unmapped=~known & pl.col("_xw_key").is_not_null() & (pl.col("_xw_key") != ""),
    )
    unmapped = out.filter(pl.col("_unmapped"))["_xw_key"].unique().sort().to_list()
    notes.update(
        applied=True,
        crosswalk=crosswalk.path,
        crosswalk_sha256=crosswalk.sha256,
        rows_mapped=int(joined.select(known.sum()).item()),
        rows_unmapped=int(out["_unmapped"].sum()),
        unmapped_ids=unmapped[:MAX_LISTED_IDS],
        unmapped_id_count=len(unmapped),
    )
    return out.drop("_xw_key", "_xw_study", "_xw_subject"), notes
