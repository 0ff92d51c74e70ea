"""immunostrat: biomarker stratification for CAR-T trials in systemic lupus erythematosus.

Layout rule: `immunostrat.a.b` lives in `pipelines/a/b.py`; `immunostrat.schemas.*` in `schemas/`;
`immunostrat.models` in `models/`. Capabilities: `cli`, `config`, `ingest`, `stages`, `followup`, `pipeline`,
`flows`, `modelling`, `sponsor`, `reporting` (see the README's layout table).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("immunostrat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
