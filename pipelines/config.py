"""Typed run configuration, validated at launch.

Every field carries a description: Prefect renders these models as the run form, and
`tests/test_config.py` fails if a field has none (the nf-core `schema_description` lint, in Python).
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from immunostrat.errors import SettingsError
from immunostrat.modeling import TrainingConfig
from immunostrat.publish import PublishConfig

ModelT = TypeVar("ModelT", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HarmoniseConfig(_Model):
    """How reported tests, results, units and dates are mapped onto the biomarker panel."""

    alias_file: Path | None = Field(
        default=None,
        description="Optional CSV (columns `code`, `analyte`) of extra test names that map to panel analytes, "
        "on top of the built-in LOINC, CDISC and canonical codes.",
    )
    ifn_default_method: str | None = Field(
        default=None,
        description="IFN-signature method assumed for `ifn_score` rows that name no method (it must be one of the "
        "known methods). Leave empty to quarantine such scores (IFN_METHOD_UNKNOWN): scores from different "
        "methods are on different scales and are never guessed or pooled.",
    )


class ValidationConfig(_Model):
    """Rules that decide which harmonised rows are accepted and which are quarantined."""

    as_of: dt.date = Field(
        default_factory=dt.date.today,
        description="The run's reference day: a measurement dated after it is quarantined. Recorded in run.json "
        "so that a re-run with the same value is deterministic.",
    )
    max_quarantine_fraction: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Fail the run when more than this fraction of panel rows (rows not outside the panel) is "
        "quarantined.",
    )
    require_enrolled_subject: bool = Field(
        default=True,
        description="Quarantine lab rows whose (study_id, subject_id) is not in the subjects file, when one is given.",
    )


class BaselineConfig(_Model):
    """Baseline window and the cut-offs used for derived flags when a lab gives no reference range."""

    window_days_before: int = Field(
        default=90, ge=0, description="Earliest baseline measurement, in days before `reference_date`."
    )
    window_days_after: int = Field(
        default=0, ge=0, description="Latest baseline measurement, in days after `reference_date`."
    )
    anti_dsdna_default_cutoff: float = Field(
        default=30.0,
        gt=0,
        description="Anti-dsDNA positivity cut-off in IU/mL when the row has no `ref_high` (>= this value is "
        "positive; the ELISA cut-off used by KYSA-1 and the belimumab trials).",
    )
    c3_default_lln: float = Field(
        default=0.9, gt=0, description="Lower limit of normal for C3 in g/L when the row has no `ref_low`."
    )
    c4_default_lln: float = Field(
        default=0.16, gt=0, description="Lower limit of normal for C4 in g/L when the row has no `ref_low`."
    )
    ifn_methods_file: Path | None = Field(
        default=None,
        description="CSV of IFN-signature methods and their high cut-offs (columns `method`, `high_cutoff`, "
        "`inclusive`); defaults to the built-in table in schemas/reference/ifn_methods.csv.",
    )


class ScoringConfig(_Model):
    """Which model scores the cohort and how probabilities become responder groups."""

    model: str = Field(default="champion", description="Model id or registry alias to score with.")
    registry: Path | None = Field(
        default=None,
        description="Model registry folder; defaults to the models shipped with immunostrat "
        "(or $IMMUNOSTRAT_MODEL_REGISTRY).",
    )
    possible_min: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest probability in the `possible` group; defaults to the model card's cut-off.",
    )
    likely_min: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Lowest probability in the `likely` group; defaults to the model card's cut-off.",
    )

    drift_threshold: float = Field(
        default=0.2,
        gt=0,
        description="Flag a feature whose population stability index against the model's training reference "
        "exceeds this (0.1-0.2: moderate shift, above 0.2: large).",
    )
    drift_missing_threshold: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Flag a feature whose missing rate differs from training by more than this fraction.",
    )
    fail_on_drift: bool = Field(
        default=False,
        description="Stop the run (status failed, no strata) when any feature is flagged; by default drift is "
        "only reported in run.json and the run summary.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ScoringConfig:
        if (self.possible_min is None) != (self.likely_min is None):
            raise ValueError("set both possible_min and likely_min, or neither")
        if self.possible_min is not None and self.likely_min is not None and self.possible_min > self.likely_min:
            raise ValueError(f"possible_min ({self.possible_min}) must not exceed likely_min ({self.likely_min})")
        return self


class ReadersConfig(_Model):
    """Options of the non-native readers: CDISC SDTM, HL7 FHIR and gene-expression IFN scores."""

    study_id: str | None = Field(
        default=None, description="Study of FHIR rows whose Patient the crosswalk does not map (FHIR has no study)."
    )
    crosswalk: Path | None = Field(
        default=None,
        description="CSV with columns source, source_id, study_id, subject_id. For each source it covers, "
        "identifiers it does not know are quarantined (SUBJECT_NOT_IN_CROSSWALK), never guessed.",
    )
    reference_date_from: Literal["RFSTDTC", "RFICDTC"] = Field(
        default="RFSTDTC", description="The SDTM DM date that anchors the baseline window."
    )
    ifn_method: str = Field(
        default="MEDIAN_FC_4",
        description="Method for IFN scores computed from an expression matrix (MEDIAN_FC_4, MEDIAN_FC_6, MEAN_Z, "
        "or a custom name with ifn_genes and ifn_statistic).",
    )
    ifn_genes: list[str] | None = Field(default=None, description="Gene set of a custom IFN method.")
    ifn_statistic: Literal["median_fc", "mean_z"] | None = Field(
        default=None, description="Statistic of a custom IFN method."
    )
    min_controls: int = Field(default=5, ge=2, description="Fewest healthy controls accepted in an expression run.")
    log2_max: float = Field(
        default=30.0, gt=0, description="An expression value above this means the matrix is not on a log2 scale."
    )


class RunConfig(_Model):
    """Everything a stratify run needs besides its input files."""

    harmonise: HarmoniseConfig = Field(default_factory=HarmoniseConfig, description="Mapping onto the panel.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Acceptance rules.")
    baseline: BaselineConfig = Field(default_factory=BaselineConfig, description="Baseline derivation.")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig, description="Responder scoring.")
    readers: ReadersConfig = Field(default_factory=ReadersConfig, description="SDTM, FHIR and expression readers.")
    publish: PublishConfig = Field(
        default_factory=PublishConfig,
        description="Sponsor snapshot: pseudonym key, privacy settings, report (docs/sponsor.md).",
    )


class InputFiles(_Model):
    """The input files a run reads (shared by stratify and train)."""

    labs: list[str] = Field(min_length=1, description="Lab-result files (CSV or Parquet, native contract).")
    subjects: str = Field(description="Subjects file (CSV or Parquet) with reference dates.")
    lab_format: Literal["native", "sdtm", "fhir"] | None = Field(
        default=None, description="Format of the lab files; empty detects it from each file's content."
    )
    expression: list[str] = Field(
        default_factory=list, description="Expression matrices (samples x genes, log2) to compute IFN scores from."
    )
    samples: str | None = Field(default=None, description="Sample sheet of the expression matrices.")
    patients: str | None = Field(
        default=None, description="FHIR Patient resources that fill missing sex and age in the subjects file."
    )


class StratifyParams(InputFiles):
    """Inputs and options of one stratify run."""

    out: str = Field(description="Output folder; each run writes a new sub-folder named by its run id.")
    protocol: str | None = Field(default=None, description="Eligibility protocol YAML; the built-in default if empty.")
    config: RunConfig = Field(default_factory=RunConfig, description="Harmonisation, validation, baseline, scoring.")
    partitions: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Split the cohort into this many subject partitions (by a hash of study and subject id) and "
        "run the stages per partition; results are identical to one pass. Above 1, the Prefect flow runs one task "
        "per partition on a Dask cluster.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Address of an existing Dask scheduler (e.g. tcp://10.0.0.5:8786) for partitioned runs; "
        "empty starts a local cluster for the run.",
    )
    streaming: bool | None = Field(
        default=None,
        description="Out-of-core mode: native lab files are split on disk by subject partition in one streaming "
        "pass, and partitions are processed one at a time, so peak memory is bounded by a partition, not the "
        "cohort. Outputs hold the same rows and values as a single pass, ordered partition by partition (source "
        "order within each). Empty (default): on when `partitions` is 1 and the native lab files hold more than "
        "`partition_rows` rows.",
    )
    partition_rows: int = Field(
        default=1_000_000,
        ge=10_000,
        description="Streaming mode: target lab rows per partition (sets the partition count when `partitions` is "
        "1). About 1.5 GB of memory per million rows.",
    )


class TrainParams(InputFiles):
    """Inputs and options of one training run."""

    outcomes: str = Field(description="Outcomes file: study_id, subject_id, responded, endpoint.")
    registry: str | None = Field(default=None, description="Model registry folder; the shipped one if empty.")
    alias: str | None = Field(default=None, description="Point this alias (e.g. champion) at the new model.")
    intended_use: str = Field(
        default="Research use: ranking candidate subjects for review. Not validated for clinical decisions.",
        description="Intended use, written into the model card.",
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig,
        description="Estimator, features, validation, calibration, cut-offs and evaluation; profile 'small' for CI "
        "(docs/models.md).",
    )
    config: RunConfig = Field(default_factory=RunConfig, description="Harmonisation, validation and baseline options.")


# --------------------------------------------------------------------------------------------------
# Eligibility protocol
# --------------------------------------------------------------------------------------------------

Operator = Literal["ge", "gt", "le", "lt", "between", "eq", "in", "is_true", "is_false"]


class Criterion(_Model):
    """One inclusion rule: it passes when `column <op> value` holds for the subject."""

    id: str = Field(description="Stable identifier, reported in `criteria_failed` / `criteria_not_assessable`.")
    description: str = Field(description="What the criterion means, in words.")
    column: str = Field(description="Column of the strata table the rule reads.")
    op: Operator = Field(description="Comparison: ge, gt, le, lt, between, eq, in, is_true or is_false.")
    value: float | str | list[float] | list[str] | None = Field(
        default=None, description="Threshold; a [low, high] pair for `between`, a list for `in`."
    )

    @model_validator(mode="after")
    def _value_fits_op(self) -> Criterion:
        if self.op in ("is_true", "is_false"):
            if self.value is not None:
                raise ValueError(f"criterion {self.id!r}: op {self.op} takes no value")
        elif self.op == "between":
            if not (isinstance(self.value, list) and len(self.value) == 2):
                raise ValueError(f"criterion {self.id!r}: op between needs value [low, high]")
            if sorted(self.value) != self.value:
                raise ValueError(f"criterion {self.id!r}: op between needs low <= high, got {self.value}")
        elif self.op == "in":
            if not (isinstance(self.value, list) and self.value):
                raise ValueError(f"criterion {self.id!r}: op in needs a non-empty list value")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"criterion {self.id!r}: op {self.op} needs a single value")
        return self


class Protocol(_Model):
    """A versioned eligibility protocol: all criteria must pass for a subject to be eligible."""

    protocol_id: str = Field(description="Protocol identifier.")
    version: str = Field(description="Protocol version; recorded in every run.")
    description: str = Field(default="", description="Free-text summary and sources.")
    criteria: list[Criterion] = Field(min_length=1, description="Inclusion rules, all required.")

    @field_validator("criteria")
    @classmethod
    def _unique_ids(cls, criteria: list[Criterion]) -> list[Criterion]:
        ids = [c.id for c in criteria]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"criterion ids must be unique; repeated: {', '.join(dupes)}")
        return criteria


def default_protocol_path() -> Path:
    """The built-in protocol, modelled on registered CAR-T SLE trials."""
    return Path(str(resources.files("immunostrat") / "protocols" / "protocol_default.yaml"))


def read_yaml_mapping(path: str | Path, what: str, *, allow_empty: bool = True) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is `{}` when `allow_empty`), or a SettingsError naming the
    file and the problem."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if loaded is None and allow_empty:
        return {}
    if not isinstance(loaded, dict):
        raise SettingsError(f"{what} {path} must hold a mapping, got {type(loaded).__name__}")
    return loaded


def validated(model: type[ModelT], data: Any, where: str) -> ModelT:
    """`model.model_validate(data)`, or a SettingsError naming the first bad setting and what was expected."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SettingsError(f"{where}: {setting}: {first['msg']}{more}") from exc


def load_protocol(path: Path | None = None) -> Protocol:
    """Read and validate a protocol YAML file (the built-in default when `path` is None).

    Raises:
        SettingsError: the file cannot be read, is not YAML holding a mapping, or breaks the protocol's schema.
    """
    source = path or default_protocol_path()
    return validated(Protocol, read_yaml_mapping(source, "protocol file", allow_empty=False), f"protocol file {source}")
