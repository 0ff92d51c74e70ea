"""Typed run configuration, validated at launch.

Every field carries a description: Prefect renders these models as the run form, and
`tests/test_config.py` fails if a field has none (the nf-core `schema_description` lint, in Python).

It is one module because the run configuration is one nested model: its sections are validated together at launch
and rendered together as Prefect's run form.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from immunostrat.config.endpoints import EndpointDefinition, load_endpoint_definition
from immunostrat.config.features import DEFAULT_FEATURES
from immunostrat.config.followup import (
    CrsIcansConfig,
    EventsConfig,
    FollowUpConfig,
    IcahtConfig,
    ImmuneCourseConfig,
    LabGradesConfig,
)
from immunostrat.config.yaml_files import safe_load
from immunostrat.errors import SettingsError

ModelT = TypeVar("ModelT", bound=BaseModel)

Subgroup = Literal["sex", "age_band", "site_id", "study_id", "ifn_high"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: The same settings for a model that only some commands validate (a protocol, training, evaluation, monitor): its
#: validator is built when it is first used, not at import, so `validate` never pays for building it.
ON_FIRST_USE = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# --------------------------------------------------------------------------------------------------
# Publishing, evaluation and training settings (their modules re-export them)
# --------------------------------------------------------------------------------------------------


class PublishConfig(BaseModel):
    """How a run is published for sponsors: pseudonym key, what is coarsened, the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Publish the sponsor snapshot (data, manifest, dictionary, report) at the end of every "
        "completed stratify run. `immunostrat publish RUN` publishes an existing run.",
    )
    key_file: Path | None = Field(
        default=None,
        description="File holding the project's pseudonym key, outside any repository and readable by its owner "
        "only (mode 0600). Used when $IMMUNOSTRAT_PSEUDONYM_KEY is not set; $IMMUNOSTRAT_PSEUDONYM_KEY_FILE is "
        "the fallback. Without a key, publishing stops with an error.",
    )
    demo_key: bool = Field(
        default=False,
        description="Demo only: when no key is configured, create a local key file on first use "
        "($XDG_CONFIG_HOME or ~/.config, then immunostrat/demo-pseudonym.key) and use it. Never for real data.",
    )
    site: Literal["pseudonymise", "keep", "drop"] = Field(
        default="pseudonymise",
        description="Site in the sponsor data: `pseudonymise` (keyed hash per study and site; default, since a "
        "site of a small trial can identify a subject), `keep` (site id as sent) or `drop` (null).",
    )
    dates: Literal["study_day", "shift"] = Field(
        default="study_day",
        description="Dates are always published as study days counted from the reference date (`*_day`); "
        "`shift` also publishes the reference date moved by a keyed per-subject offset "
        "(`reference_date_shifted`).",
    )
    max_shift_days: int = Field(
        default=182,
        ge=1,
        le=3650,
        description="With `dates: shift`: the per-subject offset is drawn uniformly within +/- this many days.",
    )
    age_bands: tuple[int, ...] = Field(
        default=(18, 30, 40, 50, 60, 65),
        min_length=1,
        description="Lower edges of the age bands, strictly increasing, in years: the default gives `<18`, "
        "`18-29`, `30-39`, `40-49`, `50-59`, `60-64` and `65+`.",
    )
    min_cell_count: int = Field(
        default=5,
        ge=1,
        description="The report suppresses any count of subjects from 1 up to this value minus one (shown as "
        "`<5`), and any further cell that would let a reader recompute one from a total (shown as `*`).",
    )
    report: bool = Field(default=True, description="Write the HTML report into the snapshot (`sponsor/report.html`).")
    team_sections: bool = Field(
        default=False,
        description="Monitor runs: also publish the follow-up report's team-only sections (what changed, the "
        "swimmer plot with pseudonym-prefixed lanes) in the sponsor's copy. Default false: aggregates only.",
    )
    chunk_subjects: int = Field(
        default=250_000,
        ge=100,
        description="Runs with more subjects are published chunk by chunk, so memory stays bounded: each study's "
        "data is then written as 16 files by the first hex digit of the pseudonym (together still in pseudonym "
        "order).",
    )

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, edges: tuple[int, ...]) -> tuple[int, ...]:
        if edges[0] < 1 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"age_bands must be strictly increasing whole years from 1 up, got {list(edges)}")
        return edges


