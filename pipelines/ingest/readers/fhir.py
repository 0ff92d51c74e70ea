"""HL7 FHIR R4: Observation resources as lab rows, Patient resources for sex and birth date.

Files: bulk-export NDJSON (one resource per line; `source_row` is the line number), a Bundle (`source_row` is
the entry's 1-based index) or one resource (`source_row` 1). Numbers are read as the text written in the file
(`"value": 6.30` gives `6.30`), never through a float.

- `test`: the first `code.coding` whose code maps to the panel (LOINC codings first), else the first LOINC
  code, else the first code, else `code.text`.
- `result`: `valueQuantity.comparator` + `valueQuantity.value` (`<` and `10` give `<10`), else `valueInteger`,
  else `valueString`.
- `unit`: `valueQuantity.code` when its system is UCUM, else `valueQuantity.unit`, else `valueQuantity.code`.
- `ref_low`, `ref_high`: the first `referenceRange` low/high value, when its unit is the result's (else left
  empty, and counted in the notes).
- `lloq`: not read (left empty). FHIR R4 Observation has no element for the limit of quantification; a
  below-limit result arrives as `valueQuantity.comparator` `<` (read as a censored result), and extensions that
  carry a limit are not standardised.
- `collected_at`: `effectiveDateTime`, else `effectivePeriod.start`, else `effectiveInstant`.
- `method`: `method.text`, else the first `method.coding` display or code.
- `study_id`, `subject_id`: `subject.reference` (`Patient/xyz`, an absolute URL, or a Bundle `urn:uuid:`
  fullUrl) mapped by the crosswalk (source `FHIR`), or the Patient id with the study given as an option.

An Observation whose `status` is `entered-in-error` or `cancelled` is quarantined by the reader (reason
STATUS_ENTERED_IN_ERROR / STATUS_CANCELLED) when its test is on the panel; outside the panel it is counted
there like any other row. `component` values are not read (one row per resource keeps `source_row` unique);
panel codes found only in components are reported in the notes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from immunostrat.ingest.io import InputError, InputTable, sha256_file
from immunostrat.ingest.readers._frames import (
    LAB_COLUMNS,
    RejectRule,
    check_file,
    date_shape,
    finish,
    maps_to_panel,
    place_date,
    value_counts,
)
from immunostrat.ingest.readers.crosswalk import MAX_LISTED_IDS, Crosswalk, map_identifiers
from immunostrat.ingest.readers.detect import sniff
from immunostrat.ingest.reference import ReferenceTables
from immunostrat.stages.harmonise import parse_iso_date

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
#: Observation statuses whose panel rows are quarantined by the reader, with their reason codes.
REJECTED_STATUSES = {"entered-in-error": "STATUS_ENTERED_IN_ERROR", "cancelled": "STATUS_CANCELLED"}
_SEX = {"female": "F", "male": "M", "unknown": "U"}  # FHIR `other` has no CDISC SEX equivalent: not mapped
_PATIENT_REF = r"(?:^|/)Patient/([^/]+?)(?:/_history/[^/]*)?$"

_CODING = pl.Struct({"system": pl.String, "code": pl.String, "display": pl.String})
_CONCEPT = pl.Struct({"coding": pl.List(_CODING), "text": pl.String})
_QUANTITY = pl.Struct(
    {"value": pl.String, "comparator": pl.String, "unit": pl.String, "system": pl.String, "code": pl.String}
)
_SCHEMA: dict[str, pl.DataType] = {
    "resourceType": pl.String(),
    "id": pl.String(),
    "status": pl.String(),
    "code": _CONCEPT,
    "subject": pl.Struct({"reference": pl.String, "display": pl.String}),
    "effectiveDateTime": pl.String(),
    "effectivePeriod": pl.Struct({"start": pl.String, "end": pl.String}),
    "effectiveInstant": pl.String(),
    "valueQuantity": _QUANTITY,
    "valueInteger": pl.String(),
    "valueString": pl.String(),
    "referenceRange": pl.List(pl.Struct({"low": _QUANTITY, "high": _QUANTITY, "text": pl.String})),
    "method": _CONCEPT,
    "component": pl.List(pl.Struct({"code": _CONCEPT})),
    "gender": pl.String(),
    "birthDate": pl.String(),
}


@dataclass(frozen=True)
class Resources:
    """Every resource of one FHIR file as a typed frame (the fields the readers use), plus `source_row`."""

    frame: pl.DataFrame  # _SCHEMA columns + source_row (Int64) + full_url (String)
    container: str  # ndjson, bundle or resource
    sha256: str


def _loads(text: str | bytes) -> Any:
    # Numbers as the text written: 6.30 stays "6.30", and no float ever rounds a result.
    return json.loads(text, parse_float=str, parse_int=str)


def load_resources(path: str | Path, kind: str = "lab results") -> Resources:
    """Parse an NDJSON file, a Bundle or a single resource into one frame of resources.

    Raises:
        InputError: missing/empty file, a line or document that is not JSON, or not FHIR.
    """
    p = check_file(path, kind)
    container = sniff(p).container
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    urls: list[str | None] = []
    if container == "ndjson":
        for number, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                resource = _loads(line)
            except ValueError as exc:
                raise InputError(p, f"line {number} is not a JSON resource: {exc}") from exc
            records.append(resource if isinstance(resource, dict) else {})
            rows.append(number)
            urls.append(None)
    else:
        try:
            document = _loads(p.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(p, f"cannot be read as JSON: {exc}") from exc
        if not isinstance(document, dict) or "resourceType" not in document:
            raise InputError(p, "not a FHIR resource: no resourceType")
        if document["resourceType"] == "Bundle":
            container = "bundle"
            for index, item in enumerate(document.get("entry") or [], start=1):
                entry = item if isinstance(item, dict) else {}
                resource = entry.get("resource")
                records.append(resource if isinstance(resource, dict) else {})
                rows.append(index)
                urls.append(entry.get("fullUrl"))
        else:
            container = "resource"
            records, rows, urls = [document], [1], [None]
    try:
        frame = pl.DataFrame(records, schema=_SCHEMA, strict=False)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise InputError(p, f"resources do not have the FHIR R4 structure: {str(exc).splitlines()[0]}") from exc
    frame = frame.with_columns(
        source_row=pl.Series(rows, dtype=pl.Int64), full_url=pl.Series(urls, dtype=pl.String, strict=False)
    )
    return Resources(frame=frame, container=container, sha256=sha256_file(p))


def _resolve_subjects(frame: pl.DataFrame, resources: pl.DataFrame) -> pl.DataFrame:
    """Add `_source_id`: the Patient id of each row's subject reference, resolving Bundle fullUrls."""
    urls = resources.filter((pl.col("resourceType") == "Patient") & pl.col("full_url").is_not_null()).select(
        pl.col("full_url").alias("_subject_ref"),
        pl.coalesce(pl.col("id"), pl.col("full_url")).alias("_bundle_id"),
    )
    return (
        frame.join(urls.unique("_subject_ref"), on="_subject_ref", how="left", maintain_order="left")
        .with_columns(_source_id=pl.coalesce(pl.col("_bundle_id"), pl.col("_subject_ref").str.extract(_PATIENT_REF, 1)))
        .drop("_bundle_id")
    )


