"""Changes to a model registry: save a trained model with its card, point an alias at a model, remove an alias.

Writes are serialised: :func:`save_model`, :func:`set_alias` and :func:`remove_alias` read, change and replace
``registry.json`` under an exclusive lock on ``.registry.lock`` in the registry directory, so two concurrent
trainings or promotes never lose an update. Reads (:mod:`immunostrat.modelling.registry`) take no lock:
``registry.json`` is replaced atomically. Models are immutable versions: a new training writes a new folder and
registry entry, never over an old one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immunostrat.ingest.atomic import atomic_path
from immunostrat.modelling.card import build_card
from immunostrat.modelling.markdown import render_card_markdown
from immunostrat.modelling.registry import (
    CARD_JSON,
    CARD_MD,
    DEFAULT_ALIAS,
    MODEL_FILE,
    REGISTRY_FILE,
    TRUSTED_TYPES,
    ModelIntegrityError,
    RegistryError,
    UnknownModelError,
    check_forms_agree,
    check_name,
    json_bytes,
    read_registry,
    registry_root,
    sha256_hex,
    untrusted_outside_list,
)
from immunostrat.modelling.scoring import CoefficientForm

if TYPE_CHECKING:
    from immunostrat.modelling.fitting import TrainedModel

__all__ = ["LOCK_FILE", "LOCK_TIMEOUT_SECONDS", "remove_alias", "save_model", "set_alias"]

LOCK_FILE = ".registry.lock"
#: How long a registry write waits for another writer (each holds the lock for the few file writes of one save or
#: alias change, so a wait this long means a stuck process or a file system without working locks).
LOCK_TIMEOUT_SECONDS = 60.0
_REQUIRED_CARD_EXTRA = ("intended_use", "limitations")


def _write_atomic(path: Path, data: bytes) -> None:
    # Temp file in the same directory + rename (immunostrat.ingest.atomic.atomic_path): readers never see half a file.
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_registry(root: Path, reg: Mapping[str, Any]) -> None:
    _write_atomic(root / REGISTRY_FILE, json_bytes(reg))


def _check_card_scores_as_archived(card_bytes: bytes, data: bytes, names: tuple[str, ...]) -> None:
    """Registration's check of the two forms: the coefficient form read back from the card's bytes (what runs score
    with) agrees with the estimator read back from the skops bytes (what the registry archives)."""
    import skops.io as sio  # imports scikit-learn: paid by saving a model only

    form = CoefficientForm.from_card(json.loads(card_bytes), names)
    if form is None:
        raise ModelIntegrityError("refusing to save: the card holds no coefficient form")
    check_forms_agree(form, sio.loads(data, trusted=list(TRUSTED_TYPES)), "model to save")


@contextlib.contextmanager
def _registry_lock(root: Path, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the registry's write lock for the body of the ``with``: an exclusive ``flock`` on ``root/.registry.lock``.

    Every read-modify-write of ``registry.json`` runs under it, so two trainings or promotes never lose an update;
    readers take no lock (``registry.json`` is replaced atomically, so they see the old or the new file). As with
    :func:`immunostrat.ingest.atomic.run_lock`, the lock file is created once and never deleted (deleting it would
    let two writers lock two different files), and the kernel releases the lock when its holder exits or is
    killed. Unlike a run folder's lock it waits (polling, up to ``timeout`` seconds) rather than failing at once:
    a registry write takes milliseconds. ``flock`` locks an open file description, so two threads of one process
    exclude each other too; the lock is not re-entrant (never take it twice in one call chain).

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


def set_alias(alias: str, model_id: str, registry_dir: str | os.PathLike[str] | None = None) -> None:
    """Point ``alias`` at ``model_id`` (creating or moving the alias).

    Raises:
        UnknownModelError: ``model_id`` is not in the registry.
        RegistryError: Invalid alias name, the alias would shadow a model id, the registry folder does not exist,
            or its write lock is not free within :data:`LOCK_TIMEOUT_SECONDS`.
    """
    root = registry_root(registry_dir)
    check_name("alias", alias)
    with _registry_lock(root):
        reg = read_registry(root)
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
    root = registry_root(registry_dir)
    if alias == DEFAULT_ALIAS:
        raise RegistryError(f"refusing to remove {DEFAULT_ALIAS!r}: stratify uses it; promote another model instead")
    with _registry_lock(root):
        reg = read_registry(root)
        if alias not in reg["aliases"]:
            raise UnknownModelError(f"unknown alias {alias!r} in registry {root}; known: {sorted(reg['aliases'])}")
        target = str(reg["aliases"].pop(alias))
        _write_registry(root, reg)
    return target


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
        check_name("model id", model_id)
    if alias is not None:
        check_name("alias", alias)
    root = registry_root(registry_dir)
    root.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)

    import skops.io as sio  # imports scikit-learn: paid by saving a model, not by alias changes

    # Everything that needs no registry state is built before the lock is taken, so the lock is held only for
    # the checks against registry.json and the file writes.
    data = sio.dumps(trained.estimator)
    bad = untrusted_outside_list(data, "model to save")
    if bad:
        raise ModelIntegrityError(f"refusing to save: the model holds types outside TRUSTED_TYPES: {bad}")
    sha = sha256_hex(data)
    mid = model_id or f"responder-lr-{created:%Y%m%d}-{sha[:8]}"
    card = build_card(trained, mid, created.isoformat(timespec="seconds"), sha, card_extra)
    card_bytes = json_bytes(card)
    _check_card_scores_as_archived(card_bytes, data, trained.feature_names)
    card_md = render_card_markdown(json.loads(card_bytes)).encode("utf-8")

    with _registry_lock(root):
        reg = read_registry(root)
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
            "card_sha256": sha256_hex(card_bytes),
            "created_at": card["created_at"],
            "features": list(trained.feature_names),
        }
        if alias is not None:
            reg["aliases"][alias] = mid
        _write_registry(root, reg)
    return mid
