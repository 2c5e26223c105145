"""The Kafka events sink: records produced to chosen partitions of the events topic, in order
within each partition, and a retry re-sends only what Kafka did not acknowledge.

Within a partition records must reach the log in order (a consumer drops any event at or below
the last one it saw). Each partition's records go as record batches, one in flight at a time, the
next only after Kafka acknowledged the previous (``acks=all``): a failed batch is re-sent before
anything after it, never behind it. (Kafka's idempotent producer would keep the order too, but
Tansu, the test broker, does not support it.)
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from opmas.connectors.kafka.client import KAFKA_ERRORS
from opmas.connectors.kafka.security import KafkaSecurity
from opmas.connectors.kafka.topics import bootstrap


@dataclass(slots=True)
class PartitionedRecords:
    """(key, value) records per partition, and how many of each partition Kafka acknowledged so far
    (``sent``): a retried write resumes there."""

    records: dict[int, list[tuple[bytes, bytes]]]
    sent: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for p in self.records:
            self.sent.setdefault(p, 0)

    def __len__(self) -> int:
        return sum(map(len, self.records.values()))


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


class KafkaEventsSink:
    """The events topic as a relay sink (``runtime.relay``): ``write`` returns once Kafka
    acknowledged every record (``acks=all``)."""

    name = "kafka"
    errors = KAFKA_ERRORS

    def __init__(self, url: str, topic: str, security: KafkaSecurity = KafkaSecurity()):
        self.url = url
        self.topic = topic
        self.security = security
        self.producer: AIOKafkaProducer | None = None

    async def open(self) -> None:
        """Connect (retry it on ``errors`` while the brokers are away)."""
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap(self.url), acks="all", linger_ms=5,
                                             max_batch_size=1 << 20, max_request_size=8 << 20,
                                             **self.security.client_kwargs())
        await self.producer.start()

    async def write(self, batch: PartitionedRecords) -> None:
        assert self.producer is not None, "open() first"
        await produce_in_order(self.producer, self.topic, batch.records, batch.sent)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
