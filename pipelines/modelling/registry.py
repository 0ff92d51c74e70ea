"""Model registry: find, verify and load models (skops files, cards, aliases) from one directory.

Layout of a registry directory (default: the installed ``immunostrat.models`` package)::

    registry.json              {"schema_version": 1, "aliases": {...}, "models": {<model_id>: {...}}}
    <model_id>/model.skops     the fitted estimator (skops zip; never pickle/joblib)
    <model_id>/card.json       model card (TRIPOD-ordered: data, outcome, predictors, analysis, performance with
                               intervals, calibration table, ROC, drift reference, intended use, versions)
    <model_id>/card.md         the same card, readable
    .registry.lock             held (flock) by every write of registry.json; never a model, never listed

Models are immutable versions: a new training writes a new folder and registry entry, never over an old one.
Aliases (``champion`` is what ``stratify`` uses by default; any other name may be added) point at versions.

Loading is defensive because a model file is code-adjacent: the file's sha256 is checked against
``registry.json`` before anything parses it, non-zip files (pickles) are refused, and any type outside
:data:`TRUSTED_TYPES` is refused before ``skops.io.loads`` runs. Files are read once into memory and every
check runs on those same bytes, so the file cannot change between the check and the load.

Two forms of one model: ``model.skops`` is the archival form (the fitted estimator), and the card's
``estimator`` section holds its coefficient form (:class:`~immunostrat.modelling.scoring.CoefficientForm`), which
is what a run scores with. Both files are checksummed in ``registry.json`` and both checksums are verified when a
run launches (:func:`resolve_model_file`), which never deserialises: a run imports no skops, scikit-learn or
scipy. That the two forms agree is checked whenever the skops file is deserialised (:meth:`ModelFile.deserialise`:
``load_model``, ``immunostrat models verify|promote``, evaluation) and when a model is registered. A card without
the coefficient form, or an entry without a card checksum, is scored from the deserialised skops file instead
(:attr:`immunostrat.modelling.handle.ModelHandle.scored_from`, recorded in run.json).

Writes (saving a model, setting or removing an alias) are :mod:`immunostrat.modelling.registry_write`, serialised
under the registry's lock; reads here take no lock, as ``registry.json`` is replaced atomically. The card's content
is :mod:`immunostrat.modelling.card`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from immunostrat.config.features import FeatureSpec
from immunostrat.config.settings import read_settings
from immunostrat.errors import UserError
from immunostrat.ingest.diagnostics import zip_archive_problem
from immunostrat.modelling.scoring import CoefficientForm
from immunostrat.schemas.records import ModelCard

try:  # the installed registry package; absent in a source checkout that is not installed
    import immunostrat.models as models_pkg
except ImportError:  # default_registry_dir then falls back to the models/ folder beside pipelines/
    models_pkg = None

if TYPE_CHECKING:
    from immunostrat.modelling.estimator import ResponderEstimator

__all__ = [
    "DEFAULT_ALIAS",
    "REGISTRY_ENV",
    "SCHEMA_VERSION",
    "TRUSTED_TYPES",
    "CardModel",
    "LoadedModel",
    "ModelFile",
    "ModelIntegrityError",
    "RegistryError",
    "UnknownModelError",
    "check_forms_agree",
    "check_name",
    "default_registry_dir",
    "json_bytes",
    "list_models",
    "load_model",
    "read_card",
    "read_model_card",
    "read_registry",
    "registry_root",
    "resolve",
    "resolve_in",
    "resolve_model_file",
    "sha256_hex",
    "untrusted_outside_list",
]

REGISTRY_ENV = "IMMUNOSTRAT_MODEL_REGISTRY"
REGISTRY_FILE = "registry.json"
MODEL_FILE = "model.skops"
CARD_JSON = "card.json"
CARD_MD = "card.md"
SCHEMA_VERSION = 1
DEFAULT_ALIAS = "champion"

#: Fully qualified types a project model file may contain beyond skops' defaults. Found with
#: ``skops.io.get_untrusted_types`` on dumped models (sklearn 1.9.1, skops 0.16.0, numpy 2.4): a plain
#: ``Pipeline([StandardScaler, LogisticRegression])`` needs none; its sigmoid ``CalibratedClassifierCV``
#: (``cv=PredefinedSplit``, ``ensemble=False``) needs the three private calibration/splitter types below, which
#: hold only arrays and floats (the calibrated estimator, Platt's ``a_``/``b_``, the inner fold ids). The others
#: are listed so the trust decision is explicit and reviewed; re-run ``get_untrusted_types`` on a fresh model
#: whenever sklearn/skops/numpy or the estimator changes, and add only types you have reviewed. Never widen this
#: to silence an error.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.PredefinedSplit",
)

# Ids and aliases become directory names and JSON keys: keep them to a safe, path-free alphabet.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RegistryError(UserError):
    """Registry is missing, malformed, or an operation on it is invalid (exit 2)."""


class ModelIntegrityError(RegistryError):
    """A model file failed an integrity or trust check and was not loaded."""


class UnknownModelError(RegistryError, LookupError):
    """A model reference is neither a known alias nor a known model id."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model from the registry.

    Attributes:
        model_id: Registry id of the model.
        sha256: sha256 of its ``model.skops`` file (checked before loading).
        estimator: The fitted ``Pipeline([scale, clf])``, possibly inside a sigmoid ``CalibratedClassifierCV``.
        features: Feature specs in model input order.
        card: The model card (``card.json``) as a dict.
        default_cutoffs: ``{"possible_min": .., "likely_min": ..}`` from the card.
    """

    model_id: str
    sha256: str
    estimator: ResponderEstimator
    features: tuple[FeatureSpec, ...]
    card: dict[str, Any] = field(repr=False)
    default_cutoffs: dict[str, float]

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the model's input features, in order."""
        return tuple(f.name for f in self.features)

    @property
    def model_card(self) -> ModelCard:
        """The model card as a typed record (checked when the model was resolved)."""
        return ModelCard.model_validate(self.card)

    @property
    def coefficient_form(self) -> CoefficientForm:
        """The estimator's own coefficient form (scikit-learn is loaded already: the estimator exists)."""
        from immunostrat.modelling.estimator import linear_logit_parts  # scikit-learn: loaded with the estimator

        return linear_logit_parts(self.estimator).form


