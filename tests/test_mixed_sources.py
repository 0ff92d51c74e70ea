"""One prepare() over SDTM LB + CP, FHIR NDJSON and an expression matrix for overlapping subjects (issue 3)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from immunostrat.config.run import RunConfig, ValidationConfig, load_protocol
from immunostrat.ingest.inputs import Inputs, read_labs, read_subjects
from immunostrat.ingest.readers import ReaderOptions, baseline_flag_agreement, merge_reader_quarantine, read_crosswalk
from immunostrat.pipeline.selection import Prepared, build_strata, prepare

from .support import AS_OF

DATA = Path(__file__).parent / "data" / "readers"
LB, CP, FHIR, MATRIX = (
    DATA / "sdtm_lb.csv",
    DATA / "sdtm_cp.json",
    DATA / "fhir_observations.ndjson",
    DATA / "expression_matrix.csv",
)


@pytest.fixture(scope="module")
def run() -> tuple[Inputs, Prepared]:
    """Every source read through `read_labs` with detection (the matrix named), DM as the subjects file."""
    options = ReaderOptions(crosswalk=read_crosswalk(DATA / "crosswalk.csv"), samples=DATA / "expression_samples.csv")
    inputs = Inputs(
        labs=[
            read_labs(LB, None, options),
            read_labs(CP, None, options),
            read_labs(FHIR, None, options),
            read_labs(MATRIX, "expression", options),
        ],
        subjects=read_subjects(DATA / "sdtm_dm.csv", None, options),
    )
    cfg = RunConfig(validation=ValidationConfig(as_of=AS_OF))
    return inputs, merge_reader_quarantine(inputs, prepare(inputs, cfg))


def test_one_harmonised_table_with_conversions_from_every_source(run: tuple[Inputs, Prepared]) -> None:
    """Rows from all four files meet in one table, each converted to its analyte's canonical unit."""
    inputs, prepared = run
    assert [t.fmt for t in inputs.labs] == ["sdtm", "sdtm", "fhir", "expression"]
    h = prepared.harmonised
    assert set(h["source_file"]) == {str(p) for p in (LB, CP, FHIR, MATRIX)}
    got = {(r["source_file"], r["source_row"]): r for r in h.iter_rows(named=True)}

    def at(path: Path, row: int) -> tuple[str, float, str]:
        r = got[(str(path), row)]
        return r["analyte"], pytest.approx(r["value"]), r["unit"]

    assert at(LB, 2) == ("c3", 0.72, "g/L")  # 72 mg/dL (original result)
    assert at(LB, 4) == ("lymphocytes", 1200, "cells/uL")  # 1.2 10^9/L
    assert at(LB, 7) == ("anti_dsdna_xuln", 1.2, "xULN")  # 120 U/mL over an upper limit of 100
    assert at(CP, 1) == ("cd4_t_cells", 520, "cells/uL")  # 520 10^6/L
    assert at(CP, 3) == ("cd19_b_cells", 110, "cells/uL")  # 0.11 10^9/L
    assert at(FHIR, 4) == ("cd19_b_cells", 50, "cells/uL")  # 0.05 10*9/L (UCUM)
    assert at(FHIR, 10) == ("cd4_t_cells", 600, "cells/uL")  # 0.6 10*3/uL
    assert at(FHIR, 11) == ("c4", 0.14, "g/L")  # 14 mg/dL
    assert at(MATRIX, 7) == ("ifn_score", 8.0, "")
    assert got[(str(FHIR), 3)]["censoring"] == ">"
    assert set(h.filter(pl.col("analyte") == "ifn_score")["method"]) == {"MEDIAN_FC_4"}


def test_accounting_identity_per_source_file(run: tuple[Inputs, Prepared]) -> None:
    """rows_read = accepted + outside_panel + quarantined for every file, and in total."""
    _, prepared = run
    counts = prepared.counts
    expected = {
        str(LB): (11, 8, 2, 1),
        str(CP): (4, 3, 1, 0),
        str(FHIR): (9, 5, 1, 3),
        str(MATRIX): (10, 2, 6, 2),
    }
    for path, f in counts["per_file"].items():
        assert (f["rows_read"], f["accepted"], f["outside_panel"], f["quarantined"]) == expected[path]
        assert f["rows_read"] == f["accepted"] + f["outside_panel"] + f["quarantined"]
    assert counts["rows_read"] == counts["accepted"] + counts["outside_panel"] + counts["quarantined"] == 34
    assert (
        counts["quarantined"] == prepared.quarantine.filter(pl.col("source_file") != str(DATA / "sdtm_dm.csv")).height
    )
    assert counts["outside_panel_by_test"]["IFN_REFERENCE_CONTROL"] == 6
    assert counts["reader_quarantined"] == {str(FHIR): 3, str(MATRIX): 2}
    json.dumps(counts)


