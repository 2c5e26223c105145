"""Against Tansu: the bridge's Kafka events sink keeps each partition's records in order, and a retry
re-sends only what Kafka did not acknowledge (a record re-sent behind a later one would be dropped by
the workers' duplicate check); the archiver's Kafka source commits what it acknowledged, per
partition, and a new member of its group resumes there."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from opmas.connectors.kafka.sink import produce_in_order
from opmas.connectors.kafka.source import KafkaSource
from opmas.connectors.kafka.topics import ensure_topic
from tests.integration.scaleout.conftest import SESSION_TIMEOUT


async def produce_and_read(url: str, records: dict[int, list[tuple[bytes, bytes]]],
                           sent: dict[int, int], expected: int) -> dict[int, list[bytes]]:
    await ensure_topic(url, "ordered", 3)
    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all", max_batch_size=1 << 16)
    await producer.start()
    try:
        await produce_in_order(producer, "ordered", records, sent)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=url, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition("ordered", p) for p in range(3)])
        got: dict[int, list[bytes]] = {p: [] for p in range(3)}
        while sum(map(len, got.values())) < expected:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                got[tp.partition] += [m.value for m in messages]
        return got
    finally:
        await consumer.stop()


def test_records_resume_in_order_after_the_acknowledged_ones(tansu):
    """Many record batches per partition (64 KiB batches of 5 KB records); an earlier attempt had
    partition 1's first 7 records and all of partition 2's acknowledged."""
    records = {p: [(b"k%d" % p, b"%d:%03d:" % (p, i) + b"x" * 5000) for i in range(40)] for p in range(3)}
    start = {0: 0, 1: 7, 2: 40}
    sent = dict(start)
    got = asyncio.run(produce_and_read(tansu.url, records, sent, 40 + 33))
    assert sent == {0: 40, 1: 40, 2: 40}
    for p, items in records.items():
        assert got[p] == [value for _, value in items[start[p]:]]  # in order, none twice, none skipped


async def fetch_all(source: KafkaSource, expected: int) -> list:
    got: list = []
    for _ in range(60):
        got += await source.fetch(100, 0.5)
        if len(got) >= expected:
            break
    return got


async def ack_and_resume(url: str) -> tuple[list[bytes], list[bytes]]:
    await ensure_topic(url, "archived", 3)
    producer = AIOKafkaProducer(bootstrap_servers=url, acks="all")
    await producer.start()
    try:
        for p in range(3):
            for i in range(10):
                await producer.send_and_wait("archived", b"%d:%d" % (p, i), partition=p)
    finally:
        await producer.stop()
    first = KafkaSource(url, "archived", "test-archive", SESSION_TIMEOUT)
    await first.start(None)
    try:
        messages = await fetch_all(first, 30)
        assert sorted(m.seq for m in messages) == list(range(1, 31))
        await first.ack(messages[14])  # the first 15 handed out, whatever their partitions
        acked = [m.data for m in messages[:15]]
    finally:
        await first.stop()
    second = KafkaSource(url, "archived", "test-archive", SESSION_TIMEOUT)
    await second.start(None)
    try:
        again = [m.data for m in await fetch_all(second, 15)]
    finally:
        await second.stop()
    return acked, again


def test_the_kafka_source_resumes_after_what_it_acknowledged(tansu):
    acked, again = asyncio.run(ack_and_resume(tansu.url))
    everything = {b"%d:%d" % (p, i) for p in range(3) for i in range(10)}
    assert set(again) == everything - set(acked) and len(again) == 15  # the rest, each once
