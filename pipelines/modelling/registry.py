"""Model registry: skops model files, model cards and aliases in one directory.

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

Writes are serialised: `save_model`, `set_alias` and `remove_alias` read, change and replace ``registry.json``
under an exclusive lock on ``.registry.lock`` in the registry directory, so two concurrent trainings or promotes
never lose an update. Reads take no lock: ``registry.json`` is replaced atomically.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from immunostrat.config.features import FeatureSpec
from immunostrat.config.settings import read_settings
from immunostrat.errors import UserError
from immunostrat.ingest.io import atomic_path
from immunostrat.modelling.markdown import render_card_markdown
from immunostrat.schemas.records import ModelCard

if TYPE_CHECKING:
    from immunostrat.modelling.estimator import ResponderEstimator
    from immunostrat.modelling.fitting import TrainedModel

__all__ = [
    "CARD_SCHEMA_VERSION",
    "DEFAULT_ALIAS",
    "REGISTRY_ENV",
    "SCHEMA_VERSION",
    "TRUSTED_TYPES",
    "LoadedModel",
    "ModelFile",
    "ModelHandle",
    "ModelIntegrityError",
    "RegistryError",
    "UnknownModelError",
    "default_registry_dir",
    "json_bytes",
    "list_models",
    "load_model",
    "read_card",
    "read_model_card",
    "remove_alias",
    "resolve",
    "resolve_model_file",
    "save_model",
    "set_alias",
]

REGISTRY_ENV = "IMMUNOSTRAT_MODEL_REGISTRY"
REGISTRY_FILE = "registry.json"
MODEL_FILE = "model.skops"
CARD_JSON = "card.json"
CARD_MD = "card.md"
LOCK_FILE = ".registry.lock"
#: How long a registry write waits for another writer (each holds the lock for the few file writes of one save or
#: alias change, so a wait this long means a stuck process or a file system without working locks).
LOCK_TIMEOUT_SECONDS = 60.0
SCHEMA_VERSION = 1
CARD_SCHEMA_VERSION = 2
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
_REQUIRED_CARD_EXTRA = ("intended_use", "limitations")


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
    try:
        import immunostrat.models as models_pkg
    except ImportError:
        candidate = Path(__file__).resolve().parents[2] / "models"  # pipelines/modelling/ -> the repository
        if (candidate / "__init__.py").is_file():
            return candidate
        raise RegistryError(
            f"cannot locate the model registry: immunostrat.models is not importable and {candidate} does "
            f"not exist; pass registry_dir or set {REGISTRY_ENV}"
        ) from None
    if models_pkg.__file__ is None:
        raise RegistryError(f"immunostrat.models has no __file__; pass registry_dir or set {REGISTRY_ENV}")
    return Path(models_pkg.__file__).parent


def _root(registry_dir: str | os.PathLike[str] | None) -> Path:
    return Path(registry_dir) if registry_dir is not None else default_registry_dir()


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise RegistryError(f"invalid {kind} {name!r}: use letters, digits, '.', '_' or '-' (max 128 chars)")
    return name


def _write_atomic(path: Path, data: bytes) -> None:
    # Temp file in the same directory + rename (immunostrat.ingest.io.atomic_path): readers never see half a file.
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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


def _dump_json(obj: Any) -> bytes:
    return (json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n").encode("utf-8")


def json_bytes(obj: Any) -> bytes:
    """Strict, indented JSON (NaN/inf as null) as written for cards and registry.json."""
    return _dump_json(obj)


def read_card(ref: str, registry_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A model's ``card.json`` by alias or id, read WITHOUT the model checks (for listings; load_model verifies).

    The card is checked against :class:`immunostrat.schemas.records.ModelCard` (any card version) and returned as
    written (a dict); :func:`read_model_card` returns the typed record.
    """
    root = _root(registry_dir)
    mid = _resolve_in(_read_registry(root), ref, root)
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ registry.json


