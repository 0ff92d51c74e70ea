"""CDISC SDTM: LB and CP (lab rows) and DM (subjects), from SAS XPORT, CSV, Parquet and Dataset-JSON 1.1.

Every container is first read into one all-String table with upper-case SDTM variable names (`read_sdtm_table`),
so that XPT and Dataset-JSON of the same dataset give identical frames; then the domain is mapped onto the
native contract:

- `study_id`, `subject_id`: STUDYID, USUBJID (or the crosswalk, source `SDTM`).
- `test`: LBTESTCD when it maps to the panel, else LBLOINC when that does, else LBTESTCD (so tests outside the
  panel are counted by their test code).
- `result`, `unit`, `ref_low`, `ref_high`: the standardised set when the record has a standardised result
  (LBSTRESC, else LBSTRESN; LBSTRESU; LBSTNRLO/HI), else the original set (LBORRES, LBORRESU, LBORNRLO/HI).
  Result, unit and range always come from the same set, so the range is in the result's unit.
- `lloq`: LBLLOQ (SDTMIG 3.3+: the assay's lower limit of quantitation, in the standard units LBSTRESU), only
  with the standardised set; a record read from the original set gets no LLOQ (its unit would not be the
  result's), counted in the notes as `lloq_not_used`.
- `collected_at`: LBDTC placed by `place_date` (an hour without minutes keeps its date; partial dates stay
  verbatim and are quarantined DATE_INVALID).
- `method`: LBMETHOD.

(CP uses the CP prefix: CPTESTCD, CPSTRESC, ...)

Everything else a record carries that the contract has no column for (both result sets, LBBLFL/LBLOBXFL,
LBSTAT, VISIT, LBSEQ) is kept in `InputTable.detail`, keyed by source_file/source_row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.ingest.io import InputError, InputTable, sha256_file
from immunostrat.ingest.readers._frames import (
    LAB_COLUMNS,
    SUBJECT_COLUMNS,
    RejectRule,
    analyte_of,
    blank_to_null,
    check_file,
    date_shape,
    finish,
    maps_to_panel,
    number_text,
    place_date,
    value_counts,
)
from immunostrat.ingest.readers.crosswalk import Crosswalk, map_identifiers
from immunostrat.ingest.readers.detect import sniff
from immunostrat.ingest.reference import ReferenceTables

LAB_DOMAINS = ("LB", "CP")
REFERENCE_DATE_VARIABLES = ("RFSTDTC", "RFICDTC")
_NUMERIC_TYPES = {"integer", "float", "double", "decimal"}
# AGEU (CDISC codelist C66781) to years. An AGE without AGEU, or in another unit, gives no age (reported).
_AGE_UNIT_YEARS = {"YEARS": 1.0, "MONTHS": 1 / 12, "WEEKS": 7 / 365.25, "DAYS": 1 / 365.25, "HOURS": 1 / (24 * 365.25)}


@dataclass(frozen=True)
class SdtmTable:
    """One SDTM dataset read as text: upper-case variable names, all String, plus `source_row` (1-based)."""

    frame: pl.DataFrame
    container: str
    sha256: str
    meta: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


def _normalise_typed(frame: pl.DataFrame) -> pl.DataFrame:
    """Typed columns (XPT, Parquet) as text: floats to 15 significant digits, strings without padding."""
    exprs = []
    for name, dtype in frame.schema.items():
        if dtype.is_float():
            exprs.append(number_text(pl.col(name)).alias(name))
        elif dtype == pl.String:
            exprs.append(blank_to_null(pl.col(name)).alias(name))
        else:
            exprs.append(blank_to_null(pl.col(name).cast(pl.String)).alias(name))
    return frame.select(exprs)


def _upper_names(path: Path, frame: pl.DataFrame) -> pl.DataFrame:
    names = [c.lstrip("\ufeff").strip().upper() for c in frame.columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(path, f"variable(s) appear more than once: {', '.join(dupes)}", column=dupes[0])
    return frame.rename(dict(zip(frame.columns, names, strict=True)))


def _read_xpt(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    try:
        import pyreadstat  # start-up time: the SAS reader loads only for .xpt files
    except ImportError as exc:  # a declared dependency; say how to fix a broken environment
        raise InputError(path, "reading SAS XPORT needs pyreadstat: pip install pyreadstat==1.3.7") from exc
    try:
        frame, meta = pyreadstat.read_xport(str(path), output_format="polars")
    except Exception as exc:  # pyreadstat raises its own error types (ReadstatError, PyreadstatError)
        raise InputError(path, f"cannot be read as SAS XPORT: {exc}") from exc
    assert isinstance(frame, pl.DataFrame)
    return _normalise_typed(frame), {"dataset": meta.table_name, "label": meta.file_label}


def _dataset_json_frame(path: Path, metadata: dict[str, Any], rows: list[Any]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Build the text frame of a Dataset-JSON 1.1 document from its metadata (`columns`) and `rows`."""
    version = str(metadata.get("datasetJSONVersion", ""))
    if not version.startswith("1.1"):
        raise InputError(path, f"Dataset-JSON version {version or '(none)'} is not supported; expected 1.1")
    columns = metadata.get("columns")
    if not isinstance(columns, list) or not all(isinstance(c, dict) and "name" in c for c in columns):
        raise InputError(path, "Dataset-JSON has no valid `columns` list")
    names = [str(c["name"]) for c in columns]
    records = metadata.get("records")
    if isinstance(records, int) and records != len(rows):
        raise InputError(path, f"Dataset-JSON declares {records} records but holds {len(rows)} rows (truncated?)")
    try:
        # Every value as text first; numbers are then read back as floats, exactly as XPT numbers are.
        frame = pl.DataFrame(rows, schema={n: pl.String for n in names}, orient="row", strict=False)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise InputError(path, f"Dataset-JSON rows do not match its {len(names)} columns: {exc}") from exc
    numeric = {str(c["name"]) for c in columns if str(c.get("dataType", "")).lower() in _NUMERIC_TYPES}
    frame = frame.select((number_text(pl.col(n)) if n in numeric else blank_to_null(pl.col(n))).alias(n) for n in names)
    meta = {"dataset": metadata.get("name"), "label": metadata.get("label"), "dataset_json_version": version}
    return frame, meta


