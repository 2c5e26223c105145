"""The engine's main loop: JetStream batches -> partition processors -> sinks -> ack.

Two tasks joined by a bounded queue (backpressure): the reader fetches a batch,
decodes and evaluates it; the writer sends that batch's raw events to the
ClickHouse archive and its findings and dead letters to NATS, then commits its
findings (and, every ``checkpoint_interval``, the processors' state at that batch's
last sequence) to PostgreSQL in one transaction, and only then acknowledges the
batch. A server that is away stalls the writer (retrying with bounded backoff),
the full queue stalls the reader, JetStream holds the rest.

On start the processors' state is restored from the last checkpoint and the
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

import clickhouse_connect.driver.exceptions as ch_errors
import nats
import nats.errors
import nats.js.errors
import orjson
import psycopg
from watchfiles import awatch

from connectors.clickhouse.archive import Archive
from connectors.nats.publishers import DeadLetter, publish_dead_letters, publish_findings
from connectors.nats.source import JetStreamSource, SourceMessage
from connectors.nats.subjects import RELOAD_SUBJECT, ensure_streams
from connectors.postgres.sink import Checkpoint, PostgresSink
from engine.event import Event
from engine.finding import Finding
from opmas import metrics
from opmas.config import Config
from opmas.runtime.intake import Intake
from opmas.runtime.partitions import Partitions
from opmas.runtime.retry import retry
from opmas.runtime.rules import RuleFiles, blocking_errors, log_errors

log = logging.getLogger("opmas.pipeline")

PG_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
CH_ERRORS = (ch_errors.OperationalError, ch_errors.DatabaseError, OSError)
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)


async def _nats_error(exc: Exception) -> None:
    log.warning("nats connection problem", extra={"reason": f"{type(exc).__name__}: {exc}"})


@dataclass(slots=True)
class Batch:
    """One fetched batch, evaluated, waiting for its sinks."""

    last: SourceMessage | None
    times: list[float]  # stream time of each message (for latency)
    events: int
    archive: bytes  # JSONEachRow block
    findings: list[Finding]
    referenced: list[Event]  # the batch's events that findings refer to
    dead: list[DeadLetter]
    checkpoint: Checkpoint | None


@dataclass
class PipelineStats:
    """Totals of this run (acknowledged work only) and per-message latencies."""

    messages: int = 0
    events: int = 0
    findings: int = 0
    dead_letters: int = 0
    acked_seq: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, stream arrival -> ack
    keep_latencies: bool = False


class Pipeline:
    """Runs until ``stop`` is set; ``abort`` gives up retries on a second signal."""

    def __init__(self, config: Config, nats_url: str, db_url: str, archive: Archive):
        self.config = config
        self.nats_url = nats_url
        self.pg = PostgresSink(db_url)
        self.archive = archive
        self.rules = RuleFiles(tuple(config.rules), tuple(config.mappings))
        self.intake = Intake(config.max_message_bytes)
        self.stats = PipelineStats()
        self.abort = asyncio.Event()
        self.ready = asyncio.Event()
        self.partitions: Partitions | None = None
        self.rule_count = 0
        self.source: JetStreamSource | None = None
        self._lock = asyncio.Lock()  # processors are used by one batch or one reload at a time

    # -- start and stop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        self.nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                     name=f"opmas-engine:{cfg.consumer}", error_cb=_nats_error)
        self.js = self.nc.jetstream()
        tasks: list[asyncio.Task] = []
        try:
            await ensure_streams(self.js, cfg.stream_max_age, cfg.stream_max_bytes)
            await retry(self.pg.migrate, "postgres", PG_ERRORS, cfg.retry_max_delay, self.abort)
            checkpoint = await retry(lambda: self.pg.load_checkpoint(cfg.consumer), "postgres", PG_ERRORS,
                                     cfg.retry_max_delay, self.abort)
            await retry(lambda: asyncio.to_thread(self.archive.ensure_table), "clickhouse", CH_ERRORS,
                        cfg.retry_max_delay, self.abort)
            ruleset, errors = await asyncio.to_thread(self.rules.load)
            log_errors(errors, "startup")
            state = None
            if checkpoint is not None:
                expected = {"partitions": cfg.partitions, "key": cfg.partition_key}
                if checkpoint.layout == expected:
                    state = checkpoint.state
                else:
                    log.warning("checkpoint layout differs from the configuration: starting with empty state",
                                extra={"checkpoint_layout": checkpoint.layout, "layout": expected})
            self.partitions = Partitions(ruleset, cfg.partitions, cfg.partition_key, state)
            self.rule_count = len(ruleset.rules)
            metrics.RULES_LOADED.set(self.rule_count)
            self.source = JetStreamSource(self.js, cfg.consumer)
            after = await self.source.start(checkpoint.seq if checkpoint else None)
            self.stats.acked_seq = after
            await self.nc.subscribe(RELOAD_SUBJECT, cb=self._on_reload)
            log.info("engine started", extra={
                "rules": len(ruleset.rules), "rule_errors": len(errors), "partitions": cfg.partitions,
                "partition_key": cfg.partition_key, "resume_after_seq": after,
                "state_restored": state is not None})
            queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=2)
            tasks = [asyncio.create_task(self._gauges(stop))]
            if cfg.watch_rules:
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
            await self.nc.close()  # every publish was already confirmed by JetStream
            await self.pg.close()
            log.info("engine stopped", extra={"acked_seq": self.stats.acked_seq, "events": self.stats.events,
                                               "findings": self.stats.findings})

    # -- reader: fetch, decode, evaluate ------------------------------------------------------

    async def _read(self, queue: asyncio.Queue, stop: asyncio.Event, writer: asyncio.Task) -> None:
        cfg = self.config
        last_checkpoint = time.monotonic()
        while not stop.is_set() and not writer.done():
            messages = await self.source.fetch(cfg.batch_size, cfg.batch_wait)
            if not messages:
                continue
            metrics.MESSAGES_RECEIVED.inc(len(messages))
            due = time.monotonic() - last_checkpoint >= cfg.checkpoint_interval
            async with self._lock:
                batch = await asyncio.to_thread(self._evaluate, messages, due)
            if due:
                last_checkpoint = time.monotonic()
            await queue.put(batch)
        if not writer.done():  # a final checkpoint at the last evaluated message
            async with self._lock:
                final = self._checkpoint(self.source.last_seq)
            await queue.put(Batch(None, [], 0, b"", [], [], [], final))
        await queue.put(None)

    def _evaluate(self, messages: list[SourceMessage], checkpoint_due: bool) -> Batch:
        decoded = self.intake.decode(messages)
        events = decoded.events
        findings = self.partitions.process(events) if events else []
        rows = []
        for event, text, seq, at in zip(events, decoded.texts, decoded.seqs, decoded.times):
            rows.append(orjson.dumps({
                "id": event.id, "timestamp": event.timestamp if event.timestamp is not None else at,
                "agent_id": event.agent_id or "", "type": event.type or "", "data": text, "stream_seq": seq}))
        referenced: list[Event] = []
        if findings:
            wanted = {event_id for f in findings for event_id in f.event_ids}
            seen: set[str] = set()
            for event in events:
                if event.id in wanted and event.id not in seen:
                    seen.add(event.id)
                    referenced.append(event)
        metrics.BATCH_SIZE.observe(len(events))
        last = messages[-1]
        return Batch(last, [m.time for m in messages], len(events), b"\n".join(rows), findings, referenced,
                     decoded.dead, self._checkpoint(last.seq) if checkpoint_due else None)

    def _checkpoint(self, seq: int) -> Checkpoint:
        return Checkpoint(self.config.consumer, seq, self.partitions.layout, self.partitions.snapshot())

    # -- writer: sinks, then ack ---------------------------------------------------------------

    async def _write(self, queue: asyncio.Queue) -> None:
        while (batch := await queue.get()) is not None:
            await self._sink(batch)

    async def _sink(self, batch: Batch) -> None:
        cfg = self.config
        writes = []
        if batch.archive:
            writes.append(retry(lambda: asyncio.to_thread(self.archive.insert_block, batch.archive),
                                "clickhouse", CH_ERRORS, cfg.retry_max_delay, self.abort))
        if batch.findings:
            writes.append(retry(lambda: publish_findings(self.js, batch.findings),
                                "nats-findings", NATS_ERRORS, cfg.retry_max_delay, self.abort))
        if batch.dead:
            writes.append(retry(lambda: publish_dead_letters(self.js, batch.dead),
                                "nats-deadletter", NATS_ERRORS, cfg.retry_max_delay, self.abort))
        await asyncio.gather(*writes)
        # PostgreSQL last: its transaction carries the checkpoint, which must only cover
        # batches that every other sink already holds.
        await retry(lambda: self.pg.write(batch.findings, batch.referenced, batch.checkpoint),
                    "postgres", PG_ERRORS, cfg.retry_max_delay, self.abort)
        if batch.last is not None:
            await retry(lambda: self.source.ack(batch.last), "nats-ack", NATS_ERRORS, cfg.retry_max_delay,
                        self.abort)
            self.stats.acked_seq = batch.last.seq
        now = time.time()
        for t in batch.times:
            metrics.PROCESSING_LATENCY.observe(now - t)
        if self.stats.keep_latencies:
            self.stats.latencies.extend(now - t for t in batch.times)
        metrics.ARCHIVED_EVENTS.inc(batch.events)
        for letter in batch.dead:
            metrics.DEAD_LETTERS.labels(letter.reason.split(":", 1)[0]).inc()
            log.warning("dead letter", extra={"reason": letter.reason, "subject": letter.subject,
                                              "seq": letter.seq, "line": letter.line})
        for finding in batch.findings:
            log.info("finding", extra={"finding_id": finding.id, "rule_id": finding.rule_id,
                                       "severity": finding.severity, "event_ids": finding.event_ids[:10]})
        self.stats.messages += len(batch.times)
        self.stats.events += batch.events
        self.stats.findings += len(batch.findings)
        self.stats.dead_letters += len(batch.dead)

    # -- rules ---------------------------------------------------------------------------------

    async def reload_rules(self) -> dict[str, Any]:
        """Load the rule files again; swap them in only if they have no errors."""
        ruleset, errors = await asyncio.to_thread(self.rules.load)
        fatal = blocking_errors(errors)
        if fatal:
            metrics.RULE_RELOADS.labels("refused").inc()
            log_errors(fatal, "reload refused, the running rule set stays")
            return {"ok": False, "errors": [str(e) for e in fatal], "rules": self.rule_count}
        async with self._lock:
            self.partitions.replace_rules(ruleset)
        metrics.RULE_RELOADS.labels("applied").inc()
        self.rule_count = len(ruleset.rules)
        metrics.RULES_LOADED.set(self.rule_count)
        log.info("rules reloaded", extra={"rules": len(ruleset.rules), "warnings": len(errors)})
        return {"ok": True, "rules": len(ruleset.rules), "warnings": [str(e) for e in errors]}

    async def _on_reload(self, msg) -> None:
        try:
            result = await self.reload_rules()
        except Exception as exc:  # a reload must never take the engine down
            log.exception("rule reload failed")
            result = {"ok": False, "errors": [f"{type(exc).__name__}: {exc}"]}
        if msg.reply:
            await msg.respond(orjson.dumps(result))

    async def _watch_rules(self, stop: asyncio.Event) -> None:
        paths = [p for p in self.config.rules if p.exists()]
        if not paths:
            return
        async for _changes in awatch(*paths, stop_event=stop, debounce=500):
            log.info("rule files changed, reloading")
            await self.reload_rules()

    async def _gauges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                metrics.CONSUMER_LAG.set(await self.source.pending())
            except NATS_ERRORS:
                pass
            self.partitions.update_gauges()
            await asyncio.sleep(5)