def _chosen_codes(obs: pl.DataFrame, ref: ReferenceTables) -> pl.DataFrame:
    """(source_row, test, _test_panel): the coding chosen per Observation (see module docstring)."""
    codings = (
        obs.select("source_row", pl.col("code").struct.field("coding").alias("_c"))
        .explode("_c")
        .with_columns(_pos=pl.int_range(pl.len()).over("source_row"))
        .select("source_row", "_pos", pl.col("_c").struct.field("system"), pl.col("_c").struct.field("code"))
        .filter(pl.col("code").is_not_null() & (pl.col("code").str.strip_chars() != ""))
    )
    panel = maps_to_panel(pl.col("code"), ref)
    loinc = pl.col("system").str.strip_chars() == LOINC
    rank = (
        pl.when(panel & loinc.fill_null(False))
        .then(0)
        .when(panel)
        .then(1)
        .when(loinc.fill_null(False))
        .then(2)
        .otherwise(3)
    )
    return (
        codings.with_columns(_rank=rank)
        .sort("source_row", "_rank", "_pos")
        .group_by("source_row", maintain_order=True)
        .agg(pl.col("code").first().alias("_coded_test"))
    )


def _quantity_unit(q: pl.Expr) -> pl.Expr:
    ucum_code = pl.when(q.struct.field("system").str.strip_chars() == UCUM).then(q.struct.field("code"))
    return pl.coalesce(ucum_code, q.struct.field("unit"), q.struct.field("code"))


