"""Hostile lab files in every native format (CSV, Parquet): never a traceback, every row accounted for.

The strategies build whole files with random defects: missing, extra and repeated columns; typed, nested and
binary Parquet columns; empty, header-only and BOM-only files; NaN/inf/huge/negative values; censored values
with odd spacing; unknown units and codes; impossible and partial dates; time zones; duplicate and
conflicting rows; UTF-8 with BOM, Latin-1, Windows-1252, Shift-JIS (intact and damaged) and UTF-16 bytes;
very long strings; CSV quoting errors, ragged rows, wrong delimiters and line endings; truncated Parquet.

Properties: `read_labs` then `prepare` either raise `InputError` whose message starts with the file's path, or
every row read lands in exactly one of accepted, outside panel and quarantined, and every quarantine message
names file, row, column and value. A file whose bytes are not UTF-8 is always refused, never guessed.

`benchmarks/fuzz.py` runs the same strategies (plus random byte flips in Parquet files) over 10,000+ files.
SDTM XPT / Dataset-JSON / FHIR readers are detected by `io.read_labs` from content; their own hostile-input
tests belong with them (see docs/reliability.md).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import os
import random
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from immunostrat.config.run import RunConfig, ValidationConfig
from immunostrat.ingest.inputs import Inputs, read_labs
from immunostrat.ingest.io import LAB_OPTIONAL, LAB_REQUIRED, InputError
from immunostrat.ingest.reference import ReferenceTables, load_reference
from immunostrat.pipeline.selection import Prepared, prepare

from .fixtures_labs import AS_OF
from .test_properties import lab_tables

EXAMPLES = int(os.environ.get("IMMUNOSTRAT_PROPERTY_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
CFG = RunConfig(validation=ValidationConfig(as_of=AS_OF))
# Values of extra columns (names, birth dates) that must never reach any output frame.
PII = ("Quackenbush, Zebulon", "1961-07-04", "MRN-99887766")

# Files that must be refused but today may be read, each with its own xfail test below. The CI property lets
# them pass (counting them); benchmarks/fuzz.py reports them as violations. Empty this set once io is fixed.
CR_ONLY = "CR-only line endings"
KNOWN_BUGS = {CR_ONLY}

# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------

ENCODINGS = ("utf-8", "utf-8-sig", "latin-1", "cp1252", "shift_jis", "shift_jis-damaged", "utf-16")
CSV_DAMAGE = (
    "none",
    "quote_all",
    "unterminated_quote",
    "stray_quote",
    "ragged_long",
    "ragged_short",
    "semicolon",
    "tab",
    "cr_only",
    "crlf",
    "no_final_newline",
    "blank_lines",
    "nul_byte",
    "quoted_newline",
    "header_only",
    "empty",
    "bom_only",
    "whitespace_only",
    "truncated",
)
PARQUET_DAMAGE = ("none", "zero_rows", "truncated")
# Zones a Parquet timestamp may carry. Zones polars 2.1 does not know (a removed tzdata name, a negative fixed
# offset such as "-05:30") make it panic (see the xfail below), so the CI property leaves them out;
# benchmarks/fuzz.py adds them back (PANIC_TIME_ZONES).
TIME_ZONES = ["UTC", "Asia/Tokyo", "America/St_Johns", "+14:00"]
PANIC_TIME_ZONES = ["-05:30", "US/Pacific-New"]
PARQUET_TYPES = (
    "string",
    "large_string",
    "dictionary",
    "int64",
    "float64",
    "decimal",
    "bool",
    "date32",
    "timestamp",
    "timestamp_tz",
    "null",
    "binary",
    "list",
    "struct",
    "duration",
)

# Text a site could really send that is not ASCII: micro signs in units, umlauts, Japanese, emoji.
non_ascii = st.sampled_from(["µg/mL", "Müller-01", "Zürich", "患者-07", "10⁹/L", "≤10", "—", "ß", "🧪", "naïve"])
odd_censoring = st.sampled_from(["< 10", "<\t10", "<  10", "< = 10", "≥ 800", ">800 ", " >= 800", "<10>", "<-1"])
odd_numbers = st.sampled_from(["NaN", "nan", "inf", "-inf", "1e308", "1e309", "-0.0", "-5", "1e-320", "9" * 50])
ODD_DATES = [
    "2025-02-29",
    "2024-02-30",
    "2025-13-01",
    "2025-01",
    "2025",
    "2025-W03",
    "0001-01-01",
    "9999-12-31",
    "2025-01-15T24:00",
    "2025-01-15T10:00:00+14:00",
    "2025-01-15T10:00:00-12:00",
    "2025-01-15T23:30:00.123456789Z",
    "2025-01-15 10:00",
    "15/01/2025",
    "20250115",
]
# Year 0 crashes validate when the row also fails a rule (see the xfail below): left out of the CI property,
# added back by benchmarks/fuzz.py.
CRASH_DATES = ["0000-01-01"]
long_strings = st.builds(lambda ch, n: ch * n, st.sampled_from(["x", "é", "9", " ", '"', ","]), st.integers(1000, 5000))


@dataclass
class FuzzFile:
    """A generated file and what is known about it."""

    name: str
    data: bytes
    fmt: str
    defects: list[str] = field(default_factory=list)
    must_fail: str | None = None  # why the file must be refused, when it must


def _cell(draw: st.DrawFn, rnd: random.Random, value: str | None) -> str | None:
    """Sometimes (one cell in eight) replace a cell by an odd value of another kind."""
    roll = rnd.randrange(40)
    if roll == 0:
        return draw(non_ascii)
    if roll == 1:
        return draw(odd_censoring)
    if roll == 2:
        return draw(odd_numbers)
    if roll == 3:
        return draw(st.sampled_from(ODD_DATES))
    if roll == 4:
        return draw(long_strings)
    return value


@st.composite
def lab_frames(draw: st.DrawFn) -> tuple[list[str], list[list[str | None]], list[str]]:
    """(column names as written, rows, defect labels): contract columns, some missing, some extra."""
    defects: list[str] = []
    # Rare defects are rolled with a plain (seeded) Random: hypothesis' own draws favour boundary values, which
    # would make "one file in ten" mean one in three.
    rnd = draw(st.randoms(use_true_random=True))
    rows = draw(lab_tables())
    optional = draw(st.lists(st.sampled_from(LAB_OPTIONAL), unique=True))
    columns = [*LAB_REQUIRED, *optional]
    if rnd.random() < 0.1:
        dropped = draw(st.sampled_from(LAB_REQUIRED))
        columns.remove(dropped)
        defects.append("missing_required")
    extras = draw(st.lists(st.sampled_from(["patient_name", "birth_date", "mrn", "comment", "", "=cmd"]), unique=True))
    if extras:
        defects.append("extra_columns")
    if rnd.random() < 0.07:
        extras.append(draw(st.sampled_from(columns)).upper())
        defects.append("repeated_column")
    columns = draw(st.permutations(columns))
    written = [draw(st.sampled_from([c, c.upper(), f" {c} ", c.title()])) for c in columns]
    pii = dict(zip(["patient_name", "birth_date", "mrn"], PII, strict=True))
    body = [[_cell(draw, rnd, r.get(c)) for c in columns] + [pii.get(e, "free text") for e in extras] for r in rows]
    return [*written, *extras], body, defects


def _to_csv_text(header: list[str], rows: list[list[str | None]], quote_all: bool) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in r] for r in rows])
    return buffer.getvalue()


def _damage_csv(draw: st.DrawFn, text: str, damage: str) -> str:
    """CSV text with one kind of damage: to one line or all lines, or to the text as a whole."""
    lines = _damage_lines(draw, text.split("\n"), damage)
    text = "\n".join(lines)
    if damage == "cr_only":
        text = text.replace("\n", "\r")
    elif damage == "crlf":
        text = text.replace("\n", "\r\n")
    elif damage == "no_final_newline":
        text = text.rstrip("\n")
    elif damage == "header_only":
        text = lines[0] + "\n"
    elif damage == "truncated" and len(text) > 2:
        text = text[: draw(st.integers(1, len(text) - 1))]
    return text


def _damage_lines(draw: st.DrawFn, lines: list[str], damage: str) -> list[str]:
    """CSV lines with a line-level damage (quotes, ragged rows, other separators...), if `damage` is one."""
    if damage == "semicolon":
        return [line.replace(",", ";") for line in lines]
    if damage == "tab":
        return [line.replace(",", "\t") for line in lines]
    if damage == "blank_lines":
        return [x for line in lines for x in (line, "")]
    if len(lines) <= 2:  # the damages below need a data row
        return lines
    if damage == "unterminated_quote":
        i = draw(st.integers(1, len(lines) - 2))
        lines[i] = lines[i] + ',"never closed'
    elif damage == "stray_quote":
        i = draw(st.integers(1, len(lines) - 2))
        j = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:j] + '"' + lines[i][j:]
    elif damage == "ragged_long":
        lines[draw(st.integers(1, len(lines) - 2))] += ",extra,fields"
    elif damage == "ragged_short":
        i = draw(st.integers(1, len(lines) - 2))
        lines[i] = lines[i].rsplit(",", 1)[0]
    elif damage == "nul_byte":
        i = draw(st.integers(1, len(lines) - 2))
        lines[i] = lines[i] + "\0"
    elif damage == "quoted_newline":
        lines.insert(2, 'S1,P1,c3,"0.9\nsecond line",g/L,2025-01-15')
    return lines


def _encode(draw: st.DrawFn, text: str, encoding: str) -> bytes:
    if encoding == "shift_jis-damaged":
        data = bytearray(text.encode("shift_jis", errors="replace"))
        leads = [i for i, b in enumerate(data) if 0x81 <= b <= 0x9F or 0xE0 <= b <= 0xEF]
        if leads:  # cut a two-byte character in half, or swap in a lone lead byte
            i = draw(st.sampled_from(leads))
            del data[i + 1 : i + 2]
        else:
            data.insert(draw(st.integers(0, len(data))), 0x82)
        return bytes(data)
    return text.encode(encoding, errors="replace")


@st.composite
def csv_files(draw: st.DrawFn) -> FuzzFile:
    """A CSV lab file with random defects in its values, columns, syntax and encoding."""
    header, rows, defects = draw(lab_frames())
    damage = draw(st.sampled_from(CSV_DAMAGE))
    encoding = draw(st.sampled_from(ENCODINGS))
    text = _damage_csv(draw, _to_csv_text(header, rows, damage == "quote_all"), damage)
    if damage == "empty":
        data = b""
    elif damage == "bom_only":
        data = b"\xef\xbb\xbf"
    elif damage == "whitespace_only":
        data = b" \n\n \r\n"
    else:
        data = _encode(draw, text, encoding)
    defects += [f"csv:{damage}", f"encoding:{encoding}"]
    must_fail = None
    if damage in ("empty", "bom_only", "whitespace_only"):
        must_fail = "no header"
    elif not _is_utf8(data.partition(b"\n")[2]):  # polars decodes the header line lossily (xfail below)
        must_fail = "not UTF-8"
    elif encoding == "utf-16" or damage in ("semicolon", "tab"):
        must_fail = "header unreadable"
    elif damage == "cr_only" and "\r" in text.rstrip("\r"):
        must_fail = CR_ONLY
    elif "missing_required" in defects and damage != "truncated":
        must_fail = "missing column"
    return FuzzFile("labs.csv", data, "csv", defects, must_fail)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _arrow_column(draw: st.DrawFn, values: list[str | None], kind: str, zones: list[str]) -> pa.Array:
    """A column of `kind` holding `values` (text kinds) or random values of that type."""
    n = len(values)

    def many(strategy: st.SearchStrategy[Any]) -> list[Any]:
        return [draw(st.one_of(st.none(), strategy)) for _ in range(n)]

    stamps = st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2262, 1, 1))
    cents = st.integers(-(10**6), 10**6).map(lambda c: decimal.Decimal(c) / 100)
    builders: dict[str, Any] = {
        "string": lambda: pa.array(values, pa.string()),
        "large_string": lambda: pa.array(values, pa.large_string()),
        "dictionary": lambda: pa.array(values, pa.string()).dictionary_encode(),
        "int64": lambda: pa.array(many(st.integers(-(2**63), 2**63 - 1)), pa.int64()),
        "float64": lambda: pa.array(many(st.floats(allow_nan=True, allow_infinity=True)), pa.float64()),
        "decimal": lambda: pa.array(many(cents), pa.decimal128(12, 2)),
        "bool": lambda: pa.array(many(st.booleans()), pa.bool_()),
        "date32": lambda: pa.array(many(st.dates()), pa.date32()),
        "timestamp": lambda: pa.array(many(stamps), pa.timestamp("us")),
        "timestamp_tz": lambda: pa.array(many(stamps), pa.timestamp("us", tz=draw(st.sampled_from(zones)))),
        "null": lambda: pa.nulls(n),
        "binary": lambda: pa.array([None if v is None else v.encode("utf-8") for v in values], pa.binary()),
        "list": lambda: pa.array([[v] for v in values], pa.list_(pa.string())),
        "struct": lambda: pa.array([{"v": v} for v in values], pa.struct([("v", pa.string())])),
        "duration": lambda: pa.array(many(st.integers(0, 10**9)), pa.duration("s")),
    }
    return builders[kind]()


@st.composite
def parquet_files(draw: st.DrawFn, zones: list[str] = TIME_ZONES, flips: bool = False) -> FuzzFile:
    """A Parquet lab file: text or typed (even nested and binary) columns, possibly empty or truncated.

    Args:
        draw: Hypothesis' draw.
        zones: Time zones of timestamp columns.
        flips: Also change 1-5 random bytes of an intact file (benchmarks/fuzz.py; polars may panic).
    """
    header, rows, defects = draw(lab_frames())
    rnd = draw(st.randoms(use_true_random=True))
    damage = draw(st.sampled_from(PARQUET_DAMAGE))
    if damage == "zero_rows":
        rows = []
    arrays: list[pa.Array] = []
    for i in range(len(header)):
        values = [r[i] for r in rows]
        kind = draw(st.sampled_from(PARQUET_TYPES)) if rnd.random() < 0.25 else "string"
        if kind != "string":
            defects.append(f"parquet_type:{kind}")
        arrays.append(_arrow_column(draw, values, kind, zones))
    buffer = io.BytesIO()
    pq.write_table(
        pa.Table.from_arrays(arrays, names=header),
        buffer,
        compression=draw(st.sampled_from(["zstd", "snappy", "none"])),
        row_group_size=draw(st.sampled_from([None, 1, 7])),
    )
    data = buffer.getvalue()
    if damage == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif flips and damage == "none" and draw(st.booleans()):
        damage = "byte_flips"
        flipped = bytearray(data)
        for _ in range(draw(st.integers(1, 5))):
            flipped[draw(st.integers(4, len(flipped) - 5))] = draw(st.integers(0, 255))
        data = bytes(flipped)
    defects.append(f"parquet:{damage}")
    must_fail = None
    if damage == "truncated":
        must_fail = "truncated"
    elif "missing_required" in defects and damage != "byte_flips":
        must_fail = "missing column"
    return FuzzFile("labs.parquet", data, "parquet", defects, must_fail)


# --------------------------------------------------------------------------------------------------
# SDTM LB (XPT, CSV, Parquet, Dataset-JSON) and FHIR Observations (NDJSON, Bundle), read by immunostrat.ingest.readers
# --------------------------------------------------------------------------------------------------

SDTM_VARS = {
    "study_id": "STUDYID",
    "subject_id": "USUBJID",
    "test": "LBTESTCD",
    "result": "LBORRES",
    "unit": "LBORRESU",
    "collected_at": "LBDTC",
    "method": "LBMETHOD",
    "ref_low": "LBORNRLO",
    "ref_high": "LBORNRHI",
}
SDTM_CONTAINERS = ("xpt", "csv", "parquet", "dataset-json", "dataset-ndjson")
JSON_DAMAGE = ("none", "truncated", "records_mismatch", "row_width", "typed_cells", "not_a_list", "no_columns")
FHIR_DAMAGE = ("none", "truncated", "junk_line", "wrong_types", "no_code", "no_subject", "deep_nesting")


def _readers_present() -> bool:
    try:
        import immunostrat.ingest.readers  # noqa: F401
    except ImportError:
        return False
    return True


def _sdtm_table(draw: st.DrawFn, rnd: random.Random) -> tuple[list[str], list[list[str | None]], list[str]]:
    rows = draw(lab_tables())
    names = ["DOMAIN", *SDTM_VARS.values()]
    if rnd.random() < 0.3:
        names += ["LBSTRESC", "LBSTRESU", "LBSTRESN"]
    defects = []
    if rnd.random() < 0.1:
        dropped = draw(st.sampled_from(["USUBJID", "LBTESTCD", "LBORRES", "STUDYID"]))
        names.remove(dropped)
        if dropped != "LBORRES" or "LBSTRESC" not in names:  # LBSTRESC/LBSTRESN stand in for LBORRES
            defects.append("missing_required")
    body = []
    for r in rows:
        native = {v: r.get(k) for k, v in SDTM_VARS.items()}
        native |= {"DOMAIN": "LB", "LBSTRESC": r.get("result"), "LBSTRESU": r.get("unit"), "LBSTRESN": None}
        if rnd.random() < 0.1:  # standardised and original results that disagree
            native["LBSTRESN"] = draw(st.sampled_from(["1", "-1", "NaN", "abc", ""]))
        body.append([_cell(draw, rnd, native.get(n)) for n in names])
    return names, body, defects


def _json_bytes(draw: st.DrawFn, rnd: random.Random, document: Any, damage: str) -> bytes:
    data = json.dumps(document, ensure_ascii=rnd.random() < 0.5).encode("utf-8")
    if damage == "truncated":
        data = data[: draw(st.integers(1, max(1, len(data) - 1)))]
    return data


@st.composite
def sdtm_files(draw: st.DrawFn) -> FuzzFile:
    """An SDTM LB dataset in a random container, with defects in its values, variables and container."""
    rnd = draw(st.randoms(use_true_random=True))
    names, rows, defects = _sdtm_table(draw, rnd)
    container = draw(st.sampled_from(SDTM_CONTAINERS))
    damage = "none"
    must_fail = "missing variable" if defects else None
    if container == "xpt":
        data, damage = _sdtm_xpt(draw, rnd, names, rows)
    elif container == "csv":
        damage = draw(st.sampled_from(["none", "unterminated_quote", "ragged_long", "truncated", "header_only"]))
        text = _damage_csv(draw, _to_csv_text(names, rows, False), damage)
        encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))
        data = text.encode(encoding, errors="replace")
        defects.append(f"encoding:{encoding}")
        if not _is_utf8(data.partition(b"\n")[2]):
            must_fail = must_fail or "not UTF-8"
    elif container == "parquet":
        buffer = io.BytesIO()
        pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String), orient="row").write_parquet(buffer)
        data = buffer.getvalue()
    else:
        data, damage = _sdtm_json(draw, rnd, container, names, rows)
        if container == "dataset-json":
            must_fail = must_fail or ("damaged JSON" if damage == "truncated" else None)
    defects += [f"sdtm:{container}", f"damage:{damage}"]
    return FuzzFile(f"lb.{'json' if 'json' in container else container}", data, f"sdtm-{container}", defects, must_fail)


def _sdtm_xpt(draw: st.DrawFn, rnd: random.Random, names: list[str], rows: list[list[str | None]]) -> tuple[bytes, str]:
    """An SDTM table as SAS XPORT bytes (hex-encoded where XPORT cannot hold the text), truncated at random."""
    import pyreadstat

    frame = pl.DataFrame(
        [[None if v is None else v[:200] for v in r] for r in rows],
        schema=dict.fromkeys(names, pl.String),
        orient="row",
    )
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "lb.xpt"
        try:
            pyreadstat.write_xport(frame, str(target), table_name="LB")
        except Exception:
            frame = frame.with_columns(pl.all().str.encode("hex"))
            pyreadstat.write_xport(frame, str(target), table_name="LB")
        data = target.read_bytes()
    if rnd.random() < 0.2:
        return data[: draw(st.integers(0, len(data) - 1))], "truncated"
    return data, "none"


def _sdtm_json(
    draw: st.DrawFn, rnd: random.Random, container: str, names: list[str], rows: list[list[str | None]]
) -> tuple[bytes, str]:
    """An SDTM table as Dataset-JSON (one document) or its NDJSON form, with one of `JSON_DAMAGE`."""
    damage = draw(st.sampled_from(JSON_DAMAGE))
    columns: Any = [{"itemOID": f"IT.LB.{n}", "name": n, "label": n, "dataType": "string"} for n in names]
    cells: list[Any] = [list(r) for r in rows]
    if damage == "row_width" and cells:
        cells[draw(st.integers(0, len(cells) - 1))].append("extra")
    if damage == "typed_cells" and cells:
        row = cells[draw(st.integers(0, len(cells) - 1))]
        row[draw(st.integers(0, len(row) - 1))] = draw(st.sampled_from([1.5, True, {"a": 1}, [1], 10**30]))
    if damage == "no_columns":
        columns = "LB"
    meta = {
        "datasetJSONVersion": "1.1.0",
        "itemGroupOID": "IG.LB",
        "name": "LB",
        "records": len(cells) + (1 if damage == "records_mismatch" else 0),
        "columns": columns,
    }
    if container == "dataset-json":
        document = {**meta, "rows": "none" if damage == "not_a_list" else cells}
        return _json_bytes(draw, rnd, document, damage), damage
    lines = [json.dumps(meta), *(json.dumps(r) for r in cells)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if damage == "truncated":
        data = data[: draw(st.integers(1, len(data) - 1))]
    return data, damage


def _observation(draw: st.DrawFn, rnd: random.Random, row: dict[str, str | None], damage: str) -> Any:
    value = _cell(draw, rnd, row.get("result"))
    quantity: dict[str, Any] = {"unit": row.get("unit"), "system": "http://unitsofmeasure.org", "code": row.get("unit")}
    if value and value[:1] in "<>":
        quantity["comparator"], value = value[: 2 if value[1:2] == "=" else 1], value.lstrip("<>=").strip()
    try:
        quantity["value"] = float(value) if value is not None and rnd.random() < 0.7 else value
    except ValueError:
        quantity["value"] = value
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"obs-{rnd.randrange(10**6)}",
        "status": draw(st.sampled_from(["final", "amended", "entered-in-error", "cancelled", "preliminary", "??"])),
        "subject": {"reference": f"Patient/{row.get('subject_id')}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": row.get("test")}], "text": row.get("test")},
        "valueQuantity": quantity,
        "effectiveDateTime": _cell(draw, rnd, row.get("collected_at")),
    }
    if row.get("ref_high"):
        obs["referenceRange"] = [{"high": {"value": row.get("ref_high"), "unit": row.get("unit")}}]
    if rnd.random() < 0.2:
        obs["valueString"] = obs.pop("valueQuantity").get("value")
    if damage == "wrong_types" and rnd.random() < 0.5:
        key = draw(st.sampled_from(["subject", "code", "valueQuantity", "effectiveDateTime", "status"]))
        obs[key] = draw(st.sampled_from([None, 42, "text", [], [{"x": 1}], {"coding": "C3"}]))
    if damage == "no_code" and rnd.random() < 0.5:
        obs.pop("code")
    if damage == "no_subject" and rnd.random() < 0.5:
        obs.pop("subject")
    if damage == "deep_nesting" and rnd.random() < 0.2:
        nested: Any = "deep"
        for _ in range(200):
            nested = {"extension": [nested]}
        obs["extension"] = [nested]
    return obs


@st.composite
def fhir_files(draw: st.DrawFn) -> FuzzFile:
    """FHIR Observations as NDJSON (bulk export) or a Bundle, with defects in values, types and syntax."""
    rnd = draw(st.randoms(use_true_random=True))
    rows = draw(lab_tables())
    container = draw(st.sampled_from(["ndjson", "bundle"]))
    damage = draw(st.sampled_from(FHIR_DAMAGE))
    resources = [_observation(draw, rnd, r, damage) for r in rows]
    if container == "ndjson":
        lines = [json.dumps(r, ensure_ascii=rnd.random() < 0.5) for r in resources]
        if damage == "junk_line" and lines:
            lines.insert(
                draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "{", "null", "[1,2]", "\ufeff{}"]))
            )
        data = ("\n".join(lines) + "\n").encode("utf-8")
        if damage == "truncated" and len(data) > 1:
            data = data[: draw(st.integers(1, len(data) - 1))]
    else:
        entries: list[Any] = [{"fullUrl": f"urn:uuid:{i}", "resource": r} for i, r in enumerate(resources)]
        if damage == "junk_line" and entries:
            entries.insert(0, draw(st.sampled_from([None, 1, "x", {"resource": None}, {"resource": {"a": 1}}])))
        data = _json_bytes(draw, rnd, {"resourceType": "Bundle", "type": "collection", "entry": entries}, damage)
    must_fail = "damaged JSON" if damage == "truncated" and container == "bundle" else None
    return FuzzFile(
        f"observations.{container}", data, f"fhir-{container}", [f"fhir:{container}", f"damage:{damage}"], must_fail
    )


lab_files = st.one_of(csv_files(), parquet_files(), *((sdtm_files(), fhir_files()) if _readers_present() else ()))

# --------------------------------------------------------------------------------------------------
# The pipeline under test and the properties
# --------------------------------------------------------------------------------------------------

_REF: ReferenceTables | None = None


def reference() -> ReferenceTables:
    """The built-in mapping tables, loaded once."""
    global _REF  # noqa: PLW0603
    if _REF is None:
        _REF = load_reference()
    return _REF


def run_file(path: Path) -> Prepared:
    """read -> harmonise -> validate one lab file, as `immunostrat validate` does (FHIR rows get study S1)."""
    if _readers_present():
        from immunostrat.ingest.readers import ReaderOptions

        table = read_labs(path, options=ReaderOptions(study_id="S1"))
    else:
        table = read_labs(path)
    return prepare(Inputs(labs=[table], subjects=None), CFG, reference())


def check_input_error(exc: InputError, path: Path) -> None:
    """An InputError names the file first (and the column, when one is to blame)."""
    assert str(exc).startswith(str(path)), str(exc)
    assert exc.path == str(path)
    if "missing required column" in str(exc) or "appear more than once" in str(exc):
        assert exc.column is not None and exc.column in str(exc)


def check_accounting(prepared: Prepared, path: Path, native: bool = True) -> None:
    """Every row read lands in exactly one place, and every quarantined row says where and why.

    Args:
        prepared: What `run_file` returned.
        path: The file.
        native: The file is in the native contract: rows are numbered 1..n and extra columns carry PII markers.
            (The SDTM/FHIR readers number rows by record, line or Bundle entry.)
    """
    counts = prepared.counts
    per_file = counts["per_file"][str(path)]
    accepted, outside = prepared.harmonised, prepared.outside_panel
    quarantine = prepared.quarantine
    assert per_file["rows_read"] == per_file["accepted"] + per_file["outside_panel"] + per_file["quarantined"]
    assert (accepted.height, outside.height, quarantine.height) == (
        per_file["accepted"],
        per_file["outside_panel"],
        per_file["quarantined"],
    )
    placed = pl.concat([f.select("source_file", "source_row") for f in (accepted, outside, quarantine)])
    assert placed.n_unique() == placed.height
    assert set(placed["source_file"].to_list()) <= {str(path)}
    if native:
        assert sorted(placed["source_row"].to_list()) == list(range(1, per_file["rows_read"] + 1))
    for row in quarantine.iter_rows(named=True):
        message = row["message"]
        assert message is not None and row["reason_code"] and row["column"], row
        assert str(path) in message and f"row {row['source_row']}" in message, message
        assert f"'{row['column']}'" in message and f"'{row['value'] or ''}'" in message, message
    if accepted.height:
        assert accepted["value"].is_finite().all()
        if native:  # time zones are read, never applied: the collection date is the date as written
            assert (accepted["collected_at"].dt.date() == accepted["collected_date"]).all()
    if native:
        for frame in (accepted, outside, quarantine):
            for column in frame.select(pl.col(pl.String)).columns:
                for value in PII:
                    assert not frame[column].str.contains(value, literal=True).any(), f"{value!r} reached {column}"


@SETTINGS
@given(lab_files)
def test_hostile_lab_files_never_crash(tmp_path_factory: pytest.TempPathFactory, fuzz: FuzzFile) -> None:
    """Any generated file: InputError naming the file, or every row accounted for; non-UTF-8 never guessed."""
    path = tmp_path_factory.mktemp("fuzz") / fuzz.name
    path.write_bytes(fuzz.data)
    for defect in fuzz.defects:
        event(defect)
    try:
        prepared = run_file(path)
    except InputError as exc:
        event(f"InputError ({fuzz.must_fail or 'allowed'})")
        check_input_error(exc, path)
        return
    if fuzz.must_fail in KNOWN_BUGS:
        event(f"known bug: read although {fuzz.must_fail}")
        return
    assert fuzz.must_fail is None, f"{fuzz.must_fail}: the file was read, expected InputError ({fuzz.defects})"
    check_accounting(prepared, path, native=fuzz.fmt in ("csv", "parquet"))
    event(f"accepted {prepared.counts['accepted'] > 0}, quarantined {prepared.counts['quarantined'] > 0}")


# --------------------------------------------------------------------------------------------------
# Encodings and messages, by example
# --------------------------------------------------------------------------------------------------

HEADER = "study_id,subject_id,test,result,unit,collected_at\n"
GOOD = "S1,P001,c3,0.9,g/L,2025-01-15\n"


def _write(tmp_path: Path, data: bytes, name: str = "labs.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "shift_jis"])
def test_non_utf8_text_is_refused_never_guessed(tmp_path: Path, encoding: str) -> None:
    """A Latin-1 / Windows-1252 / Shift-JIS file is refused naming the file; it is never decoded by guessing."""
    site = "患者" if encoding == "shift_jis" else "Zürich µg"
    text = HEADER.strip() + ",site_id\n" + GOOD.strip() + ",A\n" + f"S1,P2,c3,1,g/L,2025-01-15,{site}\n"
    path = _write(tmp_path, text.encode(encoding))
    with pytest.raises(InputError) as err:
        read_labs(path)
    assert str(err.value).startswith(str(path))
    assert "utf-8" in str(err.value).lower()


@pytest.mark.parametrize("encoding", ["latin-1", "shift_jis-damaged"])
def test_non_utf8_message_names_byte_and_line(tmp_path: Path, encoding: str) -> None:
    text = HEADER + GOOD + "S1,Müller-01,c3,0.9,g/L,2025-01-15\n"
    data = text.encode("latin-1") if encoding == "latin-1" else (HEADER + GOOD).encode() + b"S1,\x82,c3,1,g/L,2025\n"
    path = _write(tmp_path, data)
    with pytest.raises(InputError, match=r"byte \d+ \(line 3, column \d+"):
        read_labs(path)


def test_non_utf8_header_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, (HEADER.strip() + ",Prüfer\n" + GOOD.strip() + ",A\n").encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        read_labs(path)


def test_utf16_file_is_named_as_utf16(tmp_path: Path) -> None:
    path = _write(tmp_path, (HEADER + GOOD).encode("utf-16"))
    with pytest.raises(InputError, match="UTF-16"):
        read_labs(path)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('S1,P002,c3,0.9,g/L,"2025-01-15\n', r"line 3, field 6: a quoted field is never closed"),
        ('S1,P"002,c3,0.9,g/L,2025-01-15\n', r"line 3, field 2: a quote inside an unquoted field"),
        ("S1,P002,c3,0.9,g/L,2025-01-15,x,y\n", r"line 3 has 8 field\(s\) but the header has 6"),
    ],
)
def test_csv_syntax_errors_name_the_line(tmp_path: Path, body: str, expected: str) -> None:
    path = _write(tmp_path, (HEADER + GOOD + body).encode())
    with pytest.raises(InputError, match=expected):
        read_labs(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ((HEADER + GOOD).replace(",", ";").encode(), "separated by ';'"),
        ((HEADER + GOOD).replace("\n", "\r").encode(), "CR-only"),
    ],
)
def test_wrong_delimiter_or_line_endings_get_a_hint(tmp_path: Path, data: bytes, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        read_labs(_write(tmp_path, data))


def test_year_zero_date_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    path = _write(tmp_path, (HEADER + "S1,P001,,0.9,g/L,0000-01-01\n" + GOOD).encode())
    prepared = run_file(path)
    assert prepared.counts["quarantined"] == 1 and prepared.counts["accepted"] == 1


def test_cr_only_file_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    data = (HEADER + ",P001,c3,0.9,g/L,2025-01-15\nS1,P002,c4,0.2,mg/dL,2025-01-16\n").replace("\n", "\r").encode()
    path = _write(tmp_path, data)
    try:
        table = read_labs(path)
    except InputError as exc:
        assert "CR-only" in str(exc)
        return
    raise AssertionError(f"read {table.rows_read} rows of 2; extra columns {table.extra_columns}")


def test_diagnostics_locate_problems(tmp_path: Path) -> None:
    """The safety helpers the wiring above uses, on their own."""
    from immunostrat.ingest.diagnostics import csv_structure_problem, header_hint, text_encoding_problem

    latin = _write(tmp_path, (HEADER + GOOD + "S1,Müller,c3,1,g/L,2025\n").encode("latin-1"), "latin.csv")
    assert re.search(r"byte \d+ \(line 3, column 5: bytes FC\)", str(text_encoding_problem(latin)))
    assert "UTF-16" in str(text_encoding_problem(_write(tmp_path, HEADER.encode("utf-16"), "u16.csv")))
    assert text_encoding_problem(_write(tmp_path, ("\ufeff" + HEADER + GOOD).encode(), "bom.csv")) is None
    cut = _write(tmp_path, (HEADER + "S1,Müller,c3,1,g/L,2025\n").encode(), "cut.csv")
    head = len(HEADER.encode()) + len(b"S1,M") + 1  # ends inside the two bytes of ü
    assert text_encoding_problem(cut, max_bytes=head) is None
    assert "line 3" in str(text_encoding_problem(latin, max_bytes=1 << 16))
    assert text_encoding_problem(latin, max_bytes=len(HEADER)) is None  # the header line alone is fine
    quoted = _write(tmp_path, (HEADER + 'S1,P1,c3,"0.9\n1",g/L,2025\n' + 'S1,P2,c3,0.9,g/L,"2025\n').encode(), "q.csv")
    assert csv_structure_problem(quoted) == "line 4, field 6: a quoted field is never closed (a missing closing quote)"
    ok = _write(tmp_path, (HEADER + GOOD + "\n" + '"S1","P""2",c3,1,g/L,2025\r\n').encode(), "ok.csv")
    assert csv_structure_problem(ok) is None
    assert "after a closing quote" in str(
        csv_structure_problem(_write(tmp_path, (HEADER + '"S1"x,P,c3,1,g/L,2025\n').encode(), "after.csv"))
    )
    assert header_hint(_write(tmp_path, HEADER.replace(",", "\t").encode(), "tab.csv"), LAB_REQUIRED)


# --------------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------------

# A 3-row Parquet file (polars 2.1 writer, uncompressed) with one byte of its column metadata changed.
# polars panics on it (pyo3 PanicException, a BaseException) instead of raising a PolarsError.
PANICKING_PARQUET = zlib.decompress(
    base64.b64decode(
        "eNqtVT9v2kAUP8AxtGLIwJ2w5IEhsRK1SrHTFKjU4ZzwJ2lKCFVJyBIZbAeCAxE25I86VB36ATL0A3To1CnqUHXiQzB0zFap6tgh"
        "Y+/OjiGVSjJg+d69e7/3fvfu3rNcwmUZcnAOzm1CHgIAgmT0k0zKTCoQwBiMPSbwLBm868IHgqE5AKPCCuBnhXjEdnr62X5ThwDx"
        "yEGOlJMi4N7E2n+JH9q92qFRd8aprwPS9wCYQtacY9iOT3sZkv4Ep0HLdw27Z42IrzjpEzeVfHvt5oj2gpeGM9OgjdY7lkXu2ND3"
        "tRH9ICy9DwNBRDn4DJEgol0HfPUy5KtXnK9e8L46CLsqDApvC1y303FglGw5Hxz1yjzYFKkHNY7VedzMKjRu8O72lg+9lXHDrfN4"
        "AOIFUbBI34h39CwaRGAMSL+D4j16EA0jEAHpMydO7Cn0i7kNZ8Q7egS9e0AdP4TFiTVHH5nb14h4rxqiL9QdfZtBvBQhU4wWKB7F"
        "5fLWznO73jCOtPiP0BP6yC0VY5wlA6f7ZH26jd01M73E2MarbN7Gj0oEPzmh9nWMDzy/KpnWbLroU7FBhdqicosKzPiqdKs8g7AX"
        "T54yw3x8jWr5Yr+WP7Wqy2VrL5dp6AxW1yfHuziDCpWetuva6zTf0wM/iVVmzb652ZThJzR/9WxvtyjXCsRt45AY01V8cynuOdXc"
        "TZCLM0jPV87d/Nbw5PxcfJVSFYpy9eiYns/Udgi+dU75bD9IHe1HNnlNUydz2cvjlceX9s6bde3quV6otIxK5ngP4xcgXix1LK1r"
        "JxaOz5xGp72Y6Btdu9lpJ5QleSmZWKj1mpaeSJmZpFLTl01TV1KmmVZ0+amSSmvJjKZkVkxTMVOaoWeURcEiH9Q/L/gZAqBE/iV/"
        "Ae/zPoE="
    )
)


def test_corrupt_parquet_is_an_input_error_not_a_panic(tmp_path: Path) -> None:
    path = _write(tmp_path, PANICKING_PARQUET, "labs.parquet")
    with pytest.raises(InputError, match=str(path)):
        read_labs(path)


@pytest.mark.parametrize("zone", PANIC_TIME_ZONES)
def test_unknown_time_zone_in_parquet_is_an_input_error(tmp_path: Path, zone: str) -> None:
    columns: dict[str, Any] = {c: pa.array(["x"]) for c in LAB_REQUIRED}
    columns["collected_at"] = pa.array([dt.datetime(2025, 1, 15)], pa.timestamp("us", tz=zone))
    path = tmp_path / "labs.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(InputError, match=str(path)):
        read_labs(path)


@pytest.mark.parametrize("kind", ["binary", "list", "duration"])
def test_unreadable_parquet_column_types_name_the_column(tmp_path: Path, kind: str) -> None:
    columns: dict[str, Any] = {c: pa.array(["x"]) for c in LAB_REQUIRED}
    columns["result"] = {
        "binary": pa.array([b"\xff"], pa.binary()),
        "list": pa.array([["1"]], pa.list_(pa.string())),
        "duration": pa.array([1], pa.duration("s")),
    }[kind]
    path = tmp_path / "labs.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(InputError, match=r"column result has type") as err:
        read_labs(path)
    assert err.value.column == "result" and str(err.value).startswith(str(path))
