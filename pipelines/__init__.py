"""immunostrat: biomarker stratification for CAR-T trials in systemic lupus erythematosus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("immunostrat")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
