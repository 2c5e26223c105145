"""The bridge: JetStream events stream -> Kafka events topic, keyed and partitioned by the partition key.

Each JetStream batch is decoded as the embedded pipeline decodes it (bad input goes to
the dead-letter subject), every event is produced to the partition
``partition_of(key, N)`` of the topic, and the batch is acknowledged on JetStream only
after Kafka acknowledged every record of it (``acks=all``) and the dead letters are
stored. A bridge killed between the two re-sends the batch on restart; the records
carry their JetStream position, so consumers drop the copies.

Within a partition records must reach the log in order (a consumer drops any event at or
below the last one it saw). Each partition's records go as record batches, one in flight
at a time, the next only after Kafka acknowledged the previous: a failed batch is re-sent
before anything after it, never behind it. (Kafka's idempotent producer would keep the
order too, but Tansu, the test broker, does not support it.)

One bridge runs per events stream (its durable consumer acknowledges cumulatively).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import aiokafka.errors
from aiokafka import AIOKafkaProducer
from nats.js import JetStreamContext

from opmas.connectors.kafka.records import EventRecord, encode
from opmas.connectors.kafka.security import KafkaSecurity
from opmas.connectors.kafka.topics import bootstrap
from opmas.connectors.nats.client import NATS_ERRORS
from opmas.connectors.nats.publishers import publish_dead_letters
from opmas.connectors.nats.source import JetStreamSource
from opmas.connectors.source import SourceMessage
from opmas.connectors.nats.subjects import agent_of_subject
from opmas.core.event import Event
from opmas.core.partition import AGENT_KEY, key_of, partition_of
from opmas import metrics
from opmas.runtime.intake import Intake
from opmas.runtime.retry import retry

log = logging.getLogger("opmas.bridge")

KAFKA_ERRORS = (aiokafka.errors.KafkaError, OSError, asyncio.TimeoutError)
DURABLE = "opmas-bridge"
_partition = functools.lru_cache(maxsize=100_000)(partition_of)


async def produce_in_order(producer: AIOKafkaProducer, topic: str, records: dict[int, list[tuple[bytes, bytes]]],
                           sent: dict[int, int]) -> None:
    """Send each partition p's ``records[p]`` (key, value) from ``sent[p]`` on, in order, one record
    batch in flight per partition; ``sent[p]`` counts the acknowledged ones, so a retry resumes at
    the first record not acknowledged and nothing lands behind a record sent after it."""

    async def partition(p: int, items: list[tuple[bytes, bytes]]) -> None:
        while sent[p] < len(items):
            batch = producer.create_batch()
            count = 0
            for key, value in items[sent[p]:]:  # the first record always fits
                if batch.append(key=key, value=value, timestamp=None) is None:
                    break
                count += 1
            batch.close()
            await (await producer.send_batch(batch, topic, partition=p))
            sent[p] += count

    results = await asyncio.gather(*(partition(p, items) for p, items in records.items()),
                                   return_exceptions=True)  # every partition done before a retry
    for result in results:
        if isinstance(result, BaseException):
            raise result


class Bridge:
    """Moves batches from a JetStream source to the Kafka topic until ``stop`` is set."""

    def __init__(self, js: JetStreamContext, kafka_url: str, topic: str, partitions: int,
                 partition_key: str, max_message_bytes: int, batch_size: int = 2000,
                 batch_wait: float = 0.05, retry_max_delay: float = 10.0, durable: str = DURABLE,
                 security: KafkaSecurity = KafkaSecurity()):
        self.js = js
        self.kafka_url = kafka_url
        self.security = security
        self.topic = topic
        self.partitions = partitions
        self.partition_key = partition_key
        self.intake = Intake(max_message_bytes)
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.retry_max_delay = retry_max_delay
        self.source = JetStreamSource(js, durable)
        self.abort = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(self.kafka_url), acks="all",
                                    linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20,
                                    **self.security.client_kwargs())
        await retry(producer.start, "kafka", KAFKA_ERRORS, self.retry_max_delay, self.abort)
        try:
            acked_seq = await self.source.start(None)
            metrics.BRIDGE_ACKED_SEQ.set(acked_seq)
            log.info("bridge started", extra={"topic": self.topic, "partitions": self.partitions,
                                              "resume_after_seq": acked_seq})
            while not stop.is_set():
                messages = await self.source.fetch(self.batch_size, self.batch_wait)
                if messages:
                    await self._forward(producer, messages)
        finally:
            await producer.stop()
            await self.source.stop()

    def key_of(self, event: Event, subject: str) -> str:
        """The partition key, as the embedded runtime takes it: with the ``agent`` key, the agent of
        the subject the event was published on; else the event's field."""
        return agent_of_subject(subject) if self.partition_key == AGENT_KEY else key_of(event, self.partition_key)

    async def _forward(self, producer: AIOKafkaProducer, messages: list[SourceMessage]) -> None:
        decoded = self.intake.decode(messages)
        subjects = {m.seq: m.subject for m in messages}
        # One record per (message, partition): the events of a message that share a partition.
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
        sent = dict.fromkeys(records, 0)
        if records:
            await retry(lambda: produce_in_order(producer, self.topic, records, sent), "kafka", KAFKA_ERRORS,
                        self.retry_max_delay, self.abort)
        if decoded.dead:
            await retry(lambda: publish_dead_letters(self.js, decoded.dead), "nats-deadletter",
                        NATS_ERRORS, self.retry_max_delay, self.abort)
            for letter in decoded.dead:
                metrics.DEAD_LETTERS.labels(letter.reason.split(":", 1)[0]).inc()
                log.warning("dead letter", extra={"reason": letter.reason, "subject": letter.subject,
                                                  "seq": letter.seq, "line": letter.line})
        last = messages[-1]
        await retry(lambda: self.source.ack(last), "nats-ack", NATS_ERRORS, self.retry_max_delay, self.abort)
        metrics.BRIDGE_ACKED_SEQ.set(last.seq)
        metrics.MESSAGES_RECEIVED.inc(len(messages))
        metrics.BRIDGED_EVENTS.inc(len(decoded.events))