class EvaluationConfig(BaseModel):
    """How predictions are evaluated: bootstrap, subgroups, calibration table."""

    model_config = ON_FIRST_USE

    n_bootstrap: int = Field(
        default=1000,
        ge=0,
        description="Bootstrap resamples for the 95 % intervals (0: point estimates only). The full default is "
        "1,000; the small CI profile uses 200.",
    )
    ci_level: float = Field(default=0.95, gt=0.5, lt=1.0, description="Coverage of the percentile intervals.")
    seed: int = Field(default=0, ge=0, description="Seed of the bootstrap resampling.")
    subgroups: tuple[Subgroup, ...] = Field(
        default=("sex", "age_band", "site_id", "ifn_high"),
        description="Subgroup variables reported separately (sex, age_band, site_id, study_id, ifn_high); a "
        "variable whose column the data lacks is skipped and noted.",
    )
    age_band_edges: tuple[float, ...] = Field(
        default=(30.0, 45.0, 60.0),
        description="Ages (years) where age bands start: (30, 45, 60) gives <30, 30 to <45, 45 to <60, >=60.",
    )
    calibration_bins: int = Field(
        default=10, ge=2, le=100, description="Bins (equal-count, by predicted probability) of the calibration table."
    )

    @field_validator("age_band_edges")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"age_band_edges must be strictly increasing, got {value}")
        return value

    @field_validator("subgroups")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"subgroups must be unique, got {value}")
        return value


_PROFILES: dict[str, dict[str, Any]] = {
    # Full: what `immunostrat train` does by default and what the shipped demo model uses.
    "full": {},
    # Small: for CI and tests; the same procedure with one CV repeat, 3 inner folds and 200 resamples.
    "small": {"cv_repeats": 1, "inner_cv_folds": 3, "evaluation": {"n_bootstrap": 200}},
}


