"""Read JSON objects from a byte stream, streaming, in bounded memory.

Accepted layouts (detected on the fly, may even be mixed):

* line-delimited JSON (one object per line; the fast path),
* concatenated or pretty-printed objects (``{...}{...}`` or objects spanning lines),
* a top-level JSON array of objects (streamed element by element, never loaded whole).

Files, folders, gzip and EVTX are opmas.connectors.inputs' business. A record that is not valid
JSON, or not an object, is handed to ``on_error`` as a :class:`BadRecord` (line number,
reason, raw bytes) and skipped; without ``on_error`` it raises :class:`BadInput`. Memory
holds one chunk plus the record being read.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from opmas.core.envelope import envelope_error, looks_like_envelope


CHUNK = 1 << 16
MAX_RECORD = 64 << 20  # a single record larger than this is refused, not buffered forever
LINE_LIMIT = 1 << 20  # longer lines are read in chunks by the structural scanner

_STRUCT = re.compile(rb'[{}\[\]"]')
_IN_STRING = re.compile(rb'["\\]')
_WS = b" \t\r\n,"


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record that could not be read: where it started, why, and its raw bytes."""

    line: int
    reason: str
    raw: bytes
    file: str | None = None  # set where several files are read (opmas.connectors.inputs)


class BadInput(ValueError):
    """Raised for a bad record when no ``on_error`` callback is given."""

    def __init__(self, record: BadRecord):
        self.record = record
        super().__init__(f"line {record.line}: {record.reason}")


OnError = Callable[[BadRecord], None]


def _usable(obj: dict[str, Any], text: bytes, line: int, report: OnError) -> bool:
    """False (reported) for an object meant as an envelope that is not a valid one: every runtime
    refuses it for the same reason (``opmas.core.envelope``), none reads it as a raw event."""
    if looks_like_envelope(obj) and (error := envelope_error(obj)) is not None:
        report(BadRecord(line, f"invalid envelope: {error}", text[:4096]))
        return False
    return True


def iter_records(stream: BinaryIO, on_error: OnError | None = None) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Yield each JSON object in ``stream`` with the JSON text it was parsed from (see the module
    docstring for layouts)."""
    report = on_error or _raise
    line_no = 0
    while line := stream.readline(LINE_LIMIT):  # bounded: a huge single-line array goes to the scanner
        line_no += 1
        if len(line) == LINE_LIMIT and not line.endswith(b"\n"):
            yield from _Scanner(stream, line, line_no, report).objects()
            return
        text = line.strip()
        if not text:
            continue
        if text[:1] == b"{" and text[-1:] == b"}":
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                pass  # e.g. "{...}{...}" on one line: let the scanner split it
            else:
                if _usable(obj, text, line_no, report):
                    yield obj, text
                continue
        # Not one object per line: scan the rest of the input structurally.
        yield from _Scanner(stream, line, line_no, report).objects()
        return


def _raise(record: BadRecord) -> None:
    raise BadInput(record)


class _Scanner:
    """Finds object boundaries by tracking brackets and strings, then parses each with orjson.

    A top-level array is entered transparently: its elements are the records.
    """

    def __init__(self, stream: BinaryIO, first: bytes, line_no: int, report: Callable[[BadRecord], None]):
        self.stream = stream
        self.buf = first
        self.line = line_no  # line number of buf[0]
        self.report = report
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _advance(self, n: int) -> bytes:
        taken, self.buf = self.buf[:n], self.buf[n:]
        self.line += taken.count(b"\n")
        return taken

    def objects(self) -> Iterator[tuple[dict[str, Any], bytes]]:
        array_depth = 0  # 1 while inside a top-level array
        while True:
            # skip separators between records
            pos = 0
            while True:
                while pos < len(self.buf) and self.buf[pos] in _WS:
                    pos += 1
                if pos < len(self.buf) or not self._more():
                    break
            self._advance(pos)
            if not self.buf:
                if array_depth:
                    self.report(BadRecord(self.line, "unterminated JSON array", b""))
                return
            head = self.buf[:1]
            if head == b"[" and not array_depth:
                array_depth = 1
                self._advance(1)
                continue
            if head == b"]" and array_depth:
                array_depth = 0
                self._advance(1)
                continue
            if head != b"{":
                self._skip_garbage()
                continue
            end = self._object_end()
            start_line = self.line
            if end is None:
                too_large = len(self.buf) > MAX_RECORD
                reason = "record too large" if too_large else "truncated JSON object at end of input"
                resync = self._resync(len(self.buf))
                raw = self._advance(resync or len(self.buf))
                self.report(BadRecord(start_line, reason, raw[:4096]))
                if resync or too_large:
                    continue
                return
            text = self.buf[:end]
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raw = self._advance(self._resync(end) or end)
                self.report(BadRecord(start_line, f"invalid JSON: {exc}", raw[:4096]))
                continue
            self._advance(end)
            if _usable(obj, text, start_line, self.report):
                yield obj, text

    def _resync(self, end: int) -> int:
        """Where a bad record starting at buf[0] should end so the records after it survive: just
        before the first line within ``buf[:end]`` that starts with ``{`` (a broken line of a JSON
        lines file must not swallow the lines after it); 0 if there is none."""
        cut = self.buf.find(b"\n{", 0, end)
        return cut + 1 if cut >= 0 else 0

    def _skip_garbage(self) -> None:
        """Report and drop everything up to the end of the current line."""
        start = self.line
        while b"\n" not in self.buf and self._more():
            pass
        cut = self.buf.find(b"\n")
        raw = self._advance(len(self.buf) if cut < 0 else cut + 1)
        self.report(BadRecord(start, "not a JSON object", raw.strip()[:4096]))

    def _object_end(self) -> int | None:
        """Index just past the object starting at buf[0], reading more input as needed."""
        depth = 0
        pos = 0
        while True:
            if pos >= len(self.buf) and (len(self.buf) > MAX_RECORD or not self._more()):
                return None
            match = _STRUCT.search(self.buf, pos)
            if match is None:
                pos = len(self.buf)
                continue
            char = match.group()
            pos = match.end()
            if char == b'"':
                pos = self._string_end(pos)
                if pos < 0:
                    return None
            elif char in b"{[":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return pos

    def _string_end(self, pos: int) -> int:
        """Index just past the closing quote of a string whose body starts at ``pos``."""
        while True:
            match = _IN_STRING.search(self.buf, pos)
            if match is None:
                if len(self.buf) > MAX_RECORD or not self._more():
                    return -1
                continue
            if match.group() == b"\\":
                pos = match.end() + 1
                if pos > len(self.buf) and not self._more():
                    return -1
                continue
            return match.end()
