"""`write_cohort`: the cohort's tables written atomically as Parquet or CSV files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from immunostrat.ingest.atomic import atomic_path
from immunostrat.synth.results import SynthCohort


def write_cohort(
    cohort: SynthCohort,
    out_dir: str | os.PathLike[str],
    fmt: Literal["parquet", "csv"] = "parquet",
    *,
    include_truth: bool = False,
) -> dict[str, Path]:
    """Write labs, subjects and outcomes (and optionally truth) atomically as <name>.<fmt> in out_dir.

    A cohort with follow-up also gets `visits` and `labs_followup` (and, with `include_truth`,
    `followup_truth`); `labs` holds the selection-time rows only, so earlier runs on it stay unchanged.

    Each file is written to a temporary file in the same directory and then moved into place with
    os.replace, so readers never see a half-written file. CSV keeps "" distinct from null, so lab rows read
    back with ``pl.read_csv(path, infer_schema=False)`` equal the generated strings.

    Args:
        cohort: the cohort to write.
        out_dir: target directory (created if needed).
        fmt: "parquet" or "csv".
        include_truth: also write truth.<fmt> (kept separate so it is not handed to a pipeline by accident).

    Returns:
        Mapping of table name ("labs", "subjects", "outcomes"[, "visits", "labs_followup"][, "truth"
        [, "followup_truth"]]) to the written path.
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"labs": cohort.labs, "subjects": cohort.subjects, "outcomes": cohort.outcomes}
    if cohort.followup is not None:
        tables.update(visits=cohort.followup.visits, labs_followup=cohort.followup.labs, events=cohort.followup.events)
    if include_truth:
        tables["truth"] = cohort.truth
        if cohort.followup is not None:
            tables["followup_truth"] = cohort.followup.truth
    written: dict[str, Path] = {}
    for name, frame in tables.items():  # three to seven files, not rows
        target = out / f"{name}.{fmt}"
        with atomic_path(target) as tmp:
            if fmt == "parquet":
                frame.write_parquet(tmp)
            else:
                frame.write_csv(tmp)
        written[name] = target
    return written
