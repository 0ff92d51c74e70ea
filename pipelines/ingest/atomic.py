"""Output folders that readers never see half-written: one run at a time, files and folders staged then renamed.

- `run_lock`: an exclusive, non-blocking `flock` on ``OUT/.immunostrat.lock``; a second run on the same output
  folder fails at once with a message naming the holder (pid, host, start time, run id). The kernel releases
  the lock when its holder dies, so a killed run never leaves a stale lock. While the lock is held,
  `RunLock.remove_stale_staging` removes what killed runs left behind (hidden ``.<run_id>.partial`` folders
  and ``.tmp-*`` files).
- `atomic_path` (a file) and `staged_folder` (a folder): the one "stage beside the target, fsync, rename into
  place, clean up on failure" implementation. `rename_into_place` is its last step, and swaps out a folder that
  already exists (the old one is moved aside first, so a reader sees the old or the new, never half of each).

The hidden names written here (``.tmp-*``, ``.<run_id>.partial``) are the ones `is_hidden_leftover` and
`RunLock.remove_stale_staging` recognise, which is why the lock lives beside the staging code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immunostrat.errors import UserError

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "RunLockedError",
    "atomic_path",
    "fsync_dir",
    "is_hidden_leftover",
    "rename_into_place",
    "run_lock",
    "staged_folder",
]

LOCK_NAME = ".immunostrat.lock"

# What `staged_folder` (a hidden staging folder per run id, as `immunostrat.pipeline.engine.runfolder` names it)
# and `atomic_path` (hidden temp files, e.g. of OUT/sponsor-manifest.json) leave behind when a process is killed.
_PARTIAL_RE = re.compile(r"^\.\d{8}T\d{6}Z-[0-9a-f]+\.partial$")
_TMP_RE = re.compile(r"^\.tmp-")
#: A top-level temp file younger than this may belong to a live writer that does not take the run lock
#: (`immunostrat publish` updating OUT/sponsor-manifest.json), so it is left alone.
TMP_MIN_AGE_SECONDS = 3600.0


# --------------------------------------------------------------------------------------------------
# Stage, then rename
# --------------------------------------------------------------------------------------------------


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that renames into it survive a power cut (not only a killed process)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success fsync and rename it into place.

    A crash leaves at most a hidden `.tmp-*` file, never a half-written file under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{final.name}-", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; outputs should get the usual permissions under the caller's umask.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def rename_into_place(staging: Path, final: Path) -> None:
    """Rename a complete staging folder to `final`, swapping out an existing `final` (never half of each).

    The staging folder's entries are fsynced before the rename and the parent after it, so the rename survives
    a power cut. An existing `final` is first renamed aside (a hidden ``.<name>.replaced-*`` sibling), then
    removed once the new folder is in place.
    """
    fsync_dir(staging)  # the folder's entries reach the disk before it is renamed into place
    if final.exists():
        old = final.parent / f".{final.name}.replaced-{secrets.token_hex(3)}"
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def staged_folder(final: str | Path, staging_name: str | None = None, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty hidden folder beside `final` that `rename_into_place` moves to `final` when the block succeeds.

    A crash or an exception leaves no `final` (or the old one, untouched): the staging folder is removed here,
    or, when the process is killed, by the next run's `RunLock.remove_stale_staging` (for run folders).

    Args:
        final: Where the folder appears (its parent is created if missing).
        staging_name: The staging folder's name in the same parent; default ``.<name>.partial-<random>``.
        replace: Swap out an existing `final`; without it an existing `final` is refused before anything is
            created.

    Raises:
        FileExistsError: `final` exists and `replace` is false.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not replace:
        raise FileExistsError(f"{final} already exists")
    staging = final.parent / (staging_name or f".{final.name}.partial-{secrets.token_hex(3)}")
    staging.mkdir()
    try:
        yield staging
        rename_into_place(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def is_hidden_leftover(name: str) -> bool:
    """True for names a killed run may leave in an output folder (hidden staging folders and temp files)."""
    return bool(_PARTIAL_RE.match(name) or _TMP_RE.match(name)) or name == LOCK_NAME


# --------------------------------------------------------------------------------------------------
# One run per output folder
# --------------------------------------------------------------------------------------------------


class RunLockedError(UserError, RuntimeError):
    """Another immunostrat run holds the output folder's lock."""

    def __init__(self, out_dir: Path, holder: Mapping[str, Any] | None) -> None:
        self.out_dir = out_dir
        self.holder = dict(holder or {})
        if self.holder:
            who = (
                f"pid {self.holder.get('pid', '?')} on host {self.holder.get('host', '?')}, "
                f"started {self.holder.get('started_at', '?')}"
            )
            if self.holder.get("run_id"):
                who += f", run {self.holder['run_id']}"
        else:
            who = "a process that has not recorded its details yet"
        super().__init__(
            f"output folder {out_dir} is in use by another immunostrat run ({who}); runs on one output folder "
            f"never interleave. Wait for that run to finish, or write to another --out. "
            f"(lock file: {out_dir / LOCK_NAME})"
        )


