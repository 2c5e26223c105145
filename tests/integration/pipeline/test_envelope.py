"""Envelope validation: the fast path agrees with the JSON Schema; partitioning is stable."""
import pytest

from opmas.core.event import Event
from opmas.core.partition import key_of, partition_of
from opmas.core.envelope import envelope_error, looks_like_envelope, validator

GOOD = {"id": "e1", "agent_id": "a1", "type": "linux.auth", "timestamp": "2026-11-25T04:00:00Z", "data": {}}
CASES = [
    GOOD,
    {k: v for k, v in GOOD.items() if k != "id"},
    {k: v for k, v in GOOD.items() if k != "timestamp"},
    GOOD | {"timestamp": 1764043200},
    GOOD | {"timestamp": 1764043200.5, "extra": [1]},
    GOOD | {"agent_id": 5},
    GOOD | {"agent_id": ""},
    GOOD | {"agent_id": "x" * 300},
    GOOD | {"type": None},
    GOOD | {"data": []},
    GOOD | {"id": 7},
    GOOD | {"id": ""},
    GOOD | {"timestamp": None},
    GOOD | {"timestamp": True},
    GOOD | {"timestamp": {"t": 1}},
    {k: v for k, v in GOOD.items() if k != "type"},
]


@pytest.mark.parametrize("obj", CASES)
def test_fast_path_agrees_with_the_schema(obj):
    schema_ok = validator().is_valid(obj)
    assert (envelope_error(obj) is None) == schema_ok, envelope_error(obj)


def test_errors_say_what_is_wrong():
    assert "agent_id" in envelope_error(GOOD | {"agent_id": 5})
    assert "'type' is a required property" in envelope_error({"agent_id": "a", "data": {}})
    assert "not a valid time" in envelope_error(GOOD | {"timestamp": "soon"})


def test_raw_events_are_not_envelopes():
    assert not looks_like_envelope({"message": "x", "data": {"a": 1}})
    assert looks_like_envelope({"agent_id": "a", "data": {}})


def test_partitions_are_stable_and_spread():
    # pinned: a changed hash would put restored state in the wrong partitions
    assert partition_of("web-01", 8) == partition_of("web-01", 8) == 5
    assert len({partition_of(f"host-{i}", 8) for i in range(100)}) == 8
    event = Event("1", {"host": {"name": "h1"}, "flat.key": "f"}, agent_id="agent-9")
    assert key_of(event, "agent") == "agent-9"
    assert key_of(event, "host.name") == "h1"
    assert key_of(event, "flat.key") == "f"
    assert key_of(event, "missing.path") == "agent-9"


MEANT_AS_ENVELOPES = [
    {"type": "x", "data": {}},  # no agent_id
    {"agent_id": "a1", "data": {}},  # no type
    {"agent_id": "a1", "type": "x", "data": [1]},  # data not an object
    GOOD | {"timestamp": "not a time"},
]


@pytest.mark.parametrize("obj", MEANT_AS_ENVELOPES)
def test_every_runtime_refuses_an_invalid_envelope_for_the_same_reason(obj, tmp_path):
    """One predicate and one validation: ``opmas detect`` (a file) reports the object as a bad
    record, ``opmas up`` (the intake) dead-letters it, both with the envelope's error; neither
    reads it as a raw event."""
    import orjson

    from opmas.connectors.files import BadRecord
    from opmas.connectors.inputs import Reading, check
    from opmas.connectors.source import SourceMessage
    from opmas.core.envelope import EnvelopeError, event_from_obj
    from opmas.runtime.intake import Intake

    reason = envelope_error(obj)
    assert looks_like_envelope(obj) and reason
    with pytest.raises(EnvelopeError, match="."):
        event_from_obj(obj)
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(obj) + b"\n" + orjson.dumps({"a": 1}) + b"\n")
    bad: list[BadRecord] = []
    events = [e for batch in Reading(check([str(path)]), bad.append).event_batches(10) for e in batch]
    assert [e.data for e in events] == [{"a": 1}]
    assert [(b.line, b.reason) for b in bad] == [(1, f"invalid envelope: {reason}")]
    decoded = Intake(1 << 20).decode([SourceMessage("opmas.events.a1", orjson.dumps(obj), 1, 0.0, None, None)])
    assert decoded.events == [] and [d.reason for d in decoded.dead] == [f"schema: {reason}"]
