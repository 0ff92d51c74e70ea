"""A run's input files: read whole (`read_inputs`), with the reader options of the other formats.

`immunostrat.pipeline.partition` cuts the same inputs into subject partitions, in memory or on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immunostrat.config.run import RunConfig
from immunostrat.followup.events import read_events
from immunostrat.followup.visits import read_visits
from immunostrat.ingest.io import (
    LAB_OPTIONAL,
    LAB_REQUIRED,
    SUBJECT_OPTIONAL,
    SUBJECT_REQUIRED,
    InputTable,
    read_input,
)
from immunostrat.ingest.readers import (
    ReaderOptions,
    add_patient_demographics,
    read_fhir_patients,
    read_labs_as,
    read_subjects_as,
)
from immunostrat.ingest.readers.detect import detect_kind


def read_labs(path: str | Path, fmt: str | None = None, options: ReaderOptions | None = None) -> InputTable:
    """Read a lab-results file: the native contract, or SDTM LB/CP, FHIR Observations, or an expression matrix.

    Args:
        path: the file.
        fmt: `native`, `sdtm`, `fhir` or `expression`; None detects it from the file's content (an expression
            matrix is never detected: name it, and give its sample sheet in `options`).
        options: format options (study id, crosswalk, sample sheet, IFN method, ...); see `ReaderOptions`.
    """
    if fmt is None:
        fmt = detect_kind(path)
    if fmt.strip().lower() == "native":
        return read_input(path, LAB_REQUIRED, LAB_OPTIONAL, kind="lab results")
    return read_labs_as(path, fmt, options)


def read_subjects(path: str | Path, fmt: str | None = None, options: ReaderOptions | None = None) -> InputTable:
    """Read a subjects file: the native contract or SDTM DM (`fmt` None detects it from the content)."""
    if fmt is None:
        fmt = detect_kind(path)
    if fmt.strip().lower() == "native":
        return read_input(path, SUBJECT_REQUIRED, SUBJECT_OPTIONAL, kind="subjects")
    return read_subjects_as(path, fmt, options)


@dataclass(frozen=True)
class Inputs:
    """Every input file of a run, read and checked for structure (before any compute)."""

    labs: list[InputTable]
    subjects: InputTable | None
    visits: InputTable | None = None  # keyed by subject like the subjects file, cut into the same partitions
    events: InputTable | None = None  # CRS / ICANS assessments: keyed by subject too


def reader_options(cfg: RunConfig, samples: str | Path | None = None) -> Any:
    """`immunostrat.ingest.readers.ReaderOptions` from the run configuration."""
    r = cfg.readers
    return ReaderOptions(
        study_id=r.study_id,
        crosswalk=r.crosswalk,
        samples=samples,
        ifn_method=r.ifn_method,
        ifn_genes=tuple(r.ifn_genes) if r.ifn_genes else None,
        ifn_statistic=r.ifn_statistic,
        min_controls=r.min_controls,
        log2_max=r.log2_max,
        reference_date_from=r.reference_date_from,
        alias_file=cfg.harmonise.alias_file,
    )


def read_inputs(
    lab_paths: Sequence[str | Path],
    subjects_path: str | Path | None,
    *,
    cfg: RunConfig | None = None,
    lab_format: str | None = None,
    expression: Sequence[str | Path] = (),
    samples: str | Path | None = None,
    patients: str | Path | None = None,
    visits: str | Path | None = None,
    events: str | Path | None = None,
) -> Inputs:
    """Read all inputs; raises `InputError` on the first unusable file, before any compute.

    Lab files may be native, SDTM (LB/CP) or FHIR (detected from content unless `lab_format` names it);
    expression matrices become IFN-score rows; FHIR Patients fill missing sex and age of the subjects.
    """
    options = reader_options(cfg, samples) if cfg is not None else None
    labs = [read_labs(p, lab_format, options) for p in lab_paths]
    labs += [read_labs(m, "expression", options) for m in expression]
    subjects = read_subjects(subjects_path, None, options) if subjects_path is not None else None
    if patients is not None and subjects is not None:
        r = cfg.readers if cfg is not None else None
        found = read_fhir_patients(patients, study_id=r.study_id if r else None, crosswalk=r.crosswalk if r else None)
        subjects = add_patient_demographics(subjects, found)
    return Inputs(
        labs=labs,
        subjects=subjects,
        visits=read_visits(visits) if visits is not None else None,
        events=read_events(events) if events is not None else None,
    )


def input_options(files: Any, cfg: RunConfig) -> dict[str, Any]:
    """Keyword options of `read_inputs` for a run's input parameters (`immunostrat.config.run.InputFiles`)."""
    options: dict[str, Any] = {"cfg": cfg}
    if files.lab_format:
        options["lab_format"] = files.lab_format
    if files.expression:
        options.update(expression=list(files.expression), samples=files.samples)
    if files.patients:
        options["patients"] = files.patients
    for table in ("visits", "events"):
        if getattr(files, table, None):
            options[table] = getattr(files, table)
    return options


def read_run_inputs(files: Any, cfg: RunConfig) -> Inputs:
    """Read every input a run's parameters name (labs, expression matrices, subjects, FHIR Patients)."""
    return read_inputs(files.labs, files.subjects or None, **input_options(files, cfg))
