"""Envelope validation: the fast path agrees with the JSON Schema; partitioning is stable."""
import pytest

from opmas.core.event import Event
from opmas.core.partition import key_of, partition_of
from opmas.runtime.envelope import envelope_error, looks_like_envelope, validator

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
