"""Typed records: run.json (`RunRecord`, with its `Counts`, `ModelInfo`, `Summary`, ...) and the model card.

Rules and choices:

- One declaration per key. Each field's `description` is the documentation: the run.json section of
  docs/output.md and docs/data-dictionary.json are generated from `RunRecord` (`run_json_keys`), so a key cannot be
  written without being documented, nor documented without existing.
- `schema_version` (`RUN_RECORD_SCHEMA_VERSION`, semantic versioning) is written into every new run.json. A run
  folder made before records were typed has none and reads as `LEGACY_SCHEMA_VERSION` ("0").
- Reading is lenient, writing is strict. Every record allows keys it does not model (`extra="allow"`), so run
  folders and model cards written by older or newer versions still read; a checksummed file is never rewritten to
  fit. The writer refuses a record with a key the models do not declare (`undeclared_keys`), so what a run
  writes is always documented.
- Values keep their JSON type: numbers that may be whole are `int | float` (pydantic would otherwise turn `1`
  into `1.0` and change the file's text), timestamps stay the ISO strings they were written as.
- Optional parts are absent, not null, when a run did not produce them (`summary` on a stopped run, `error` on a
  completed one, `model` on a monitor run): writers dump with `exclude_unset`, readers get None.
- `ModelCard` types models/*/card.json for reading (both card versions shipped); the registry still builds the
  card it writes, and checks it against this model whenever it reads one.
- This module imports pydantic only, so every layer of the package may read records.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field

#: Version of the run.json layout written now (major: a key removed or its meaning changed; minor: a key added).
RUN_RECORD_SCHEMA_VERSION = "1.1"
#: What a run.json written before records were typed reads as (it has no `schema_version`).
LEGACY_SCHEMA_VERSION = "0"
RUN_JSON = "run.json"

#: A JSON number as written: whole numbers stay integers, fractions stay floats.
Number: TypeAlias = int | float


class Record(BaseModel):
    """Base of every record: keys not modelled here are kept (older or newer writers), fields keep their order."""

    model_config = ConfigDict(extra="allow")


# -------------------------------------------------------------------------------------------------- inputs


class InputFile(Record):
    """One input file as the run read it."""

    path: str = Field(description="The path as given on the command line.")
    kind: str = Field(description="`labs`, `subjects`, `visits` or `events`.")
    format: str | None = Field(default=None, description="`native`, `sdtm`, `fhir` or `expression`.")
    sha256: str | None = Field(default=None, description="SHA-256 of the file as read.")
    rows: int | None = Field(default=None, description="Records read.")
    extra_columns: list[str] | None = Field(
        default=None, description="Lab files only: columns outside the contract (ignored)."
    )
    notes: dict[str, Any] = Field(
        default_factory=dict,
        description="What a reader reports beyond the contract (e.g. unmapped identifiers of a crosswalk).",
    )


# -------------------------------------------------------------------------------------------------- counts


class FileCounts(Record):
    """Row accounting of one lab file."""

    kind: str | None = Field(default=None, description="`labs`.")
    rows_read: int = Field(default=0, description="Data rows read from the file.")
    accepted: int = Field(default=0, description="Rows accepted into `harmonised.parquet`.")
    outside_panel: int = Field(default=0, description="Rows whose test is not on the panel.")
    quarantined: int = Field(default=0, description="Rows quarantined.")


class PanelGroupCounts(Record):
    """Lab rows of one analyte group (`panel_group` of analytes.csv)."""

    panel_rows: int = Field(default=0, description="Lab rows of the group's analytes.")
    accepted: int = Field(default=0, description="Of these, accepted.")
    quarantined: int = Field(default=0, description="Of these, quarantined.")


class TableCounts(Record):
    """Accounting of a subjects, visits or events file: refused rows and emptied fields counted apart."""

    path: str | None = Field(default=None, description="The file's path as given.")
    rows_read: int = Field(default=0, description="Rows read: `accepted` + `quarantined`.")
    accepted: int = Field(default=0, description="Rows accepted.")
    quarantined: int = Field(default=0, description="Rows refused (quarantined whole).")
    quarantined_by_reason: dict[str, int] = Field(
        default_factory=dict, description="Refused rows per primary `reason_code`, most frequent first."
    )
    fields_quarantined: int = Field(
        default=0, description="Bad optional fields emptied on accepted rows, each quarantined alone."
    )
    fields_quarantined_by_reason: dict[str, int] = Field(
        default_factory=dict, description="Emptied fields per `reason_code`, most frequent first."
    )


class SelectionSledaiCounts(Record):
    """Where the strata's `sledai_2k` came from."""

    sledai_2k_from_subjects: int = Field(default=0, description="Subjects whose score came from the subjects file.")
    sledai_2k_from_visits: int = Field(default=0, description="Subjects whose score came from their selection visit.")
    sledai_2k_missing: int = Field(default=0, description="Subjects without a score.")
    sledai_2k_disagreements: int = Field(
        default=0, description="Subjects whose file score and selection-visit score are both known and differ."
    )


