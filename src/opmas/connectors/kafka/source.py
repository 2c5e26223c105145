"""The events topic as a ``connectors.source.Source``: a consumer group's share of its partitions.

A Kafka topic has a position per partition; the source numbers the messages it hands out 1, 2, ...
in this run (``seq``) and remembers each one's partition and offset, so ``ack(message)`` commits,
for every partition, the offset after the last message handed out up to ``message``. A
partition the group took away meanwhile is left to its new owner, which re-reads it from the
last commit. Without a commit (a crash) the group re-reads from the last one: at-least-once.
"""
from __future__ import annotations

from collections import deque

from aiokafka import AIOKafkaConsumer, TopicPartition

from opmas.connectors.kafka.client import KAFKA_ERRORS
from opmas.connectors.kafka.security import KafkaSecurity
from opmas.connectors.kafka.topics import bootstrap
from opmas.connectors.source import SourceMessage


class KafkaSource:
    """The records of ``topic`` for the consumer group ``group``, from its committed offsets on (the
    earliest for a new group)."""

    name = "kafka"
    errors = KAFKA_ERRORS

    def __init__(self, url: str, topic: str, group: str, session_timeout: float = 10.0,
                 security: KafkaSecurity = KafkaSecurity()):
        self.url = url
        self.topic = topic
        self.group = group
        self.session_timeout = session_timeout
        self.security = security
        self.consumer: AIOKafkaConsumer | None = None
        self.last_seq = 0
        self._positions: deque[tuple[int, TopicPartition, int]] = deque()  # (seq, partition, offset) not acked
        self._uncommitted: dict[TopicPartition, int] = {}  # acked, not yet committed: the next offset

    async def start(self, after_seq: int | None) -> int:
        """Join the group; it resumes at its committed offsets (``after_seq`` must be None: a Kafka
        source keeps its position in the group, not in a checkpoint)."""
        if after_seq is not None:
            raise ValueError("a Kafka source resumes at its consumer group's committed offsets")
        if self.consumer is None:
            timeout = self.session_timeout
            self.consumer = AIOKafkaConsumer(
                self.topic, bootstrap_servers=bootstrap(self.url), group_id=self.group, enable_auto_commit=False,
                auto_offset_reset="earliest", session_timeout_ms=int(timeout * 1000),
                heartbeat_interval_ms=int(max(0.5, timeout / 6) * 1000), **self.security.client_kwargs())
        await self.consumer.start()
        return self.last_seq

    async def fetch(self, max_messages: int, wait: float) -> list[SourceMessage]:
        assert self.consumer is not None, "start() first"
        batches = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=max_messages)
        out: list[SourceMessage] = []
        for tp, records in batches.items():
            for record in records:
                self.last_seq += 1
                self._positions.append((self.last_seq, tp, record.offset))
                out.append(SourceMessage(self.topic, record.value, self.last_seq, record.timestamp / 1000, None,
                                         (tp, record.offset)))
        return out

    async def ack(self, message: SourceMessage) -> None:
        """Commit ``message`` and every message handed out before it (of the partitions still assigned)."""
        assert self.consumer is not None, "start() first"
        positions = self._positions
        while positions and positions[0][0] <= message.seq:
            _, tp, offset = positions.popleft()
            self._uncommitted[tp] = offset + 1
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
        if offsets:
            await self.consumer.commit(offsets)
        self._uncommitted.clear()

    async def pending(self) -> int:
        """Records of the assigned partitions not yet handed out (the lag)."""
        assert self.consumer is not None, "start() first"
        lag = 0
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                lag += max(0, highwater - await self.consumer.position(tp))
        return lag

    async def end(self) -> int:
        """The position the last record of the assigned partitions would get."""
        return self.last_seq + await self.pending()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