@dataclass(frozen=True)
class CardModel:
    """A verified model scored from its card's coefficient form: no estimator, nothing deserialised.

    Attributes are those of :class:`LoadedModel` with ``coefficient_form`` (from the checksummed card) in place
    of the estimator.
    """

    model_id: str
    sha256: str
    features: tuple[FeatureSpec, ...]
    card: dict[str, Any] = field(repr=False)
    default_cutoffs: dict[str, float]
    coefficient_form: CoefficientForm = field(repr=False)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the model's input features, in order."""
        return tuple(f.name for f in self.features)


# --------------------------------------------------------------------------------------------- paths


def default_registry_dir() -> Path:
    """Registry directory used when none is passed.

    ``$IMMUNOSTRAT_MODEL_REGISTRY`` if set, else the installed ``immunostrat.models`` package directory, else
    (source checkout that is not installed) the ``models/`` folder next to ``pipelines/``.

    Raises:
        RegistryError: No registry directory can be located.
    """
    configured = read_settings().model_registry  # $IMMUNOSTRAT_MODEL_REGISTRY
    if configured is not None:
        return configured
    if models_pkg is None:
        candidate = Path(__file__).resolve().parents[2] / "models"  # pipelines/modelling/ -> the repository
        if (candidate / "__init__.py").is_file():
            return candidate
        raise RegistryError(
            f"cannot locate the model registry: immunostrat.models is not importable and {candidate} does "
            f"not exist; pass registry_dir or set {REGISTRY_ENV}"
        )
    if models_pkg.__file__ is None:
        raise RegistryError(f"immunostrat.models has no __file__; pass registry_dir or set {REGISTRY_ENV}")
    return Path(models_pkg.__file__).parent


def registry_root(registry_dir: str | os.PathLike[str] | None) -> Path:
    """The registry directory: ``registry_dir``, else :func:`default_registry_dir`."""
    return Path(registry_dir) if registry_dir is not None else default_registry_dir()


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a safe model id or alias (it becomes a folder name and a JSON key), else RegistryError."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise RegistryError(f"invalid {kind} {name!r}: use letters, digits, '.', '_' or '-' (max 128 chars)")
    return name


def _json_safe(obj: Any) -> Any:
    # Strict JSON has no NaN/inf (e.g. the response rate of an empty group): write null instead.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _json_safe(obj.item())
    return obj