def _component_panel_codes(obs: pl.DataFrame, ref: ReferenceTables) -> list[str]:
    codes = (
        obs.select(pl.col("component").alias("_k"))
        .explode("_k")
        .select(pl.col("_k").struct.field("code").struct.field("coding").alias("_c"))
        .explode("_c")
        .select(pl.col("_c").struct.field("code").alias("code"))
        .filter(maps_to_panel(pl.col("code"), ref))
    )
    return sorted(codes["code"].unique().to_list())


def _observation_rows(
    obs: pl.DataFrame, codes: pl.DataFrame, ref: ReferenceTables, *, study_id: str | None
) -> pl.DataFrame:
    """One lab row per Observation: test, result, unit, method, collection date and the reference range (dropped
    when its unit differs from the result's), with the status, date shape and panel flag the notes and rules use."""
    vq = pl.col("valueQuantity")
    rr = pl.col("referenceRange").list.first()
    low, high = rr.struct.field("low"), rr.struct.field("high")
    range_unit = pl.coalesce(_quantity_unit(low), _quantity_unit(high))
    comparator = vq.struct.field("comparator").fill_null("")
    value = vq.struct.field("value")
    method = pl.col("method")
    status = pl.col("status").str.strip_chars().str.to_lowercase()
    return (
        obs.join(codes, on="source_row", how="left", maintain_order="left")
        .with_columns(
            _subject_ref=pl.col("subject").struct.field("reference").str.strip_chars(),
            _source_study=pl.lit(study_id, pl.String),
            test=pl.coalesce(pl.col("_coded_test"), pl.col("code").struct.field("text")),
            result=pl.coalesce(
                pl.when(value.is_not_null()).then(comparator + value),
                pl.col("valueInteger"),
                pl.col("valueString"),
            ),
            unit=_quantity_unit(vq),
            _effective=pl.coalesce(
                pl.col("effectiveDateTime"),
                pl.col("effectivePeriod").struct.field("start"),
                pl.col("effectiveInstant"),
            ),
            method=pl.coalesce(
                method.struct.field("text"),
                method.struct.field("coding").list.first().struct.field("display"),
                method.struct.field("coding").list.first().struct.field("code"),
            ),
            _status=status,
            _range_unit=range_unit,
            _ranges=pl.col("referenceRange").list.len().fill_null(0),
        )
        .with_columns(
            # A range in another unit than the result would be converted wrongly: it is dropped (and counted).
            _range_ok=pl.col("_range_unit").is_null()
            | (
                pl.col("_range_unit").str.strip_chars().str.to_lowercase()
                == pl.col("unit").str.strip_chars().str.to_lowercase()
            ).fill_null(False),
            collected_at=place_date(pl.col("_effective")),
            _date_shape=date_shape(pl.col("_effective")),
            _panel=maps_to_panel(pl.col("test"), ref),
        )
        .with_columns(
            ref_low=pl.when(pl.col("_range_ok")).then(low.struct.field("value")),
            ref_high=pl.when(pl.col("_range_ok")).then(high.struct.field("value")),
        )
    )


def _observation_rules() -> list[RejectRule]:
    """Panel rows refused by the reader: Observations withdrawn at the source, subjects not in the crosswalk."""
    rules = [
        RejectRule(
            code,
            "result",
            (pl.col("_status") == status_text).fill_null(False) & pl.col("_panel"),
            pl.lit(f"an Observation that was not withdrawn at the source (status here: {status_text})"),
        )
        for status_text, code in REJECTED_STATUSES.items()
    ]
    rules.append(
        RejectRule(
            "SUBJECT_NOT_IN_CROSSWALK",
            "subject_id",
            pl.col("_unmapped") & pl.col("_panel"),
            pl.lit("a FHIR Patient id listed in the crosswalk; unknown identifiers are not guessed"),
        )
    )
    return rules


