"""The bridge: JetStream events stream -> Kafka events topic, keyed and partitioned by the partition key.

A relay (runtime/relay.py): the JetStream source, ``route`` as its transform, and two sinks in
order. Each JetStream batch is decoded as the embedded pipeline decodes it (bad input goes to
the dead-letter subject), every event is produced to the partition ``partition_of(key, N)``
of the topic, and the batch is acknowledged on JetStream only after Kafka acknowledged every
record of it (``acks=all``) and the dead letters are stored. A bridge killed between the two
re-sends the batch on restart; the records carry their JetStream position, so consumers drop
the copies.

Within a partition records reach the log in order, and a retry re-sends only what Kafka did not
acknowledge (``connectors.kafka.sink``).

One bridge runs per events stream (its durable consumer acknowledges cumulatively).
"""
from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass

from nats.js import JetStreamContext

from opmas.connectors.kafka.records import EventRecord, encode
from opmas.connectors.kafka.security import KafkaSecurity
from opmas.connectors.kafka.sink import KafkaEventsSink, PartitionedRecords
from opmas.connectors.nats.publishers import DeadLetter, NatsDeadLetterSink
from opmas.connectors.nats.source import JetStreamSource
from opmas.connectors.nats.subjects import agent_of_subject
from opmas.connectors.source import Source, SourceMessage
from opmas.core.event import Event
from opmas.core.partition import AGENT_KEY, key_of, partition_of
from opmas import metrics
from opmas.runtime.intake import Intake
from opmas.runtime.outputs import DeadLetterSink, report_dead_letters
from opmas.runtime.relay import Relay
from opmas.runtime.retry import retry

log = logging.getLogger("opmas.bridge")

DURABLE = "opmas-bridge"
_partition = functools.lru_cache(maxsize=100_000)(partition_of)


@dataclass(slots=True)
class Routed:
    """A JetStream batch routed: its records per partition, its dead letters, how many events."""

    records: PartitionedRecords
    dead: list[DeadLetter]
    events: int


class Bridge:
    """Relays batches from ``source`` to the ``events`` sink (the Kafka topic) and dead letters to
    ``dead_letters`` until ``stop`` is set (:meth:`over_nats`: the ``opmas bridge`` one)."""

    def __init__(self, source: Source, events: KafkaEventsSink, dead_letters: DeadLetterSink, partitions: int,
                 partition_key: str, max_message_bytes: int, batch_size: int = 2000, batch_wait: float = 0.05,
                 retry_max_delay: float = 10.0):
        self.events = events
        self.partitions = partitions
        self.partition_key = partition_key
        self.intake = Intake(max_message_bytes)
        self.retry_max_delay = retry_max_delay
        self.abort = asyncio.Event()
        self.relay = Relay(source, self.route, [(events, lambda r: r.records), (dead_letters, lambda r: r.dead)],
                           batch_size, batch_wait, retry_max_delay, self.abort, self._committed, self._started)

    @classmethod
    def over_nats(cls, js: JetStreamContext, kafka_url: str, topic: str, partitions: int, partition_key: str,
                  max_message_bytes: int, batch_size: int = 2000, batch_wait: float = 0.05,
                  retry_max_delay: float = 10.0, durable: str = DURABLE,
                  security: KafkaSecurity = KafkaSecurity()) -> Bridge:
        """The bridge of ``opmas bridge``: the events stream through the durable consumer ``durable``."""
        return cls(JetStreamSource(js, durable), KafkaEventsSink(kafka_url, topic, security), NatsDeadLetterSink(js),
                   partitions, partition_key, max_message_bytes, batch_size, batch_wait, retry_max_delay)

    async def run(self, stop: asyncio.Event) -> None:
        await retry(self.events.open, self.events.name, self.events.errors, self.retry_max_delay, self.abort)
        try:
            await self.relay.run(stop)
        finally:
            await self.events.close()

    def _started(self, acked_seq: int) -> None:
        metrics.BRIDGE_ACKED_SEQ.set(acked_seq)
        log.info("bridge started", extra={"topic": self.events.topic, "partitions": self.partitions,
                                          "resume_after_seq": acked_seq})

    def key_of(self, event: Event, subject: str) -> str:
        """The partition key, as the embedded runtime takes it: with the ``agent`` key, the agent of
        the subject the event was published on; else the event's field."""
        return agent_of_subject(subject) if self.partition_key == AGENT_KEY else key_of(event, self.partition_key)

    def route(self, messages: list[SourceMessage]) -> Routed:
        """Decode a batch and group its events into records: one per (message, partition), holding the
        events of that message that fall in that partition (several if they exceed a record's size)."""
        decoded = self.intake.decode(messages)
        subjects = {m.seq: m.subject for m in messages}
        grouped: dict[tuple[int, int], tuple[str, list[EventRecord]]] = {}
        idx = 0
        previous = None
        for event, seq, at in zip(decoded.events, decoded.seqs, decoded.times):
            idx = idx + 1 if seq == previous else 0
            previous = seq
            key = self.key_of(event, subjects[seq])
            group = grouped.setdefault((seq, _partition(key, self.partitions)), (key, []))
            group[1].append(EventRecord(event, seq, idx, at))
        records: dict[int, list[tuple[bytes, bytes]]] = {}
        for (_, p), (key, events) in grouped.items():
            records.setdefault(p, []).extend((key.encode(), value) for value in encode(events))
        return Routed(PartitionedRecords(records), decoded.dead, len(decoded.events))

    def _committed(self, messages: list[SourceMessage], routed: Routed) -> None:
        report_dead_letters(log, routed.dead)
        metrics.BRIDGE_ACKED_SEQ.set(messages[-1].seq)
        metrics.MESSAGES_RECEIVED.inc(len(messages))
        metrics.BRIDGED_EVENTS.inc(routed.events)
