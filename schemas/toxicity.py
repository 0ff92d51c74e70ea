"""Contract for `toxicity.parquet`: one row per subject, the worst of each toxicity (issue 13).

Built from the contracts of its parts, so it cannot drift from them: the worst CRS and ICANS grades with onset
(`CrsIcansWorst`), ICAHT and its platelet companion (`IcahtGrades`), the LICATS renal signal day (from
`ImmuneCourse`) and the worst treatment-emergent CTCAE grade per term (`WorstGradesWide`, one
`ctcae_<term>_worst_grade` column per term of the criteria table).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from immunostrat.schemas.immune_course import ImmuneCourse
from immunostrat.schemas.lab_grades import WorstGradesWide
from immunostrat.schemas.outputs import check_contract
from immunostrat.schemas.toxicity_events import CrsIcansWorst, IcahtGrades

__all__ = ["LICATS_COLUMNS", "Toxicity", "validate_toxicity"]

_KEY = ["study_id", "subject_id"]
#: The immune course's LICATS columns that toxicity.parquet repeats.
LICATS_COLUMNS: tuple[str, ...] = ("licats_signal_day", "licats_reason")


def _toxicity_schema() -> pa.DataFrameSchema:
    schema = CrsIcansWorst.to_schema()
    icaht = IcahtGrades.to_schema()
    licats = ImmuneCourse.to_schema().columns
    ctcae = WorstGradesWide.to_schema().remove_columns(_KEY)
    schema = schema.add_columns(
        {
            **icaht.remove_columns(_KEY).columns,
            **{c: licats[c] for c in LICATS_COLUMNS},
            **ctcae.columns,
        }
    )
    schema.checks = [*schema.checks, *icaht.checks]
    schema.name = "Toxicity"
    schema.title = "toxicity.parquet"
    schema.description = (
        "One subject's worst toxicities: CRS and ICANS (ASTCT 2019) with onset, ICAHT early and late with the "
        "platelet companion grades (EHA/EBMT 2023), the LICATS renal signal day, and the worst treatment-emergent "
        "CTCAE v5 grade per laboratory term."
    )
    schema.unique = _KEY
    return schema


#: The toxicity.parquet contract (a schema composed from its parts' models).
Toxicity: pa.DataFrameSchema = _toxicity_schema()


def validate_toxicity(frame: pl.DataFrame) -> pl.DataFrame:
    """Validate a toxicity table eagerly and return it (OutputContractError names what failed)."""
    return check_contract("toxicity.parquet", Toxicity, frame)