def _read_dataset_json(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read as JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError(path, "Dataset-JSON must be one JSON object")
    rows = document.get("rows", [])
    if not isinstance(rows, list):
        raise InputError(path, "Dataset-JSON `rows` is not a list")
    return _dataset_json_frame(path, document, rows)


def _read_dataset_ndjson(path: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        metadata = json.loads(lines[0])
        # One parse of all row lines (each line is one JSON array).
        rows = json.loads("[" + ",".join(line for line in lines[1:] if line.strip()) + "]")
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise InputError(path, f"cannot be read as Dataset-JSON NDJSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise InputError(path, "the first line of a Dataset-JSON NDJSON file must be its metadata object")
    return _dataset_json_frame(path, metadata, rows)


def read_sdtm_table(path: str | Path, kind: str = "SDTM") -> SdtmTable:
    """Read any SDTM container into text (see module docstring); the container is detected from the content.

    Raises:
        InputError: the file is missing, empty, or cannot be read as its container.
    """
    p = check_file(path, kind)
    container = sniff(p).container
    if container == "xpt":
        frame, meta = _read_xpt(p)
    elif container == "json":
        frame, meta = _read_dataset_json(p)
    elif container == "ndjson":
        frame, meta = _read_dataset_ndjson(p)
    elif container == "parquet":
        try:
            frame, meta = _normalise_typed(pl.read_parquet(p)), {}
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(p, f"cannot be read as Parquet: {exc}") from exc
    else:
        try:
            raw = pl.read_csv(p, infer_schema=False, encoding="utf8", raise_if_empty=True)
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
            raise InputError(p, f"cannot be read as CSV: {str(exc).strip().splitlines()[0]}") from exc
        frame, meta = raw.select(blank_to_null(pl.col(c)).alias(c) for c in raw.columns), {}
        container = "csv"
    frame = _upper_names(p, frame).with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"))
    return SdtmTable(frame=frame, container=container, sha256=sha256_file(p), meta=meta)


# --------------------------------------------------------------------------------------------------
# LB / CP -> lab rows
# --------------------------------------------------------------------------------------------------


def lab_domain(path: str | Path, columns: Sequence[str]) -> str:
    """`LB` or `CP` from the topic variable present; InputError for DM or anything else."""
    names = set(columns)
    for domain in LAB_DOMAINS:
        if f"{domain}TESTCD" in names:
            return domain
    if "RFSTDTC" in names or "RFICDTC" in names:
        raise InputError(path, "this is SDTM DM (demographics): give it as the subjects file, not as lab results")
    raise InputError(path, "not an SDTM LB or CP dataset: no LBTESTCD or CPTESTCD variable", column="LBTESTCD")


def _col(frame: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name) if name in frame.columns else pl.lit(None, pl.String)


def _sdtm_lab_rows(table: SdtmTable, path: Path, ref: ReferenceTables) -> tuple[pl.DataFrame, str]:
    frame = table.frame
    d = lab_domain(path, frame.columns)
    required = ["STUDYID", "USUBJID", f"{d}TESTCD"]
    missing = [c for c in required if c not in frame.columns]
    results = [f"{d}ORRES", f"{d}STRESC", f"{d}STRESN"]
    if missing or not any(c in frame.columns for c in results):
        missing = missing or [" or ".join(results)]
        raise InputError(path, f"SDTM {d} lacks required variable(s): {', '.join(missing)}", column=missing[0])

    def v(name: str) -> pl.Expr:
        return _col(frame, f"{d}{name}")

    testcd, loinc = v("TESTCD"), v("LOINC")
    std_text = pl.coalesce(v("STRESC"), v("STRESN"))
    has_std = std_text.is_not_null()
    by_testcd = maps_to_panel(testcd, ref)
    by_loinc = maps_to_panel(loinc, ref)
    rows = frame.with_columns(
        _source_id=pl.col("USUBJID"),
        _source_study=pl.col("STUDYID"),
        # The code that maps onto the panel wins; otherwise the test code, so outside-panel tests are counted by it.
        test=pl.when(by_testcd).then(testcd).when(by_loinc).then(loinc).otherwise(pl.coalesce(testcd, loinc)),
        result=pl.when(has_std).then(std_text).otherwise(v("ORRES")),
        unit=pl.when(has_std).then(v("STRESU")).otherwise(v("ORRESU")),
        ref_low=pl.when(has_std).then(v("STNRLO")).otherwise(v("ORNRLO")),
        ref_high=pl.when(has_std).then(v("STNRHI")).otherwise(v("ORNRHI")),
        # LBLLOQ is in the standard units, so it goes only with the standardised result (never converted by guess).
        lloq=pl.when(has_std).then(v("LLOQ")),
        _lloq_not_used=~has_std & v("LLOQ").is_not_null(),
        collected_at=place_date(v("DTC")),
        method=v("METHOD"),
        site_id=_col(frame, "SITEID"),
        _result_from=pl.when(has_std)
        .then(pl.lit("standard"))
        .when(v("ORRES").is_not_null())
        .then(pl.lit("original"))
        .otherwise(pl.lit("none")),
        _test_from=pl.when(by_testcd).then(pl.lit("testcd")).when(by_loinc).then(pl.lit("loinc")).otherwise(None),
        _conflict=by_testcd & by_loinc & (analyte_of(testcd, ref) != analyte_of(loinc, ref)).fill_null(False),
        _stres_disagree=(
            v("STRESC").cast(pl.Float64, strict=False) != v("STRESN").cast(pl.Float64, strict=False)
        ).fill_null(False),
        _date_shape=date_shape(v("DTC")),
        _panel=by_testcd | by_loinc,
    )
    return rows, d


def _detail(rows: pl.DataFrame, d: str, path: str) -> pl.DataFrame:
    def v(name: str) -> pl.Expr:
        return _col(rows, f"{d}{name}")

    return rows.select(
        pl.lit(path).alias("source_file"),
        "source_row",
        pl.lit(d).alias("domain"),
        pl.col("USUBJID").alias("usubjid"),
        v("SEQ").alias("seq"),
        _col(rows, "VISIT").alias("visit"),
        v("TESTCD").alias("test_code"),
        v("LOINC").alias("loinc"),
        pl.col("_panel").alias("panel"),
        pl.col("_result_from").alias("result_from"),
        v("ORRES").alias("result_original"),
        v("ORRESU").alias("unit_original"),
        v("ORNRLO").alias("ref_low_original"),
        v("ORNRHI").alias("ref_high_original"),
        v("STRESC").alias("result_standard_c"),
        v("STRESN").alias("result_standard_n"),
        v("STRESU").alias("unit_standard"),
        v("LLOQ").alias("lloq_standard"),
        v("DTC").alias("dtc"),
        pl.col("_date_shape").alias("date_shape"),
        v("BLFL").alias("blfl"),
        v("LOBXFL").alias("lobxfl"),
        v("STAT").alias("stat"),
        v("REASND").alias("reasnd"),
    )


def unmapped_rule(source: str) -> RejectRule:
    """Panel rows whose identifier the crosswalk does not know."""
    return RejectRule(
        "SUBJECT_NOT_IN_CROSSWALK",
        "subject_id",
        pl.col("_unmapped") & pl.col("_panel"),
        pl.lit(f"a {source} identifier listed in the crosswalk (source {source}); unknown identifiers are not guessed"),
    )


def read_sdtm_labs(
    path: str | Path, ref: ReferenceTables, crosswalk: Crosswalk | None = None, source: str = "SDTM"
) -> InputTable:
    """Read an SDTM LB or CP dataset (XPT, CSV, Parquet, Dataset-JSON .json/.ndjson) as raw lab rows.

    Args:
        path: the dataset.
        ref: mapping tables (to prefer the code that maps to the panel).
        crosswalk: identifier crosswalk; applies when it has rows for `source`.
        source: the crosswalk source label of USUBJID values.

    Returns:
        The raw lab frame, with notes (result source, date shapes, baseline flags, crosswalk) and the per-row
        detail (both result sets, LBBLFL/LBLOBXFL, LBSTAT, visit).
    """
    p = Path(path)
    table = read_sdtm_table(p, kind="lab results")
    rows, d = _sdtm_lab_rows(table, p, ref)
    rows, xw_notes = map_identifiers(rows, source=source, crosswalk=crosswalk)
    flags = {
        f"{d}{flag}": int(rows.select((_col(rows, f"{d}{flag}") == "Y").sum()).item()) for flag in ("BLFL", "LOBXFL")
    }
    notes: dict[str, Any] = {
        "format": "sdtm",
        "container": table.container,
        "domain": d,
        **{k: v for k, v in table.meta.items() if v},
        "records": rows.height,
        "result_from": value_counts(rows, "_result_from"),
        "test_from": value_counts(rows.filter(pl.col("_panel")), "_test_from"),
        "testcd_loinc_conflicts": int(rows["_conflict"].sum()),
        "stresc_stresn_disagree": int(rows["_stres_disagree"].sum()),
        "lloq_not_used": int(rows["_lloq_not_used"].sum()),
        "collection_dates": value_counts(rows, "_date_shape"),
        "baseline_flags_y": flags,
        "not_done": int(rows.select((_col(rows, f"{d}STAT") == "NOT DONE").sum()).item()),
        "crosswalk": xw_notes,
    }
    return finish(
        p,
        rows,
        columns=LAB_COLUMNS,
        sha256=table.sha256,
        fmt="sdtm",
        notes=notes,
        detail=_detail(rows, d, str(path)),
        rules=[unmapped_rule(source.strip().upper())],
        source_label=f"SDTM {d}",
    )


# --------------------------------------------------------------------------------------------------
# DM -> subjects
# --------------------------------------------------------------------------------------------------


def _age_years(frame: pl.DataFrame) -> tuple[pl.Expr, pl.Expr]:
    """(age in years as text, problem) from AGE and AGEU; problem is null when the age was read."""
    age = _col(frame, "AGE")
    unit = _col(frame, "AGEU").str.strip_chars().str.to_uppercase()
    factor = unit.replace_strict(_AGE_UNIT_YEARS, default=None, return_dtype=pl.Float64)
    number = age.cast(pl.Float64, strict=False)
    years = pl.when(unit == "YEARS").then(age).otherwise(number_text(number * factor))
    problem = (
        pl.when(age.is_null())
        .then(None)
        .when(unit.is_null())
        .then(pl.lit("AGEU missing"))
        .when(factor.is_null())
        .then(pl.lit("AGEU not a time unit"))
    )
    return pl.when(problem.is_null()).then(years).otherwise(None), problem


def read_sdtm_dm(
    path: str | Path,
    crosswalk: Crosswalk | None = None,
    reference_date_from: str = "RFSTDTC",
    source: str = "SDTM",
) -> InputTable:
    """Read SDTM DM as the subjects contract.

    reference_date is RFSTDTC (default) or RFICDTC; first_exposure_date is RFXSTDTC; sex SEX; age_years AGE
    converted from AGEU to years (an AGE without a time unit gives no age, counted in the notes); site_id SITEID.
    Partial dates stay verbatim and are quarantined by the subject rules. The other subject fields (SLEDAI-2K,
    prior failures, nephritis class, eGFR, CNS lupus) are not in DM and stay empty.

    Raises:
        InputError: not a DM dataset, or the chosen reference-date variable is absent.
    """
    choice = reference_date_from.strip().upper()
    if choice not in REFERENCE_DATE_VARIABLES:
        raise ValueError(f"reference_date_from must be one of {', '.join(REFERENCE_DATE_VARIABLES)}, not {choice!r}")
    p = Path(path)
    table = read_sdtm_table(p, kind="subjects")
    frame = table.frame
    if any(f"{d}TESTCD" in frame.columns for d in LAB_DOMAINS):
        raise InputError(p, "this is an SDTM lab dataset (LB/CP): give it as lab results, not as the subjects file")
    missing = [c for c in ("STUDYID", "USUBJID", choice) if c not in frame.columns]
    if missing:
        raise InputError(p, f"SDTM DM lacks required variable(s): {', '.join(missing)}", column=missing[0])
    age, age_problem = _age_years(frame)
    rows = frame.with_columns(
        _source_id=pl.col("USUBJID"),
        _source_study=pl.col("STUDYID"),
        reference_date=place_date(pl.col(choice)),
        first_exposure_date=place_date(_col(frame, "RFXSTDTC")),
        sex=_col(frame, "SEX"),
        age_years=age,
        site_id=_col(frame, "SITEID"),
        _age_problem=age_problem,
        _panel=pl.lit(True),  # every subject row counts: an unknown subject is never passed on
        _reference_shape=date_shape(pl.col(choice)),
    )
    rows, xw_notes = map_identifiers(rows, source=source, crosswalk=crosswalk)
    notes: dict[str, Any] = {
        "format": "sdtm",
        "container": table.container,
        "domain": "DM",
        **{k: v for k, v in table.meta.items() if v},
        "records": rows.height,
        "reference_date_from": choice,
        "reference_dates": value_counts(rows, "_reference_shape"),
        "first_exposure_from": "RFXSTDTC" if "RFXSTDTC" in frame.columns else None,
        "age_not_read": value_counts(rows.filter(pl.col("_age_problem").is_not_null()), "_age_problem"),
        "crosswalk": xw_notes,
    }
    return finish(
        p,
        rows,
        columns=SUBJECT_COLUMNS,
        sha256=table.sha256,
        fmt="sdtm",
        notes=notes,
        rules=[unmapped_rule(source.strip().upper())],
        source_label="SDTM DM",
    )


# --------------------------------------------------------------------------------------------------
# Baseline-flag agreement
# --------------------------------------------------------------------------------------------------


def baseline_flag_agreement(
    harmonised: pl.DataFrame, strata: pl.DataFrame, tables: Sequence[InputTable]
) -> dict[str, Any]:
    """How often our baseline choice agrees with SDTM's own flags (LBBLFL/CPBLFL and LBLOBXFL/CPLOBXFL).

    Compared per (study, subject, analyte) among accepted rows of the SDTM files: SDTM's choice is the
    collection date of the row flagged `Y`; ours is `<analyte>_date` in the strata table (the pipeline keeps the
    baseline's date, not its row). Categories: `agree` (same date), `disagree`, `flag_only` (SDTM flagged a row
    but we chose no baseline, e.g. it is after first exposure or outside the window), `ours_only` (we chose a
    baseline and SDTM flagged none of that subject's rows of that analyte). Flagged rows that were not
    accepted (quarantined) are counted as `flagged_not_accepted`.

    Args:
        harmonised: the accepted table (`harmonised.parquet`).
        strata: the strata table (one row per subject, `<analyte>_date` columns).
        tables: the run's lab inputs; those read as SDTM contribute their flags.

    Returns:
        {flag: {agree, disagree, flag_only, ours_only, flagged_not_accepted, agreement, by_analyte}} for
        `blfl` and `lobxfl`; empty when no SDTM input carries either flag.
    """
    details = [
        t.detail.select("source_file", "source_row", "panel", "blfl", "lobxfl")
        for t in tables
        if t.detail is not None and _is_sdtm(t)
    ]
    if not details:
        return {}
    detail = pl.concat(details)
    sdtm_rows = harmonised.join(detail, on=["source_file", "source_row"], how="inner")
    date_cols = [c for c in strata.columns if c.endswith("_date") and c[: -len("_date")] in set(harmonised["analyte"])]
    ours = (
        strata.select("study_id", "subject_id", *date_cols)
        .unpivot(index=["study_id", "subject_id"], variable_name="analyte", value_name="baseline_date")
        .with_columns(pl.col("analyte").str.strip_suffix("_date"))
        .filter(pl.col("baseline_date").is_not_null())
    )
    result: dict[str, Any] = {}
    for flag in ("blfl", "lobxfl"):
        agreement = _flag_agreement(flag, detail=detail, sdtm_rows=sdtm_rows, ours=ours, date_cols=date_cols)
        if agreement is not None:
            result[flag] = agreement
    return result


def _flag_agreement(
    flag: str, *, detail: pl.DataFrame, sdtm_rows: pl.DataFrame, ours: pl.DataFrame, date_cols: list[str]
) -> dict[str, Any] | None:
    """`baseline_flag_agreement` of one flag (`blfl` or `lobxfl`); None when no panel row carries it."""
    key = ["study_id", "subject_id", "analyte"]
    # Only files that use this flag take part: a file without the variable says nothing about it.
    files = detail.group_by("source_file").agg(pl.col(flag).is_not_null().any()).filter(pl.col(flag))
    flagged_all = detail.filter((pl.col(flag) == "Y") & pl.col("panel"))
    if flagged_all.height == 0:
        return None
    # Only analytes with a baseline in the strata (the selection panel) can agree or disagree.
    in_files = sdtm_rows.join(files.select("source_file"), on="source_file", how="semi").filter(
        pl.col("analyte").is_in([c.removesuffix("_date") for c in date_cols])
    )
    # Only subject-analytes these files report on are compared (a FHIR-only analyte says nothing about SDTM).
    ours_here = ours.join(in_files.select(key).unique(), on=key, how="semi")
    flagged = (
        in_files.filter(pl.col(flag) == "Y")
        .group_by(key)
        .agg(pl.col("collected_date").alias("flag_dates"))
        .join(ours_here, on=key, how="full", coalesce=True)
    )
    labelled = flagged.with_columns(
        outcome=pl.when(pl.col("flag_dates").is_null())
        .then(pl.lit("ours_only"))
        .when(pl.col("baseline_date").is_null())
        .then(pl.lit("flag_only"))
        .when(pl.col("flag_dates").list.contains(pl.col("baseline_date")))
        .then(pl.lit("agree"))
        .otherwise(pl.lit("disagree"))
    )
    totals = value_counts(labelled, "outcome")
    compared = totals.get("agree", 0) + totals.get("disagree", 0)
    by_analyte = {
        str(a): value_counts(labelled.filter(pl.col("analyte") == a), "outcome")
        for a in sorted(labelled["analyte"].unique().to_list())
    }
    return {
        **{k: totals.get(k, 0) for k in ("agree", "disagree", "flag_only", "ours_only")},
        "flagged_not_accepted": flagged_all.join(
            sdtm_rows.select("source_file", "source_row"), on=["source_file", "source_row"], how="anti"
        ).height,
        "agreement": round(totals.get("agree", 0) / compared, 4) if compared else None,
        "by_analyte": by_analyte,
    }


def _is_sdtm(table: InputTable) -> bool:
    return table.fmt == "sdtm" and table.detail is not None and {"blfl", "lobxfl"} <= set(table.detail.columns)
