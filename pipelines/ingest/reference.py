"""The declarative mapping tables shipped in `schemas/reference/` (codes, units, analytes, IFN methods)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import polars as pl

_STRING_TABLE = {"infer_schema": False}
#: The analyte groups of analytes.csv (`panel_group`): the selection panel (baseline, eligibility, scoring) and
#: the analytes the follow-up reads. The quarantine ceiling applies per group (docs/input.md, Labs).
SELECTION = "selection"
FOLLOW_UP = "follow_up"
PANEL_GROUPS = (SELECTION, FOLLOW_UP)


def _reference_path(name: str) -> Path:
    return Path(str(resources.files("immunostrat.schemas") / "reference" / name))


def _read(path: Path) -> pl.DataFrame:
    # Mapping tables are read as strings so that codes like "5130-0" or units like "1" are never reinterpreted.
    return pl.read_csv(path, infer_schema=False, empty_string_is_null=False)


@dataclass(frozen=True)
class ReferenceTables:
    """The mapping tables one run uses; built once and passed to the stages."""

    analytes: pl.DataFrame  # analyte, canonical_unit, plausible_min, plausible_max, kind, panel_group, description
    test_codes: pl.DataFrame  # code_key (upper-cased), analyte
    units: pl.DataFrame  # analyte, unit_key (lower-cased), target_analyte, conversion, factor
    ifn_methods: pl.DataFrame  # method (upper-cased), high_cutoff, inclusive

    @property
    def panel(self) -> list[str]:
        """Canonical analytes, in table order."""
        return self.analytes["analyte"].to_list()

    @property
    def selection_panel(self) -> list[str]:
        """The selection panel's analytes (`panel_group` selection), in table order: the strata's analytes."""
        return self.analytes.filter(pl.col("panel_group") == SELECTION)["analyte"].to_list()

    def panel_group_of(self) -> dict[str, str]:
        """Analyte -> its `panel_group`."""
        return dict(zip(self.analytes["analyte"].to_list(), self.analytes["panel_group"].to_list(), strict=True))

    def allowed_units(self) -> pl.DataFrame:
        """Per reported analyte, the accepted unit spellings as one readable string."""
        return (
            self.units.group_by("analyte", maintain_order=True)
            .agg(pl.col("unit").filter(pl.col("unit") != "").str.join(", ").alias("allowed_units"))
            .with_columns(pl.col("allowed_units").fill_null(""))
        )


def _ifn_table(path: Path) -> pl.DataFrame:
    raw = _read(path)
    missing = {"method", "high_cutoff", "inclusive"} - set(raw.columns)
    if missing:
        raise ValueError(f"IFN methods file {path} lacks column(s): {', '.join(sorted(missing))}")
    table = raw.select(
        pl.col("method").str.strip_chars().str.to_uppercase(),
        pl.col("high_cutoff").cast(pl.Float64, strict=False),
        pl.col("inclusive").str.to_lowercase().is_in(["true", "1", "yes"]).alias("inclusive"),
    )
    bad = table.filter(~(pl.col("high_cutoff").is_finite() & (pl.col("high_cutoff") > 0)).fill_null(True))
    if bad.height:
        # Scores are standardised as score / cut-off, so a cut-off must be a positive number.
        raise ValueError(f"IFN methods file {path}: high_cutoff must be a number > 0 for {bad['method'].to_list()}")
    return table


def _check_groups_kept(units: pl.DataFrame, analytes: pl.DataFrame) -> None:
    """A unit conversion never moves a row to another panel group: the ceiling counts rows by their test's group."""
    group = dict(zip(analytes["analyte"].to_list(), analytes["panel_group"].to_list(), strict=True))
    for row in units.select("analyte", "target_analyte").unique().iter_rows():  # a few dozen pairs
        if group.get(row[0]) != group.get(row[1]):
            raise ValueError(f"units.csv: {row[0]} converts to {row[1]}, in another panel group")


def load_reference(alias_file: Path | None = None, ifn_methods_file: Path | None = None) -> ReferenceTables:
    """Load the built-in tables, plus a user alias table and IFN-method table when given."""
    return _load_reference(str(alias_file) if alias_file else None, str(ifn_methods_file) if ifn_methods_file else None)


@cache
def _load_reference(alias_file: str | None, ifn_methods_file: str | None) -> ReferenceTables:
    analytes = _read(_reference_path("analytes.csv")).with_columns(
        pl.col("plausible_min").cast(pl.Float64), pl.col("plausible_max").cast(pl.Float64)
    )
    groups = set(analytes["panel_group"].to_list()) - set(PANEL_GROUPS)
    if groups:
        raise ValueError(f"analytes.csv: unknown panel_group(s) {sorted(groups)}; expected one of {PANEL_GROUPS}")
    codes = _read(_reference_path("test_codes.csv")).select("code", "analyte")
    if alias_file:
        extra = _read(Path(alias_file))
        missing = {"code", "analyte"} - set(extra.columns)
        if missing:
            raise ValueError(f"alias file {alias_file} lacks column(s): {', '.join(sorted(missing))}")
        unknown = sorted(set(extra["analyte"].to_list()) - set(analytes["analyte"].to_list()))
        if unknown:
            raise ValueError(f"alias file {alias_file} maps to unknown analyte(s): {', '.join(unknown)}")
        codes = pl.concat([codes, extra.select("code", "analyte")])
    codes = codes.with_columns(code_key=pl.col("code").str.strip_chars().str.to_uppercase())
    clashes = codes.group_by("code_key").agg(pl.col("analyte").n_unique().alias("n")).filter(pl.col("n") > 1)
    if clashes.height:
        raise ValueError(f"test codes map to more than one analyte: {', '.join(clashes['code_key'].to_list())}")
    units = _read(_reference_path("units.csv")).with_columns(
        unit_key=pl.col("unit").str.strip_chars().str.to_lowercase(),
        factor=pl.col("factor").replace("", None).cast(pl.Float64),
    )
    _check_groups_kept(units, analytes)
    ifn = _ifn_table(Path(ifn_methods_file) if ifn_methods_file else _reference_path("ifn_methods.csv"))
    return ReferenceTables(
        analytes=analytes,
        test_codes=codes.unique("code_key", keep="first", maintain_order=True).select("code_key", "analyte"),
        units=units,
        ifn_methods=ifn,
    )