def read_fhir_observations(
    path: str | Path,
    ref: ReferenceTables,
    *,
    study_id: str | None = None,
    crosswalk: Crosswalk | None = None,
    source: str = "FHIR",
) -> InputTable:
    """Read FHIR R4 Observations (NDJSON, Bundle or one resource) as raw lab rows.

    Args:
        path: the file.
        ref: mapping tables (the coding that maps to the panel is preferred).
        study_id: the study of every row; FHIR carries none. Not needed when the crosswalk maps the Patients.
        crosswalk: identifier crosswalk; applies when it has rows for `source`.
        source: the crosswalk source label of Patient ids.

    Raises:
        InputError: the file cannot be read, or neither a study id nor a crosswalk for `source` is given.
    """
    p = Path(path)
    if study_id is None and (crosswalk is None or not crosswalk.covers(source)):
        raise InputError(
            p,
            f"FHIR carries no study: give the study id (--study-id) or a crosswalk with rows for source "
            f"{source.strip().upper()} (--crosswalk)",
        )
    resources = load_resources(p)
    everything = resources.frame
    obs = everything.filter(pl.col("resourceType") == "Observation")
    rows = _observation_rows(obs, _chosen_codes(obs, ref), ref, study_id=study_id)
    rows = _resolve_subjects(rows, everything)
    rows, xw_notes = map_identifiers(rows, source=source, crosswalk=crosswalk)
    not_patient = rows.filter(pl.col("_source_id").is_null())["_subject_ref"].unique().sort().to_list()
    notes: dict[str, Any] = {
        "format": "fhir",
        "container": resources.container,
        "resources": value_counts(everything, "resourceType"),
        "observations": obs.height,
        "status": value_counts(rows, "_status"),
        "collection_dates": value_counts(rows, "_date_shape"),
        "reference_range_unit_mismatch": int((~rows["_range_ok"]).sum()) if rows.height else 0,
        "reference_ranges_beyond_first": int((rows["_ranges"] > 1).sum()) if rows.height else 0,
        "with_components": int(obs.select(pl.col("component").list.len().fill_null(0) > 0).to_series().sum()),
        "panel_codes_only_in_components": _component_panel_codes(obs, ref),
        "subject_not_a_patient": {"rows": len(not_patient), "references": not_patient[:MAX_LISTED_IDS]},
        "study_id": study_id,
        "crosswalk": xw_notes,
    }
    rules = _observation_rules()
    return finish(
        p,
        rows,
        columns=LAB_COLUMNS,
        sha256=resources.sha256,
        fmt="fhir",
        notes=notes,
        detail=rows.select(
            pl.lit(str(path)).alias("source_file"),
            "source_row",
            pl.col("id").alias("resource_id"),
            pl.col("_status").alias("status"),
            pl.col("_subject_ref").alias("subject_reference"),
            pl.col("_effective").alias("effective"),
        ),
        rules=rules,
        source_label="FHIR",
    )


# --------------------------------------------------------------------------------------------------
# Patients -> sex and age for the subjects table
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patients:
    """Patient resources as (study_id, subject_id, sex, birth_date), with provenance and notes."""

    path: str
    frame: pl.DataFrame  # study_id, subject_id, sex (CDISC code or null), birth_date (text), source_file, source_row
    sha256: str
    notes: dict[str, Any]


def read_fhir_patients(
    path: str | Path, *, study_id: str | None = None, crosswalk: Crosswalk | None = None, source: str = "FHIR"
) -> Patients:
    """Read the Patient resources of a FHIR file: sex (gender) and birth date per subject.

    FHIR holds no trial reference date, so Patients cannot be a subjects file by themselves: they complete one
    (`add_patient_demographics`), whose reference_date then anchors the age.
    """
    p = Path(path)
    resources = load_resources(p, kind="patients")
    patients = resources.frame.filter(pl.col("resourceType") == "Patient").with_columns(
        _source_id=pl.col("id").str.strip_chars(), _source_study=pl.lit(study_id, pl.String)
    )
    patients, xw_notes = map_identifiers(patients, source=source, crosswalk=crosswalk)
    gender = pl.col("gender").str.strip_chars().str.to_lowercase()
    frame = patients.filter(~pl.col("_unmapped")).select(
        "study_id",
        "subject_id",
        gender.replace_strict(_SEX, default=None, return_dtype=pl.String).alias("sex"),
        pl.col("birthDate").str.strip_chars().alias("birth_date"),
        pl.lit(str(path)).alias("source_file"),
        "source_row",
    )
    notes = {
        "format": "fhir",
        "patients": patients.height,
        "gender": value_counts(patients, "gender"),
        "crosswalk": xw_notes,
    }
    return Patients(path=str(path), frame=frame, sha256=resources.sha256, notes=notes)


