"""The engine's main loop: JetStream batches -> partition processors -> sinks -> ack.

Two tasks joined by a bounded queue (backpressure): the reader fetches a batch,
decodes and evaluates it; the writer sends that batch's raw events to the
ClickHouse archive and its findings and dead letters to NATS, then commits its
findings (and, every ``checkpoint_interval``, the processors' state at that batch's
last sequence) to PostgreSQL in one transaction, and only then acknowledges the
batch. A server that is away stalls the writer (retrying with bounded backoff),
the full queue stalls the reader, JetStream holds the rest.

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
from dataclasses import dataclass, field
from typing import Any

from watchfiles import awatch

from opmas.connectors.clickhouse.archive import CH_ERRORS, Archive
from opmas.connectors.nats.client import connect
from opmas.connectors.nats.client import NATS_ERRORS
from opmas.connectors.nats.publishers import NatsFindingSink, publish_dead_letters
from opmas.connectors.nats.source import JetStreamSource, SourceMessage
from opmas.connectors.nats.subjects import EVENTS_STREAM, RELOAD_SUBJECT, ensure_streams
from opmas.connectors.postgres.sink import PG_ERRORS, Checkpoint, PostgresSink
from opmas.connectors.records import FindingRecord
from opmas.connectors.sinks import FindingSink, build_sinks
from opmas.core.correlation import CorrelationStage
from opmas.core.ruleset import RuleSet
from opmas import metrics
from opmas.config import Config
from opmas.runtime.evaluator import Evaluated
from opmas.runtime.outputs import announce, announce_pending, report_dead_letters, report_findings, write_postgres
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


class Pipeline:
    """Runs until ``stop`` is set; ``abort`` gives up retries on a second signal."""

    def __init__(self, config: Config, nats_url: str, db_url: str, archive: Archive,
                 abort: asyncio.Event | None = None):
        self.config = config
        self.nats_url = nats_url
        self.pg = PostgresSink(db_url)
        self.archive = archive
        self.reloads = RuleReloads(RuleFiles(tuple(config.pipeline.rules), tuple(config.pipeline.mappings), db_url,
                                             config.pipeline.lateness), self._apply_rules)
        self.stats = PipelineStats()
        self.abort = abort or asyncio.Event()
        self.ready = asyncio.Event()
        self.pool: EvaluatorPool | None = None
        self.source: JetStreamSource | None = None
        self.stage: CorrelationStage | None = None
        self.sinks: list[FindingSink] = []  # NATS findings, then the configured sinks (config.sinks)
        self._lock = asyncio.Lock()  # processors are used by one batch or one reload at a time

    # -- start and stop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        self.nc = await connect(self.nats_url, f"opmas-engine:{cfg.pipeline.consumer}", persistent=True)
        self.js = self.nc.jetstream()
        tasks: list[asyncio.Task] = []
        try:
            for sink in [NatsFindingSink(self.js), *build_sinks(cfg.sinks)]:
                await sink.open()
                self.sinks.append(sink)
            await ensure_streams(self.js, cfg.nats.stream_max_age, cfg.nats.stream_max_bytes)
            await retry(self.pg.migrate, "postgres", PG_ERRORS, cfg.pipeline.retry_max_delay, self.abort)
            pending = await announce_pending(self.pg, self.sinks, cfg.pipeline.retry_max_delay, self.abort)
            if pending:
                log.info("announced findings a stop left stored but unannounced", extra={"findings": pending})
            checkpoint = await retry(lambda: self.pg.load_checkpoint(cfg.pipeline.consumer), "postgres", PG_ERRORS,
                                     cfg.pipeline.retry_max_delay, self.abort)
            await retry(lambda: asyncio.to_thread(self.archive.ensure_table), "clickhouse", CH_ERRORS,
                        cfg.pipeline.retry_max_delay, self.abort)
            sources, ruleset = await self.reloads.load()
            last_seq = (await self.js.stream_info(EVENTS_STREAM)).state.last_seq
            if checkpoint is not None and checkpoint.seq > last_seq:
                log.warning("checkpoint is ahead of the events stream (was the stream recreated?): "
                            "starting from the stream's beginning with empty state",
                            extra={"checkpoint_seq": checkpoint.seq, "stream_last_seq": last_seq})
                checkpoint = Checkpoint(cfg.pipeline.consumer, 0, {}, {})
            state: dict[str, Any] = {}
            if checkpoint is not None and checkpoint.seq:
                if checkpoint.layout == self._layout():
                    state = checkpoint.state
                else:
                    log.warning("checkpoint layout differs from the configuration: starting with empty state",
                                extra={"checkpoint_layout": checkpoint.layout, "layout": self._layout()})
            self._set_stage(ruleset, state.get("correlation"))
            self.pool = EvaluatorPool(cfg.pipeline.partitions, cfg.pipeline.partition_key, cfg.pipeline.workers, sources, cfg.pipeline.mappings,
                                      cfg.pipeline.lateness, state.get("partitions"), cfg.nats.max_message_bytes,
                                      cfg.pipeline.max_future)
            await self.pool.start()
            self.source = JetStreamSource(self.js, cfg.pipeline.consumer)
            after = await self.source.start(checkpoint.seq if checkpoint else None)
            self.stats.acked_seq = after
            await self.nc.subscribe(RELOAD_SUBJECT, cb=self.reloads.on_request)
            log.info("engine started", extra={
                "rules": len(ruleset.rules), "partitions": cfg.pipeline.partitions,
                "workers": cfg.pipeline.workers,
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
            if self.source is not None:
                await self.source.stop()
            if self.pool is not None:  # cut off (see shutdown.py): a stuck evaluator is killed at once
                await asyncio.to_thread(self.pool.close, 0.0 if self.abort.is_set() else 5.0)
            for sink in self.sinks:
                await sink.close()
            await self.nc.close()  # every publish was already confirmed by JetStream
            await self.pg.close()
            log.info("engine stopped", extra={"acked_seq": self.stats.acked_seq, "events": self.stats.events,
                                               "findings": self.stats.findings})

    # -- reader: fetch, decode, evaluate ------------------------------------------------------

    async def _read(self, queue: asyncio.Queue, stop: asyncio.Event, writer: asyncio.Task) -> None:
        cfg = self.config
        last_checkpoint = time.monotonic()
        while not stop.is_set() and not writer.done():
            try:
                messages = await retry(lambda: self.source.fetch(cfg.pipeline.batch_size, cfg.pipeline.batch_wait), "nats-fetch",
                                       NATS_ERRORS, cfg.pipeline.retry_max_delay, stop)
            except NATS_ERRORS:
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
                final = await self._checkpoint(self.source.last_seq)
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

    def _set_stage(self, ruleset: RuleSet, state: dict[str, Any] | None) -> None:
        """The correlation stage of ``ruleset`` (kept across reloads while it has correlations)."""
        cset = ruleset.correlations
        if cset is None:
            self.stage = None
        elif self.stage is None:
            self.stage = CorrelationStage(cset, state, self.config.pipeline.partition_idle)
        else:
            self.stage.replace(cset)

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
        cfg = self.config
        result = batch.result
        block = b"".join(result.archive)
        writes = []
        if block:
            writes.append(retry(lambda: asyncio.to_thread(self.archive.insert_block, block),
                                "clickhouse", CH_ERRORS, cfg.pipeline.retry_max_delay, self.abort))
        if result.dead:
            writes.append(retry(lambda: publish_dead_letters(self.js, result.dead),
                                "nats-deadletter", NATS_ERRORS, cfg.pipeline.retry_max_delay, self.abort))
        await asyncio.gather(*writes)
        # PostgreSQL last: its transaction carries the checkpoint, which must only cover
        # batches that every other sink already holds. Then the findings it stored for the
        # first time are announced (a crash in between: at the next start).
        refused, new = await write_postgres(self.pg, self.js, result.findings, result.referenced,
                                            batch.checkpoint, cfg.pipeline.retry_max_delay, self.abort)
        result.dead.extend(refused)
        await announce(self.pg, self.sinks, new, cfg.pipeline.retry_max_delay, self.abort)
        if batch.last is not None:
            await retry(lambda: self.source.ack(batch.last), "nats-ack", NATS_ERRORS, cfg.pipeline.retry_max_delay,
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
            self._set_stage(ruleset, None)

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
            metrics.CONSUMER_LAG.set(await self.source.pending())
        except NATS_ERRORS:
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