@dataclass
class RunLock:
    """A held output-folder lock (see `run_lock`)."""

    out_dir: Path
    path: Path
    holder: dict[str, Any]
    _fd: int = field(repr=False)
    _held: bool = field(default=True, repr=False)

    def remove_stale_staging(self, tmp_min_age: float = TMP_MIN_AGE_SECONDS) -> list[Path]:
        """Remove what killed runs left in the output folder: hidden ``.<run_id>.partial`` folders, ``.tmp-*`` files.

        Safe only under the lock (no other stratify run can be writing), which is why it is a method of the lock.
        Staging folders go whatever their age; top-level ``.tmp-*`` files only when older than ``tmp_min_age``
        seconds, since a publish (which does not take this lock) may be writing one right now. Nothing inside
        finished run folders is touched.

        Args:
            tmp_min_age: Minimum age (by modification time) of a top-level temp file to remove.

        Returns:
            The paths removed (for the run's log / run.json).

        Raises:
            RuntimeError: the lock has already been released.
        """
        if not self._held:
            raise RuntimeError(f"the lock on {self.out_dir} was released; stale staging is only removed under it")
        removed: list[Path] = []
        for entry in sorted(self.out_dir.iterdir()):
            if entry.name == LOCK_NAME:
                continue
            if _PARTIAL_RE.match(entry.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
            elif _TMP_RE.match(entry.name) and (entry.is_file() or entry.is_symlink()):
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - entry.lstat().st_mtime >= tmp_min_age:
                        entry.unlink()
                        removed.append(entry)
        return removed


def _read_holder(fd: int) -> dict[str, Any]:
    """What the lock file says about its holder; empty when it says nothing readable."""
    try:
        raw = os.pread(fd, 65536, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """The lock file's descriptor, and whether we may record ourselves in it."""
    cloexec = getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | cloexec, 0o666), True  # the umask decides who may share
    except PermissionError:  # created by a colleague without group write: lock it read-only, record nothing
        return os.open(path, os.O_RDONLY | cloexec), False


def _take_lock(fd: int, out: Path, path: Path) -> None:
    """flock the file, never waiting; a held lock names its holder."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLockedError(out, _read_holder(fd)) from None
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise OSError(
                exc.errno, f"cannot lock {path}: the file system does not support locks ({exc.strerror})"
            ) from exc
        raise


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike[str], *, run_id: str | None = None) -> Iterator[RunLock]:
    """Hold the output folder's lock for the body of the ``with``; fail at once if another run holds it.

    The lock is an exclusive, non-blocking ``flock`` on ``OUT/.immunostrat.lock`` (created if missing, never
    deleted: deleting a lock file lets two processes lock two different files). The holder's pid, host, start
    time and run id are written into the file so that a refused run can say who is in the way. The kernel drops
    the lock when the holder's file descriptor closes, including when the process is killed.

    ``flock`` locks an open file description: two `run_lock` calls on the same folder conflict even within one
    process, and a child process forked (not exec'd) while the lock is held keeps it held until it exits. On
    network file systems ``flock`` is only as good as the server's lock support (NFSv4: yes; some SMB/FUSE
    mounts: no, in which case the lock cannot be taken and this raises `OSError`).

    Args:
        out_dir: The run output folder (created if missing).
        run_id: Recorded in the lock file for the message another run gets.

    Yields:
        The held lock; call `RunLock.remove_stale_staging` to clean up after killed runs.

    Raises:
        RunLockedError: Another process holds the lock (never waits).
        OSError: The lock file cannot be created or the file system does not support locks.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd, writable = _open_lock_file(path)
    lock: RunLock | None = None
    try:
        _take_lock(fd, out, path)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "run_id": run_id,
        }
        if writable:
            payload = json.dumps(holder, sort_keys=True).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, payload, 0)
            os.fsync(fd)
        lock = RunLock(out_dir=out, path=path, holder=holder, _fd=fd)
        yield lock
    finally:
        if lock is not None:
            lock._held = False
            if writable:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)  # still ours: say nobody holds it
        os.close(fd)  # releases the flock