class FollowUpCounts(Record):
    """Accounting of the follow-up derivations (monitor runs)."""

    activity: dict[str, Any] | None = Field(
        default=None,
        description="SLEDAI-2K per visit: `item_sources` (items from `reported`, `lab`, `missing`) and "
        "`disagreements_by_descriptor` (reported descriptor and lab reading disagree).",
    )
    crs_icans: dict[str, int] | None = Field(
        default=None,
        description="Per toxicity, assessments with a reported grade and disagreements with the derived grade.",
    )
    endpoint_rows: int | None = Field(default=None, description="Rows of `endpoints.parquet`.")
    lab_grades_by_reason: dict[str, int] | None = Field(default=None, description="Graded lab rows per reason code.")


class Counts(Record):
    """Row accounting, each count from its own source: `rows_read` = `accepted` + `outside_panel` + `quarantined`."""

    rows_read: int = Field(default=0, description="Data rows read from all lab files.")
    accepted: int = Field(default=0, description="Lab rows accepted (rows of `harmonised.parquet`).")
    outside_panel: int = Field(default=0, description="Lab rows whose test is not on the panel: ignored, not an error.")
    quarantined: int = Field(default=0, description="Lab rows quarantined (lab rows of `quarantine.parquet`).")
    per_file: dict[str, FileCounts] = Field(
        default_factory=dict,
        description="Per lab file path: its row accounting.",
        json_schema_extra={"keyed_by": "path"},
    )
    outside_panel_by_test: dict[str, int] = Field(
        default_factory=dict, description="Outside-panel rows per reported test, most frequent first."
    )
    quarantined_by_reason: dict[str, int] = Field(
        default_factory=dict, description="Quarantined lab rows per primary `reason_code`, most frequent first."
    )
    panel_groups: dict[str, PanelGroupCounts] = Field(
        default_factory=dict,
        description="Per analyte group (`selection`, `follow_up`; `panel_group` of analytes.csv). The quarantine "
        "ceiling is checked per group (docs/input.md).",
        json_schema_extra={"keyed_by": "group"},
    )
    reader_quarantined: dict[str, Any] | None = Field(
        default=None,
        description="Readers of other formats only: records a reader itself quarantined, per file (included in "
        "`quarantined`).",
    )
    sdtm_baseline_flags: dict[str, Any] | None = Field(
        default=None,
        description="SDTM lab files only: agreement of the baseline chosen here with the file's LBBLFL / LBLOBXFL "
        "flags.",
    )
    subjects: TableCounts | None = Field(
        default=None, description="The subjects file: refused rows and fields emptied on accepted rows, counted apart."
    )
    visits: TableCounts | None = Field(default=None, description="The visits file (`--visits`).")
    events: TableCounts | None = Field(default=None, description="The events file (monitor `--events`).")
    selection_sledai: SelectionSledaiCounts | None = Field(
        default=None, description="Stratify runs: where the strata's `sledai_2k` came from (whichever source won)."
    )
    follow_up: FollowUpCounts | None = Field(default=None, description="Monitor runs: the follow-up derivations.")


# -------------------------------------------------------------------------------------------------- model


class Cutoffs(Record):
    """Probability cut-offs of the responder groups."""

    possible_min: float = Field(description="Lowest probability of the `possible` group.")
    likely_min: float = Field(description="Lowest probability of the `likely` group.")


