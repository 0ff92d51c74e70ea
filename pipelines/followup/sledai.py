"""SLEDAI-2K per visit from its 24 descriptors, three-valued: present, absent or unknown.

The descriptors, their weights and kinds are data (`schemas/reference/sledai_2k.csv`, after Gladman 2002;
the sources are in the facts file behind issue 12); a user's file with the same columns replaces it.

A descriptor nobody assessed is *unknown*, never absent: the total is reported only when every descriptor is
known, beside a lower bound (the known present ones), an upper bound (unknown ones counted as present) and the
number of unknown descriptors. `clinical_sledai_2k` leaves out the two serology descriptors (DORIS uses it); a
protocol's own exclusions are a separate score the protocol names.

Sites export descriptors as booleans (true/false, 1/0, yes/no, Y/N) or as their weight (0 or the weight);
`parse_descriptor` reads either, as told, and never guesses between them. An empty cell is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import polars as pl

from immunostrat.errors import SettingsError

Encoding = Literal["boolean", "weight"]
ITEM_PREFIX = "item_"
_KINDS = frozenset({"clinical", "laboratory", "serology"})
_TRUE = ("true", "1", "yes", "y")
_FALSE = ("false", "0", "no", "n")


@dataclass(frozen=True)
class Descriptor:
    """One SLEDAI-2K descriptor: its column name, weight, kind and whether LLDAS counts it as a major organ."""

    item: str
    weight: int
    kind: str  # clinical, laboratory (derivable from labs) or serology (low complement, DNA binding)
    major_organ: bool
    description: str


def default_descriptors_path() -> Path:
    return Path(str(resources.files("immunostrat.schemas") / "reference" / "sledai_2k.csv"))


def load_descriptors(path: str | Path | None = None) -> tuple[Descriptor, ...]:
    """The descriptor table (the built-in SLEDAI-2K one when `path` is None), checked.

    Raises:
        SettingsError: a missing column, a repeated item, a weight that is not a positive whole number, or an
            unknown kind.
    """
    source = Path(path) if path is not None else default_descriptors_path()
    try:
        table = pl.read_csv(source, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SettingsError(f"cannot read the SLEDAI descriptor table {source}: {exc}") from exc
    missing = {"item", "weight", "kind", "major_organ", "description"} - set(table.columns)
    if missing:
        raise SettingsError(f"SLEDAI descriptor table {source} lacks column(s): {', '.join(sorted(missing))}")
    descriptors = []
    for row in table.iter_rows(named=True):  # 24 rows of configuration, not data
        weight = (row["weight"] or "").strip()
        if not weight.isdigit() or int(weight) < 1:
            raise SettingsError(f"{source}: weight of {row['item']!r} must be a whole number >= 1, got {weight!r}")
        if row["kind"] not in _KINDS:
            raise SettingsError(
                f"{source}: kind of {row['item']!r} must be one of {sorted(_KINDS)}, got {row['kind']!r}"
            )
        descriptors.append(
            Descriptor(
                item=row["item"].strip(),
                weight=int(weight),
                kind=row["kind"],
                major_organ=(row["major_organ"] or "").strip().lower() == "true",
                description=row["description"] or "",
            )
        )
    items = [d.item for d in descriptors]
    repeated = sorted({i for i in items if items.count(i) > 1})
    if repeated:
        raise SettingsError(f"{source}: item(s) listed more than once: {', '.join(repeated)}")
    return tuple(descriptors)


def parse_descriptor(text: pl.Expr, weight: int, encoding: Encoding) -> tuple[pl.Expr, pl.Expr]:
    """(value, invalid) expressions for one descriptor column read as text.

    `value` is True (present), False (absent) or null (unknown: an empty cell, or an invalid one); `invalid` is
    True where the cell holds something the encoding does not know (to be quarantined, never guessed).
    """
    cell = text.str.strip_chars()
    empty = cell.is_null() | (cell == "")
    if encoding == "boolean":
        lowered = cell.str.to_lowercase()
        present, absent = lowered.is_in(_TRUE), lowered.is_in(_FALSE)
    elif encoding == "weight":
        number = cell.cast(pl.Float64, strict=False)
        present, absent = number == float(weight), number == 0.0
    else:
        raise ValueError(f"unknown descriptor encoding {encoding!r}; expected 'boolean' or 'weight'")
    value = pl.when(empty).then(None).when(present).then(True).when(absent).then(False).otherwise(None)
    invalid = (~empty & ~present.fill_null(False) & ~absent.fill_null(False)).fill_null(True)
    return value.cast(pl.Boolean), invalid


def sledai_scores(items: pl.DataFrame, descriptors: tuple[Descriptor, ...]) -> pl.DataFrame:
    """The scores of each row of `items` (Boolean `item_<name>` columns; null = unknown).

    Returns `sledai_2k` (null unless every descriptor is known), `sledai_2k_known` (known present ones: a lower
    bound), `sledai_2k_max` (unknown ones counted as present: an upper bound), `sledai_items_missing`, and
    `clinical_sledai_2k` (without the serology descriptors; null unless each of those is known).
    """

    def total(ds: list[Descriptor], unknown_as: bool) -> pl.Expr:
        terms = [pl.col(ITEM_PREFIX + d.item).fill_null(unknown_as).cast(pl.Int64) * d.weight for d in ds]
        return pl.sum_horizontal(terms) if terms else pl.lit(0, pl.Int64)

    def n_unknown(ds: list[Descriptor]) -> pl.Expr:
        terms = [pl.col(ITEM_PREFIX + d.item).is_null().cast(pl.Int64) for d in ds]
        return pl.sum_horizontal(terms) if terms else pl.lit(0, pl.Int64)

    every = list(descriptors)
    clinical = [d for d in descriptors if d.kind != "serology"]
    return items.select(
        pl.when(n_unknown(every) == 0).then(total(every, False)).alias("sledai_2k"),
        total(every, False).alias("sledai_2k_known"),
        total(every, True).alias("sledai_2k_max"),
        n_unknown(every).alias("sledai_items_missing"),
        pl.when(n_unknown(clinical) == 0).then(total(clinical, False)).alias("clinical_sledai_2k"),
    )
