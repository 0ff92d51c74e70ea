"""Constants and small types shared by tests (importable, unlike conftest)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

AS_OF = dt.date(2026, 11, 1)


@dataclass(frozen=True)
class Cohort:
    """Paths of a generated cohort."""

    labs: Path
    subjects: Path
    outcomes: Path