class ModelInfo(Record):
    """The scoring model a run used (run.json `model`)."""

    model_id: str = Field(description="Registry id of the model used (also in `strata.parquet` `model_id`).")
    sha256: str = Field(description="SHA-256 of its model file, verified before loading.")
    requested: str | None = Field(
        default=None, description="The id or alias asked for (`--model`, default `champion`)."
    )
    features: list[str] = Field(
        default_factory=list, description="The model's features, in order (one `contrib_<feature>` column each)."
    )
    cutoffs: dict[str, float] = Field(
        default_factory=dict,
        description="`possible_min` and `likely_min`: the probability cut-offs of the responder groups.",
    )
    cutoffs_source: str | None = Field(
        default=None, description="`model card`, or `run parameters` when `--possible-min`/`--likely-min` were given."
    )
    scored_from: str | None = Field(default=None, description="`card coefficients`, or `model file` (docs/models.md).")


class DriftFeature(Record):
    """One feature's distribution against the training reference."""

    psi: Number | None = Field(default=None, description="Population stability index.")
    missing_rate: Number | None = Field(default=None, description="Fraction of the cohort missing the feature.")
    reference_missing_rate: Number | None = Field(default=None, description="The same fraction in the training data.")
    flagged: bool = Field(default=False, description="PSI or missing-rate difference above its threshold.")


class Drift(Record):
    """The cohort's feature distributions against the model's training reference."""

    reference_model: str | None = Field(default=None, description="The model whose training reference was compared.")
    reference_available: bool | None = Field(default=None, description="False when the model card has no reference.")
    n: int | None = Field(default=None, description="Subjects compared.")
    threshold: Number | None = Field(default=None, description="PSI above which a feature is flagged.")
    missing_threshold: Number | None = Field(
        default=None, description="Missing-rate difference above which a feature is flagged."
    )
    features: dict[str, DriftFeature] = Field(
        default_factory=dict, description="Per feature.", json_schema_extra={"keyed_by": "feature"}
    )
    flagged: list[str] = Field(default_factory=list, description="Names of the flagged features.")
    note: str | None = Field(default=None, description="Why drift was not assessed, when it was not.")


# -------------------------------------------------------------------------------------------------- summary


class FunnelStep(Record):
    """One eligibility criterion, counted over all subjects (not sequentially)."""

    criterion: str = Field(description="Criterion id.")
    description: str = Field(default="", description="Criterion text from the protocol.")
    passed: int = Field(default=0, description="Subjects meeting it.")
    failed: int = Field(default=0, description="Subjects not meeting it.")
    not_assessable: int = Field(default=0, description="Subjects it could not be assessed for.")


class EndpointRate(Record):
    """An endpoint at a landmark: counts and the rate among the assessable."""

    endpoint: str = Field(description="Endpoint id.")
    landmark: str = Field(description="Landmark id.")
    met: int = Field(default=0, description="Subjects meeting the endpoint.")
    not_met: int = Field(default=0, description="Subjects not meeting it.")
    not_assessable: int = Field(default=0, description="Subjects it could not be assessed for.")
    rate: Number | None = Field(default=None, description="`met` / (`met` + `not_met`); null when none is assessable.")
    responder_group: str | None = Field(default=None, description="By predicted group only: the group.")


class EndpointDefinitionRecord(Record):
    """The endpoint definition a monitor run used (what a later run compares against)."""

    version: str | None = Field(default=None, description="The definition's version.")
    sha256: str | None = Field(default=None, description="SHA-256 of its content.")
    endpoints: list[str] = Field(default_factory=list, description="Endpoint ids.")
    landmarks: list[str] = Field(default_factory=list, description="Landmark ids.")


class ByPredictedGroup(Record):
    """Endpoint rates by the responder group a stratify run predicted before infusion (monitor `--strata`)."""

    strata_run: str | None = Field(default=None, description="The stratify run folder read.")
    model: ModelInfo | None = Field(default=None, description="That run's model entry.")
    rates: list[EndpointRate] = Field(default_factory=list, description="Rates per group, endpoint and landmark.")