def add_patient_demographics(subjects: InputTable, patients: Patients) -> InputTable:
    """Fill empty `sex` and `age_years` of a subjects table from FHIR Patients.

    The age is in whole years at the subject's own reference_date (from the subjects file: FHIR has no trial
    anchor). A value the subjects file already has is kept; a Patient that disagrees with it is counted, never
    preferred. A partial birth date (year or year-month) gives no age: that would be a guess of up to a year.
    Two Patients of one subject that disagree fill nothing.
    """
    pats = patients.frame.unique(["study_id", "subject_id", "sex", "birth_date"])
    ambiguous = pats.group_by("study_id", "subject_id").len().filter(pl.col("len") > 1)
    pats = pats.join(ambiguous, on=["study_id", "subject_id"], how="anti").select(
        "study_id", "subject_id", pl.col("sex").alias("_p_sex"), pl.col("birth_date").alias("_p_birth")
    )
    frame = subjects.frame.with_columns(
        _k_study=pl.col("study_id").str.strip_chars(), _k_subject=pl.col("subject_id").str.strip_chars()
    )
    joined = frame.join(
        pats, left_on=["_k_study", "_k_subject"], right_on=["study_id", "subject_id"], how="left", maintain_order="left"
    )
    ref_date, _ = parse_iso_date("reference_date")
    birth = pl.col("_p_birth").str.to_date("%Y-%m-%d", strict=False)
    before_birthday = (ref_date.dt.month() * 100 + ref_date.dt.day()) < (birth.dt.month() * 100 + birth.dt.day())
    age = ref_date.dt.year().cast(pl.Int32) - birth.dt.year().cast(pl.Int32) - before_birthday.cast(pl.Int32)
    has_sex = pl.col("sex").str.strip_chars().fill_null("") != ""
    has_age = pl.col("age_years").str.strip_chars().fill_null("") != ""
    filled = joined.with_columns(_age=age.cast(pl.String)).with_columns(
        sex=pl.when(has_sex).then(pl.col("sex")).otherwise(pl.col("_p_sex")),
        age_years=pl.when(has_age).then(pl.col("age_years")).otherwise(pl.col("_age")),
        _sex_filled=~has_sex & pl.col("_p_sex").is_not_null(),
        _age_filled=~has_age & pl.col("_age").is_not_null(),
        _sex_conflict=has_sex
        & pl.col("_p_sex").is_not_null()
        & (pl.col("sex").str.strip_chars().str.to_uppercase().str.slice(0, 1) != pl.col("_p_sex").str.slice(0, 1)),
        _birth_partial=pl.col("_p_birth").is_not_null() & birth.is_null(),
    )
    notes = {
        **subjects.notes,
        "patients": {
            "path": patients.path,
            "sha256": patients.sha256,
            **patients.notes,
            "sex_filled": int(filled["_sex_filled"].sum()),
            "age_filled": int(filled["_age_filled"].sum()),
            "sex_conflicts_kept_subjects_value": int(filled["_sex_conflict"].sum()),
            "birth_date_partial": int(filled["_birth_partial"].sum()),
            "subjects_with_conflicting_patients": ambiguous.height,
            "patients_without_subject": patients.frame.join(
                frame, left_on=["study_id", "subject_id"], right_on=["_k_study", "_k_subject"], how="anti"
            ).height,
        },
    }
    return InputTable(
        path=subjects.path,
        frame=filled.select(subjects.frame.columns),
        sha256=subjects.sha256,
        extra_columns=subjects.extra_columns,
        fmt=subjects.fmt,
        notes=notes,
        detail=subjects.detail,
        rejected=subjects.rejected,
    )