def json_bytes(obj: Any) -> bytes:
    """Strict, indented JSON (NaN/inf as null) as written for cards and registry.json."""
    return (json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n").encode("utf-8")


def read_card(ref: str, registry_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A model's ``card.json`` by alias or id, read WITHOUT the model checks (for listings; load_model verifies).

    The card is checked against :class:`immunostrat.schemas.records.ModelCard` (any card version) and returned as
    written (a dict); :func:`read_model_card` returns the typed record.
    """
    root = registry_root(registry_dir)
    mid = resolve_in(read_registry(root), ref, root)
    path = _entry_file(root, f"{mid}/{CARD_JSON}", "model card")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        ModelCard.model_validate(card)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, ValidationError) as exc:
        raise RegistryError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    return dict(card)


def read_model_card(ref: str, registry_dir: str | os.PathLike[str] | None = None) -> ModelCard:
    """A model's ``card.json`` by alias or id as a typed :class:`ModelCard`, WITHOUT the model checks."""
    return ModelCard.model_validate(read_card(ref, registry_dir))


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` as hex."""
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ registry.json


def _empty_registry() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "aliases": {}, "models": {}}


def read_registry(root: Path) -> dict[str, Any]:
    """``registry.json`` of ``root`` (an empty registry when there is none yet), its layout checked."""
    path = root / REGISTRY_FILE
    if not path.is_file():
        return _empty_registry()
    try:
        reg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(reg, dict) or reg.get("schema_version") != SCHEMA_VERSION:
        version = reg.get("schema_version") if isinstance(reg, dict) else None
        raise RegistryError(f"{path}: unsupported schema_version {version!r} (expected {SCHEMA_VERSION})")
    if not isinstance(reg.get("aliases"), dict) or not isinstance(reg.get("models"), dict):
        raise RegistryError(f"{path}: 'aliases' and 'models' must be objects")
    return reg


def resolve_in(reg: Mapping[str, Any], ref: str, root: Path) -> str:
    """The model id an alias or id names in the registry ``reg`` (of directory ``root``)."""
    aliases: dict[str, str] = reg["aliases"]
    models: dict[str, Any] = reg["models"]
    if ref in aliases:
        target = aliases[ref]
        if target not in models:
            raise RegistryError(f"alias {ref!r} in {root / REGISTRY_FILE} points to unknown model {target!r}")
        return target
    if ref in models:
        return ref
    if not models:
        raise UnknownModelError(
            f"unknown model reference {ref!r}: registry {root} holds no models (train one with the train flow)"
        )
    raise UnknownModelError(
        f"unknown model reference {ref!r} in registry {root}; "
        f"known aliases: {sorted(aliases) or 'none'}; known model ids: {sorted(models)}"
    )


def resolve(ref: str, registry_dir: str | os.PathLike[str] | None = None) -> str:
    """Resolve an alias or model id to a model id.

    Args:
        ref: Alias (e.g. ``champion``) or model id.
        registry_dir: Registry directory; default :func:`default_registry_dir`.

    Returns:
        The model id.

    Raises:
        UnknownModelError: ``ref`` is neither an alias nor a model id (message lists the known ones).
    """
    root = registry_root(registry_dir)
    return resolve_in(read_registry(root), ref, root)


def list_models(registry_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """List registered models, oldest first.

    Returns:
        One dict per model: ``model_id``, the registry entry (``path``, ``sha256``, ``created_at``,
        ``features``, ...) and ``aliases`` (aliases pointing at it).
    """
    reg = read_registry(registry_root(registry_dir))
    out = []
    for model_id, entry in reg["models"].items():
        aliases = sorted(a for a, target in reg["aliases"].items() if target == model_id)
        out.append({"model_id": model_id, **entry, "aliases": aliases})
    return sorted(out, key=lambda m: (str(m.get("created_at", "")), m["model_id"]))


# ------------------------------------------------------------------------------------------ save / load


def untrusted_outside_list(data: bytes, where: str) -> list[str]:
    """Types a skops file needs beyond skops' defaults and :data:`TRUSTED_TYPES` (sorted; empty when loadable)."""
    import skops.io as sio  # imports scikit-learn: paid only when a model is saved or deserialised

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # malformed archive/schema: refuse rather than guess
        raise ModelIntegrityError(f"{where}: cannot inspect skops file ({type(exc).__name__}: {exc})") from exc
    return sorted(set(untrusted) - set(TRUSTED_TYPES))


def _entry_file(root: Path, rel: str, what: str) -> Path:
    # registry.json is data, not code: never let a path in it escape the registry directory.
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ModelIntegrityError(f"{what} path {rel!r} in {root / REGISTRY_FILE} escapes the registry directory")
    if not path.is_file():
        raise RegistryError(f"{what} {path} listed in {root / REGISTRY_FILE} does not exist")
    return path


def _check_estimator(estimator: Any, path: Path, n_features: int) -> ResponderEstimator:
    # Called once skops has loaded scikit-learn: the registry module itself never imports it.
    from immunostrat.modelling.estimator import linear_logit_parts

    try:
        linear_logit_parts(estimator)
    except (TypeError, AttributeError) as exc:
        raise ModelIntegrityError(
            f"{path}: expected Pipeline([('scale', StandardScaler), ('clf', LogisticRegression)]), optionally in a "
            f"sigmoid CalibratedClassifierCV(ensemble=False); got {estimator!r} ({exc})"
        ) from exc
    if list(getattr(estimator, "classes_", [])) != [0, 1]:
        raise ModelIntegrityError(f"{path}: expected classes [0, 1], got {getattr(estimator, 'classes_', None)}")
    if getattr(estimator, "n_features_in_", None) != n_features:
        raise ModelIntegrityError(
            f"{path}: estimator takes {getattr(estimator, 'n_features_in_', None)} features, card lists {n_features}"
        )
    return estimator


def check_forms_agree(card_form: CoefficientForm, estimator: Any, where: str) -> None:
    """Refuse a card whose coefficient form is not the skops estimator's (parameters within ``FORM_RTOL``).

    Raises:
        ModelIntegrityError: Naming the parameters that differ.
    """
    from immunostrat.modelling.estimator import linear_logit_parts  # scikit-learn is loaded: the estimator exists

    differ = card_form.differences(linear_logit_parts(estimator).form)
    if differ:
        raise ModelIntegrityError(
            f"{where}: the card's coefficient form differs from the skops estimator in {differ}; the two forms of "
            "one model must agree (refusing it)"
        )


@dataclass(frozen=True)
class ModelFile:
    """A model's verified bytes and card: everything checked before deserialising, nothing deserialised yet.

    Checks done: the reference resolves, sha256 of ``model.skops`` (and ``card.json``) match ``registry.json``,
    the file is a skops zip (pickles are refused), its declared sizes are bounded (no zip bomb), and the card
    matches the registry's features. These run at a run's launch, before any compute, without importing skops.

    ``coefficient_form`` is the card's (None, with ``no_form_reason``, when the card has none or the registry
    entry does not checksum the card: such a model is scored from the deserialised skops file).
    """

    model_id: str
    sha256: str
    path: Path
    data: bytes = field(repr=False)
    card: dict[str, Any] = field(repr=False)
    features: tuple[FeatureSpec, ...]
    default_cutoffs: dict[str, float]
    coefficient_form: CoefficientForm | None = field(default=None, repr=False)
    no_form_reason: str | None = None

    @property
    def model_card(self) -> ModelCard:
        """The (checksummed) model card as a typed record."""
        return ModelCard.model_validate(self.card)

    def card_model(self) -> CardModel:
        """The model scored from its card's coefficient form (ModelIntegrityError when the card has none)."""
        if self.coefficient_form is None:
            raise ModelIntegrityError(f"{self.model_id}: no coefficient form to score from ({self.no_form_reason})")
        return CardModel(
            model_id=self.model_id,
            sha256=self.sha256,
            features=self.features,
            card=self.card,
            default_cutoffs=self.default_cutoffs,
            coefficient_form=self.coefficient_form,
        )

    def deserialise(self) -> LoadedModel:
        """Check the types against :data:`TRUSTED_TYPES`, load with skops, and check the estimator's shape."""
        if sha256_hex(self.data) != self.sha256:  # these bytes may have travelled (e.g. to a Dask worker)
            raise ModelIntegrityError(f"{self.path}: model bytes no longer match their sha256 {self.sha256}")
        bad = untrusted_outside_list(self.data, str(self.path))
        if bad:
            raise ModelIntegrityError(
                f"{self.path} holds types outside immunostrat.modelling.registry.TRUSTED_TYPES: {bad}; "
                "refusing to load. "
                "Review them and add them to TRUSTED_TYPES only if they are safe."
            )
        import skops.io as sio  # imports scikit-learn: paid only when a model is deserialised, never to list one

        try:
            estimator = sio.loads(self.data, trusted=list(TRUSTED_TYPES))
        except Exception as exc:
            raise ModelIntegrityError(
                f"{self.path}: skops refused or failed to load ({type(exc).__name__}: {exc})"
            ) from exc
        _check_estimator(estimator, self.path, len(self.features))
        if self.coefficient_form is not None:
            check_forms_agree(self.coefficient_form, estimator, str(self.path))
        return LoadedModel(
            model_id=self.model_id,
            sha256=self.sha256,
            estimator=estimator,
            features=self.features,
            card=self.card,
            default_cutoffs=self.default_cutoffs,
        )


def resolve_model_file(ref: str = DEFAULT_ALIAS, registry_dir: str | os.PathLike[str] | None = None) -> ModelFile:
    """Resolve an alias or id and verify the model's file and card (see :class:`ModelFile`), without loading it.

    Raises:
        UnknownModelError: ``ref`` is not known.
        ModelIntegrityError: Checksum mismatch, not a skops file, oversized archive, or a card that does not match.
    """
    root = registry_root(registry_dir)
    reg = read_registry(root)
    mid = resolve_in(reg, ref, root)
    entry = reg["models"][mid]
    path = _entry_file(root, entry["path"], "model file")

    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(expected, str) or not expected:
        raise ModelIntegrityError(
            f"registry entry {mid!r} in {root / REGISTRY_FILE} has no sha256 checksum; refusing to load an "
            "unverifiable model"
        )
    data = path.read_bytes()  # read once: every check below and the load use these bytes
    actual = sha256_hex(data)
    if actual != expected:
        raise ModelIntegrityError(
            f"{path}: sha256 mismatch for model {mid!r}: registry.json expects {entry['sha256']}, "
            f"file has {actual}; refusing to load"
        )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ModelIntegrityError(
            f"{path} is not a skops file (zip archive expected, starts with {data[:4]!r}); pickle/joblib "
            "files are never loaded"
        )
    # Declared sizes bound what skops will decompress: refuse a zip bomb before opening any member.
    if problem := zip_archive_problem(data, max_uncompressed=64 << 20):
        raise ModelIntegrityError(f"{path}: {problem}; refusing to load")

    card, features, form, no_form_reason = _verified_card(root, mid, entry)
    cutoffs = {k: float(v) for k, v in card["default_cutoffs"].items()}
    return ModelFile(
        model_id=mid,
        sha256=actual,
        path=path,
        data=data,
        card=card,
        features=features,
        default_cutoffs=cutoffs,
        coefficient_form=form,
        no_form_reason=no_form_reason,
    )


def _verified_card(
    root: Path, mid: str, entry: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[FeatureSpec, ...], CoefficientForm | None, str | None]:
    """The model's card checked against ``registry.json``: the card, its features, its coefficient form and, when
    there is none to score from, why."""
    card_path = _entry_file(root, f"{mid}/{CARD_JSON}", "model card")
    card_bytes = card_path.read_bytes()
    # The card carries the cut-offs, feature transforms and coefficients used in scoring, so it is checksummed too.
    expected_card = entry.get("card_sha256")
    if expected_card is not None and sha256_hex(card_bytes) != expected_card:
        raise ModelIntegrityError(
            f"{card_path}: sha256 mismatch: registry.json expects {expected_card}, file has {sha256_hex(card_bytes)}"
        )
    card = json.loads(card_bytes)
    try:
        ModelCard.model_validate(card)  # every card version the registry may hold; keys it adds are kept
    except ValidationError as exc:
        raise ModelIntegrityError(f"{card_path}: not a model card: {exc}") from exc
    if card.get("model_id") != mid:
        raise ModelIntegrityError(f"{card_path}: card is for {card.get('model_id')!r}, not {mid!r}")
    features = tuple(FeatureSpec.from_dict(f) for f in card["features"])
    if [f.name for f in features] != list(entry["features"]):
        raise ModelIntegrityError(
            f"{card_path}: card features {[f.name for f in features]} differ from registry.json {entry['features']}"
        )
    try:
        form = CoefficientForm.from_card(card, [f.name for f in features])
    except ValueError as exc:
        raise ModelIntegrityError(f"{card_path}: {exc}") from exc
    # Scoring trusts the card's coefficients only when registry.json checksums the card; otherwise the skops file.
    if expected_card is None:
        return card, features, None, "registry.json holds no card checksum"
    if form is None:
        return card, features, None, f"card (version {card.get('card_schema_version', 1)}) has no coefficient form"
    return card, features, form, None


def load_model(ref: str = DEFAULT_ALIAS, registry_dir: str | os.PathLike[str] | None = None) -> LoadedModel:
    """Load and verify a model by alias or id.

    Checks, in order and all before deserialising: sha256 of ``model.skops`` (and ``card.json``) against
    ``registry.json``; the file is a skops zip (pickles are refused); every type it needs is trusted by skops
    or listed in :data:`TRUSTED_TYPES`. Then it loads with ``trusted=TRUSTED_TYPES`` and checks the estimator
    is the expected pipeline.

    Args:
        ref: Alias or model id (default ``champion``).
        registry_dir: Registry directory; default :func:`default_registry_dir`.

    Returns:
        The verified model.

    Raises:
        UnknownModelError: ``ref`` is not known.
        ModelIntegrityError: Checksum mismatch, not a skops file, untrusted types, or unexpected estimator.
    """
    return resolve_model_file(ref, registry_dir).deserialise()
