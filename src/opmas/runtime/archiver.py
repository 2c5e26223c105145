"""The archiver: every record of the events topic into the ClickHouse archive, in batches.

A relay (runtime/relay.py): the Kafka source of a plain consumer group (``opmas-archive``,
next to the workers' group), ``archive_block`` as its transform, the archive as its sink.
Offsets are committed only after the batch's insert returned, so a crash re-inserts at most
the last batches, which the archive's ReplacingMergeTree collapses (same event id).

Each row's timestamp is the event time as the partition processors resolve it (the logsource
mapping's time field, else the envelope's timestamp), else the time the message entered the
stream: what the embedded runtime archives for the same event.

Workers do not archive: with a ClickHouse server (``OPMAS_CLICKHOUSE_URL``) run as
many archivers as you like (they share the topic's partitions); with the embedded
chdb archive (one process per directory) run exactly one.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from opmas.connectors.clickhouse.archive import encode_row
from opmas.connectors.kafka.records import decode
from opmas.connectors.kafka.security import KafkaSecurity
from opmas.connectors.kafka.source import KafkaSource
from opmas.connectors.source import Source, SourceMessage
from opmas.core.dispatch import RuleIndex
from opmas.core.event import Event
from opmas.core.logsource import Mapping
from opmas.core.ruleset import RuleSet
from opmas import metrics
from opmas.runtime.relay import Relay
from opmas.runtime.retry import retry

if TYPE_CHECKING:
    from opmas.runtime.pipeline import EventArchive

log = logging.getLogger("opmas.archiver")

GROUP = "opmas-archive"
BATCH_WAIT = 0.2  # seconds a fetch waits for records


class EventTimes:
    """Event times as the partition processors resolve them, from the logsource mappings alone."""

    def __init__(self, mappings: Sequence[Mapping]):
        self.index = RuleIndex(RuleSet([], [], tuple(mappings)))

    def of(self, event: Event) -> float | None:
        """The mapping's event time if found, else the envelope's timestamp (None: neither)."""
        view = self.index.view(event.data)
        found = view.time() if view is not None else None
        return found if found is not None else event.timestamp


@dataclass(slots=True)
class Block:
    """A batch as archive rows: the RowBinary block, how many events, how many records were not events."""

    block: bytes
    archived: int
    bad: int


def archive_block(values: list[bytes], times: EventTimes) -> Block:
    """The events in ``values`` as a RowBinary block, and how many values were not events records."""
    rows, bad = [], 0
    for value in values:
        try:
            records = decode(value)
        except ValueError:
            bad += 1
            continue
        for record in records:
            event = record.event
            at = times.of(event)
            rows.append(encode_row(event.id, at if at is not None else record.time,
                                   event.agent_id or "", event.type or "", orjson.dumps(event.data), record.seq))
    return Block(b"".join(rows), len(rows), bad)


class ArchiveSink:
    """The archive as a relay sink: its client is synchronous, so blocks are inserted from a thread."""

    def __init__(self, archive: EventArchive):
        self.archive = archive
        self.name = archive.name
        self.errors = archive.errors

    async def write(self, block: bytes) -> None:
        await asyncio.to_thread(self.archive.insert_block, block)


class Archiver:
    """Relays ``source`` (the events topic) into ``archive`` until ``stop`` is set
    (:meth:`over_kafka`: the ``opmas archiver`` one)."""

    def __init__(self, archive: EventArchive, source: Source, mappings: Sequence[Mapping], batch_size: int = 5000,
                 retry_max_delay: float = 10.0, batch_wait: float = BATCH_WAIT):
        self.archive = archive
        self.times = EventTimes(mappings)
        self.retry_max_delay = retry_max_delay
        self.abort = asyncio.Event()
        self.relay = Relay(source, lambda messages: archive_block([m.data for m in messages], self.times),
                           [(ArchiveSink(archive), lambda b: b.block)], batch_size, batch_wait, retry_max_delay,
                           self.abort, self._committed, lambda _: log.info("archiver started"), offload=True)

    @classmethod
    def over_kafka(cls, archive: EventArchive, kafka_url: str, topic: str, mappings: Sequence[Mapping],
                   batch_size: int = 5000, session_timeout: float = 10.0, retry_max_delay: float = 10.0,
                   group: str = GROUP, security: KafkaSecurity = KafkaSecurity()) -> Archiver:
        """The archiver of ``opmas archiver``: the events topic through the consumer group ``group``."""
        return cls(archive, KafkaSource(kafka_url, topic, group, session_timeout, security), mappings, batch_size,
                   retry_max_delay)

    async def run(self, stop: asyncio.Event) -> None:
        await retry(lambda: asyncio.to_thread(self.archive.ensure_table), self.archive.name, self.archive.errors,
                    self.retry_max_delay, self.abort)
        await self.relay.run(stop)

    def _committed(self, messages: list[SourceMessage], block: Block) -> None:
        if block.bad:
            log.warning("records that are not OPMAS events were not archived", extra={"records": block.bad})
        metrics.ARCHIVED_EVENTS.inc(block.archived)
        metrics.ARCHIVE_SKIPPED_RECORDS.inc(block.bad)