def test_overlapping_subjects_get_one_strata_row_across_sources(run: tuple[Inputs, Prepared]) -> None:
    """The crosswalk joins SDTM, FHIR and expression identifiers: one baseline profile per subject."""
    inputs, prepared = run
    cfg = RunConfig(validation=ValidationConfig(as_of=AS_OF))
    strata = build_strata(prepared, load_protocol(None), cfg).sort("subject_id")
    assert strata["subject_id"].to_list() == ["SLE01-001", "SLE01-002", "SLE01-003"]
    s1, s2, _ = strata.iter_rows(named=True)
    # SLE01-001: anti-dsDNA, C3 and lymphocytes from SDTM LB, CD4 from CP, CD19 from FHIR, IFN from expression.
    assert (s1["anti_dsdna"], s1["c3"], s1["c3_date"]) == (85.0, 0.72, dt.date(2025, 3, 1))
    assert (s1["cd19_b_cells"], s1["cd4_t_cells"], s1["ifn_score"], s1["ifn_method"]) == (50, 520, 8.0, "MEDIAN_FC_4")
    # SLE01-002: anti-dsDNA >800 IU/mL and CD4 from FHIR, C3 from SDTM (via LOINC), IFN from expression.
    assert (s2["anti_dsdna"], s2["anti_dsdna_censoring"], s2["cd4_t_cells"], s2["ifn_score"]) == (800, ">", 600, 1.5)
    assert s2["age_years"] == 30.0 and s2["first_exposure_date"] == dt.date(2025, 3, 25)
    agreement = baseline_flag_agreement(prepared.harmonised, strata, inputs.labs)
    assert agreement["blfl"]["disagree"] == 0 and agreement["blfl"]["agree"] == 9
    assert agreement["lobxfl"]["ours_only"] == 1  # the kit-unit anti-dsDNA row carries no flag


# --------------------------------------------------------------------------------------------------
# The run's own wiring: prepare() folds reader quarantine in; the output contract knows reader codes
# --------------------------------------------------------------------------------------------------


def test_prepare_alone_keeps_the_identity(run: tuple[Inputs, Prepared]) -> None:
    """Without the helper, prepare() must already count reader-rejected records as quarantined."""
    inputs, _ = run
    counts = prepare(inputs, RunConfig(validation=ValidationConfig(as_of=AS_OF))).counts
    for f in counts["per_file"].values():
        assert f["rows_read"] == f["accepted"] + f["outside_panel"] + f["quarantined"]


def test_reader_quarantine_meets_the_output_contract(run: tuple[Inputs, Prepared]) -> None:
    """quarantine.parquet with reader reason codes passes its contract (write_run checks it before writing)."""
    from immunostrat.schemas.outputs import validate_output

    _, prepared = run
    validate_output("quarantine", prepared.quarantine)


def test_one_stratify_run_over_sdtm_fhir_and_expression(
    tmp_path: Path, trained_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line: one stratify run mixes every source and writes one strata table."""
    from immunostrat.cli.main import main

    args = ["stratify", "--engine", "local", "--labs", str(LB), str(CP), str(FHIR), "--expression", str(MATRIX)]
    args += ["--samples", str(DATA / "expression_samples.csv"), "--crosswalk", str(DATA / "crosswalk.csv")]
    args += ["--subjects", str(DATA / "sdtm_dm.csv"), "--out", str(tmp_path), "--registry", str(trained_registry)]
    args += ["--as-of", AS_OF.isoformat(), "--max-quarantine-fraction", "0.5"]
    assert main(args) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = json.loads((run_dir / "run.json").read_text())
    for f in manifest["counts"]["per_file"].values():
        assert f["rows_read"] == f["accepted"] + f["outside_panel"] + f["quarantined"]
    assert {i["format"] for i in manifest["inputs"]} >= {"sdtm", "fhir", "expression"}
    assert "sdtm_baseline_flags" in manifest["counts"]
    strata = pl.read_parquet(run_dir / "strata.parquet")
    assert strata.height == pl.read_csv(DATA / "sdtm_dm.csv", infer_schema=False).height
    assert strata["ifn_score"].drop_nulls().len() >= 1 and strata["cd4_t_cells"].drop_nulls().len() >= 1
