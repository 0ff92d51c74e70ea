"""Property tests: random, defective lab files through read -> harmonise -> validate; the result parser."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from immunostrat.config.run import HarmoniseConfig
from immunostrat.ingest.inputs import read_labs
from immunostrat.ingest.io import LAB_OPTIONAL, LAB_REQUIRED, InputError
from immunostrat.ingest.reference import load_reference
from immunostrat.stages.harmonise import harmonise_labs
from immunostrat.stages.validate import lab_rules, validate_labs

from .fixtures_labs import AS_OF, IFN_METHODS, lab_row, raw_labs, write_csv

# Modest by default (the file runs in seconds); raise with IMMUNOSTRAT_PROPERTY_EXAMPLES=2000 to hunt.
EXAMPLES = int(os.environ.get("IMMUNOSTRAT_PROPERTY_EXAMPLES", "50"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
LAB_CODES = {r.code for r in lab_rules(AS_OF, IFN_METHODS)}

# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------

characters = st.characters(exclude_categories=["Cs"])  # any code point UTF-8 can encode
unicode_text = st.text(characters, max_size=12)
long_text = st.builds(lambda ch, n: ch * n, characters, st.integers(500, 3000))
comparators = st.sampled_from(["", "<", ">", "<=", ">="])
spaces = st.sampled_from(["", " ", "  ", "\t"])


def _maybe(values: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.just(""), values)


number_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: f"{x:.3f}"),
    st.integers(-10, 100_000).map(str),
    st.sampled_from(["1e400", "-1e400", "NaN", "inf", "-0", ".5", "5.", "1,5", "9" * 400]),
)
results = st.one_of(
    st.builds(lambda s1, c, s2, n, s3: f"{s1}{c}{s2}{n}{s3}", spaces, comparators, spaces, number_text, spaces),
    st.sampled_from(["positive", "<<5", "< = 5", "=5", "10-20", "n/a"]),
    unicode_text,
    long_text,
)
tests = st.one_of(
    st.sampled_from(
        ["c3", "C3", " c4 ", "5130-0", "ADSDNA", "anti_dsdna", "ifn_score", "IFNGS", "cd19_b_cells", "8117-4", "LYM"]
    ),
    st.sampled_from(["ALB", "CRP", "HGB", "", "  "]),
    unicode_text,
)
units = st.one_of(
    st.sampled_from(
        ["g/L", "mg/dL", " MG/DL ", "10^9/L", "10*9/L", "cells/uL", "%", "U/mL", "AU/mL", "IU/mL", "kIU/L"]
    ),
    st.sampled_from(["", "furlongs", "mmol/L"]),
    unicode_text,
)
dates = st.one_of(
    st.dates(min_value=dt.date(1900, 1, 1)).map(lambda d: d.isoformat()),
    st.builds(
        lambda d, h, m, s, tz: f"{d.isoformat()}T{h:02d}:{m:02d}:{s:02d}{tz}",
        st.dates(),
        st.integers(0, 26),
        st.integers(0, 61),
        st.integers(0, 61),
        st.sampled_from(["", "Z", "+02:00", "-05:30", "+0100", "+14"]),
    ),
    st.sampled_from(["2025-02-30", "2026-03", "2026", "2025-03-04T25:00", "04/03/2025", "2025-06-30", "2025-07-01"]),
    unicode_text,
)
identifiers = st.one_of(st.sampled_from(["S1", "S2", " S1 "]), unicode_text)
subjects = st.one_of(st.sampled_from(["P1", "P2", "P3", " P1", "P1 "]), unicode_text, long_text)
methods = st.one_of(st.sampled_from(["median_fc_21", "MEAN_Z", "xyz", " "]), unicode_text)
limits = st.one_of(number_text, st.sampled_from(["abc", "1,8"]), unicode_text)

# Defects: any value of the wide strategies above, or an empty/missing cell.
DEFECTS: dict[str, st.SearchStrategy[str | None]] = {
    "study_id": _maybe(identifiers),
    "subject_id": _maybe(subjects),
    "test": _maybe(tests),
    "result": _maybe(results),
    "unit": _maybe(units),
    "collected_at": _maybe(dates),
    "site_id": _maybe(unicode_text),
    "method": _maybe(methods),
    "ref_low": _maybe(limits),
    "ref_high": _maybe(limits),
}
# Coherent (test, unit, method, ref_high) combinations a valid row is built from.
PANEL = [
    ("c3", "g/L", None, "1.8"),
    ("C3", "mg/dL", None, "180"),
    ("5130-0", "IU/mL", None, None),
    ("anti_dsdna", "U/mL", None, "100"),
    ("ifn_score", "", "MEDIAN_FC_21", None),
    ("cd19_b_cells", "10^9/L", None, None),
    ("cd19_b_cells", "%", None, None),
    ("LYM", "cells/uL", None, None),
]
valid_results = st.builds(
    lambda c, s, x: f"{c}{s}{x}", comparators, spaces, st.floats(0, 5, allow_nan=False).map(lambda x: f"{x:.2f}")
)
valid_dates = st.one_of(
    st.dates(dt.date(2020, 1, 1), AS_OF).map(lambda d: d.isoformat()),
    st.builds(
        lambda d, h, m, tz: f"{d.isoformat()}T{h:02d}:{m:02d}{tz}",
        st.dates(dt.date(2020, 1, 1), AS_OF),
        st.integers(0, 23),
        st.integers(0, 59),
        st.sampled_from(["", ":00", "Z", "+02:00", "-0530"]),
    ),
)


@st.composite
def lab_rows(draw: st.DrawFn) -> dict[str, str | None]:
    """A valid row of a random panel test, with each field replaced by a defect about one time in ten."""
    test, unit, method, ref_high = draw(st.sampled_from(PANEL))
    row = lab_row(
        subject_id=draw(st.sampled_from(["P1", "P2", "P3"])),
        test=test,
        unit=unit,
        method=method,
        ref_low=None,
        ref_high=ref_high,
        result=draw(valid_results),
        collected_at=draw(valid_dates),
    )
    for column, defect in DEFECTS.items():
        if draw(st.integers(0, 9)) == 0:
            row[column] = draw(defect)
    return row


@st.composite
def lab_tables(draw: st.DrawFn) -> list[dict[str, str | None]]:
    """Random rows, some repeated exactly and some repeated with another result."""
    rows = draw(st.lists(lab_rows(), min_size=0, max_size=25))
    if rows:
        for index in draw(st.lists(st.integers(0, len(rows) - 1), max_size=4)):
            copy = dict(rows[index])
            if draw(st.booleans()):
                copy["result"] = draw(results)
            rows.append(copy)
    return draw(st.permutations(rows))


@st.composite
def headers(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """(columns, header names as written): optional columns may be missing; names get odd case and spaces."""
    optional = draw(st.lists(st.sampled_from(LAB_OPTIONAL), unique=True))
    columns = draw(st.permutations([*LAB_REQUIRED, *optional]))
    if draw(st.booleans()):
        columns = [*columns, "comment"]
    written = [draw(st.sampled_from([c, c.upper(), f" {c} ", c.title()])) if c != "comment" else c for c in columns]
    return columns, written


def _write_labs(path: Path, rows: list[dict[str, str | None]], columns: list[str], written: list[str], fmt: str) -> int:
    body = [[r.get(c, "free text") for c in columns] for r in rows]
    if fmt == "parquet":
        pl.DataFrame(body, schema=dict.fromkeys(written, pl.String), orient="row").write_parquet(path)
    else:
        write_csv(path, written, body, bom=fmt == "csv-bom")
    return len(rows)


def _run(path: Path, enrolled: list[str] | None) -> dict[str, Any]:
    """read -> harmonise -> validate, returning the row accounting."""
    table = read_labs(path)
    ref = load_reference()
    parts = harmonise_labs(table.frame, ref, HarmoniseConfig(ifn_default_method=None))
    keys = (
        None
        if enrolled is None
        else pl.DataFrame(
            {"study_id": ["S1"] * len(enrolled), "subject_id": enrolled},
            schema=dict.fromkeys(("study_id", "subject_id"), pl.String),
        )
    )
    split = validate_labs(parts.candidates, AS_OF, list(IFN_METHODS), enrolled=keys)
    return {"table": table, "outside": parts.outside_panel, "accepted": split.accepted, "quarantine": split.quarantine}


def _assert_accounting(out: dict[str, Any]) -> None:
    """Every row read lands in exactly one output, and every quarantined row says why."""
    table, accepted, outside, quarantine = out["table"], out["accepted"], out["outside"], out["quarantine"]
    assert table.rows_read == accepted.height + outside.height + quarantine.height
    keys = pl.concat([f.select("source_file", "source_row") for f in (accepted, outside, quarantine)])
    assert keys.n_unique() == keys.height
    assert sorted(keys["source_row"].to_list()) == list(range(1, table.rows_read + 1))
    assert set(keys["source_file"].to_list()) <= {table.path}
    assert quarantine["reason_code"].null_count() == 0
    assert quarantine["message"].null_count() == 0
    assert all(code in LAB_CODES for code in quarantine["reason_code"])
    assert all(len(m) > 0 for m in quarantine["message"])
    assert all(
        codes[0] == code for codes, code in zip(quarantine["reason_codes"], quarantine["reason_code"], strict=True)
    )
    assert accepted["value"].is_finite().all()
    assert accepted["collected_date"].null_count() == 0
    event(f"accepted rows > 0: {accepted.height > 0}")
    event(f"quarantined rows > 0: {quarantine.height > 0}")
    for code in quarantine["reason_code"].unique():
        event(f"reason {code}")


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------


@SETTINGS
@given(
    rows=lab_tables(),
    header=headers(),
    fmt=st.sampled_from(["csv", "csv-bom", "parquet"]),
    enrolled=st.one_of(st.none(), st.lists(st.sampled_from(["P1", "P2", "P3"]), unique=True)),
)
def test_random_lab_files_are_fully_accounted_for(
    tmp_path: Path,
    rows: list[dict[str, str | None]],
    header: tuple[list[str], list[str]],
    fmt: str,
    enrolled: list[str] | None,
) -> None:
    """Well-formed files with any defects in their values: no exception, and every row is accounted for."""
    path = tmp_path / ("labs.parquet" if fmt == "parquet" else "labs.csv")
    n = _write_labs(path, rows, *header, fmt)
    out = _run(path, enrolled)
    assert out["table"].rows_read == n
    _assert_accounting(out)


@SETTINGS
@given(
    prefix=st.sampled_from(["", ",".join(LAB_REQUIRED) + "\n", ",".join(LAB_REQUIRED) + "\nS1,P1,c3,"]),
    junk=st.one_of(st.binary(max_size=200), unicode_text.map(lambda t: t.encode("utf-8"))),
)
def test_arbitrary_bytes_raise_only_input_error(tmp_path: Path, prefix: str, junk: bytes) -> None:
    """Whatever the bytes, reading either fails with InputError or yields rows that are all accounted for."""
    path = tmp_path / "labs.csv"
    path.write_bytes(prefix.encode("utf-8") + junk)
    try:
        out = _run(path, None)
    except InputError as exc:
        assert str(exc).startswith(str(path))
        event("InputError")
        return
    _assert_accounting(out)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(allow_nan=False, allow_infinity=False),
            comparators,
            spaces,
            st.sampled_from(["repr", ".17g", "e", "f", ".3f"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_result_parser_reads_back_formatted_floats(cases: list[tuple[float, str, str, str]]) -> None:
    """A float written with an optional comparator parses back to that float (to Python's reading of the text)."""
    texts = [f"{c}{s}{repr(x) if f == 'repr' else format(x, f)}" for x, c, s, f in cases]
    raw = raw_labs([lab_row(subject_id=f"P{i}", result=t) for i, t in enumerate(texts)])
    candidates = harmonise_labs(raw, load_reference(), HarmoniseConfig()).candidates
    for (x, comparator, _, fmt), text, value, censoring in zip(
        cases, texts, candidates["value_reported"], candidates["censoring"], strict=True
    ):
        expected = x if fmt == "repr" else float(text.lstrip("<>= \t"))
        assert value == expected, text
        assert censoring == (comparator or None), text
