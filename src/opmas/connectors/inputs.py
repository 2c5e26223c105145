"""The inputs of ``opmas detect`` and ``opmas replay``: files, folders and globs of event logs.

Each file's format is told by its first bytes, not its name:

* binary EVTX (``ElfFile\\0``), read with the ``evtx`` parser (the Rust one Zircolite uses) into
  the EVTX-JSON shape the windows mapping knows (``Event.System``, ``Event.EventData``);
* gzip, decompressed, then told again (``.json.gz``, ``.evtx.gz``);
* JSON text, read by :mod:`opmas.connectors.files` (lines, concatenated objects, arrays); text that
  is not JSON gives bad records there, one per line.

Anything else (binary that is neither) is an :class:`UnknownInput` naming the file, found
before any event is read. A folder is searched recursively for event-log files (by suffix);
a glob is expanded (``**`` included); ``-`` is stdin (JSON or gzip).
"""
from __future__ import annotations

import glob
import gzip
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from opmas.connectors.files import BadRecord, OnError, iter_records
from opmas.core.event import Event
from opmas.core.envelope import event_from_obj

EVTX_MAGIC = b"ElfFile\x00"
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
HEAD = 4096  # bytes read to tell a format
# what a folder is searched for (also with .gz after it)
LOG_SUFFIXES = (".json", ".jsonl", ".ndjson", ".evtx", ".log")
MAX_BAD_EVTX_CHUNKS = 1000  # a file whose chunks keep failing is given up, not read for ever


class UnknownInput(ValueError):
    """A file that is neither JSON text, gzip nor EVTX."""


@dataclass(frozen=True, slots=True)
class Input:
    """A file to read and how: ``format`` is ``json`` or ``evtx``; ``gzip`` if compressed."""

    path: str
    format: str
    gzip: bool = False


def expand(specs: Sequence[str]) -> list[str]:
    """The files ``specs`` name, in order, each once: files as given, folders searched recursively
    for event-log files (sorted), globs expanded (sorted). Raises FileNotFoundError for a spec that
    names nothing."""
    found: list[str] = []
    for spec in specs:
        path = Path(spec)
        if spec == "-" or path.is_file():
            found.append(spec)
        elif path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.is_file() and _is_log(p.name))
        elif glob.has_magic(spec):
            matched = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not matched:
                raise FileNotFoundError(f"no file matches {spec}")
            found += matched
        else:
            raise FileNotFoundError(f"no such file or folder: {spec}")
    return list(dict.fromkeys(found))


def _is_log(name: str) -> bool:
    name = name.lower().removesuffix(".gz")
    return not name.startswith(".") and name.endswith(LOG_SUFFIXES)


def sniff(path: str) -> Input:
    """How ``path`` is read, from its first bytes. Raises UnknownInput, naming the file."""
    if path == "-":
        head = sys.stdin.buffer.peek(HEAD)[:HEAD]
        compressed = head[:2] == GZIP_MAGIC
        if compressed or head[:8] != EVTX_MAGIC:
            return Input(path, "json", compressed)  # text from a pipe: bad lines are reported as they come
        raise UnknownInput("-: binary EVTX cannot be read from stdin: give its file name")
    with open(path, "rb") as stream:
        head = stream.read(HEAD)
    compressed = head[:2] == GZIP_MAGIC
    if compressed:
        try:
            with gzip.open(path, "rb") as stream:
                head = stream.read(HEAD)
        except (OSError, EOFError) as exc:
            raise UnknownInput(f"{path}: not a readable gzip file ({exc})") from None
    if head[:8] == EVTX_MAGIC:
        return Input(path, "evtx", compressed)
    if head[:2] in UTF16_BOMS:
        raise UnknownInput(f"{path}: UTF-16 text (as Windows PowerShell writes it): convert it to UTF-8 first, "
                           "e.g. iconv -f UTF-16 -t UTF-8")
    if _is_text(head):
        return Input(path, "json", compressed)
    raise UnknownInput(f"{path}: not JSON, gzip or EVTX (binary data, starting {head[:8]!r})")