def _empty_registry() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "aliases": {}, "models": {}}


def _read_registry(root: Path) -> dict[str, Any]:
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


def _write_registry(root: Path, reg: Mapping[str, Any]) -> None:
    _write_atomic(root / REGISTRY_FILE, _dump_json(reg))


@contextlib.contextmanager
def _registry_lock(root: Path, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the registry's write lock for the body of the ``with``: an exclusive ``flock`` on ``root/.registry.lock``.

    Every read-modify-write of ``registry.json`` runs under it, so two trainings or promotes never lose an update;
    readers take no lock (``registry.json`` is replaced atomically, so they see the old or the new file). As with
    :func:`immunostrat.safety.run_lock`, the lock file is created once and never deleted (deleting it would let two
    writers lock two different files), and the kernel releases the lock when its holder exits or is killed. Unlike
    a run folder's lock it waits (polling, up to ``timeout`` seconds) rather than failing at once: a registry write
    takes milliseconds. ``flock`` locks an open file description, so two threads of one process exclude each other
    too; the lock is not re-entrant (never take it twice in one call chain).

    Raises:
        RegistryError: ``root`` is not a directory, the lock is not free within ``timeout`` seconds (the message
            names the holder), or the file system does not support locks.
    """
    if not root.is_dir():
        raise RegistryError(f"registry directory {root} does not exist")
    path = root / LOCK_FILE
    cloexec = getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o666)  # the umask decides who may share it
            writable = True
        except PermissionError:  # created by a colleague without group write: lock it read-only, record nothing
            fd = os.open(path, os.O_RDONLY | cloexec)
            writable = False
    except OSError as exc:
        raise RegistryError(
            f"cannot open the registry lock {path} ({type(exc).__name__}: {exc}); writing to registry {root} "
            "needs write access to its folder"
        ) from exc
    try:
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RegistryError(
                        f"registry {root} is being written by another writer ({_lock_holder(fd)}) that has not "
                        f"released its lock within {timeout:g} s; retry, or check that process (lock file: {path})"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
            except OSError as exc:
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise RegistryError(
                        f"cannot lock {path}: the file system does not support locks ({exc.strerror}); registry "
                        "writes need them so that concurrent trainings and promotes do not lose updates"
                    ) from exc
                raise
        if writable:
            since = datetime.now(UTC).isoformat(timespec="seconds")
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder, sort_keys=True).encode("utf-8"), 0)
        try:
            yield
        finally:
            if writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # still ours: say nobody holds it
    finally:
        os.close(fd)  # releases the flock


def _lock_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        holder = {}
    if not isinstance(holder, dict) or not holder:
        return "holder unknown"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"


def _resolve_in(reg: Mapping[str, Any], ref: str, root: Path) -> str:
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
    root = _root(registry_dir)
    return _resolve_in(_read_registry(root), ref, root)


def set_alias(alias: str, model_id: str, registry_dir: str | os.PathLike[str] | None = None) -> None:
    """Point ``alias`` at ``model_id`` (creating or moving the alias).

    Raises:
        UnknownModelError: ``model_id`` is not in the registry.
        RegistryError: Invalid alias name, the alias would shadow a model id, the registry folder does not exist,
            or its write lock is not free within :data:`LOCK_TIMEOUT_SECONDS`.
    """
    root = _root(registry_dir)
    _check_name("alias", alias)
    with _registry_lock(root):
        reg = _read_registry(root)
        if model_id not in reg["models"]:
            raise UnknownModelError(
                f"cannot set alias {alias!r}: unknown model id {model_id!r} in registry {root}; "
                f"known model ids: {sorted(reg['models']) or 'none'}"
            )
        if alias in reg["models"]:
            raise RegistryError(f"alias {alias!r} would shadow the model id of the same name")
        reg["aliases"][alias] = model_id
        _write_registry(root, reg)


def remove_alias(alias: str, registry_dir: str | os.PathLike[str] | None = None) -> str:
    """Remove an alias (the model it pointed at stays registered and loadable).

    Returns:
        The model id the alias pointed at.

    Raises:
        UnknownModelError: No such alias.
        RegistryError: ``alias`` is :data:`DEFAULT_ALIAS` (stratify needs it; promote another model instead), the
            registry folder does not exist, or its write lock is not free within :data:`LOCK_TIMEOUT_SECONDS`.
    """
    root = _root(registry_dir)
    if alias == DEFAULT_ALIAS:
        raise RegistryError(f"refusing to remove {DEFAULT_ALIAS!r}: stratify uses it; promote another model instead")
    with _registry_lock(root):
        reg = _read_registry(root)
        if alias not in reg["aliases"]:
            raise UnknownModelError(f"unknown alias {alias!r} in registry {root}; known: {sorted(reg['aliases'])}")
        target = str(reg["aliases"].pop(alias))
        _write_registry(root, reg)
    return target


def list_models(registry_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """List registered models, oldest first.

    Returns:
        One dict per model: ``model_id``, the registry entry (``path``, ``sha256``, ``created_at``,
        ``features``, ...) and ``aliases`` (aliases pointing at it).
    """
    reg = _read_registry(_root(registry_dir))
    out = []
    for model_id, entry in reg["models"].items():
        aliases = sorted(a for a, target in reg["aliases"].items() if target == model_id)
        out.append({"model_id": model_id, **entry, "aliases": aliases})
    return sorted(out, key=lambda m: (str(m.get("created_at", "")), m["model_id"]))


# --------------------------------------------------------------------------------------------- cards


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("immunostrat", "scikit-learn", "skops", "numpy", "scipy", "polars", "pydantic"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _estimator_section(trained: TrainedModel) -> dict[str, Any]:
    parts = trained.linear_logit
    names = trained.feature_names
    calibrated = parts.platt_slope is not None
    cfg = trained.config
    penalty = "L2" if cfg.l1_ratio == 0 else ("L1" if cfg.l1_ratio == 1 else f"elastic net (l1_ratio={cfg.l1_ratio})")
    C = trained.tuning.get("C", cfg.C)
    description = f"StandardScaler + {penalty} logistic regression (C={C:g})"
    if calibrated:
        description += ", Platt-calibrated (sigmoid) on inner out-of-fold decision values"
    steps = trained.pipeline_steps
    if calibrated:
        steps = ["sklearn.calibration.CalibratedClassifierCV(method='sigmoid', ensemble=False)", *steps]
    return {
        "description": description + "; logit = intercept + sum of coef_j * standardised feature_j",
        "steps": steps,
        "standardised_coefficients": {n: float(c) for n, c in zip(names, parts.coef, strict=True)},
        "intercept": parts.intercept,
        "feature_means": {n: float(m) for n, m in zip(names, parts.scaler.mean_, strict=True)},
        "feature_scales": {n: float(s) for n, s in zip(names, parts.scaler.scale_, strict=True)},
        "uncalibrated": {
            "standardised_coefficients": {n: float(c) for n, c in zip(names, parts.raw_coef, strict=True)},
            "intercept": parts.raw_intercept,
        },
        "calibration": dict(trained.calibration),
        "C": C,
    }


def _build_card(
    trained: TrainedModel, model_id: str, created_at: str, sha256: str, card_extra: Mapping[str, Any]
) -> dict[str, Any]:
    extra = dict(card_extra)
    summary = dict(extra.pop("training_data", {}) or {})
    training_data = {
        "n_train": trained.n_train,
        "n_dropped_missing": trained.n_dropped_missing,
        "class_balance": dict(trained.class_balance),
        **summary,
    }
    limitations = extra.pop("limitations")
    cfg = trained.config
    ev = trained.evaluation
    reference = trained.reference or {}
    analysis = {
        "model_type": "logistic regression on standardised baseline features (linear logit: exact contributions)",
        "missing_data": f"{cfg.missing}: subjects missing any feature are left out of fitting and not scored",
        "validation": (
            f"{cfg.cv_repeats} x {cfg.cv_folds}-fold stratified CV"
            + (
                f", grouped by {trained.group_by} (no {trained.group_by} in both training and validation)"
                if trained.group_by
                else ", ungrouped (subjects are the unit)"
            )
            + "; tuning and calibration repeated inside every training fold (nested)"
        ),
        "calibration": (
            f"Platt scaling (sigmoid) on {cfg.inner_cv_folds}-fold inner out-of-fold decision values"
            if cfg.calibration == "sigmoid"
            else "none (logistic regression probabilities)"
        ),
        "tuning": (
            f"C over {list(cfg.tuning_grid)} by {cfg.inner_cv_folds}-fold inner CV ({cfg.tuning_scoring}); "
            f"final C = {trained.tuning.get('C')}"
            if cfg.tuning_grid
            else f"none (C = {cfg.C:g})"
        ),
        "cutoffs": f"quantiles {list(cfg.group_quantiles)} of the out-of-fold probabilities (validation data only)",
        "intervals": f"percentile bootstrap, {cfg.evaluation.n_bootstrap} resamples of the out-of-fold predictions",
        "duration_seconds": round(trained.duration_seconds, 2),
    }
    return {
        "card_schema_version": CARD_SCHEMA_VERSION,
        "model_id": model_id,
        "title": "Probability of response to CD19 CAR-T therapy in refractory SLE from baseline lab biomarkers",
        "created_at": created_at,
        "model_file": {"path": MODEL_FILE, "sha256": sha256, "format": "skops"},
        "intended_use": extra.pop("intended_use"),
        "limitations": [limitations] if isinstance(limitations, str) else list(limitations),
        "outcome": {
            "column": "responded",
            "definition": "binary response at the trial endpoint (1 = responder)",
            "endpoints": summary.get("endpoints", []),
        },
        "training_data": training_data,
        "features": [s.to_dict() for s in trained.feature_specs],
        "missing_data": {
            "strategy": cfg.missing,
            "n_dropped_missing": trained.n_dropped_missing,
            "missing_rate_by_feature": {k: v.get("missing_rate") for k, v in (reference.get("features") or {}).items()},
        },
        "analysis": analysis,
        "estimator": _estimator_section(trained),
        "config": cfg.model_dump(mode="json"),
        "metrics": dict(trained.metrics),
        "evaluation": ev,
        "default_cutoffs": dict(trained.cutoffs),
        "oof_group_response": trained.oof_group_response,
        "reference": reference,
        "package_versions": _package_versions(),
        **({"extra": extra} if extra else {}),
    }


# ------------------------------------------------------------------------------------------ save / load


def _untrusted_outside_list(data: bytes, where: str) -> list[str]:
    import skops.io as sio  # imports scikit-learn: paid only when a model is saved or deserialised

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # malformed archive/schema: refuse rather than guess
        raise ModelIntegrityError(f"{where}: cannot inspect skops file ({type(exc).__name__}: {exc})") from exc
    return sorted(set(untrusted) - set(TRUSTED_TYPES))


def save_model(
    trained: TrainedModel,
    registry_dir: str | os.PathLike[str] | None = None,
    *,
    model_id: str | None = None,
    card_extra: Mapping[str, Any],
    alias: str | None = None,
) -> str:
    """Write a trained model, its card and its registry entry.

    Args:
        trained: Output of :func:`immunostrat.modelling.fitting.train_responder_model`.
        registry_dir: Registry directory (created if missing); default :func:`default_registry_dir`.
        model_id: Id to use; default ``responder-lr-<YYYYMMDD>-<first 8 hex of the file sha256>``.
        card_extra: Card content the trainer knows: ``intended_use`` (str) and ``limitations`` (str or list,
            both required), optional ``training_data`` (dict merged into the training summary, e.g. data
            checksums); any other key is stored under ``extra``.
        alias: If given, point this alias at the new model (aliases are otherwise untouched).

    Returns:
        The model id.

    Raises:
        ValueError: ``card_extra`` lacks a required key.
        RegistryError: Id already registered, invalid id/alias, or the registry's write lock is not free within
            :data:`LOCK_TIMEOUT_SECONDS`.
        ModelIntegrityError: The dumped model holds types outside :data:`TRUSTED_TYPES` (it could not be
            loaded again, so it is not saved).
    """
    missing = [k for k in _REQUIRED_CARD_EXTRA if not card_extra.get(k)]
    if missing:
        raise ValueError(f"card_extra must give {missing} (e.g. 'trained on synthetic data; not for clinical use')")
    if model_id is not None:
        _check_name("model id", model_id)
    if alias is not None:
        _check_name("alias", alias)
    root = _root(registry_dir)
    root.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)

    import skops.io as sio

    # Everything that needs no registry state is built before the lock is taken, so the lock is held only for
    # the checks against registry.json and the file writes.
    data = sio.dumps(trained.estimator)
    bad = _untrusted_outside_list(data, "model to save")
    if bad:
        raise ModelIntegrityError(f"refusing to save: the model holds types outside TRUSTED_TYPES: {bad}")
    sha = _sha256(data)
    mid = model_id or f"responder-lr-{created:%Y%m%d}-{sha[:8]}"
    card = _build_card(trained, mid, created.isoformat(timespec="seconds"), sha, card_extra)
    card_bytes = _dump_json(card)
    card_md = render_card_markdown(json.loads(card_bytes)).encode("utf-8")

    with _registry_lock(root):
        reg = _read_registry(root)
        if mid in reg["models"] or mid in reg["aliases"] or (root / mid).exists():
            raise RegistryError(f"model id {mid!r} already exists in registry {root}; pass another model_id")
        if alias is not None and alias in reg["models"]:
            raise RegistryError(f"alias {alias!r} would shadow the model id of the same name")

        model_dir = root / mid
        model_dir.mkdir()
        _write_atomic(model_dir / MODEL_FILE, data)
        _write_atomic(model_dir / CARD_JSON, card_bytes)
        _write_atomic(model_dir / CARD_MD, card_md)

        # registry.json is written last: a crash before this leaves an unregistered folder, never an entry
        # pointing at missing files.
        reg["models"][mid] = {
            "path": f"{mid}/{MODEL_FILE}",
            "sha256": sha,
            "card_sha256": _sha256(card_bytes),
            "created_at": card["created_at"],
            "features": list(trained.feature_names),
        }
        if alias is not None:
            reg["aliases"][alias] = mid
        _write_registry(root, reg)
    return mid


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


@dataclass(frozen=True)
class ModelFile:
    """A model's verified bytes and card: everything checked before deserialising, nothing deserialised yet.

    Checks done: the reference resolves, sha256 of ``model.skops`` (and ``card.json``) match ``registry.json``,
    the file is a skops zip (pickles are refused), its declared sizes are bounded (no zip bomb), and the card
    matches the registry's features. These run at a run's launch, before any compute, without importing skops.
    """

    model_id: str
    sha256: str
    path: Path
    data: bytes = field(repr=False)
    card: dict[str, Any] = field(repr=False)
    features: tuple[FeatureSpec, ...]
    default_cutoffs: dict[str, float]

    def deserialise(self) -> LoadedModel:
        """Check the types against :data:`TRUSTED_TYPES`, load with skops, and check the estimator's shape."""
        if _sha256(self.data) != self.sha256:  # these bytes may have travelled (e.g. to a Dask worker)
            raise ModelIntegrityError(f"{self.path}: model bytes no longer match their sha256 {self.sha256}")
        bad = _untrusted_outside_list(self.data, str(self.path))
        if bad:
            raise ModelIntegrityError(
                f"{self.path} holds types outside immunostrat.modelling.registry.TRUSTED_TYPES: {bad}; "
                "refusing to load. "
                "Review them and add them to TRUSTED_TYPES only if they are safe."
            )
        import skops.io as sio

        try:
            estimator = sio.loads(self.data, trusted=list(TRUSTED_TYPES))
        except Exception as exc:
            raise ModelIntegrityError(
                f"{self.path}: skops refused or failed to load ({type(exc).__name__}: {exc})"
            ) from exc
        _check_estimator(estimator, self.path, len(self.features))
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
    root = _root(registry_dir)
    reg = _read_registry(root)
    mid = _resolve_in(reg, ref, root)
    entry = reg["models"][mid]
    path = _entry_file(root, entry["path"], "model file")

    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(expected, str) or not expected:
        raise ModelIntegrityError(
            f"registry entry {mid!r} in {root / REGISTRY_FILE} has no sha256 checksum; refusing to load an "
            "unverifiable model"
        )
    data = path.read_bytes()  # read once: every check below and the load use these bytes
    actual = _sha256(data)
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
    from immunostrat.safety import zip_archive_problem

    # Declared sizes bound what skops will decompress: refuse a zip bomb before opening any member.
    if problem := zip_archive_problem(data, max_uncompressed=64 << 20):
        raise ModelIntegrityError(f"{path}: {problem}; refusing to load")

    card_path = _entry_file(root, f"{mid}/{CARD_JSON}", "model card")
    card_bytes = card_path.read_bytes()
    # The card carries the cut-offs and feature transforms used in scoring, so it is checksummed too.
    expected_card = entry.get("card_sha256")
    if expected_card is not None and _sha256(card_bytes) != expected_card:
        raise ModelIntegrityError(
            f"{card_path}: sha256 mismatch: registry.json expects {expected_card}, file has {_sha256(card_bytes)}"
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
    cutoffs = {k: float(v) for k, v in card["default_cutoffs"].items()}
    return ModelFile(
        model_id=mid, sha256=actual, path=path, data=data, card=card, features=features, default_cutoffs=cutoffs
    )


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


class ModelHandle:
    """The model of one run: resolved and verified once at launch, handed to the phases explicitly.

    Deserialising (importing scikit-learn and skops, checking trusted types) starts in a background thread at
    launch, so it overlaps with reading and harmonising; the first phase that needs the estimator waits for it.
    Pickling a handle (a Dask worker in another process) carries only the verified skops bytes, their sha256 and
    the card, never a fitted estimator: the worker checks the checksum again and deserialises with the same
    trusted-type list.
    """

    def __init__(self, file: ModelFile) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._future: Future[LoadedModel] | None = None
        self._loaded: LoadedModel | None = None

    @property
    def model_id(self) -> str:
        return self.file.model_id

    @property
    def sha256(self) -> str:
        return self.file.sha256

    @property
    def features(self) -> tuple[FeatureSpec, ...]:
        return self.file.features

    @property
    def default_cutoffs(self) -> dict[str, float]:
        return self.file.default_cutoffs

    def start_loading(self) -> ModelHandle:
        """Deserialise in a background thread (returns at once)."""
        with self._lock:
            if self._future is None and self._loaded is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
                self._future = pool.submit(self.file.deserialise)
                pool.shutdown(wait=False)  # leaving a `with` block would wait for the load and undo the overlap
        return self

    def loaded(self) -> LoadedModel:
        """The deserialised model (waits for the background load; raises ModelIntegrityError if it was refused)."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._future.result() if self._future is not None else self.file.deserialise()
                self._future = None
            return self._loaded

    def __getstate__(self) -> dict[str, Any]:
        return {"file": self.file}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["file"])  # type: ignore[misc]
