"""The errors a user can cause and fix, each with its exit code (docs/operations.md has the table).

Every error here is printed as one line naming the problem and what to do, never with a traceback; any other
exception is a programming error and keeps its traceback. This module is the bottom layer: it imports nothing
from immunostrat, so that every layer can raise these.

Exit codes: 0 success; 1 a run-time stop (quarantine ceiling, drift gate; for `validate`, problems found);
2 unusable input or settings (a missing key, a bad protocol or config, an unknown model or checksum mismatch,
a path outside the data roots, a custom IFN method without a cut-off, a missing required column), found at
launch, before any compute, wherever that is possible.
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_STOPPED = 1
EXIT_UNUSABLE = 2

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_STOPPED: "a run-time stop (quarantine ceiling, drift gate); for validate: problems were found",
    EXIT_UNUSABLE: "unusable input or settings (found at launch, before any compute, wherever it can be)",
}


class UserError(Exception):
    """A problem the user can fix: reported in one line with exit code `exit_code`, never with a traceback."""

    exit_code: ClassVar[int] = EXIT_UNUSABLE
    #: How the command line introduces the message ("unusable input" for a bad file); empty: the command's name.
    label: ClassVar[str] = ""


class SettingsError(UserError):
    """A parameter, config file, protocol or environment setting that cannot be used (exit 2)."""


class RunStopped(UserError):
    """A gate stopped the run after compute started; the run folder is written with status "failed" (exit 1).

    `manifest` holds the run.json entries the gate found before it stopped (e.g. the drift table).
    """

    exit_code: ClassVar[int] = EXIT_STOPPED

    def __init__(self, message: str, manifest: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.manifest = manifest or {}


class QuarantineCeilingError(RunStopped):
    """Too large a fraction of panel rows was quarantined; the run stops with the quarantine written."""


class DriftError(RunStopped):
    """Model features drifted beyond their thresholds and `scoring.fail_on_drift` is set."""


def as_payload(error: UserError) -> dict[str, Any]:
    """A user error as plain data, to carry it across a Prefect state (which keeps no exception object)."""
    payload = {
        "exit_code": error.exit_code,
        "message": str(error),
        "stopped": isinstance(error, RunStopped),
        "kind": type(error).__name__,
        "label": error.label,
    }
    if isinstance(error, RunStopped):
        payload["manifest"] = error.manifest
    return payload


def from_payload(payload: dict[str, Any]) -> UserError:
    """The error `as_payload` described: a RunStopped for a stop, else a UserError with the same exit code."""
    stops = {cls.__name__: cls for cls in (RunStopped, QuarantineCeilingError, DriftError)}
    error: UserError = (
        stops.get(payload.get("kind", ""), RunStopped)(payload["message"], payload.get("manifest"))
        if payload.get("stopped")
        else UserError(payload["message"])
    )
    if error.exit_code != payload["exit_code"]:
        error.exit_code = payload["exit_code"]  # type: ignore[misc]
    if payload.get("label"):
        error.label = payload["label"]  # type: ignore[misc]
    return error


def is_payload(value: Any) -> bool:
    """Whether a Prefect state's data is a user error's payload."""
    return isinstance(value, dict) and {"exit_code", "message", "stopped"} <= set(value)
