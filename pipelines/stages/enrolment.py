"""Enrolment: whether a subject-keyed row (lab, visit, event) belongs to an accepted subject, and why not.

The rules read `_enrolled`, `_refused` and `_refusal` columns: the row's (study_id, subject_id), compared
stripped, is an accepted subject, or a subject the subjects file refused (and why, in words, from that file's
quarantine).
"""

from __future__ import annotations

import polars as pl

from immunostrat.stages.rules import Rule, string, text
from immunostrat.stages.subjects import SUBJECT_FIELD_CODES

_SUBJECT_KEY = ["study_id", "subject_id"]


def enrolment_rules() -> list[Rule]:
    """A row's subject is an accepted subject (lab and visit rows): rules on the `_enrolled`, `_refused` and
    `_refusal` columns, in priority order."""
    return [
        Rule(
            "SUBJECT_NOT_ENROLLED",
            "subject_id",
            "the subject is not in the subjects file",
            pl.col("_enrolled") | pl.col("_refused"),
            string("a (study_id, subject_id) present in the subjects file"),
        ),
        Rule(
            "SUBJECT_REFUSED",
            "subject_id",
            "the subject's row of the subjects file was refused",
            pl.col("_enrolled") | ~pl.col("_refused"),
            pl.format("a subject accepted from the subjects file, but {}", "_refusal"),
        ),
    ]


def enrolment_flags(frame: pl.DataFrame, subjects: pl.DataFrame | None, refusals: pl.DataFrame) -> pl.DataFrame:
    """`_enrolled`, `_refused` and `_refusal` (why, in words) per row of a subject-keyed input (visits, events),
    from the valid and the refused subjects; the columns `enrolment_rules` read. Identifiers are compared
    stripped, as lab rows are. No subjects file: every row counts as enrolled."""
    if subjects is None:
        return pl.DataFrame(
            {
                "_enrolled": pl.repeat(True, frame.height, eager=True),
                "_refused": pl.repeat(False, frame.height, eager=True),
                "_refusal": pl.repeat(None, frame.height, dtype=pl.String, eager=True),
            }
        )
    keys = frame.select(pl.col(c).str.strip_chars().alias(c) for c in _SUBJECT_KEY)
    enrolled = (
        subjects.select(pl.col(c).str.strip_chars().alias(c) for c in _SUBJECT_KEY)
        .unique()
        .with_columns(_enrolled=pl.lit(True))
    )
    refused = refusals.unique(_SUBJECT_KEY, keep="first").with_columns(_refused=pl.lit(True))
    return (
        keys.join(enrolled, on=_SUBJECT_KEY, how="left", nulls_equal=False, maintain_order="left")
        .join(refused, on=_SUBJECT_KEY, how="left", nulls_equal=False, maintain_order="left")
        .select(pl.col("_enrolled").fill_null(False), pl.col("_refused").fill_null(False), "_refusal")
    )


def lab_enrolment(candidates: pl.DataFrame, enrolled: pl.DataFrame, refused: pl.DataFrame) -> list[pl.Series]:
    """`_enrolled` and `_refused`: whether each row's (study_id, subject_id) is an accepted or a refused subject.

    A subject's rows usually arrive together, so each run of equal identifiers is looked up once (a join
    of the run starts, not of every row) and the answer spread back over its run. Without runs this is
    one lookup per row, as a plain join would be.
    """
    ids = ["study_id", "subject_id"]
    run = candidates.select(pl.struct(ids).rle_id()).to_series()
    starts = candidates[ids].filter((run != run.shift(1)).fill_null(True))
    flags = []
    for name, subjects in (("_enrolled", enrolled), ("_refused", refused)):
        keys = subjects.select(ids).unique().with_columns(pl.lit(True).alias(name))
        found = starts.join(keys, on=ids, how="left", nulls_equal=False, maintain_order="left")[name]
        flags.append(found.fill_null(False).rechunk().gather(run))
    return flags


def subject_refusals(quarantine: pl.DataFrame | None) -> pl.DataFrame:
    """(study_id, subject_id, _refusal) of every subject the subjects file refused, and why, in words.

    From the subjects file's quarantine (`validate_subjects(...).quarantine`; field records are not
    refusals). Identifiers are stripped, as lab rows match them. `_refusal` reads, e.g., "subject SLE-01/017
    was refused (subjects.csv row 18: REFERENCE_DATE_INVALID, reference_date '2025-02-30')"; a subject refused
    on several rows (SUBJECT_CONFLICT) names each.
    """
    empty = pl.DataFrame(schema={"study_id": pl.String, "subject_id": pl.String, "_refusal": pl.String})
    if quarantine is None or quarantine.height == 0 or "subject_id" not in quarantine.columns:
        return empty
    key = [text("study_id").alias("study_id"), text("subject_id").alias("subject_id")]
    where = pl.format("{} row {}: {}, {} '{}'", "source_file", "source_row", "reason_code", "column", "value")
    return (
        quarantine.filter(~pl.col("reason_code").is_in(SUBJECT_FIELD_CODES))
        .select(*key, where.alias("_where"))
        .filter((pl.col("study_id") != "") & (pl.col("subject_id") != ""))
        .group_by("study_id", "subject_id", maintain_order=True)
        .agg(pl.col("_where").str.join("; "))
        .select(
            "study_id",
            "subject_id",
            pl.format("subject {}/{} was refused ({})", "study_id", "subject_id", "_where").alias("_refusal"),
        )
    )
