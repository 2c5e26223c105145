"""connectors/files.py: every accepted layout, bad records reported with their line."""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import orjson
import pytest

from opmas.connectors.files import BadInput, iter_records
from opmas.connectors.inputs import Reading, check


def _fail(record) -> None:
    raise AssertionError(record)


def _read(data: bytes) -> tuple[list, list]:
    errors: list = []
    return [obj for obj, _ in iter_records(io.BytesIO(data), errors.append)], errors


def test_line_delimited() -> None:
    objs, errors = _read(b'{"a":1}\n\n{"b":2}\r\n{"c":3}')
    assert objs == [{"a": 1}, {"b": 2}, {"c": 3}] and errors == []


def test_concatenated_and_pretty_printed_with_tricky_strings() -> None:
    data = b'{"a":1}{"b":"x}{"}\n{\n  "c": [1, 2, {"d": "\\"}]"}]\n}\n{"e": 5}\n'
    objs, errors = _read(data)
    assert objs == [{"a": 1}, {"b": "x}{"}, {"c": [1, 2, {"d": '"}]'}]}, {"e": 5}]
    assert errors == []


def test_top_level_array_streamed() -> None:
    objs, errors = _read(b'[\n {"a": 1},\n {"b": [2]}\n]\n')
    assert objs == [{"a": 1}, {"b": [2]}] and errors == []


def test_bad_records_are_reported_with_line_and_skipped() -> None:
    objs, errors = _read(b'{"a":1}\ngarbage\n{"b":2}\n{"bad": }\n{"c":3}\n{"trunc": ')
    assert objs == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [
        (2, "not a JSON object"),
        (4, "invalid JSON"),
        (6, "truncated JSON object at end of input"),
    ]


def test_bad_record_raises_without_callback() -> None:
    with pytest.raises(BadInput, match="line 2"):
        list(iter_records(io.BytesIO(b"{\"a\":1}\nnope\n")))


def test_large_input_in_small_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("opmas.connectors.files.CHUNK", 7)
    records = [{"i": i, "s": "x" * (i % 13), "n": {"k": [i, "}"]}} for i in range(300)]
    pretty = b"".join(orjson.dumps(r, option=orjson.OPT_INDENT_2) for r in records)
    path = tmp_path / "events.json.gz"
    path.write_bytes(gzip.compress(pretty))
    batches = list(Reading(check([str(path)]), _fail).event_batches(128))
    assert [e.data for b in batches for e in b] == records
    assert [len(b) for b in batches] == [128, 128, 44]


def test_events_keep_own_id_or_get_content_hash(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"id": "e1", "x": 1}\n{"x": 2}\n')
    first = [e.id for b in Reading(check([str(path)]), _fail).event_batches(10) for e in b]
    assert first[0] == "e1" and len(first[1]) == 32
    assert [e.id for b in Reading(check([str(path)]), _fail).event_batches(1) for e in b] == first


def test_long_single_line_array_is_read_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("opmas.connectors.files.LINE_LIMIT", 64)
    monkeypatch.setattr("opmas.connectors.files.CHUNK", 50)
    records = [{"i": i, "pad": "y" * 30} for i in range(200)]
    objs, errors = _read(orjson.dumps(records) + b"\n" + orjson.dumps({"after": 1}))
    assert objs == records + [{"after": 1}] and errors == []
    long_line = orjson.dumps({"big": "z" * 500})
    assert _read(long_line + b"\n{\"x\": 1}\n") == ([{"big": "z" * 500}, {"x": 1}], [])


def test_a_broken_line_does_not_swallow_the_lines_after_it() -> None:
    objs, errors = _read(b'{"a":1}\n{not json\n{"b":2}\n{"c": [1,\n{"d":4}\n')
    assert objs == [{"a": 1}, {"b": 2}, {"d": 4}]
    assert [(e.line, e.reason.split(":")[0], e.raw) for e in errors] == [
        (2, "truncated JSON object at end of input", b'{not json\n'),
        (4, "truncated JSON object at end of input", b'{"c": [1,\n'),
    ]


def test_an_invalid_object_spanning_lines_resyncs_at_the_next_line_starting_an_object() -> None:
    objs, errors = _read(b'{"a": {"x": }\n}\n{"b":2}\n')
    assert objs == [{"b": 2}]
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [(1, "invalid JSON")]