class Summary(Record):
    """Counts a reader wants first (completed runs); stratify and monitor runs fill different parts."""

    subjects: int | None = Field(
        default=None, description="Stratify: rows of `strata.parquet`; monitor: subjects followed."
    )
    eligible: dict[str, int] | None = Field(
        default=None, description="Stratify: subjects by `eligible`: `true`, `false`, `not_assessable` (null)."
    )
    responder_groups: dict[str, int] | None = Field(
        default=None, description="Stratify: subjects per `responder_group`, most frequent first."
    )
    missing_baseline_by_analyte: dict[str, int] | None = Field(
        default=None,
        description="Stratify: per core analyte, subjects without a baseline value (anti-dsDNA in either form).",
    )
    eligibility_funnel: list[FunnelStep] | None = Field(
        default=None, description="Stratify: per criterion, in protocol order."
    )
    drift: str | None = Field(default=None, description="Stratify: the drift check in one line.")
    visits: int | None = Field(default=None, description="Monitor: rows of `activity.parquet`.")
    endpoint_definition: EndpointDefinitionRecord | None = Field(
        default=None, description="Monitor: the endpoint definition used."
    )
    endpoints: list[EndpointRate] | None = Field(default=None, description="Monitor: rates per endpoint and landmark.")
    reasons: dict[str, dict[str, int]] | None = Field(
        default=None, description="Monitor: per `<endpoint>@<landmark>`, subjects per reason code."
    )
    by_predicted_group: ByPredictedGroup | None = Field(
        default=None, description="Monitor with `--strata`: rates by predicted responder group."
    )


# -------------------------------------------------------------------------------------------------- changes


class ChangeItem(Record):
    """One change since the previous monitor run, named by the subject's pseudonym (never its identifier)."""

    study_id: str | None = Field(default=None, description="The subject's study.")
    kind: str = Field(description="`toxicity`, `endpoint` or `relapse`.")
    item: str = Field(description="What changed (e.g. the endpoint at a landmark).")
    change: str = Field(description="`new`, `resolved` or `corrected`.")
    day: int | None = Field(default=None, description="Day since infusion of the finding now (else before).")
    day_before: int | None = Field(default=None, description="Day since infusion of the finding before.")
    subject_pseudonym: str | None = Field(default=None, description="The subject's pseudonym.")


class Changes(Record):
    """What changed since the newest earlier completed monitor run covering each study."""

    previous_run: str | None = Field(default=None, description="The run(s) compared with; null when none.")
    not_compared: str | None = Field(
        default=None, description="Why a run was not compared (e.g. another endpoint definition)."
    )
    counts: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="Per kind (toxicity, endpoint, relapse) and change (new, resolved, corrected).",
    )
    items: list[ChangeItem] = Field(default_factory=list, description="Each change; empty without a pseudonym key.")
    note: str | None = Field(default=None, description="Why `items` is empty although changes were counted.")


# -------------------------------------------------------------------------------------------------- run.json


class OutputFile(Record):
    """One Parquet file of the run folder."""

    rows: int = Field(description="Rows written.")
    sha256: str = Field(description="SHA-256 of the file.")


