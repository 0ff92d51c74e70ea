"""Format detection from a file's content (never from its name, which can lie).

| what the file starts with | container | kind |
|---|---|---|
| `HEADER RECORD*******LIBRARY HEADER RECORD` (or `LIBV8`) | `xpt` (SAS XPORT) | `sdtm` |
| `PAR1` | `parquet` | `sdtm` when the columns are SDTM (USUBJID and LBTESTCD/CPTESTCD/RFSTDTC/DOMAIN), else `native` |
| `{` or `[`, one JSON value per line | `ndjson` | `fhir` (`resourceType`) or `sdtm` (Dataset-JSON metadata line) |
| `{` or `[`, one JSON document | `json` | `fhir` (`resourceType`) or `sdtm` (`datasetJSONVersion`) |
| anything else | `csv` | `sdtm` when the header has SDTM columns as above, else `native` |

An expression matrix is never detected (a table of numbers says nothing about itself): name it (`expression`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

KINDS = ("native", "sdtm", "fhir", "expression")
XPT_MAGIC = (b"HEADER RECORD*******LIBRARY HEADER RECORD", b"HEADER RECORD*******LIBV8   HEADER RECORD")
_SDTM_MARKERS = {"LBTESTCD", "CPTESTCD", "RFSTDTC", "RFICDTC", "DOMAIN"}
_HEAD_BYTES = 1 << 16
_RESOURCE = re.compile(r'"resourceType"\s*:')
_DATASET_JSON = re.compile(r'"datasetJSONVersion"\s*:')


@dataclass(frozen=True)
class Sniffed:
    """What a file looks like: its container and the reader kind that applies."""

    container: str  # xpt, parquet, json, ndjson, csv, unreadable
    kind: str  # native, sdtm, fhir, or unknown (JSON that is neither FHIR nor Dataset-JSON)


def is_sdtm_header(columns: list[str]) -> bool:
    """SDTM columns: USUBJID plus a domain topic or reference-date variable."""
    names = {c.lstrip("\ufeff").strip().strip('"').upper() for c in columns}
    return "USUBJID" in names and bool(names & _SDTM_MARKERS)


def _json_kind(text: str) -> str:
    resource = _RESOURCE.search(text)
    dataset = _DATASET_JSON.search(text)
    if resource and (not dataset or resource.start() < dataset.start()):
        return "fhir"
    if dataset:
        return "sdtm"
    return "unknown"


def _first_line_is_json(path: Path) -> tuple[bool, str]:
    """(whether the first line alone is a complete JSON value, the first line)."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        first = handle.readline()
        rest = handle.read(_HEAD_BYTES)
    try:
        json.loads(first)
    except ValueError:
        return False, first
    # One JSON value on one line followed by more content: NDJSON. A minified single document is plain JSON.
    return bool(rest.strip()), first


def sniff(path: str | Path) -> Sniffed:  # noqa: PLR0911 (one return per recognised container)
    """Container and kind of a file from its first bytes; `unreadable` when it cannot be opened."""
    p = Path(path)
    try:
        with open(p, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return Sniffed("unreadable", "native")
    if any(head.startswith(magic) for magic in XPT_MAGIC):
        return Sniffed("xpt", "sdtm")
    if head.startswith(b"PAR1"):
        try:
            # pyarrow reads only the footer and raises on damage (polars can panic on a corrupt footer).
            columns = list(pq.read_schema(p).names)
        except Exception:  # any unreadable footer: the native reader reports it in its own words
            return Sniffed("parquet", "native")
        return Sniffed("parquet", "sdtm" if is_sdtm_header(columns) else "native")
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if text[:1] in ("{", "["):
        ndjson, first = _first_line_is_json(p)
        if ndjson:
            return Sniffed("ndjson", _json_kind(first))
        return Sniffed("json", _json_kind(text))
    header = text.splitlines()[0] if text else ""
    return Sniffed("csv", "sdtm" if is_sdtm_header(header.split(",")) else "native")


def detect_kind(path: str | Path) -> str:
    """`native`, `sdtm`, `fhir` or `unknown`, from the content.

    A file that cannot be opened is `native`, so that the native reader reports it as it always has.
    """
    return sniff(path).kind
