"""The relay loop (runtime/relay.py) and the bridge and archiver built on it, with in-memory sources and
sinks (connectors/testing.py) and no server: each batch is in every sink, in order, before the source
commits it; a sink that is away is waited for; one that fails for good commits nothing; a restart
resumes after the commit; the Kafka events sink re-sends only what was not acknowledged, in order."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from opmas.connectors.kafka.records import EventRecord, decode, encode
from opmas.connectors.kafka.sink import KafkaEventsSink, PartitionedRecords
from opmas.connectors.source import SourceMessage
from opmas.connectors.testing import Journal, MemoryArchive, MemoryDeadLetters, MemorySource, Unavailable
from opmas.core.event import Event
from opmas.core.partition import partition_of
from opmas.runtime.archiver import Archiver
from opmas.runtime.bridge import Bridge
from opmas.runtime.relay import Relay
from tests.waiting import wait_until


class ListSink:
    """A relay sink keeping what it was given; ``failures`` times away first, or ``broken`` for good."""

    errors = (Unavailable,)

    def __init__(self, name: str, journal: Journal, failures: int = 0, broken: bool = False):
        self.name = name
        self.journal = journal
        self.failures = failures
        self.broken = broken
        self.items: list[Any] = []

    async def write(self, items: Sequence[Any]) -> None:
        if self.broken:
            raise ValueError(f"{self.name} refuses")
        if self.failures:
            self.failures -= 1
            raise Unavailable(f"{self.name} is away")
        self.items.extend(items)
        self.journal.add(self.name, "write", list(items))


def _messages(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [("opmas.events.a", b"%d" % i) for i in range(start, start + n)]


def _upper(messages: list[SourceMessage]) -> dict[str, list[int]]:
    """Even payloads to one sink, odd ones to the other."""
    values = [int(m.data) for m in messages]
    return {"even": [v for v in values if v % 2 == 0], "odd": [v for v in values if v % 2]}


async def _relay_all(relay: Relay, source: MemorySource) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await wait_until(lambda: task.done() or source.committed == len(source.messages), 10, "every message committed")
    stop.set()
    await task


def _batches(journal: Journal) -> list[list[tuple[str, str]]]:
    """The journal cut at each ack: what happened before each commit."""
    out, batch = [], []
    for component, what, _ in journal.entries:
        batch.append((component, what))
        if what in ("ack", "stop"):
            out.append(batch)
            batch = []
    return out


async def test_each_batch_is_in_every_sink_in_order_before_it_is_committed():
    journal = Journal()
    source = MemorySource(_messages(10), journal)
    even, odd = ListSink("even", journal), ListSink("odd", journal)
    committed, started = [], []
    relay = Relay(source, _upper, [(even, lambda o: o["even"]), (odd, lambda o: o["odd"])], batch_size=3,
                  batch_wait=0.01, committed=lambda ms, out: committed.append([m.seq for m in ms]),
                  started=started.append)
    await _relay_all(relay, source)
    assert even.items == [0, 2, 4, 6, 8] and odd.items == [1, 3, 5, 7, 9]
    assert started == [0] and committed == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    batches = _batches(journal)
    assert batches[:3] == [[("even", "write"), ("odd", "write"), ("memory-source", "ack")]] * 3
    assert batches[3] == [("odd", "write"), ("memory-source", "ack")]  # [9]: nothing even, that sink skipped
    assert batches[4] == [("memory-source", "stop")]


async def test_a_sink_that_is_away_is_waited_for_and_one_that_fails_commits_nothing():
    journal = Journal()
    source = MemorySource(_messages(4), journal)
    even, odd = ListSink("even", journal), ListSink("odd", journal, failures=3)
    relay = Relay(source, _upper, [(even, lambda o: o["even"]), (odd, lambda o: o["odd"])], batch_size=4,
                  batch_wait=0.01, retry_max_delay=0.01)
    await _relay_all(relay, source)
    assert odd.failures == 0 and odd.items == [1, 3] and source.committed == 4

    journal = Journal()
    source = MemorySource(_messages(4), journal)
    broken = ListSink("odd", journal, broken=True)
    relay = Relay(source, _upper, [(ListSink("even", journal), lambda o: o["even"]), (broken, lambda o: o["odd"])],
                  batch_size=4, batch_wait=0.01)
    with pytest.raises(ValueError, match="refuses"):
        await relay.run(asyncio.Event())
    assert source.committed == 0  # nothing acknowledged; the source stopped
    assert journal.entries[-1][:2] == ("memory-source", "stop")


async def test_a_restart_resumes_after_the_commit():
    journal = Journal()
    source = MemorySource(_messages(5), journal)
    sink = ListSink("all", journal)
    relay = Relay(source, lambda ms: [int(m.data) for m in ms], [(sink, lambda o: o)], batch_size=2,
                  batch_wait=0.01, offload=True)
    await _relay_all(relay, source)
    source.add(_messages(3, start=5))
    started: list[int] = []
    relay = Relay(source, lambda ms: [int(m.data) for m in ms], [(sink, lambda o: o)], batch_size=2,
                  batch_wait=0.01, started=started.append)
    await _relay_all(relay, source)
    assert started == [5] and sink.items == list(range(8))


# -- the Kafka events sink: in order per partition, only what was not acknowledged re-sent ---------


class FakeBatch:
    def __init__(self, room: int):
        self.room = room
        self.items: list[tuple[bytes, bytes]] = []

    def append(self, key: bytes, value: bytes, timestamp: None) -> object | None:
        if len(self.items) == self.room:
            return None
        self.items.append((key, value))
        return object()

    def close(self) -> None:
        pass


class FakeProducer:
    """aiokafka's producer as the events sink uses it: record batches of ``room`` records; the sends
    numbered in ``fail`` fail (counted over all partitions)."""

    def __init__(self, journal: Journal, room: int = 2, fail: Sequence[int] = ()):
        self.journal = journal
        self.room = room
        self.fail = set(fail)
        self.sends = 0
        self.log: dict[int, list[tuple[bytes, bytes]]] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future:
        self.sends += 1
        done = asyncio.get_running_loop().create_future()
        await asyncio.sleep(0)  # let the other partitions' sends interleave
        if self.sends in self.fail:
            done.set_exception(KafkaConnectionError(f"send {self.sends} failed"))
        else:
            self.log.setdefault(partition, []).extend(batch.items)
            self.journal.add("kafka", "produce", (partition, len(batch.items)))
            done.set_result(None)
        return done


async def test_the_events_sink_resends_only_what_kafka_did_not_acknowledge_in_order():
    sink = KafkaEventsSink("kafka://unused:9092", "events")
    sink.producer = FakeProducer(Journal(), room=2, fail=(3, 6))
    records = {p: [(b"k", b"%d:%d" % (p, i)) for i in range(7)] for p in range(3)}
    batch = PartitionedRecords(records)
    for _ in range(3):  # two failed sends: the third write goes through
        try:
            await sink.write(batch)
            break
        except KafkaConnectionError:
            pass
    assert batch.sent == {0: 7, 1: 7, 2: 7}
    assert sink.producer.log == records  # each partition in order, nothing twice, nothing skipped


# -- the bridge and the archiver as relays ------------------------------------------------------


def _bridge(journal: Journal, source: MemorySource, producer: FakeProducer) -> tuple[Bridge, MemoryDeadLetters]:
    events = KafkaEventsSink("kafka://unused:9092", "events")
    events.producer = producer
    dead = MemoryDeadLetters(journal)
    return Bridge(source, events, dead, 3, "agent", 1 << 20, batch_size=4, batch_wait=0.01,
                  retry_max_delay=0.01), dead


async def test_the_bridge_acks_only_once_kafka_and_the_dead_letters_hold_the_batch():
    journal = Journal()
    messages = [(f"opmas.events.host-{i % 5}", orjson.dumps({"id": f"e{i}", "n": i})) for i in range(10)]
    messages[6] = ("opmas.events.host-1", b"{not json")
    source = MemorySource(messages, journal)
    producer = FakeProducer(journal, room=1, fail=(2, 5))
    bridge, dead = _bridge(journal, source, producer)
    await _relay_all(bridge.relay, source)
    assert [d.seq for d in dead.letters] == [7]
    got: dict[int, list[EventRecord]] = {p: [r for value in values for r in decode(value)]
                                         for p, values in ((p, [v for _, v in items])
                                                           for p, items in producer.log.items())}
    for p, found in got.items():
        assert all(partition_of(f"host-{int(r.event.id[1:]) % 5}", 3) == p for r in found)
        assert [r.source for r in found] == sorted(r.source for r in found)  # in order, none twice
    assert sorted(r.event.id for found in got.values() for r in found) == sorted(f"e{i}" for i in range(10) if i != 6)
    for batch in _batches(journal)[:-1]:
        assert batch[-1] == ("memory-source", "ack")
        if ("memory-deadletters", "write") in batch:
            assert batch.index(("memory-deadletters", "write")) > max(
                i for i, entry in enumerate(batch) if entry[0] == "kafka")  # dead letters after Kafka, before the ack


async def test_the_archiver_commits_only_after_the_insert():
    journal = Journal()
    values = [encode([EventRecord(Event(id=f"e{seq}", data={"n": seq}, timestamp=None, agent_id="a", type="t"),
                                  seq, 0, 1764043200.0)])[0] for seq in range(1, 7)]
    values.insert(3, b"not an events record")
    source = MemorySource([("opmas-events", v) for v in values], journal)
    archive = MemoryArchive(journal, failures=2)
    archiver = Archiver(archive, source, mappings=[], batch_size=3, retry_max_delay=0.01, batch_wait=0.01)
    committed = []
    count = archiver.relay.committed  # the archiver's metrics
    archiver.relay.committed = lambda ms, block: (committed.append((block.archived, block.bad)), count(ms, block))
    stop = asyncio.Event()
    task = asyncio.create_task(archiver.run(stop))
    await wait_until(lambda: task.done() or source.committed == len(values), 10, "every record committed")
    stop.set()
    await task
    assert committed == [(3, 0), (2, 1), (1, 0)] and archive.failures == 0
    assert _batches(journal)[:3] == [[("memory-archive", "insert"), ("memory-source", "ack")]] * 3