def _is_text(head: bytes) -> bool:
    """Whether the first bytes of a file can be text: no NUL, valid UTF-8 (a character cut at the end allowed)."""
    if b"\x00" in head:
        return False
    try:
        head.decode()
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def check(specs: Sequence[str]) -> list[Input]:
    """:func:`expand` then :func:`sniff` every file: what to read, or the errors (FileNotFoundError,
    UnknownInput, OSError) of every spec and file at once, as one UnknownInput."""
    problems: list[str] = []
    inputs: list[Input] = []
    for spec in specs:
        try:
            paths = expand([spec])
        except FileNotFoundError as exc:
            problems.append(str(exc))
            continue
        for path in paths:
            try:
                inputs.append(sniff(path))
            except UnknownInput as exc:
                problems.append(str(exc))
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or exc}")
    if problems:
        raise UnknownInput("\n".join(problems))
    return list(dict.fromkeys(inputs))


class Reading:
    """Reading a list of inputs in turn, with how far it has got: :attr:`position` of :attr:`total`
    bytes (compressed bytes for gzip; ``total`` is None where stdin is read)."""

    def __init__(self, inputs: Sequence[Input], on_error: OnError):
        self.inputs = inputs
        self.on_error = on_error
        self.total: int | None = None if any(i.path == "-" for i in inputs) else \
            sum(Path(i.path).stat().st_size for i in inputs)
        self.current: Input | None = None
        self._done = 0  # bytes of the inputs finished
        self._furthest = 0  # the largest position told
        self._raw: BinaryIO | None = None  # the file being read, as stored

    @property
    def position(self) -> int:
        """Bytes of the inputs read so far (never less than it said before: a parser may seek back)."""
        raw = self._raw
        here = self._done + (raw.tell() if raw is not None and not raw.closed else 0)
        self._furthest = max(self._furthest, here)
        return self._furthest

    def records(self) -> Iterator[tuple[dict[str, Any], bytes | None]]:
        """Each event of every input, with the JSON text it was parsed from where it was JSON (EVTX:
        None). Bad records go to ``on_error`` with their file's path."""
        for source in self.inputs:
            self.current = source

            def report(record: BadRecord, path: str = source.path) -> None:
                self.on_error(replace(record, file=path))

            with self._opened(source) as stream:
                if source.format == "evtx":
                    yield from _evtx_records(stream, report)
                else:
                    yield from iter_records(stream, report)
            if source.path != "-":
                self._done += Path(source.path).stat().st_size
            self._raw = None

    def event_batches(self, batch_size: int) -> Iterator[list[Event]]:
        """The events of :meth:`records` in lists of at most ``batch_size``."""
        batch: list[Event] = []
        for obj, text in self.records():
            batch.append(event_from_obj(obj, text))
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    @contextmanager
    def _opened(self, source: Input) -> Iterator[BinaryIO]:
        if source.path == "-":
            stdin: BinaryIO = sys.stdin.buffer
            yield gzip.GzipFile(fileobj=stdin) if source.gzip else stdin  # type: ignore[misc]
            return
        with open(source.path, "rb") as raw:
            self._raw = raw
            if source.gzip:
                with gzip.GzipFile(fileobj=raw) as stream:
                    yield _without_bom(stream)  # type: ignore[arg-type]
            else:
                yield _without_bom(raw)


def _without_bom(stream: BinaryIO) -> BinaryIO:
    """``stream`` past a UTF-8 byte order mark, if it starts with one (Windows tools write them)."""
    if stream.read(len(UTF8_BOM)) != UTF8_BOM:
        stream.seek(0)
    return stream


def _evtx_records(stream: BinaryIO, report: Callable[[BadRecord], None]) -> Iterator[tuple[dict[str, Any], None]]:
    """The records of an EVTX file as EVTX-JSON objects; a chunk the parser cannot read is a bad
    record (its ``line`` is the number of records read before it) and reading goes on after it."""
    from evtx import PyEvtxParser  # a compiled parser: loaded only where EVTX is read

    records = PyEvtxParser(stream).records_json()
    count = failures = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except RuntimeError as exc:
            failures += 1
            report(BadRecord(count, f"unreadable EVTX: {exc}", b""))
            if failures >= MAX_BAD_EVTX_CHUNKS:
                report(BadRecord(count, "too many unreadable EVTX chunks: the rest of the file is skipped", b""))
                return
            continue
        count += 1
        try:
            obj = orjson.loads(record["data"])
        except orjson.JSONDecodeError as exc:
            report(BadRecord(count, f"EVTX record {record.get('event_record_id')}: {exc}", b""))
            continue
        yield obj, None
