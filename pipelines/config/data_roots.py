"""Paths from configuration kept inside the data roots: every file a run reads or writes must resolve, symlinks
followed, inside one of the folders in ``$IMMUNOSTRAT_DATA_ROOTS`` (`immunostrat.pipeline.launch.check_data_roots`
applies it before any compute; a served run gets its schedules file's roots through `immunostrat.config.settings`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from immunostrat.config.settings import read_settings
from immunostrat.errors import UserError

__all__ = ["DATA_ROOTS_ENV", "PathEscapeError", "confine", "data_roots_from_env"]

DATA_ROOTS_ENV = "IMMUNOSTRAT_DATA_ROOTS"


class PathEscapeError(UserError, ValueError):
    """A configured path resolves outside every configured data root (exit 2, before any compute)."""


def data_roots_from_env(env: Mapping[str, str] | None = None) -> list[Path]:
    """Data roots from ``$IMMUNOSTRAT_DATA_ROOTS`` (``os.pathsep``-separated; `immunostrat.config.settings`, which a
    ``serve``d run scopes to its schedules file's roots), or from ``env`` when given; empty when unset.

    The roots must come from the operator's environment (or the schedules file, read at ``serve`` time), never
    from the run's own parameters: anyone who can start a deployment from the Prefect UI can change those.
    """
    return list(read_settings(env).data_roots)


def confine(path: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]], *, what: str = "path") -> Path:
    """Resolve ``path`` (symlinks followed, ``..`` collapsed) and require it inside one of ``roots``.

    Relative paths resolve against the current directory. The path need not exist yet (an output folder).
    Use the returned path for the actual open: it is what was checked. A symlink swapped in after this check
    is not caught (time-of-check to time-of-use); keep data roots writable only by the people who run studies.

    Args:
        path: The path as configured.
        roots: Allowed roots (resolved the same way).
        what: What the path is, for the message (``labs``, ``out``, ``harmonise.alias_file``, ...).

    Returns:
        The resolved path.

    Raises:
        PathEscapeError: No roots are configured, the path cannot be resolved, or it lies outside every root.
    """
    if not roots:
        raise PathEscapeError(f"{what} {os.fspath(path)!r}: no data roots are configured, so no path is allowed")
    try:
        target = Path(path).resolve(strict=False)
        resolved_roots = [Path(r).resolve(strict=False) for r in roots]
    except (OSError, RuntimeError, ValueError) as exc:  # NUL bytes, symlink loops, names too long
        raise PathEscapeError(f"{what} {os.fspath(path)!r} cannot be resolved: {exc}") from exc
    for root in resolved_roots:
        if target == root or target.is_relative_to(root):
            return target
    shown = ", ".join(str(r) for r in resolved_roots)
    via = "" if str(target) == os.fspath(path) else f" (it resolves to {target})"
    raise PathEscapeError(f"{what} {os.fspath(path)!r} is outside the configured data roots{via}; allowed: {shown}")
