"""Model features: each derived from one strata column by a named transform (the contract a model card records).

Shared by training, scoring, drift and evaluation; imports nothing from immunostrat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

Transform = Literal["identity", "log2", "log10p1"]

#: Ratios are clipped below at this value before log2, so an undetectable result (ratio 0) maps to a
#: finite, bounded feature (log2(0.01) ≈ -6.64) instead of -inf.
LOG2_FLOOR = 0.01

#: Responder groups, lowest to highest, and the label for subjects the model cannot score.
GROUP_LEVELS: tuple[str, str, str] = ("unlikely", "possible", "likely")
NOT_ASSESSABLE = "not_assessable"

#: Fixed columns added by :func:`immunostrat.modelling.scoring.score_strata` (``contrib_*`` columns come on top).
SCORE_COLUMNS: tuple[str, ...] = (
    "responder_probability",
    "responder_group",
    "top_features",
    "contrib_intercept",
    "model_id",
    "model_sha256",
)

_CUTOFF_KEYS = ("possible_min", "likely_min")


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature, derived from one strata column.

    Attributes:
        name: Feature name as seen by the model (and in ``contrib_<name>``).
        source: Column of the strata frame it is computed from.
        transform: ``identity``; ``log2`` (log2 of the value clipped below at :data:`LOG2_FLOOR`);
            ``log10p1`` (log10(value + 1), for counts that can be 0).
        unit: Unit of the feature after the transform.
        description: What the feature means, for model cards and docs.
    """

    name: str
    source: str
    transform: Transform
    unit: str
    description: str

    def __post_init__(self) -> None:
        if self.transform not in ("identity", "log2", "log10p1"):
            raise ValueError(f"FeatureSpec {self.name!r}: unknown transform {self.transform!r}")

    def to_dict(self) -> dict[str, str]:
        """Return the spec as a JSON-ready dict (used in model cards)."""
        return {
            "name": self.name,
            "source": self.source,
            "transform": self.transform,
            "unit": self.unit,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        """Build a spec from :meth:`to_dict` output."""
        return cls(
            name=str(data["name"]),
            source=str(data["source"]),
            transform=data["transform"],
            unit=str(data["unit"]),
            description=str(data["description"]),
        )


DEFAULT_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "log2_anti_dsdna_ratio",
        "anti_dsdna_ratio",
        "log2",
        "log2(x positivity cut-off)",
        "log2 of baseline anti-dsDNA as a multiple of its positivity cut-off (ratio clipped below at 0.01)",
    ),
    FeatureSpec("c3", "c3", "identity", "g/L", "Baseline complement C3"),
    FeatureSpec("c4", "c4", "identity", "g/L", "Baseline complement C4"),
    FeatureSpec(
        "log2_ifn_ratio",
        "ifn_ratio",
        "log2",
        "log2(x high cut-off)",
        "log2 of the baseline interferon score over its method's high cut-off (ratio clipped below at 0.01)",
    ),
    FeatureSpec(
        "log10_cd19_b_cells",
        "cd19_b_cells",
        "log10p1",
        "log10(cells/uL + 1)",
        "log10 of baseline CD19+ B-cell count + 1",
    ),
    FeatureSpec("cd4_cd8_ratio", "cd4_cd8_ratio", "identity", "ratio", "Baseline CD4+/CD8+ T-cell ratio"),
)

_DEFAULT_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in DEFAULT_FEATURES)


def _feature_expr(spec: FeatureSpec) -> pl.Expr:
    x = pl.col(spec.source).cast(pl.Float64)
    # Non-finite inputs become null before the transform, so NaN/inf never turn into a number.
    x = pl.when(x.is_finite()).then(x).otherwise(None)
    if spec.transform == "log2":
        x = x.clip(lower_bound=LOG2_FLOOR).log(2.0)
    elif spec.transform == "log10p1":
        x = (x + 1.0).log(10.0)
    # ...and again after it (e.g. log10 of a count below -1 is NaN).
    return pl.when(x.is_finite()).then(x).otherwise(None).cast(pl.Float64).alias(spec.name)


def build_feature_frame(strata: pl.DataFrame, features: Sequence[FeatureSpec]) -> pl.DataFrame:
    """Derive the model's feature columns from a strata frame.

    Args:
        strata: One row per subject; must hold every ``spec.source`` column.
        features: Feature specs, in model column order.

    Returns:
        A frame with one Float64 column per feature (named ``spec.name``), same row order as ``strata``;
        null where the source is null or non-finite, or the transform is not finite.

    Raises:
        KeyError: A source column is missing from ``strata``.
        ValueError: Feature names are not unique.
    """
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ValueError(f"feature names must be unique, got {names}")
    missing = sorted({f.source for f in features} - set(strata.columns))
    if missing:
        raise KeyError(f"strata frame lacks feature source column(s) {missing}")
    return strata.select([_feature_expr(f) for f in features])
