"""The archiver: every record of the events topic into the ClickHouse archive, in batches.

A plain consumer group (``opmas-archive``) next to the workers' group: offsets are
committed only after the batch's insert returned, so a crash re-inserts at most the
last batches, which the archive's ReplacingMergeTree collapses (same event id).

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

import orjson
from aiokafka import AIOKafkaConsumer

from opmas.connectors.clickhouse.archive import CH_ERRORS, Archive, encode_row
from opmas.runtime.bridge import KAFKA_ERRORS
from opmas.connectors.kafka.records import decode
from opmas.connectors.kafka.security import KafkaSecurity
from opmas.connectors.kafka.topics import bootstrap
from opmas.core.dispatch import RuleIndex
from opmas.core.event import Event
from opmas.core.logsource import Mapping
from opmas.core.ruleset import RuleSet
from opmas import metrics
from opmas.runtime.retry import retry

log = logging.getLogger("opmas.archiver")

GROUP = "opmas-archive"


class EventTimes:
    """Event times as the partition processors resolve them, from the logsource mappings alone."""

    def __init__(self, mappings: Sequence[Mapping]):
        self.index = RuleIndex(RuleSet([], [], tuple(mappings)))

    def of(self, event: Event) -> float | None:
        """The mapping's event time if found, else the envelope's timestamp (None: neither)."""
        view = self.index.view(event.data)
        found = view.time() if view is not None else None
        return found if found is not None else event.timestamp


def archive_block(values: list[bytes], times: EventTimes) -> tuple[bytes, int, int]:
    """A RowBinary block of the events in ``values``, their count, and how many values were not
    events records."""
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
    return b"".join(rows), len(rows), bad


class Archiver:
    """Consumes the events topic into ``archive`` until ``stop`` is set."""

    def __init__(self, archive: Archive, kafka_url: str, topic: str, mappings: Sequence[Mapping],
                 batch_size: int = 5000, session_timeout: float = 10.0, retry_max_delay: float = 10.0,
                 group: str = GROUP, security: KafkaSecurity = KafkaSecurity()):
        self.archive = archive
        self.times = EventTimes(mappings)
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap(kafka_url), group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=int(session_timeout * 1000),
            heartbeat_interval_ms=int(max(0.5, session_timeout / 6) * 1000), max_poll_records=batch_size,
            **security.client_kwargs())
        self.retry_max_delay = retry_max_delay
        self.abort = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        await retry(lambda: asyncio.to_thread(self.archive.ensure_table), "clickhouse", CH_ERRORS,
                    self.retry_max_delay, self.abort)
        await retry(self.consumer.start, "kafka", KAFKA_ERRORS, self.retry_max_delay, self.abort)
        log.info("archiver started")
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=200)
                values = [m.value for messages in batches.values() for m in messages]
                if not values:
                    continue
                block, archived, bad = await asyncio.to_thread(archive_block, values, self.times)
                if block:
                    await retry(lambda: asyncio.to_thread(self.archive.insert_block, block), "clickhouse",
                                CH_ERRORS, self.retry_max_delay, self.abort)
                await retry(self.consumer.commit, "kafka", KAFKA_ERRORS, self.retry_max_delay, self.abort)
                if bad:
                    log.warning("records that are not OPMAS events were not archived", extra={"records": bad})
                metrics.ARCHIVED_EVENTS.inc(archived)
                metrics.ARCHIVE_SKIPPED_RECORDS.inc(bad)
        finally:
            await self.consumer.stop()
