"""Why an input file cannot be read, said precisely: where a CSV stops being UTF-8 or RFC 4180, what a header
that looks wrong probably means, and whether a zip archive (a model file) is safe to open.

Each function names the place (byte, line, column, field, member) so that an `InputError` or a model refusal can
tell the person who sent the file what to fix. The CSV checks run on the error path, or on the first 64 KiB
before a read (`immunostrat.ingest.io`); the zip check runs before a model file is deserialised
(`immunostrat.modelling.registry`).
"""

from __future__ import annotations

import codecs
import io
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["csv_structure_problem", "header_hint", "text_encoding_problem", "zip_archive_problem"]

# --------------------------------------------------------------------------------------------------
# Zip archives (model files)
# --------------------------------------------------------------------------------------------------

_MAX_UNCOMPRESSED = 256 * 1024 * 1024
_MAX_MEMBERS = 10_000
_MAX_RATIO = 200


def zip_archive_problem(
    data: bytes,
    *,
    max_uncompressed: int = _MAX_UNCOMPRESSED,
    max_members: int = _MAX_MEMBERS,
    max_ratio: float = _MAX_RATIO,
) -> str | None:
    """Why a zip archive should not be opened (a zip bomb, or not a zip at all), or None when it looks sane.

    Uses the sizes the archive declares; Python's `zipfile` never decompresses a member past its declared
    size, so a limit on declared sizes bounds memory for anything read with `zipfile` (skops does).

    Args:
        data: The archive's bytes.
        max_uncompressed: Largest total declared uncompressed size.
        max_members: Most members.
        max_ratio: Largest uncompressed/compressed ratio of any member larger than 1 MiB.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        return f"not a readable zip archive ({exc})"
    if len(infos) > max_members:
        return f"zip archive has {len(infos)} members (limit {max_members})"
    total = sum(i.file_size for i in infos)
    if total > max_uncompressed:
        return f"zip archive would decompress to {total} bytes (limit {max_uncompressed}); refusing a possible zip bomb"
    for info in infos:
        if info.file_size > 1 << 20 and info.file_size > max_ratio * max(info.compress_size, 1):
            return (
                f"zip member {info.filename!r} would expand {info.file_size / max(info.compress_size, 1):.0f}-fold "
                f"(limit {max_ratio:.0f}); refusing a possible zip bomb"
            )
    return None


# --------------------------------------------------------------------------------------------------
# Where a text file stops being UTF-8
# --------------------------------------------------------------------------------------------------

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32 (big-endian)"),
    (b"\xff\xfe\x00\x00", "UTF-32 (little-endian)"),
    (b"\xff\xfe", "UTF-16 (little-endian)"),
    (b"\xfe\xff", "UTF-16 (big-endian)"),
)
_REEXPORT = "re-export it as UTF-8 (in Excel: 'CSV UTF-8'); immunostrat reads UTF-8 only and never guesses an encoding"


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    """The 1-based line and column of a byte offset."""
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def text_encoding_problem(path: str | os.PathLike[str], max_bytes: int | None = None) -> str | None:
    """Why a text (CSV) file is not UTF-8, naming the byte offset, line and column; None when it is UTF-8.

    Detects UTF-16/UTF-32 (by byte-order mark, or by NUL bytes in the first line) and the first byte sequence
    that is not valid UTF-8 (Latin-1, Windows-1252, Shift-JIS, damaged multi-byte characters).

    Args:
        path: The file.
        max_bytes: Look at this many bytes only (a character cut at the limit is not a problem). With
            ``1 << 16`` it is cheap enough to run before every CSV read, which catches UTF-16 files and a
            non-UTF-8 header (polars decodes the header lossily); without it the whole file is read, which is
            for the error path.
    """
    with open(path, "rb") as handle:
        data = handle.read() if max_bytes is None else handle.read(max_bytes)
    complete = max_bytes is None or len(data) < max_bytes
    for bom, name in _BOMS:
        if data.startswith(bom):
            return f"the file is {name} text (byte-order mark {bom.hex(' ').upper()}); {_REEXPORT}"
    first_line = data[: data.find(b"\n") if b"\n" in data[:4096] else 4096]
    if first_line.count(b"\x00") * 4 >= len(first_line) > 0:
        return f"the file looks like UTF-16 or UTF-32 text without a byte-order mark (NUL bytes in line 1); {_REEXPORT}"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=complete)
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        bad = data[exc.start : exc.end].hex(" ").upper()
        return (
            f"invalid utf-8 sequence at byte {exc.start} (line {line}, column {col}: bytes {bad}), typical of Latin-1, "
            f"Windows-1252 or Shift-JIS text or a damaged file; {_REEXPORT}"
        )
    return None


# --------------------------------------------------------------------------------------------------
# Where a CSV file stops being RFC 4180
# --------------------------------------------------------------------------------------------------


@dataclass
class _CsvWalk:
    """Where a walk through a CSV file's characters is: line numbers, field number and quoting state.

    ``state`` is ``start`` (of a field), ``unquoted``, ``quoted``, or ``quote`` (just read a quote inside a
    quoted field); ``empty`` is true while nothing has been read on this record (a blank line).
    """

    text: str
    delimiter: str
    quote_char: str
    line: int = 1
    record_line: int = 1
    quote_line: int = 1
    field_no: int = 1
    header_fields: int | None = None
    state: str = "start"
    empty: bool = True

    def inside_quotes(self, ch: str) -> bool:
        """Take a character that belongs to a quoted field (or doubles a quote in one); False when it does not."""
        if self.state == "quoted":
            if ch == self.quote_char:
                self.state = "quote"
            elif ch == "\n":
                self.line += 1
            return True
        if self.state == "quote" and ch == self.quote_char:  # a doubled quote inside a quoted field
            self.state = "quoted"
            return True
        return False

    def end_record(self) -> str | None:
        """A line break outside quotes: the header sets the width, every later record must match it."""
        problem = None
        if not self.empty:
            if self.header_fields is None:
                self.header_fields = self.field_no
            else:
                problem = self.width_problem()
        self.line += 1
        self.record_line, self.field_no, self.state, self.empty = self.line, 1, "start", True
        return problem

    def field_character(self, ch: str) -> str | None:
        """Any other character: a delimiter, a quote opening a field, or text; a misplaced quote is a problem."""
        self.empty = False
        if ch == self.delimiter:
            self.field_no += 1
            self.state = "start"
            return None
        if self.state == "quote":
            return (
                f"line {self.line}, field {self.field_no}: text after a closing quote ({ch!r}); "
                "quotes inside a field are doubled"
            )
        if ch == self.quote_char:
            if self.state != "start":
                return (
                    f"line {self.line}, field {self.field_no}: a quote inside an unquoted field; quote the whole "
                    'field and double the quote ("")'
                )
            self.state, self.quote_line = "quoted", self.line
            return None
        self.state = "unquoted"
        return None

    def width_problem(self) -> str | None:
        """The record just ended has another number of fields than the header."""
        if self.header_fields is not None and self.field_no != self.header_fields:
            hint = " (is the delimiter ';'?)" if self.delimiter == "," and ";" in self.text[:200] else ""
            return f"line {self.record_line} has {self.field_no} field(s) but the header has {self.header_fields}{hint}"
        return None

    def end_of_file(self) -> str | None:
        """The file ended: inside a quoted field, or after a last record without a line break."""
        if self.state == "quoted":
            return (
                f"line {self.quote_line}, field {self.field_no}: a quoted field is never closed "
                "(a missing closing quote)"
            )
        return None if self.empty else self.width_problem()


def csv_structure_problem(path: str | os.PathLike[str], delimiter: str = ",", quote_char: str = '"') -> str | None:
    """The first RFC 4180 structure problem of a CSV file, naming its line and field; None when there is none.

    Reports an unterminated quoted field (with the line it starts on), a quote inside an unquoted field, text
    after a closing quote, and a record with more or fewer fields than the header. Lines count from 1 (the
    header); a quoted field may span lines; blank lines are skipped. Undecodable bytes are replaced (see
    `text_encoding_problem`). Call it on the error path: it walks the file character by character.
    """
    text = Path(path).read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    walk = _CsvWalk(text, delimiter, quote_char)
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        i += 1
        if walk.inside_quotes(ch):
            continue
        if ch in "\r\n":
            if ch == "\r" and text.startswith("\n", i):  # CRLF is one line break
                i += 1
            problem = walk.end_record()
        else:
            problem = walk.field_character(ch)
        if problem:
            return problem
    return walk.end_of_file()


def header_hint(path: str | os.PathLike[str], required: Sequence[str]) -> str | None:
    """Why a CSV whose required columns were not found may still hold them: wrong delimiter or line endings.

    Returns a hint to append to the "missing required column(s)" message, or None.
    """
    with open(path, "rb") as handle:
        head = handle.read(65536).decode("utf-8", errors="replace").lstrip("\ufeff")
    if "\r" in head and "\n" not in head:
        return "the file uses CR-only (classic Mac) line endings; save it with LF or CRLF line endings"
    first = head.splitlines()[0] if head.splitlines() else ""
    lowered = first.lower()
    for sep in (";", "\t", "|"):
        names = [c.strip().strip('"').lower() for c in lowered.split(sep)]
        if sep in first and all(r in names for r in required):
            shown = "tab" if sep == "\t" else repr(sep)
            return f"the header is separated by {shown}; immunostrat reads comma-separated files"
    return None
