"""The typed, versioned definition of the response endpoints at landmarks (issue 12).

It is the `endpoints:` section of a protocol file; `pipelines/protocols/endpoints_default.yaml` holds the
default, with its sources and their disagreements in comments, and `docs/endpoints.md` explains each choice.
Every threshold a source marks uncertain, or that is a choice, is a setting here; the rules themselves (what a
threshold is compared with, three-valued logic, the visit choice) live in `immunostrat.followup.endpoints`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from immunostrat.config.yaml_files import safe_load
from immunostrat.errors import SettingsError

__all__ = [
    "ENDPOINT_NAMES",
    "LN_CLASSES",
    "DorisSettings",
    "DrugFreeDorisSettings",
    "EndpointDefinition",
    "EndpointName",
    "IntercurrentEvents",
    "Landmark",
    "LldasSettings",
    "Msri4Settings",
    "RenalPopulation",
    "RenalResponseSettings",
    "Threshold",
    "default_endpoint_definition_path",
    "load_endpoint_definition",
]

EndpointName = Literal[
    "doris_remission", "drug_free_doris_remission", "lldas", "msri4", "complete_renal_response", "perr"
]
#: Every endpoint this module knows, in report order.
ENDPOINT_NAMES: tuple[str, ...] = (
    "doris_remission",
    "drug_free_doris_remission",
    "lldas",
    "msri4",
    "complete_renal_response",
    "perr",
)
#: ISN/RPS lupus nephritis classes the subjects file accepts (as `immunostrat.schemas.outputs.LN_CLASSES`).
LN_CLASSES: tuple[str, ...] = ("NONE", "I", "II", "III", "IV", "V", "VI", "III+V", "IV+V")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Model(BaseModel):
    # Built when first used (a protocol's endpoints, monitor, train by endpoint), not at import: `validate` and
    # `--help` never build these validators.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Threshold(_Model):
    """A comparison a value must pass: `value <op> threshold` (e.g. `{op: lt, value: 0.5}` for PGA < 0.5)."""

    op: Literal["lt", "le", "gt", "ge"] = Field(description="Comparison: lt (<), le (<=), gt (>) or ge (>=).")
    value: float = Field(description="The threshold, in the unit of the quantity compared.")


class Landmark(_Model):
    """A landmark: a target day since infusion (day 0) and the window of visits that can stand for it."""

    target_day: int = Field(ge=1, description="Target day since infusion (day 0 = infusion).")
    half_width_days: int = Field(
        ge=0,
        description="Half-width of the visit window in days: visits on days target - half_width to target + "
        "half_width (both edges included) are candidates.",
    )

    @model_validator(mode="after")
    def _window_after_infusion(self) -> Landmark:
        if self.target_day - self.half_width_days < 1:
            raise ValueError(
                f"the window of day {self.target_day} +/- {self.half_width_days} starts on or before day 0 "
                "(infusion); a landmark assesses the time after infusion"
            )
        return self


class IntercurrentEvents(_Model):
    """What an intercurrent event before the landmark does to every endpoint (the trial convention: not met)."""

    treatment_failure: Literal["not_met", "ignore"] = Field(
        default="not_met",
        description="`treatment_failure` true at any visit from day 0 to the landmark visit (or, with no landmark "
        "visit, to the end of the window): `not_met` (reason TREATMENT_FAILURE; while it is unknown at such a "
        "visit, the endpoint cannot be met) or `ignore`.",
    )
    discontinued: Literal["not_met", "ignore"] = Field(
        default="not_met",
        description="Withdrawal or death (`discontinued_date`) before the landmark visit (or, with no landmark "
        "visit, on or before the end of the window): `not_met` (reason DISCONTINUED) or `ignore`.",
    )


class DorisSettings(_Model):
    """2021 DORIS remission (van Vollenhoven, Lupus Sci Med 2021;8:e000538)."""

    clinical_sledai_2k_max: int = Field(
        default=0,
        ge=0,
        description="Highest clinical SLEDAI-2K (SLEDAI-2K without the two serology descriptors) in remission; "
        "DORIS: 0.",
    )
    pga: Threshold = Field(
        default=Threshold(op="lt", value=0.5),
        description="Physician global assessment (0-3) in remission; DORIS: < 0.5.",
    )
    prednisone_mg_day: Threshold = Field(
        default=Threshold(op="le", value=5.0),
        description="Prednisolone-equivalent dose in remission, mg/day. The paper's abstract says '5 mg/day or "
        "less', its Table 2 '< 5 mg/day': default le 5 (the abstract).",
    )


class DrugFreeDorisSettings(_Model):
    """Drug-free DORIS remission: DORIS (with the `doris_remission` settings) off glucocorticoids and
    immunosuppressants, the primary endpoint of the Breakfree-SLE phase 2 trial at month 6."""

    prednisone_mg_day: Threshold = Field(
        default=Threshold(op="le", value=0.0),
        description="Glucocorticoid dose (prednisolone-equivalent, mg/day) allowed; default le 0: none.",
    )
    immunosuppressants_max: int = Field(
        default=0, ge=0, description="Highest number of ongoing immunosuppressants (biologics included); default 0."
    )
    antimalarials_allowed: bool = Field(
        default=True,
        description="Whether an ongoing antimalarial is allowed. Default true: the Breakfree-SLE definition adds "
        "only 'no glucocorticoids and no immunosuppressants' to DORIS, which allows antimalarials.",
    )


class LldasSettings(_Model):
    """Lupus Low Disease Activity State (Franklyn, Ann Rheum Dis 2016;75:1615)."""

    sledai_2k_max: int = Field(default=4, ge=0, description="Highest SLEDAI-2K (serology included); LLDAS: 4.")
    pga: Threshold = Field(
        default=Threshold(op="le", value=1.0), description="Physician global assessment (0-3); LLDAS: <= 1."
    )
    prednisone_mg_day: Threshold = Field(
        default=Threshold(op="le", value=7.5), description="Prednisolone-equivalent dose, mg/day; LLDAS: <= 7.5."
    )
    new_activity_ignores: tuple[str, ...] = Field(
        default=(),
        description="Descriptors not counted as 'new activity since the previous visit' (e.g. the serology "
        "items); default none: every SLEDAI-2K descriptor counts.",
    )
    other_investigational_drug_allowed: bool = Field(
        default=False,
        description="Whether an investigational drug other than the study's CAR-T is allowed; LLDAS allows only "
        "standard maintenance drugs and approved biologics: default false.",
    )


class Msri4Settings(_Model):
    """Modified SRI-4 (SRI without BILAG): a fall in SLEDAI-2K from the treatment baseline, PGA not worse."""

    sledai_2k_reduction_min: int = Field(
        default=4, ge=1, description="Smallest fall in SLEDAI-2K from the treatment baseline that responds; SRI-4: 4."
    )
    pga_worsening_max: float = Field(
        default=0.3,
        gt=0,
        description="A rise in physician global assessment (0-3) of this much or more from the treatment baseline "
        "fails the endpoint; SRI: 0.3.",
    )
    baseline_sledai_2k_min: int = Field(
        default=6,
        ge=0,
        description="Lowest treatment-baseline SLEDAI-2K for which the endpoint applies (below: NOT_APPLICABLE); "
        "Breakfree-SLE: 6.",
    )


class RenalResponseSettings(_Model):
    """A BLISS-LN renal response: proteinuria, eGFR against the treatment baseline, steroids after week 24."""

    upcr: Threshold = Field(description="Urine protein/creatinine ratio, g/g, at the landmark visit.")
    egfr_min: float = Field(
        gt=0, description="eGFR (mL/min/1.73m2) at or above which kidney function passes whatever the baseline."
    )
    egfr_decline_max_percent: float = Field(
        ge=0,
        lt=100,
        description="Otherwise eGFR passes when no more than this many percent below the treatment-baseline eGFR "
        "(the pre-flare value's proxy).",
    )
    prednisone_mg_day: Threshold | None = Field(
        default=Threshold(op="le", value=10.0),
        description="Prednisolone-equivalent dose, mg/day, that every visit from `prednisone_from_day` to the "
        "landmark visit, and the landmark visit itself, must pass; null: no steroid criterion.",
    )
    prednisone_from_day: int = Field(
        default=168, ge=0, description="First day since infusion of the steroid criterion; BLISS-LN: week 24 = 168."
    )


class RenalPopulation(_Model):
    """Who the renal endpoints apply to: renal involvement at the treatment baseline (any one criterion)."""

    lupus_nephritis_classes: tuple[str, ...] = Field(
        default=("III", "IV", "V", "III+V", "IV+V"),
        description="Biopsy classes (subjects file `lupus_nephritis_class`) that count as renal involvement.",
    )
    renal_descriptors: tuple[str, ...] = Field(
        default=("urinary_casts", "hematuria", "proteinuria", "pyuria"),
        description="SLEDAI-2K descriptors present at the treatment baseline that count as renal involvement.",
    )
    upcr: Threshold | None = Field(
        default=Threshold(op="ge", value=0.5),
        description="Treatment-baseline UPCR (g/g) that counts as renal involvement; null: not used.",
    )

    @field_validator("lupus_nephritis_classes")
    @classmethod
    def _known_classes(cls, classes: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(classes) - set(LN_CLASSES))
        if unknown:
            raise ValueError(f"unknown lupus nephritis class(es) {unknown}; expected some of {list(LN_CLASSES)}")
        return classes


class EndpointDefinition(_Model):
    """The response endpoints at landmarks: which endpoints, the landmarks, every threshold; versioned."""

    version: str = Field(min_length=1, description="Definition version; written into every endpoint row and label.")
    description: str = Field(default="", description="Free-text summary and sources.")
    endpoints: tuple[EndpointName, ...] = Field(
        default=ENDPOINT_NAMES,  # type: ignore[arg-type]
        min_length=1,
        description="Endpoints to derive, in report order: doris_remission, drug_free_doris_remission, lldas, "
        "msri4, complete_renal_response, perr.",
    )
    landmarks: dict[str, Landmark] = Field(
        default_factory=lambda: {
            "month_3": Landmark(target_day=90, half_width_days=14),
            "month_6": Landmark(target_day=180, half_width_days=28),
            "month_12": Landmark(target_day=365, half_width_days=28),
        },
        min_length=1,
        description="Landmark name (lower-case, digits, underscores) -> target day and window.",
    )
    renal_lab_lookback_days: int = Field(
        default=10,
        ge=0,
        description="Days before a visit (and the visit day) in which the latest UPCR and eGFR stand for the visit "
        "(`renal_values`); default 10, as the SLEDAI-2K descriptor window.",
    )
    intercurrent_events: IntercurrentEvents = Field(
        default_factory=IntercurrentEvents, description="What intercurrent events before the landmark do."
    )
    doris_remission: DorisSettings = Field(default_factory=DorisSettings, description="DORIS remission thresholds.")
    drug_free_doris_remission: DrugFreeDorisSettings = Field(
        default_factory=DrugFreeDorisSettings,
        description="What drug-free DORIS remission adds to DORIS remission.",
    )
    lldas: LldasSettings = Field(default_factory=LldasSettings, description="LLDAS thresholds.")
    msri4: Msri4Settings = Field(default_factory=Msri4Settings, description="Modified SRI-4 thresholds.")
    complete_renal_response: RenalResponseSettings = Field(
        default_factory=lambda: RenalResponseSettings(
            upcr=Threshold(op="lt", value=0.5), egfr_min=90.0, egfr_decline_max_percent=10.0
        ),
        description="Complete renal response (BLISS-LN): UPCR < 0.5 g/g; eGFR >= 90 or no more than 10 % below "
        "the treatment baseline; prednisone <= 10 mg/day from week 24.",
    )
    perr: RenalResponseSettings = Field(
        default_factory=lambda: RenalResponseSettings(
            upcr=Threshold(op="le", value=0.7), egfr_min=60.0, egfr_decline_max_percent=20.0
        ),
        description="Primary efficacy renal response (BLISS-LN): UPCR <= 0.7 g/g; eGFR >= 60 or no more than "
        "20 % below the treatment baseline; prednisone <= 10 mg/day from week 24.",
    )
    renal_population: RenalPopulation = Field(
        default_factory=RenalPopulation,
        description="Renal involvement at the treatment baseline: the population of both renal endpoints.",
    )

    @field_validator("landmarks")
    @classmethod
    def _landmark_names(cls, landmarks: dict[str, Landmark]) -> dict[str, Landmark]:
        bad = sorted(name for name in landmarks if not _NAME.match(name))
        if bad:
            raise ValueError(f"landmark names must be lower-case letters, digits and underscores: {bad}")
        return landmarks

    @field_validator("endpoints")
    @classmethod
    def _unique_endpoints(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"endpoints listed more than once: {repeated}")
        return names

    def check_known(self, endpoint: str, landmark: str) -> None:
        """Raise a SettingsError naming the known ones when `endpoint` or `landmark` is not defined (at launch)."""
        if endpoint not in self.endpoints:
            raise SettingsError(f"unknown endpoint {endpoint!r}; the protocol defines: {', '.join(self.endpoints)}")
        if landmark not in self.landmarks:
            raise SettingsError(f"unknown landmark {landmark!r}; the protocol defines: {', '.join(self.landmarks)}")

    def describe(self, endpoint: str, landmark: str) -> dict[str, Any]:
        """The settings that define `endpoint` at `landmark` (for a model card), as plain data."""
        data = self.model_dump(mode="json")
        return {
            "version": self.version,
            "landmark": {"name": landmark, **data["landmarks"][landmark]},
            "settings": data.get(endpoint),
            "intercurrent_events": data.get("intercurrent_events"),
        }


def default_endpoint_definition_path() -> Path:
    """The built-in endpoint definition (the default `endpoints:` section of a protocol)."""
    return Path(str(resources.files("immunostrat") / "protocols" / "endpoints_default.yaml"))


def load_endpoint_definition(source: Mapping[str, Any] | str | Path | None = None) -> EndpointDefinition:
    """The endpoint definition from a mapping (a protocol's `endpoints:` section), a YAML file, or the default.

    Raises:
        SettingsError: the file cannot be read or is not a YAML mapping, or a setting breaks the definition's
            schema (the message names the setting).
    """
    if isinstance(source, Mapping):
        return _validated(dict(source), "endpoint definition")
    path = Path(source) if source is not None else default_endpoint_definition_path()
    try:
        mapping = safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read endpoint definition {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"endpoint definition {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(mapping, dict):
        raise SettingsError(f"endpoint definition {path} must hold a mapping, got {type(mapping).__name__}")
    return _validated(mapping, f"endpoint definition {path}")


def _validated(data: dict[str, Any], where: str) -> EndpointDefinition:
    """The definition, or a SettingsError naming the first bad setting (as `immunostrat.config.run.validated`, which
    sits above this module: the run configuration embeds the definition)."""
    try:
        return EndpointDefinition.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SettingsError(f"{where}: {setting}: {first['msg']}{more}") from exc
