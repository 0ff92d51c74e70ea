"""Readers for real-world inputs: CDISC SDTM (LB, CP, DM), HL7 FHIR R4, and IFN scores from gene expression.

Every lab reader returns an `immunostrat.ingest.io.InputTable` whose `frame` is exactly the raw lab frame the native
reader produces (the contract columns as String, `source_file`, `source_row`), so harmonise, validate,
quarantine and the per-file accounting work unchanged and one run can mix sources. What a format carries
beyond the contract goes to `InputTable.notes` (JSON-safe, for run.json), `InputTable.detail` (per-row
source fields) and `InputTable.rejected` (records the reader itself quarantines, in the quarantine layout;
counted in `rows_read`). `merge_reader_quarantine` folds those into a prepared run.

`immunostrat.ingest.io.read_labs(path, fmt, options)` / `read_subjects(...)` dispatch here; `fmt=None` detects the
format from the content (`immunostrat.ingest.readers.detect`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from immunostrat.ingest.io import InputError, InputTable
from immunostrat.ingest.readers.crosswalk import Crosswalk, as_crosswalk, read_crosswalk
from immunostrat.ingest.readers.detect import KINDS, detect_kind, sniff
from immunostrat.ingest.readers.expression import (
    DEFAULT_LOG2_MAX,
    DEFAULT_MIN_CONTROLS,
    ExpressionError,
    IfnMethod,
    ifn_method,
    read_expression,
)
from immunostrat.ingest.readers.fhir import (
    Patients,
    add_patient_demographics,
    read_fhir_observations,
    read_fhir_patients,
)
from immunostrat.ingest.readers.sdtm import baseline_flag_agreement, read_sdtm_dm, read_sdtm_labs, read_sdtm_table
from immunostrat.ingest.reference import ReferenceTables, load_reference

if TYPE_CHECKING:
    from immunostrat.ingest.inputs import Inputs
    from immunostrat.pipeline.selection import Prepared

__all__ = [
    "KINDS",
    "READER_REASONS",
    "Crosswalk",
    "ExpressionError",
    "IfnMethod",
    "Patients",
    "ReaderOptions",
    "ReaderReason",
    "add_patient_demographics",
    "baseline_flag_agreement",
    "detect_kind",
    "ifn_method",
    "merge_reader_quarantine",
    "read_crosswalk",
    "read_expression",
    "read_fhir_observations",
    "read_fhir_patients",
    "read_labs_as",
    "read_sdtm_dm",
    "read_sdtm_labs",
    "read_sdtm_table",
    "read_subjects_as",
    "sniff",
]


@dataclass(frozen=True)
class ReaderReason:
    """A quarantine reason code decided by a reader (before the validation rules run)."""

    code: str
    input: str
    column: str
    description: str


#: Reason codes the readers quarantine with; they extend the validation rules' codes (see docs/input.md).
READER_REASONS: tuple[ReaderReason, ...] = (
    ReaderReason(
        "STATUS_ENTERED_IN_ERROR",
        "labs (FHIR)",
        "result",
        "the FHIR Observation has status entered-in-error: the source withdrew it",
    ),
    ReaderReason(
        "STATUS_CANCELLED", "labs (FHIR)", "result", "the FHIR Observation has status cancelled: it was never done"
    ),
    ReaderReason(
        "SUBJECT_NOT_IN_CROSSWALK",
        "labs, subjects (SDTM, FHIR, expression)",
        "subject_id",
        "the crosswalk has rows for this source but not this identifier; it is not guessed",
    ),
    ReaderReason(
        "SAMPLE_NOT_IN_SHEET", "labs (expression)", "subject_id", "the matrix sample is not in the sample sheet"
    ),
    ReaderReason(
        "EXPRESSION_VALUE_MISSING",
        "labs (expression)",
        "result",
        "the sample lacks a value for a gene of the IFN method, so it has no score",
    ),
)


@dataclass(frozen=True)
class ReaderOptions:
    """Options of the non-native readers (each reader uses the ones that apply to it).

    Attributes:
        study_id: FHIR: the study of every row (FHIR carries none); not needed when the crosswalk maps Patients.
        crosswalk: identifier crosswalk (a path or a loaded `Crosswalk`); applies per source when it has rows
            for that source.
        samples: expression: the sample sheet.
        ifn_method: expression: method name (MEDIAN_FC_4, MEDIAN_FC_6, MEAN_Z, or a custom name).
        ifn_genes: expression: genes of a custom method.
        ifn_statistic: expression: statistic of a custom method (`median_fc` or `mean_z`).
        min_controls: expression: fewest healthy controls accepted.
        log2_max: expression: a value above this means the matrix is not log2.
        reference_date_from: SDTM DM: RFSTDTC (default) or RFICDTC.
        alias_file: extra test aliases (as `harmonise.alias_file`), so the readers' panel check matches the run's.
        source: the crosswalk source label; default per format (SDTM, FHIR, EXPRESSION).
    """

    study_id: str | None = None
    crosswalk: Crosswalk | str | Path | None = None
    samples: str | Path | None = None
    ifn_method: str = "MEDIAN_FC_4"
    ifn_genes: tuple[str, ...] | None = None
    ifn_statistic: str | None = None
    min_controls: int = DEFAULT_MIN_CONTROLS
    log2_max: float = DEFAULT_LOG2_MAX
    reference_date_from: str = "RFSTDTC"
    alias_file: Path | None = None
    source: str | None = None


def _reference(options: ReaderOptions) -> ReferenceTables:
    return load_reference(options.alias_file, None)


def read_labs_as(path: str | Path, fmt: str, options: ReaderOptions | None = None) -> InputTable:
    """Read a lab-results file in a named non-native format (`sdtm`, `fhir`, `expression`).

    Raises:
        InputError: the file is unusable as that format, or the format is unknown.
    """
    opts = options or ReaderOptions()
    crosswalk = as_crosswalk(opts.crosswalk)
    kind = fmt.strip().lower()
    if kind == "sdtm":
        return read_sdtm_labs(path, _reference(opts), crosswalk, source=opts.source or "SDTM")
    if kind == "fhir":
        return read_fhir_observations(
            path, _reference(opts), study_id=opts.study_id, crosswalk=crosswalk, source=opts.source or "FHIR"
        )
    if kind == "expression":
        if opts.samples is None:
            raise InputError(path, "an expression matrix needs its sample sheet (--samples)")
        try:
            method = ifn_method(opts.ifn_method, opts.ifn_genes, opts.ifn_statistic)
        except ValueError as exc:
            raise InputError(path, str(exc)) from exc
        return read_expression(
            path,
            opts.samples,
            method=method,
            min_controls=opts.min_controls,
            log2_max=opts.log2_max,
            crosswalk=crosswalk,
            source=opts.source or "EXPRESSION",
        )
    if kind == "unknown":
        raise InputError(path, "JSON that is neither FHIR (resourceType) nor CDISC Dataset-JSON (datasetJSONVersion)")
    raise InputError(path, f"unknown lab format {fmt!r}; expected one of {', '.join(KINDS)}")


def read_subjects_as(path: str | Path, fmt: str, options: ReaderOptions | None = None) -> InputTable:
    """Read a subjects file in a named non-native format (`sdtm` for DM).

    Raises:
        InputError: the file is unusable, or the format cannot give subjects (FHIR has no reference date).
    """
    opts = options or ReaderOptions()
    kind = fmt.strip().lower()
    if kind == "sdtm":
        return read_sdtm_dm(
            path,
            as_crosswalk(opts.crosswalk),
            reference_date_from=opts.reference_date_from,
            source=opts.source or "SDTM",
        )
    if kind == "fhir":
        raise InputError(
            path,
            "FHIR Patient resources carry no trial reference date, so they cannot be the subjects file; give a "
            "subjects file (native or SDTM DM) and add the Patients for sex and age (--patients)",
        )
    raise InputError(path, f"subjects cannot be read as {fmt!r}; expected native or sdtm")


# --------------------------------------------------------------------------------------------------
# Reader quarantine -> the run's quarantine and counts
# --------------------------------------------------------------------------------------------------


def _rejected(tables: Sequence[InputTable | None], input_kind: str) -> list[pl.DataFrame]:
    """The records the readers rejected, each marked with the kind of input it came from (quarantine layout)."""
    return [
        t.rejected.with_columns(pl.lit(input_kind, pl.String).alias("input_kind"))
        for t in tables
        if t is not None and t.rejected is not None and t.rejected.height
    ]


def _add_reasons(into: dict[str, int], frame: pl.DataFrame) -> dict[str, int]:
    merged = dict(into)
    for code, n in frame.group_by("reason_code").len().iter_rows():
        merged[str(code)] = merged.get(str(code), 0) + int(n)
    return dict(sorted(merged.items(), key=lambda kv: (-kv[1], kv[0])))


def merge_reader_quarantine(inputs: Inputs, prepared: Prepared) -> Prepared:
    """Fold the records the readers quarantined into a prepared run's quarantine and counts.

    Lab records join the per-file `quarantined` count of their file, the totals and `quarantined_by_reason`;
    subject records join `counts.subjects`. `counts.reader_quarantined` lists them per file. Idempotent: a
    prepared run that already has `reader_quarantined` is returned unchanged.
    """
    if "reader_quarantined" in prepared.counts:
        return prepared
    labs = _rejected(inputs.labs, "labs")
    subjects = _rejected([inputs.subjects], "subjects")
    counts: dict[str, Any] = copy.deepcopy(prepared.counts)
    by_file: dict[str, int] = {}
    for frame in labs:
        path = str(frame["source_file"][0])
        by_file[path] = by_file.get(path, 0) + frame.height
        if path in counts.get("per_file", {}):
            counts["per_file"][path]["quarantined"] += frame.height
        counts["quarantined"] = int(counts.get("quarantined", 0)) + frame.height
        counts["quarantined_by_reason"] = _add_reasons(counts.get("quarantined_by_reason", {}), frame)
    for frame in subjects:
        by_file[str(frame["source_file"][0])] = frame.height
        if "subjects" in counts:
            counts["subjects"]["quarantined"] += frame.height
            counts["subjects"]["quarantined_by_reason"] = _add_reasons(
                counts["subjects"].get("quarantined_by_reason", {}), frame
            )
    counts["reader_quarantined"] = by_file
    if not labs and not subjects:
        return dataclasses.replace(prepared, counts=counts)
    changes: dict[str, Any] = {"counts": counts}
    fields = {f.name for f in dataclasses.fields(prepared)}
    if "lab_quarantine" in fields:
        # Prepared keeps lab and subject quarantine apart (its `quarantine` property concatenates them).
        lab_q = getattr(prepared, "lab_quarantine")  # noqa: B009 (field of the newer Prepared layout)
        subject_q = getattr(prepared, "subject_quarantine")  # noqa: B009
        changes["lab_quarantine"] = _stack([*labs, lab_q])
        if subjects:
            changes["subject_quarantine"] = _stack([subject_q, *subjects])
    else:
        changes["quarantine"] = _stack([*labs, prepared.quarantine, *subjects])
    return dataclasses.replace(prepared, **changes)


def _stack(frames: Sequence[pl.DataFrame | None]) -> pl.DataFrame:
    present = [f for f in frames if f is not None and f.width]
    return pl.concat(present, how="diagonal_relaxed") if present else pl.DataFrame()
