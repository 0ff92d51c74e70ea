"""SDTM readers: LB/CP/DM from XPT, CSV and Dataset-JSON, the CDISC pilot files, baseline-flag agreement."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from immunostrat.config.run import RunConfig, ValidationConfig, load_protocol
from immunostrat.ingest.inputs import Inputs, read_labs, read_subjects
from immunostrat.ingest.io import InputError
from immunostrat.ingest.readers import (
    ReaderOptions,
    baseline_flag_agreement,
    merge_reader_quarantine,
    read_sdtm_labs,
    read_sdtm_table,
    sniff,
)
from immunostrat.ingest.reference import load_reference
from immunostrat.pipeline.selection import build_strata, prepare

from .fixtures_labs import LAB_COLUMNS

DATA = Path(__file__).parent / "data" / "readers"
PILOT = Path(__file__).resolve().parents[2] / "shared" / "samples" / "sdtm-cdiscpilot01"
CONTRACT = [*LAB_COLUMNS, "source_file", "source_row"]
CFG = RunConfig(validation=ValidationConfig(as_of=dt.date(2026, 11, 1)))

needs_pilot = pytest.mark.skipif(
    not (PILOT / "lb.xpt").is_file(), reason=f"CDISC pilot samples not found at {PILOT} (shared/ not beside the repo)"
)


def _prepared(*paths: Path, subjects: Path | None = None, options: ReaderOptions | None = None):
    inputs = Inputs(
        labs=[read_labs(p, None, options) for p in paths],
        subjects=read_subjects(subjects, None, options) if subjects else None,
    )
    return inputs, merge_reader_quarantine(inputs, prepare(inputs, CFG))


def _identity_holds(counts: dict) -> None:
    for path, f in counts["per_file"].items():
        assert f["rows_read"] == f["accepted"] + f["outside_panel"] + f["quarantined"], path


# --------------------------------------------------------------------------------------------------
# The CDISC pilot (real SDTM)
# --------------------------------------------------------------------------------------------------


@needs_pilot
def test_pilot_xpt_and_dataset_json_parse_to_identical_frames() -> None:
    """All 3,488 rows, every column: the XPT (IBM floats) and Dataset-JSON frames are equal."""
    xpt = read_labs(PILOT / "lb.xpt")
    js = read_labs(PILOT / "lb.json")
    assert (xpt.fmt, js.fmt) == ("sdtm", "sdtm")
    assert (xpt.notes["container"], js.notes["container"]) == ("xpt", "json")
    assert xpt.frame.columns == CONTRACT
    assert xpt.frame.height == js.frame.height == 3488
    assert_frame_equal(xpt.frame.drop("source_file"), js.frame.drop("source_file"))
    assert xpt.detail is not None and js.detail is not None
    assert_frame_equal(xpt.detail.drop("source_file"), js.detail.drop("source_file"))
    # 8.55 is stored as 8.549999999999999 in IBM floating point; it must read as written.
    assert "8.549999999999999" not in set(xpt.detail["result_standard_n"].drop_nulls().to_list())


@needs_pilot
@pytest.mark.parametrize("name", ["lb.xpt", "lb.json"])
def test_pilot_lymphocytes_accepted_in_cells_per_ul_and_the_rest_outside_panel(name: str) -> None:
    """106 LYM rows (10^9/L) become lymphocytes x1000 cells/uL; CREAT (107), HGB, PLAT and WBC (106 each) are
    follow-up analytes; the other 2,957 rows are outside the panel, per test code."""
    inputs, prepared = _prepared(PILOT / name)
    counts = prepared.counts
    assert (counts["rows_read"], counts["accepted"], counts["outside_panel"], counts["quarantined"]) == (
        3488,
        531,
        2957,
        0,
    )
    _identity_holds(counts)
    assert counts["panel_groups"]["selection"] == {"panel_rows": 106, "accepted": 106, "quarantined": 0}
    assert counts["panel_groups"]["follow_up"] == {"panel_rows": 425, "accepted": 425, "quarantined": 0}
    follow_up = prepared.harmonised.filter(pl.col("analyte") != "lymphocytes")
    assert set(follow_up["analyte"]) == {"creatinine", "hemoglobin", "platelets", "wbc"}
    assert set(follow_up["test_reported"]) == {"CREAT", "HGB", "PLAT", "WBC"}
    h = prepared.harmonised.filter(pl.col("analyte") == "lymphocytes")
    assert set(h["unit"]) == {"cells/uL"}
    assert set(h["test_reported"]) == {"LYM"} and set(h["unit_reported"]) == {"10^9/L"}
    raw = inputs.labs[0].frame.filter(pl.col("test") == "LYM").sort("source_row")
    expected = raw["result"].cast(pl.Float64) * 1000
    assert h.sort("source_row")["value"].to_list() == pytest.approx(expected.to_list())
    assert h["ref_low"].unique().to_list() == [800.0] and h["ref_high"].unique().to_list() == [3000.0]
    panel_tests = ["LYM", "CREAT", "HGB", "PLAT", "WBC"]
    by_test = inputs.labs[0].frame.filter(~pl.col("test").is_in(panel_tests)).group_by("test").len()
    assert counts["outside_panel_by_test"] == dict(by_test.iter_rows())
    assert "LYM" not in counts["outside_panel_by_test"]


@needs_pilot
def test_pilot_dm_subjects_and_baseline_flag_agreement() -> None:
    """DM gives subjects (RFSTDTC, RFXSTDTC, AGE, SEX); our baseline is compared with LBLOBXFL."""
    inputs, prepared = _prepared(PILOT / "lb.xpt", subjects=PILOT / "dm.xpt")
    subjects = inputs.subjects
    assert subjects is not None and subjects.rows_read == 18
    first = subjects.frame.row(0, named=True)
    assert (first["subject_id"], first["reference_date"], first["first_exposure_date"]) == (
        "CDISC001",
        "2012-11-30",
        "2012-11-30",
    )
    assert (first["sex"], first["age_years"], first["site_id"]) == ("M", "84.0", "701")
    # CDISC015 has no RFSTDTC (a screen failure): its reference date is missing, so it is quarantined.
    assert prepared.counts["subjects"]["quarantined_by_reason"] == {"REFERENCE_DATE_INVALID": 1}
    strata = build_strata(prepared, load_protocol(None), CFG)
    agreement = baseline_flag_agreement(prepared.harmonised, strata, inputs.labs)
    assert set(agreement) == {"lobxfl"}  # the pilot carries LBLOBXFL, not LBBLFL
    lob = agreement["lobxfl"]
    # Two subjects had an unscheduled retest after the flagged screening sample: we take the later one.
    assert (lob["agree"], lob["disagree"], lob["flag_only"], lob["ours_only"]) == (15, 2, 0, 0)
    json.dumps(agreement)  # JSON-safe for run.json


@needs_pilot
def test_pilot_dm_reference_date_from_informed_consent() -> None:
    """reference_date_from=RFICDTC switches the anchor; XPT and Dataset-JSON DM agree."""
    options = ReaderOptions(reference_date_from="RFICDTC")
    xpt = read_subjects(PILOT / "dm.xpt", None, options)
    js = read_subjects(PILOT / "dm.json", None, options)
    assert_frame_equal(xpt.frame.drop("source_file"), js.frame.drop("source_file"))
    assert xpt.frame["reference_date"][0] == "2012-11-23"
    assert xpt.notes["reference_date_from"] == "RFICDTC"


# --------------------------------------------------------------------------------------------------
# Hand-written SDTM with lupus analytes in mixed units
# --------------------------------------------------------------------------------------------------


def test_hand_written_lb_results_units_codes_and_dates() -> None:
    """Standardised vs original results, LOINC fallback, kit units, censoring, hour-only and month-only dates."""
    inputs, prepared = _prepared(DATA / "sdtm_lb.csv")
    table = inputs.labs[0]
    assert table.notes["result_from"] == {"standard": 9, "original": 2}
    assert table.notes["test_from"] == {"testcd": 8, "loinc": 1}
    assert table.notes["collection_dates"] == {"date": 8, "datetime": 1, "hour_only": 1, "partial": 1}
    h = prepared.harmonised.sort("source_row")
    got = {r["source_row"]: r for r in h.iter_rows(named=True)}
    assert (got[1]["analyte"], got[1]["value"], got[1]["unit"], got[1]["method"]) == (
        "anti_dsdna",
        85,
        "IU/mL",
        "ELISA",
    )
    # No standardised result: the original 72 mg/dL (range 90-180 mg/dL) is converted to g/L.
    assert (got[2]["value"], got[2]["ref_low"], got[2]["ref_high"]) == pytest.approx((0.72, 0.9, 1.8))
    assert got[2]["collected_at"] == dt.datetime(2025, 3, 1)  # 2025-03-01T09 keeps its date
    assert (got[3]["value"], got[3]["censoring"], got[3]["result_reported"]) == (0.06, "<", "<0.06")
    assert (got[4]["analyte"], got[4]["value"]) == ("lymphocytes", 1200)
    assert (got[6]["analyte"], got[6]["test_reported"]) == ("c3", "4485-9")  # local LBTESTCD, LOINC maps
    assert (got[7]["analyte"], got[7]["value"]) == ("anti_dsdna_xuln", pytest.approx(1.2))
    q = prepared.quarantine.row(0, named=True)
    assert (q["source_row"], q["reason_code"], q["value"]) == (9, "DATE_INVALID", "2025-02")
    assert "partial dates are not accepted" in q["message"]
    assert prepared.counts["outside_panel_by_test"] == {"ALB": 1, "ALT": 1}
    _identity_holds(prepared.counts)


def test_dataset_json_and_ndjson_cp_identical() -> None:
    """CP (flow cytometry) from Dataset-JSON .json and .ndjson: same frame; CP codes map to the panel."""
    js = read_labs(DATA / "sdtm_cp.json")
    nd = read_labs(DATA / "sdtm_cp.ndjson")
    assert (js.notes["domain"], nd.notes["container"]) == ("CP", "ndjson")
    assert_frame_equal(js.frame.drop("source_file"), nd.frame.drop("source_file"))
    _, prepared = _prepared(DATA / "sdtm_cp.json")
    h = prepared.harmonised.sort("source_row")
    assert h.select("analyte", "value").rows() == [
        ("cd4_t_cells", 520.0),
        ("cd8_t_cells", 310.0),
        ("cd19_b_cells", 110.0),
    ]
    assert prepared.counts["outside_panel_by_test"] == {"NKLY": 1}


def test_dm_age_units_and_datetime_reference(tmp_path: Path) -> None:
    """AGE in MONTHS becomes years; AGE without AGEU gives no age (counted); RFSTDTC date-times are kept."""
    dm = tmp_path / "dm.csv"
    dm.write_text(
        "STUDYID,DOMAIN,USUBJID,RFSTDTC,RFXSTDTC,AGE,AGEU,SEX\n"
        "S,DM,A,2025-03-03T10:30,2025-03-20,360,MONTHS,F\n"
        "S,DM,B,2025-03-03,,41,,M\n"
        "S,DM,C,2025-03,,41,YEARS,F\n"
    )
    table = read_subjects(dm)
    rows = table.frame.rows(named=True)
    assert [r["age_years"] for r in rows] == ["30.0", None, "41"]
    assert rows[0]["reference_date"] == "2025-03-03T10:30"
    assert table.notes["age_not_read"] == {"AGEU missing": 1}
    assert table.notes["reference_dates"] == {"date": 1, "datetime": 1, "partial": 1}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("STUDYID,USUBJID,RFSTDTC\nS,A,2025-01-01\n", "give it as the subjects file"),
        ("STUDYID,USUBJID,LBTESTCD\nS,A,C3\n", "lacks required variable"),
        ("STUDYID,USUBJID,DOMAIN\nS,A,LB\n", "no LBTESTCD or CPTESTCD"),
    ],
)
def test_sdtm_lab_file_errors(tmp_path: Path, content: str, problem: str) -> None:
    """Unusable SDTM lab files stop the run with a message naming the problem."""
    path = tmp_path / "lb.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=problem):
        read_labs(path)


def test_dataset_json_version_and_record_count_checked(tmp_path: Path) -> None:
    """Dataset-JSON 1.0 is refused; a records count that does not match the rows means a truncated file."""
    doc = json.loads((DATA / "sdtm_cp.json").read_text())
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**doc, "datasetJSONVersion": "1.0.0"}))
    with pytest.raises(InputError, match="not supported"):
        read_labs(old)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({**doc, "rows": doc["rows"][:2]}))
    with pytest.raises(InputError, match="declares 4 records but holds 2"):
        read_labs(short)


def test_format_detection_from_content(tmp_path: Path) -> None:
    """XPT magic, Dataset-JSON keys and SDTM CSV headers are detected whatever the file is called."""
    import pyreadstat

    frame = pl.read_csv(DATA / "sdtm_lb.csv", infer_schema=False).with_columns(pl.col("LBSTRESN").cast(pl.Float64))
    xpt = tmp_path / "looks_like.csv"
    pyreadstat.write_xport(frame, str(xpt), table_name="LB", file_format_version=5)
    assert sniff(xpt).container == "xpt" and sniff(xpt).kind == "sdtm"
    assert (sniff(DATA / "sdtm_cp.ndjson").container, sniff(DATA / "sdtm_cp.ndjson").kind) == ("ndjson", "sdtm")
    assert sniff(DATA / "sdtm_lb.csv").kind == "sdtm"
    assert sniff(Path(__file__).parents[1] / "data" / "samples" / "labs.csv").kind == "native"
    # The XPT written from the CSV reads back to the CSV's frame (numbers to 15 significant digits).
    from_xpt = read_labs(xpt).frame.drop("source_file")
    from_csv = read_labs(DATA / "sdtm_lb.csv").frame.drop("source_file")
    assert_frame_equal(from_xpt, from_csv)


# --------------------------------------------------------------------------------------------------
# Property: Dataset-JSON and XPT of the same rows read to the same frame
# --------------------------------------------------------------------------------------------------

_decimal = st.decimals(min_value=Decimal("-99999"), max_value=Decimal("99999"), places=4, allow_nan=False)
_text = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=8)
_row = st.tuples(_text, st.one_of(st.none(), _decimal), _text)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=6))
def test_dataset_json_rows_match_xpt_rows(rows: list[tuple[str, Decimal | None, str]]) -> None:
    """Random rows written as XPT (IBM floats), .json and .ndjson read to the same text frame."""
    import pyreadstat

    columns = [
        {"itemOID": "IT.USUBJID", "name": "USUBJID", "label": "u", "dataType": "string"},
        {"itemOID": "IT.LBSTRESN", "name": "LBSTRESN", "label": "n", "dataType": "float"},
        {"itemOID": "IT.LBTESTCD", "name": "LBTESTCD", "label": "t", "dataType": "string"},
    ]
    values = [[u, None if n is None else float(n), t] for u, n, t in rows]
    meta = {"datasetJSONVersion": "1.1.0", "records": len(values), "name": "LB", "label": "LB", "columns": columns}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "lb.json").write_text(json.dumps({**meta, "rows": values}))
        (base / "lb.ndjson").write_text("\n".join([json.dumps(meta), *(json.dumps(v) for v in values)]) + "\n")
        frame = pl.DataFrame(
            values, schema={"USUBJID": pl.String, "LBSTRESN": pl.Float64, "LBTESTCD": pl.String}, orient="row"
        )
        pyreadstat.write_xport(frame, str(base / "lb.xpt"), table_name="LB", file_format_version=5)
        frames = [read_sdtm_table(base / n).frame for n in ("lb.json", "lb.ndjson", "lb.xpt")]
    for other in frames[1:]:
        assert_frame_equal(frames[0], other)
    numbers = frames[0]["LBSTRESN"].to_list()
    for (_, n, _), text in zip(rows, numbers, strict=True):
        assert (text is None) if n is None else Decimal(text) == n


def test_reader_panel_check_honours_alias_file(tmp_path: Path) -> None:
    """A site alias makes a local LBTESTCD a panel code for the reader's preference, as for harmonise."""
    aliases = tmp_path / "aliases.csv"
    aliases.write_text("code,analyte\nC3LOCAL,c3\n")
    table = read_sdtm_labs(DATA / "sdtm_lb.csv", load_reference(aliases))
    assert table.frame.filter(pl.col("source_row") == 6)["test"].item() == "C3LOCAL"
