"""The engine's main loop: source batches -> partition processors -> sinks -> commit.

Two tasks joined by a bounded queue (backpressure): the reader fetches a batch,
decodes and evaluates it; the writer sends that batch's raw events to the archive
and its dead letters out, then commits its findings (and, every
``checkpoint_interval``, the processors' state at that batch's last position) to the
state store in one transaction, announces the new findings to the finding sinks, and
only then acknowledges the batch to the source. A component that is away stalls the
writer (retrying on the errors it names, with bounded backoff), the full queue stalls
the reader, the source holds the rest. The loop sees its I/O only through
``PipelineIO`` (``nats_io`` in ``opmas up``: JetStream, PostgreSQL, ClickHouse;
``connectors.testing`` in the unit tests).

Correlation runs in two steps: the partition processors (in the evaluators) keep
event time and turn matches into hits keyed by each correlation's group-by; the
engine process feeds every partition's hits to one CorrelationStage, whose groups
are keyed by group key, so a group's events meet whatever agent sent them.

On start the processors' and the stage's state is restored from the last checkpoint and the
consumer is positioned right after it, so a crash replays exactly the messages
after the checkpoint into exactly that state: findings come out again with the
same ids (PostgreSQL and the NATS duplicate window drop them) and re-archived
events collapse in the ReplacingMergeTree.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchfiles import awatch

from opmas.connectors.clickhouse.archive import Archive
from opmas.connectors.nats.client import connect
from opmas.connectors.nats.publishers import NatsDeadLetterSink, NatsFindingSink
from opmas.connectors.nats.source import JetStreamSource
from opmas.connectors.nats.subjects import RELOAD_SUBJECT, ensure_streams
from opmas.connectors.postgres.sink import PostgresSink
from opmas.connectors.records import FindingRecord
from opmas.connectors.sinks import FindingSink, build_sinks
from opmas.connectors.source import Source, SourceMessage
from opmas.connectors.store import Checkpoint, StateStore
from opmas.core.correlation import CorrelationStage
from opmas.core.ruleset import RuleSet
from opmas import metrics
from opmas.config import Config
from opmas.runtime.evaluator import Evaluated
from opmas.runtime.nats_access import nats_options
from opmas.runtime.outputs import (DeadLetterSink, announce, announce_pending, report_dead_letters, report_findings,
                                   write_store)
from opmas.runtime.retry import retry
from opmas.runtime.rules import RuleFiles, RuleReloads
from opmas.runtime.workers import EvaluatorPool

log = logging.getLogger("opmas.pipeline")

STATE_FORMAT = "correlation-stage"  # checkpoint layout: partition processors split, one correlation stage


@dataclass(slots=True)
class Batch:
    """One fetched batch, evaluated, waiting for its sinks."""

    last: SourceMessage | None
    times: list[float]  # stream time of each message (for latency)
    result: Evaluated
    checkpoint: Checkpoint | None


@dataclass
class PipelineStats:
    """Totals of this run (acknowledged work only) and per-message latencies."""

    messages: int = 0
    events: int = 0
    findings: int = 0
    dead_letters: int = 0
    acked_seq: int = 0
    first_time: float | None = None  # stream time of the first message acked in this run
    latencies: list[float] = field(default_factory=list)  # seconds, stream arrival -> ack
    keep_latencies: bool = False


class EventArchive(Protocol):
    """Where raw events are archived (ClickHouse's ``Archive``; a list in tests)."""

    name: str
    errors: tuple[type[BaseException], ...]

    def ensure_table(self) -> None: ...
    def insert_block(self, block: bytes) -> None: ...


@dataclass
class PipelineIO:
    """What the loop reads from and writes to: a source, the state store, the archive, the dead
    letters, the finding sinks, and (optionally) where rule reload requests arrive."""

    source: Source
    store: StateStore
    archive: EventArchive
    dead_letters: DeadLetterSink
    finding_sinks: list[FindingSink]
    reload_requests: Callable[[Callable[[Any], Awaitable[None]]], Awaitable[Any]] | None = None


@asynccontextmanager
async def nats_io(config: Config, nats_url: str, db_url: str, archive: Archive) -> AsyncIterator[PipelineIO]:
    """The pipeline's I/O in ``opmas up``: the JetStream events stream, PostgreSQL, the ClickHouse
    archive, dead letters and findings on NATS plus the configured finding sinks."""
    nc = await connect(nats_url, f"opmas-engine:{config.pipeline.consumer}", persistent=True,
                       **nats_options(config))
    js = nc.jetstream()
    store = PostgresSink(db_url)
    sinks: list[FindingSink] = []
    try:
        for sink in [NatsFindingSink(js), *build_sinks(config.sinks)]:
            await sink.open()
            sinks.append(sink)
        await ensure_streams(js, config.nats.stream_max_age, config.nats.stream_max_bytes)
        yield PipelineIO(JetStreamSource(js, config.pipeline.consumer), store, archive, NatsDeadLetterSink(js),
                         sinks, lambda on_request: nc.subscribe(RELOAD_SUBJECT, cb=on_request))
    finally:
        for sink in sinks:
            await sink.close()
        await nc.close()  # every publish was already confirmed by JetStream
        await store.close()


class Pipeline:
    """Runs until ``stop`` is set; ``abort`` gives up retries on a second signal. ``connect_io()``
    opens the pipeline's I/O for one run (:func:`nats_io` in ``opmas up``)."""

    def __init__(self, config: Config, connect_io: Callable[[], AbstractAsyncContextManager[PipelineIO]],
                 abort: asyncio.Event | None = None, rules_db_url: str | None = None):
        self.config = config
        self.connect_io = connect_io
        self.reloads = RuleReloads(RuleFiles(tuple(config.pipeline.rules), tuple(config.pipeline.mappings),
                                             rules_db_url, config.pipeline.lateness), self._apply_rules)
        self.stats = PipelineStats()
        self.abort = abort or asyncio.Event()
        self.ready = asyncio.Event()
        self.pool: EvaluatorPool | None = None
        self.io: PipelineIO | None = None
        self.stage: CorrelationStage | None = None
        self._lock = asyncio.Lock()  # processors are used by one batch or one reload at a time

    @classmethod
    def over_nats(cls, config: Config, nats_url: str, db_url: str, archive: Archive,
                  abort: asyncio.Event | None = None) -> "Pipeline":
        """The pipeline of ``opmas up`` (rules from the files and from PostgreSQL)."""
        return cls(config, lambda: nats_io(config, nats_url, db_url, archive), abort, db_url)

    @property
    def source(self) -> Source | None:
        return self.io.source if self.io is not None else None

    # -- start and stop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        async with self.connect_io() as io:
            self.io = io
            try:
                await self._run(io, stop)
            finally:
                log.info("engine stopped", extra={"acked_seq": self.stats.acked_seq, "events": self.stats.events,
                                                   "findings": self.stats.findings})

    async def _run(self, io: PipelineIO, stop: asyncio.Event) -> None:
        cfg = self.config
        delay = cfg.pipeline.retry_max_delay
        tasks: list[asyncio.Task] = []
        try:
            await retry(io.store.migrate, io.store.name, io.store.errors, delay, self.abort)
            pending = await announce_pending(io.store, io.finding_sinks, delay, self.abort)
            if pending:
                log.info("announced findings a stop left stored but unannounced", extra={"findings": pending})
            checkpoint = await retry(lambda: io.store.load_checkpoint(cfg.pipeline.consumer), io.store.name,
                                     io.store.errors, delay, self.abort)
            await retry(lambda: asyncio.to_thread(io.archive.ensure_table), io.archive.name, io.archive.errors,
                        delay, self.abort)
            sources, ruleset = await self.reloads.load()
            end = await io.source.end()
            if checkpoint is not None and checkpoint.seq > end:
                log.warning("checkpoint is ahead of the events stream (was the stream recreated?): "
                            "starting from the stream's beginning with empty state",
                            extra={"checkpoint_seq": checkpoint.seq, "stream_last_seq": end})
                checkpoint = Checkpoint(cfg.pipeline.consumer, 0, {}, {})
            state: dict[str, Any] = {}
            if checkpoint is not None and checkpoint.seq:
                if checkpoint.layout == self._layout():
                    state = checkpoint.state
                else:
                    log.warning("checkpoint layout differs from the configuration: starting with empty state",
                                extra={"checkpoint_layout": checkpoint.layout, "layout": self._layout()})
            cset = ruleset.correlations
            self.stage = None if cset is None else CorrelationStage(cset, state.get("correlation"),
                                                                    cfg.pipeline.partition_idle)
            self.pool = EvaluatorPool(cfg.pipeline.partitions, cfg.pipeline.partition_key, cfg.pipeline.workers,
                                      sources, cfg.pipeline.mappings, cfg.pipeline.lateness, state.get("partitions"),
                                      cfg.nats.max_message_bytes, cfg.pipeline.max_future)
            await self.pool.start()
            after = await io.source.start(checkpoint.seq if checkpoint else None)
            self.stats.acked_seq = after
            if io.reload_requests is not None:
                await io.reload_requests(self.reloads.on_request)
            log.info("engine started", extra={
                "rules": len(ruleset.rules), "partitions": cfg.pipeline.partitions, "workers": cfg.pipeline.workers,
                "partition_key": cfg.pipeline.partition_key, "resume_after_seq": after,
                "state_restored": bool(state)})
            queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
            tasks = [asyncio.create_task(self._gauges(stop))]
            if cfg.pipeline.watch_rules:
                tasks.append(asyncio.create_task(self._watch_rules(stop)))
            writer = asyncio.create_task(self._write(queue))
            self.ready.set()
            await self._read(queue, stop, writer)
            await writer
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await io.source.stop()
            if self.pool is not None:  # cut off (see shutdown.py): a stuck evaluator is killed at once
                await asyncio.to_thread(self.pool.close, 0.0 if self.abort.is_set() else 5.0)

    # -- reader: fetch, decode, evaluate ------------------------------------------------------

    async def _read(self, queue: asyncio.Queue, stop: asyncio.Event, writer: asyncio.Task) -> None:
        cfg = self.config
        source = self.io.source
        last_checkpoint = time.monotonic()
        while not stop.is_set() and not writer.done():
            try:
                messages = await retry(lambda: source.fetch(cfg.pipeline.batch_size, cfg.pipeline.batch_wait),
                                       f"{source.name}-fetch", source.errors, cfg.pipeline.retry_max_delay, stop)
            except source.errors:
                if stop.is_set():  # stopping while NATS is away: nothing fetched, nothing to lose
                    break
                raise
            if not messages:
                await self._idle(queue, writer)
                continue
            metrics.MESSAGES_RECEIVED.inc(len(messages))
            checkpoint = None
            async with self._lock:
                result = await self.pool.evaluate(messages)
                self._correlate(result)
                if time.monotonic() - last_checkpoint >= cfg.pipeline.checkpoint_interval:
                    checkpoint = await self._checkpoint(messages[-1].seq)
                    last_checkpoint = time.monotonic()
            await _put(queue, Batch(messages[-1], [m.time for m in messages], result, checkpoint), writer)
        if not writer.done():  # a final checkpoint at the last evaluated message
            async with self._lock:
                final = await self._checkpoint(source.last_seq)
            await _put(queue, Batch(None, [], Evaluated(), final), writer)
        await _put(queue, None, writer)

    def _correlate(self, result: Evaluated) -> None:
        """The correlation stage takes the batch's hits; its findings join the batch's."""
        if self.stage is None:
            return
        now = time.time()
        for partition, handoff in result.handoffs:
            self.stage.take(partition, handoff, now)
        result.findings.extend(map(FindingRecord.of, self.stage.advance(now)))

    async def _idle(self, queue: asyncio.Queue, writer: asyncio.Task) -> None:
        """No new messages: a partition that went quiet may stop holding correlation windows open."""
        if self.stage is None:
            return
        async with self._lock:
            findings = list(map(FindingRecord.of, self.stage.advance(time.time())))
        if findings:  # the events they cite were stored when they arrived; a replay makes them again
            await _put(queue, Batch(None, [], Evaluated(findings=findings), None), writer)

    def _layout(self) -> dict[str, Any]:
        cfg = self.config
        return {"partitions": cfg.pipeline.partitions, "key": cfg.pipeline.partition_key, "state": STATE_FORMAT}

    async def _checkpoint(self, seq: int) -> Checkpoint:
        state = {"partitions": await self.pool.snapshot(),
                 "correlation": self.stage.snapshot() if self.stage is not None else None}
        return Checkpoint(self.config.pipeline.consumer, seq, self._layout(), state)

    # -- writer: sinks, then ack ---------------------------------------------------------------

    async def _write(self, queue: asyncio.Queue) -> None:
        while (batch := await queue.get()) is not None:
            await self._sink(batch)

    async def _sink(self, batch: Batch) -> None:
        """The batch into every sink, then the commit: the archive and the dead letters, then the
        state store (findings, cited events and the checkpoint in one transaction: the
        checkpoint only covers batches every other sink holds), then the findings it stored for
        the first time to the finding sinks (a crash in between: at the next start), and only
        then the source's ack."""
        io, delay = self.io, self.config.pipeline.retry_max_delay
        result = batch.result
        block = b"".join(result.archive)
        writes = []
        if block:
            writes.append(retry(lambda: asyncio.to_thread(io.archive.insert_block, block), io.archive.name,
                                io.archive.errors, delay, self.abort))
        if result.dead:
            writes.append(retry(lambda: io.dead_letters.write(result.dead), io.dead_letters.name,
                                io.dead_letters.errors, delay, self.abort))
        await asyncio.gather(*writes)
        refused, new = await write_store(io.store, io.dead_letters, result.findings, result.referenced,
                                         batch.checkpoint, delay, self.abort)
        result.dead.extend(refused)
        await announce(io.store, io.finding_sinks, new, delay, self.abort)
        if batch.last is not None:
            await retry(lambda: io.source.ack(batch.last), f"{io.source.name}-ack", io.source.errors, delay,
                        self.abort)
            self.stats.acked_seq = batch.last.seq
        self._account(batch, new)

    def _account(self, batch: Batch, announced: list[FindingRecord]) -> None:
        """Metrics, logs and totals of a batch that every sink holds (the findings logged: those announced)."""
        result = batch.result
        now = time.time()
        for t in batch.times:
            metrics.PROCESSING_LATENCY.observe(now - t)
        if batch.times and self.stats.first_time is None:
            self.stats.first_time = batch.times[0]
        if self.stats.keep_latencies:
            self.stats.latencies.extend(now - t for t in batch.times)
        metrics.ARCHIVED_EVENTS.inc(result.events)
        if result.events:
            metrics.BATCH_SIZE.observe(result.events)
        for p, n in result.per_partition.items():
            metrics.EVENTS_PROCESSED.labels(str(p)).inc(n)
        report_dead_letters(log, result.dead)
        report_findings(log, announced)
        self.stats.messages += len(batch.times)
        self.stats.events += result.events
        self.stats.findings += len(result.findings)
        self.stats.dead_letters += len(result.dead)

    # -- rules ---------------------------------------------------------------------------------

    @property
    def rule_count(self) -> int:
        return self.reloads.count

    async def _apply_rules(self, sources: list, ruleset: RuleSet) -> None:
        """Swap a reloaded rule set in (between batches: the processors are used by one at a time)."""
        async with self._lock:
            await self.pool.replace_rules(sources, self.config.pipeline.mappings, self.config.pipeline.lateness)
            self.stage = CorrelationStage.reloaded(self.stage, ruleset.correlations,
                                                   self.config.pipeline.partition_idle)

    async def _watch_rules(self, stop: asyncio.Event) -> None:
        paths = [p for p in self.config.pipeline.rules if p.exists()]
        if not paths:
            return
        watching = asyncio.Event()  # awatch sets its stop event when it ends: not ``stop``, which outlives this run
        relay = asyncio.create_task(stop.wait())
        relay.add_done_callback(lambda _: watching.set())
        try:
            async for _changes in awatch(*paths, stop_event=watching, debounce=500):
                log.info("rule files changed, reloading")
                try:
                    await self.reloads.reload()
                except Exception:  # e.g. a rule path gone, PostgreSQL away: the next change tries again
                    log.exception("rule reload failed, the running rule set stays")
        finally:
            relay.cancel()

    async def _gauges(self, stop: asyncio.Event) -> None:
        exported: dict[int | str, dict[str, int]] = {}
        while not stop.is_set():
            try:
                await self._update_gauges(exported)
            except Exception:  # gauges are best effort: the next round tries again
                log.exception("updating the gauges failed")
            await asyncio.sleep(5)

    async def _update_gauges(self, exported: dict[int | str, dict[str, int]]) -> None:
        try:
            metrics.CONSUMER_LAG.set(await self.io.source.pending())
        except self.io.source.errors:
            pass
        async with self._lock:
            stats: dict[int | str, dict[str, int]] = dict(await self.pool.stats())
            if self.stage is not None:
                stats["correlation"] = self.stage.stats()
        for p, values in stats.items():
            metrics.export_partition(p, values, exported.setdefault(p, {}))


async def _put(queue: asyncio.Queue, item: Batch | None, writer: asyncio.Task) -> None:
    """Queue ``item`` for the writer; if the writer has ended (it failed), raise its error instead
    of waiting for room it will never make."""
    put = asyncio.ensure_future(queue.put(item))
    try:
        await asyncio.wait([put, writer], return_when=asyncio.FIRST_COMPLETED)
        if put.done():
            return
    finally:
        put.cancel()  # (no-op once done)
    writer.result()
    raise RuntimeError("the writer ended before the reader")