class RunRecord(Record):
    """run.json: one JSON object (keys sorted, 2-space indent), the last file written into a run folder."""

    schema_version: str = Field(
        default=LEGACY_SCHEMA_VERSION,
        description=f"Version of this layout (now `{RUN_RECORD_SCHEMA_VERSION}`); absent in run folders written "
        f"before it was versioned (read as `{LEGACY_SCHEMA_VERSION}`).",
    )
    run_id: str = Field(description="The run's id, also its folder name.")
    status: str = Field(
        description="`completed`, or `failed` when a gate (the quarantine ceiling, drift) stopped the run."
    )
    error: str | None = Field(default=None, description="Failed runs only: why the run stopped.")
    started_at: str | None = Field(default=None, description="Start, ISO 8601 date-time in UTC (`+00:00`).")
    finished_at: str | None = Field(default=None, description="End, ISO 8601 date-time in UTC.")
    as_of: str | None = Field(
        default=None,
        description="The run's as-of date (ISO 8601); later collection dates are quarantined (`DATE_AFTER_AS_OF`).",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="The validated run configuration with defaults filled in, one object per settings section "
        "(`harmonise`, `validation`, `baseline`, `scoring`, `readers`, `publish`, ...).",
    )
    protocol: dict[str, Any] | None = Field(
        default=None, description="The eligibility protocol: `protocol_id`, `version`."
    )
    inputs: list[InputFile] = Field(default_factory=list, description="One object per input file.")
    partitions: int | None = Field(
        default=None, description="Subject partitions the run was split into (1: a single pass)."
    )
    streaming: bool | None = Field(
        default=None, description="Present (true) when the run streamed its partitions from disk."
    )
    versions: dict[str, str] = Field(
        default_factory=dict,
        description="Versions of `immunostrat`, `python` and the pinned stack (polars, pandera, prefect, ...).",
    )
    command: list[str] = Field(default_factory=list, description="The process command line (`sys.argv`).")
    cleaned_up: list[str] | None = Field(
        default=None, description="Leftovers of killed earlier runs removed from the output folder before this run."
    )
    counts: Counts = Field(
        default_factory=Counts,
        description="Row accounting, each count from its own source: `rows_read` = `accepted` + `outside_panel` + "
        "`quarantined` for the lab files; the other input files apart.",
    )
    drift: Drift | None = Field(
        default=None,
        description="Stratify runs: the cohort's feature distributions against the model's training reference "
        "(also on a run that drift stopped, `scoring.fail_on_drift`).",
    )
    model: ModelInfo | None = Field(default=None, description="Stratify runs: the scoring model (known at launch).")
    summary: Summary | None = Field(default=None, description="Counts a reader wants first (completed runs).")
    changes: Changes | None = Field(
        default=None,
        description="Monitor runs: what changed since the newest earlier completed monitor run of the output "
        "folder covering each study, under the same endpoint definition.",
    )
    outputs: dict[str, OutputFile] = Field(
        default_factory=dict, description="Per Parquet file written.", json_schema_extra={"keyed_by": "file"}
    )

    @property
    def completed(self) -> bool:
        """True when the run completed."""
        return self.status == "completed"

    def to_json_dict(self) -> dict[str, Any]:
        """The record as written: only the keys that were set (absent parts stay absent), extras kept."""
        return self.model_dump(mode="python", exclude_unset=True)


class UndeclaredKeyError(ValueError):
    """A writer produced a run.json key that no record declares (so it would be undocumented)."""


def new_run_record(values: Mapping[str, Any]) -> RunRecord:
    """The record a run writes now: `values` validated, stamped with `RUN_RECORD_SCHEMA_VERSION`.

    Raises:
        UndeclaredKeyError: a key (at any depth) that the models do not declare: declare and describe it here.
        pydantic.ValidationError: a value of the wrong type.
    """
    record = RunRecord.model_validate({**values, "schema_version": RUN_RECORD_SCHEMA_VERSION})
    undeclared = list(dict.fromkeys(undeclared_keys(record)))
    if undeclared:
        raise UndeclaredKeyError(f"run.json keys not declared in immunostrat.schemas.records: {', '.join(undeclared)}")
    return record


def as_run_record(run: RunRecord | Mapping[str, Any]) -> RunRecord:
    """`run` as a RunRecord (a dict, e.g. an older caller's parsed run.json, is validated)."""
    return run if isinstance(run, RunRecord) else RunRecord.model_validate(run)


def read_run_record(run_dir: str | Path) -> RunRecord:
    """The run.json of a run folder, of any version."""
    return RunRecord.model_validate_json((Path(run_dir) / RUN_JSON).read_bytes())


# -------------------------------------------------------------------------------------------------- model card


class ModelFileInfo(Record):
    """The model file a card describes."""

    path: str = Field(description="File name inside the model's folder (`model.skops`).")
    sha256: str = Field(description="SHA-256 of the file.")
    format: str = Field(default="skops", description="Serialisation format.")