class TrainingConfig(BaseModel):
    """The typed training configuration: estimator, features, validation, calibration, cut-offs, evaluation.

    ``profile`` fills in the fields you do not set: ``full`` (default; 5x5 repeated grouped CV, 1,000 bootstrap
    resamples) or ``small`` (1 repeat, 3 inner folds, 200 resamples) for CI. Fields you set always win.
    """

    model_config = ON_FIRST_USE

    profile: Literal["full", "small"] = Field(
        default="full",
        description="Preset for the fields left unset: full (5 CV repeats, 5 inner folds, 1,000 bootstrap "
        "resamples) or small (1 repeat, 3 inner folds, 200 resamples; for CI and tests).",
    )
    estimator: Literal["logistic"] = Field(
        default="logistic",
        description="Estimator family. Only 'logistic' (standardised, penalised logistic regression): scoring "
        "reports exact additive per-feature logit contributions, which only a linear logit model gives.",
    )
    features: tuple[str, ...] = Field(
        default=tuple(f.name for f in DEFAULT_FEATURES),
        description="Names of the features the model uses, in column order (default: all DEFAULT_FEATURES).",
    )
    missing: Literal["complete_case"] = Field(
        default="complete_case",
        description="Missing-value strategy. complete_case: subjects missing any feature are left out of fitting "
        "and are 'not_assessable' when scored (nothing is imputed).",
    )
    C: float = Field(default=1.0, gt=0, description="Inverse regularisation strength of the logistic regression.")
    l1_ratio: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Elastic-net mixing: 0 = L2 (ridge, newton-cholesky solver), 1 = L1 (lasso), in between = "
        "elastic net (saga solver).",
    )
    tuning_grid: tuple[float, ...] = Field(
        default=(),
        description="Values of C to tune over by inner grouped CV (nested inside every outer fold); empty = no "
        "tuning, C is used as given.",
    )
    tuning_scoring: Literal["neg_log_loss", "roc_auc", "neg_brier_score"] = Field(
        default="neg_log_loss", description="scikit-learn scorer that picks C when tuning_grid is given."
    )
    calibration: Literal["sigmoid", "none"] = Field(
        default="sigmoid",
        description="Probability calibration: sigmoid = Platt scaling fitted on inner out-of-fold decision values "
        "(CalibratedClassifierCV, ensemble=False); the model stays linear on the logit scale, so per-feature "
        "contributions still add up exactly. none = the logistic regression's own probabilities.",
    )
    cv_folds: int = Field(default=5, ge=2, description="Folds of the outer (validation) cross-validation.")
    cv_repeats: int = Field(
        default=5,
        ge=1,
        description="Repeats of the outer CV, each with a new shuffle; out-of-fold probabilities are averaged over "
        "repeats.",
    )
    inner_cv_folds: int = Field(
        default=5,
        ge=2,
        description="Folds of the inner CV used for calibration and tuning (capped by the number of groups and "
        "of subjects in the smaller class).",
    )
    group_by: Literal["site_id", "study_id"] | None = Field(
        default="site_id",
        description="Column whose values never straddle training and validation folds (StratifiedGroupKFold); "
        "None = subjects are the only unit (StratifiedKFold). Used when the training data has the column.",
    )
    seed: int = Field(default=0, ge=0, description="Random seed of fold shuffling (CV, inner CV) and solvers.")
    group_quantiles: tuple[float, float] = Field(
        default=(1 / 3, 2 / 3),
        description="Quantiles of the out-of-fold probability that become the possible_min and likely_min "
        "cut-offs (rounded to 2 decimals).",
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig,
        description="Bootstrap intervals, subgroups and calibration table of the internal validation.",
    )
    drift_bins: int = Field(
        default=10, ge=2, le=50, description="Equal-count bins of the per-feature training reference used for drift."
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        preset = _PROFILES.get(str(data.get("profile", "full")), {})
        merged = dict(data)
        for key, value in preset.items():
            if key == "evaluation":
                given = merged.get("evaluation")
                if isinstance(given, EvaluationConfig):
                    given = given.model_dump(exclude_unset=True)
                merged["evaluation"] = {**value, **(given or {})}
            else:
                merged.setdefault(key, value)
        return merged

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one feature is required")
        if len(set(value)) != len(value):
            raise ValueError(f"feature names must be unique, got {list(value)}")
        return value

    @field_validator("tuning_grid")
    @classmethod
    def _positive_grid(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(c <= 0 for c in value):
            raise ValueError(f"tuning_grid values (C) must be > 0, got {value}")
        return value

    @model_validator(mode="after")
    def _ordered_quantiles(self) -> TrainingConfig:
        low, high = self.group_quantiles
        if not 0.0 < low < high < 1.0:
            raise ValueError(f"group_quantiles must satisfy 0 < low < high < 1, got {self.group_quantiles}")
        return self


#: Former name, kept for callers written before TrainingConfig grew validation and evaluation settings.
TrainConfig = TrainingConfig


# --------------------------------------------------------------------------------------------------
# Run configuration
# --------------------------------------------------------------------------------------------------


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
    urine_tntc_above: float = Field(
        default=50.0,
        gt=0,
        description="Urine sediment counts (urine_rbc, urine_wbc, urine_casts) reported as TNTC (too numerous to "
        "count) are read as above this value (censoring `>`): above any threshold at or below it. A choice, not a "
        "clinical fact.",
    )
    urine_count_words: dict[str, tuple[float, float | None]] = Field(
        default_factory=dict,
        description="How words in urine sediment counts are read, word -> [low, high] per field (high null: no "
        'upper bound), e.g. {"few": [1, 5], "many": [20, null]}; matched case-insensitively. Empty by default: '
        "a word is never guessed, and an unmapped word is quarantined (RESULT_WORD_UNMAPPED).",
    )

    @field_validator("urine_count_words")
    @classmethod
    def _words_are_intervals(
        cls, words: dict[str, tuple[float, float | None]]
    ) -> dict[str, tuple[float, float | None]]:
        for word, (low, high) in words.items():  # a handful of configured words
            if not word.strip():
                raise ValueError("a urine count word must not be empty")
            if low < 0 or (high is not None and high < low):
                raise ValueError(f"urine count word {word!r}: need 0 <= low <= high, got [{low}, {high}]")
        return words


PanelGroup = Literal["selection", "follow_up"]


class VisitsConfig(_Model):
    """How a visits file (SLEDAI-2K descriptors, PGA, treatment per assessment) is read (docs/input.md, Visits)."""

    descriptor_encoding: Literal["boolean", "weight"] = Field(
        default="boolean",
        description="How the 24 SLEDAI-2K descriptor columns are written: `boolean` (true/false, 1/0, yes/no, Y/N) "
        "or `weight` (0 or the descriptor's SLEDAI-2K weight, as some sources export them). Never guessed: a "
        "cell the encoding does not know is quarantined as that field (DESCRIPTOR_INVALID) and read as unknown.",
    )
    max_prednisone_mg_day: float = Field(
        default=1500.0,
        gt=0,
        description="Largest plausible daily glucocorticoid dose (prednisolone-equivalent mg/day); a larger "
        "`prednisone_mg_day` is quarantined as that field (PREDNISONE_INVALID), as a likely unit or typing error. "
        "The default admits a methylprednisolone pulse of 1 g (1250 mg prednisolone-equivalent).",
    )
    max_immunosuppressants: int = Field(
        default=10,
        ge=1,
        description="Largest plausible number of immunosuppressants ongoing at one visit; a larger "
        "`immunosuppressants` is quarantined as that field (IMMUNOSUPPRESSANTS_INVALID).",
    )


class ValidationConfig(_Model):
    """Rules that decide which harmonised rows are accepted and which are quarantined."""

    as_of: dt.date = Field(
        default_factory=dt.date.today,
        description="The run's reference day: a measurement dated after it is quarantined. Recorded in run.json "
        "so that a re-run with the same value is deterministic. Unset: today, in `as_of_timezone` when given.",
    )
    as_of_timezone: str | None = Field(
        default=None,
        description="IANA time zone in which an unset `as_of` (today) is evaluated, e.g. Europe/Berlin; default the "
        "machine's. `serve` sets each schedule's time zone, so a run at 00:30 in Berlin uses Berlin's date.",
    )

    @model_validator(mode="before")
    @classmethod
    def _today_in_zone(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("as_of") is None and data.get("as_of_timezone"):
            try:
                zone = ZoneInfo(str(data["as_of_timezone"]))
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown IANA time zone {data['as_of_timezone']!r} (e.g. Europe/Berlin)") from exc
            data = {**data, "as_of": dt.datetime.now(zone).date()}
        return data

    max_quarantine_fraction: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Fail the run when more than this fraction of a panel group's rows (rows not outside the "
        "panel) is quarantined. The ceiling applies per analyte group (`panel_group` of analytes.csv): stratify, "
        "validate and train check the selection group, so messy follow-up analytes never stop a selection run.",
    )
    max_quarantine_fraction_by_group: dict[PanelGroup, float] = Field(
        default_factory=dict,
        description="A ceiling per panel group (`selection`, `follow_up`), in place of max_quarantine_fraction for "
        "that group. A group named here is checked by every run, including runs that would not check it otherwise "
        "(e.g. {follow_up: 0.25} makes stratify stop on messy follow-up analytes too).",
    )

    @field_validator("max_quarantine_fraction_by_group")
    @classmethod
    def _fractions(cls, ceilings: dict[str, float]) -> dict[str, float]:
        for group, fraction in ceilings.items():
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"ceiling of {group}: must be between 0 and 1, got {fraction}")
        return ceilings

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
    visits: VisitsConfig = Field(default_factory=VisitsConfig, description="How the visits file is read.")
    followup: FollowUpConfig = Field(
        default_factory=FollowUpConfig, description="SLEDAI-2K from items and labs; the two baselines (follow-up)."
    )
    events: EventsConfig = Field(default_factory=EventsConfig, description="How the events file is checked.")
    immune_course: ImmuneCourseConfig = Field(
        default_factory=ImmuneCourseConfig,
        description="B-cell aplasia and return, serology, IgG, flares, LICATS (docs/immune_course.md).",
    )
    lab_grades: LabGradesConfig = Field(
        default_factory=LabGradesConfig, description="CTCAE v5 laboratory grades (docs/toxicity.md)."
    )
    crs_icans: CrsIcansConfig = Field(default_factory=CrsIcansConfig, description="ASTCT 2019 CRS and ICANS grades.")
    icaht: IcahtConfig = Field(default_factory=IcahtConfig, description="ICAHT and its platelet companion grades.")
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
    visits: str | None = Field(
        default=None,
        description="Visits file (CSV or Parquet): SLEDAI-2K descriptors, physician global assessment and treatment "
        "per subject and assessment date (docs/input.md). stratify takes the selection-baseline SLEDAI-2K from it; "
        "monitor needs it.",
    )
    events: str | None = Field(
        default=None,
        description="Events file (CSV or Parquet): CRS and ICANS assessments per subject and time (docs/input.md, "
        "Events); monitor grades them (ASTCT 2019).",
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


class MonitorParams(StratifyParams):
    """Inputs and options of one monitor run (follow-up after infusion): a stratify run's inputs plus visits."""

    model_config = ON_FIRST_USE

    strata: str | None = Field(
        default=None,
        description="Run folder of the stratify run made before infusion: endpoint rates are reported by the "
        "responder group it predicted, with its model id (never by re-scoring with today's model).",
    )


class TrainParams(InputFiles):
    """Inputs and options of one training run."""

    model_config = ON_FIRST_USE

    outcomes: str | None = Field(
        default=None,
        description="Outcomes file: study_id, subject_id, responded, endpoint. Give it, or `endpoint` and `landmark`.",
    )
    endpoint: str | None = Field(
        default=None,
        description="Derive `responded` from this endpoint of the visits (e.g. drug_free_doris_remission), as "
        "`monitor` derives it; subjects pending, not applicable or not assessable are left out and counted in the "
        "model card.",
    )
    landmark: str | None = Field(default=None, description="Landmark of `endpoint` (e.g. month_6).")
    protocol: str | None = Field(
        default=None, description="Protocol YAML (eligibility and the endpoint definition); the built-in if empty."
    )
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

    @model_validator(mode="after")
    def _one_label_source(self) -> TrainParams:
        if (self.outcomes is None) == (self.endpoint is None):
            raise ValueError("give an outcomes file or an endpoint (with its landmark and a visits file), not both")
        if self.endpoint is not None and (self.landmark is None or self.visits is None):
            raise ValueError("an endpoint needs its landmark (e.g. month_6) and a visits file to derive it from")
        return self


class EvaluateParams(InputFiles):
    """Inputs and options of `evaluate` and `models compare`: a labelled cohort, its run configuration (the model,
    registry and drift threshold are its `scoring` settings) and the evaluation settings."""

    model_config = ON_FIRST_USE

    outcomes: str = Field(description="Outcomes file (study_id, subject_id, responded, endpoint).")
    config: RunConfig = Field(default_factory=RunConfig, description="Harmonisation, validation, baseline, scoring.")
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="Bootstrap intervals, subgroups and calibration table."
    )


# --------------------------------------------------------------------------------------------------
# Eligibility protocol
# --------------------------------------------------------------------------------------------------

Operator = Literal["ge", "gt", "le", "lt", "between", "eq", "in", "is_true", "is_false"]


class Criterion(_Model):
    """One inclusion rule: it passes when `column <op> value` holds for the subject."""

    model_config = ON_FIRST_USE

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

    model_config = ON_FIRST_USE

    protocol_id: str = Field(description="Protocol identifier.")
    version: str = Field(description="Protocol version; recorded in every run.")
    description: str = Field(default="", description="Free-text summary and sources.")
    criteria: list[Criterion] = Field(min_length=1, description="Inclusion rules, all required.")
    endpoints: EndpointDefinition = Field(
        default_factory=load_endpoint_definition,
        description="Response endpoints at landmarks (monitor, train --endpoint); the built-in definition "
        "(pipelines/protocols/endpoints_default.yaml, docs/endpoints.md) when absent.",
    )

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
        loaded = safe_load(Path(path).read_text(encoding="utf-8"))
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