class ModelCard(Record):
    """models/<model_id>/card.json, TRIPOD-ordered. Version 1 cards lack the sections marked 'version 2'."""

    card_schema_version: int = Field(description="Layout version of the card (1 or 2).")
    model_id: str = Field(description="Registry id.")
    title: str | None = Field(default=None, description="Version 2: what the model predicts, in one line.")
    created_at: str = Field(description="When the model was saved (ISO 8601, UTC).")
    model_file: ModelFileInfo = Field(description="The model file.")
    intended_use: str = Field(description="What the model may be used for.")
    limitations: list[str] = Field(default_factory=list, description="Known limitations.")
    outcome: dict[str, Any] | None = Field(
        default=None, description="Version 2: the outcome column and its definition."
    )
    training_data: dict[str, Any] = Field(default_factory=dict, description="Source of data and participants.")
    features: list[dict[str, Any]] = Field(description="Feature specifications, in model order.")
    missing_data: dict[str, Any] | None = Field(default=None, description="Version 2: missing-data strategy and rates.")
    analysis: dict[str, Any] | None = Field(default=None, description="Version 2: the statistical analysis in words.")
    estimator: dict[str, Any] = Field(default_factory=dict, description="The fitted estimator's parameters.")
    config: dict[str, Any] = Field(default_factory=dict, description="The training configuration.")
    metrics: dict[str, Number | None] = Field(default_factory=dict, description="Headline validation metrics.")
    evaluation: dict[str, Any] | None = Field(
        default=None, description="Version 2: the full evaluation with intervals."
    )
    default_cutoffs: Cutoffs = Field(description="Default probability cut-offs of the responder groups.")
    oof_group_response: dict[str, Any] = Field(
        default_factory=dict, description="Observed response per group in out-of-fold predictions."
    )
    reference: dict[str, Any] | None = Field(
        default=None, description="Version 2: binned training distributions for drift."
    )
    package_versions: dict[str, str] = Field(default_factory=dict, description="Software versions at training.")
    extra: dict[str, Any] | None = Field(default=None, description="Other facts given at training.")


# -------------------------------------------------------------------------------------------------- checks, docs


def undeclared_keys(record: BaseModel, prefix: str = "") -> list[str]:
    """Dotted names of every key in `record` (recursively) that no model declares.

    Free-form values (`dict[str, Any]`) are not descended into: their keys are not part of the layout.
    """
    found = [f"{prefix}{key}" for key in (record.model_extra or {})]
    for name in type(record).model_fields:
        value = getattr(record, name)
        for key, child in _children(value):
            found += undeclared_keys(child, f"{prefix}{name}{key}.")
    return found


def _children(value: Any) -> Iterator[tuple[str, BaseModel]]:
    if isinstance(value, BaseModel):
        yield "", value
    elif isinstance(value, dict):
        yield from ((f".{k}", v) for k, v in value.items() if isinstance(v, BaseModel))
    elif isinstance(value, list):
        yield from (("[]", v) for v in value if isinstance(v, BaseModel))


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _unwrap(annotation: Any) -> list[Any]:
    """The non-null members of a (possibly optional) annotation."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def json_type(annotation: Any) -> str:
    """The JSON type of a field's annotation, as the data dictionary names it."""
    members = _unwrap(annotation)
    names: list[str] = []
    for member in members:
        origin = get_origin(member)
        if origin is Literal:
            name = "string"
        elif origin in (list, tuple) or member in (list, tuple):
            name = "list"
        elif origin is dict or member is dict or (isinstance(member, type) and issubclass(member, BaseModel)):
            name = "object"
        elif member is typing.Any:
            name = "any"
        else:
            name = _SCALARS.get(member, "any")
        if name not in names:
            names.append(name)
    if names == ["integer", "number"]:
        return "number"
    return " or ".join(names)


def _nested(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """(model, key suffix) when a field holds a record, a dict of records or a list of records."""
    for member in _unwrap(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member, ""
        args = get_args(member)
        value_type = args[-1] if args else None
        if not (isinstance(value_type, type) and issubclass(value_type, BaseModel)):
            continue
        if get_origin(member) is dict:
            return value_type, ".<{}>"
        if get_origin(member) is list:
            return value_type, "[]"
    return None


def record_keys(
    model: type[BaseModel], prefix: str = "", seen: dict[type[BaseModel], str] | None = None
) -> list[dict[str, str]]:
    """Every key of `model`, nested records included (dotted; `<name>` for a dict's keys, `[]` for list items).

    A record met a second time is not expanded again: its entry points to the first place it is documented.
    """
    seen = {} if seen is None else seen
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        entry = {"key": key, "type": json_type(field.annotation), "meaning": field.description or ""}
        keys.append(entry)
        nested = _nested(field.annotation)
        if nested is None:
            continue
        child, suffix = nested
        if child in seen:
            entry["meaning"] += f" Keys as `{seen[child]}`."
            continue
        seen[child] = key
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        keys += record_keys(child, key + suffix.format(extra.get("keyed_by", "key")) + ".", seen)
    return keys


def run_json_keys() -> list[dict[str, str]]:
    """The documented keys of run.json (docs/output.md, docs/data-dictionary.json `run_json_keys`)."""
    return record_keys(RunRecord)
