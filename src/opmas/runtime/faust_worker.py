"""Scale-out runtime: the engine's partition processors as a Faust agent over a Kafka-protocol log.

Kafka does the partition assignment and rebalancing; each worker runs one engine
``Processor`` per events-topic partition it is assigned, and one ``CorrelationStage`` per
partition of the correlation hits topic, Faust's two agents. For each batch of events records:

1. events at or below the partition's checkpointed source position are dropped
   (Kafka redeliveries after a rebalance, copies re-sent by the bridge);
2. the processors evaluate the rest (with the wall clock bounding event time); detection findings
   and the events correlations may cite go to PostgreSQL (idempotent) and the findings PostgreSQL
   newly stored to NATS (``opmas.findings.<severity>``, deduplicated by id), retried while a server
   is away; rows PostgreSQL refuses for their content become dead letters;
3. each partition's correlation hits are re-keyed by group (core/correlation/repartition.py) and
   sent to the hits topic, one record per correlation partition (connectors/kafka/hits.py);
4. only then each touched partition's checkpoint (source position + ``Processor.snapshot()``)
   is written to the ``checkpoints`` table: a Faust table keyed by partition number whose
   changelog record for partition p goes to changelog partition p;
5. the batch is acknowledged; Faust commits offsets after flushing the changelog.

The correlation agent takes the hits records of its partitions into their stages (each events
partition's part once: its offset grows), writes and announces the findings the stages make final,
then checkpoints each stage (table ``correlation``), so a group's events meet in one stage whatever
partition, agent or worker they came from: the findings and ids of ``opmas up`` and ``opmas detect``.
A timer advances the stages by the clock, so window-closing conditions close on a quiet live stream.

So a committed offset never runs ahead of a stored checkpoint, and a checkpoint never
runs ahead of the sinks. A batch that outlived its partitions (a rebalance waited longer than
the rebalance timeout for it, so Kafka gave them to other workers) writes no checkpoint and is
not acknowledged: the process exits and the new owners replay it from their checkpoints. A partition that moves to another worker is restored there
from the changelog (or a standby copy) and continues its correlation windows; the
events it replays produce the same finding ids, which both sinks drop.

Raw events are not archived here: ``opmas archiver`` consumes the same topic (see
runtime/archiver.py).
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Awaitable, Iterable, Sequence, Set
from dataclasses import asdict, dataclass, field
from typing import Any

import faust
import orjson
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT

from opmas.connectors.kafka.client import KAFKA_ERRORS
from opmas.connectors.kafka.hits import HandoffPart, decode_parts, encode_parts
from opmas.connectors.kafka.records import decode
from opmas.connectors.kafka.security import KafkaSecurity
from opmas.connectors.nats.client import NATS_ERRORS, connect
from opmas.connectors.nats.publishers import DeadLetter, NatsDeadLetterSink, NatsFindingSink, publish_dead_letters
from opmas.connectors.nats.subjects import RELOAD_SUBJECT, ensure_streams
from opmas.connectors.postgres.sink import PG_ERRORS, PostgresSink
from opmas.connectors.sinks import FindingSink, build_sinks
from opmas.connectors.records import EventRecord, FindingRecord
from opmas.core.correlation import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FUTURE, CorrelationStage
from opmas.core.correlation.repartition import Router
from opmas.core.event import Event
from opmas.core.finding import Finding
from opmas.core.processor import Processor
from opmas.core.ruleset import RuleSet
from opmas import metrics
from opmas.runtime.gc_tuning import tune_gc_for_rules
from opmas.runtime.outputs import announce, announce_pending, report_dead_letters, report_findings, write_store
from opmas.runtime.retry import retry
from opmas.runtime.rules import RuleFiles, RuleReloads

log = logging.getLogger("opmas.worker")

APP_ID = "opmas-workers"
STATE_FORMAT = "repartitioned"  # checkpoints: Processor / CorrelationStage snapshots (another format starts afresh)
CHECKPOINTS = "checkpoints"
STAGES = "correlation"  # the table of the correlation stages' checkpoints
HITS = "correlation-hits"  # the repartition topic: APP_ID-HITS
IDLE_POLL = 1.0  # seconds between advances of the stages by the clock alone
# Largest checkpoint record (zlib-compressed JSON, ~6x smaller than the JSON): the workers'
# producer request size and the changelog topic's max.message.bytes. See docs/scale-out.md.
CHECKPOINT_MAX_BYTES = 16 << 20
# Every this many seconds a worker announces findings stored at least that long ago and still
# unannounced: another worker stored them and died before publishing (connectors/postgres/sink.py).
ANNOUNCE_SWEEP = 10.0


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs beyond the rules: where the servers are and how to batch."""

    kafka_url: str
    topic: str
    partitions: int
    partition_key: str
    nats_url: str
    db_url: str
    batch_size: int = 2000
    batch_wait: float = 0.05
    max_future: float = DEFAULT_MAX_FUTURE  # seconds event time may run ahead of the clock (Processor)
    partition_idle: float = DEFAULT_IDLE_TIMEOUT  # seconds before a quiet live partition's windows close by the clock
    session_timeout: float = 10.0  # seconds without heartbeat before a worker's partitions move
    rebalance_timeout: float = 60.0  # seconds a rebalance waits for a worker's batch (> session_timeout)
    replication: int = 1  # replication factor of the changelog topic
    retry_max_delay: float = 10.0
    app_id: str = APP_ID
    security: KafkaSecurity = KafkaSecurity()
    sinks: tuple[str, ...] = ()  # finding sinks besides NATS (NAME:TARGET, connectors/sinks.py)
    nats_options: dict[str, Any] = field(default_factory=dict, repr=False)  # TLS trust, identity (nats_access.py)


def encode_checkpoint(checkpoint: dict[str, Any]) -> bytes:
    """A checkpoint as a changelog record value: zlib-compressed JSON."""
    return zlib.compress(orjson.dumps(checkpoint), 1)


def decode_checkpoint(raw: bytes) -> dict[str, Any]:
    """The checkpoint of a changelog record value (plain JSON: written before compression)."""
    return orjson.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))


class CheckpointTable(faust.Table):
    """A table keyed by partition number: key p's changelog record goes to changelog partition p,
    so the worker assigned events partition p recovers exactly p's checkpoint."""

    def partition_for_key(self, key: Any) -> int:
        return int(key)


class ActivePartitions:
    """Faust's live set of active (not paused) partitions as aiokafka's ``fetched_records`` reads it:
    never empty to it, since it returns the records of every partition for an empty set.

    Faust hands aiokafka its set of active partitions itself, and aiokafka reads it again after each
    wait for records. When the set empties during that wait (a rebalance, or the recovery pausing
    the changelog partitions while the stream partitions are still paused), aiokafka returns and
    moves its position past the records of every partition, and Faust drops those of the paused
    ones: records no one receives, before or after a seek."""

    __slots__ = ("tps",)

    def __init__(self, tps: Set) -> None:
        self.tps = tps

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self.tps


class WorkerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _fetch_records(self, consumer: Any, active_partitions: Set, timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        return await super()._fetch_records(consumer, ActivePartitions(active_partitions), timeout, max_records)


class WorkerConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> WorkerConsumerThread:
        return WorkerConsumerThread(self, loop=self.loop, beacon=self.beacon)


class WorkerTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, fetching only the records of its active partitions."""

    Consumer = WorkerConsumer


class WorkerApp(faust.App):
    """A Faust app that knows since when the running rebalance waits for it."""

    rebalance_started: float | None = None  # monotonic seconds; None: no rebalance running

    def _new_transport(self) -> WorkerTransport:
        return WorkerTransport(self.conf.broker_consumer, self)

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        if self.rebalance_started is None:
            self.rebalance_started = time.monotonic()

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self.rebalance_started = None


class SeekFirstRecovery(Recovery):
    """Faust's recovery, seeking the stream partitions to their committed offsets before it resumes
    them (Faust 0.15 resumes them first).

    Faust's ``Recovery.on_recovery_completed`` calls ``consumer.resume_partitions`` and then
    ``consumer.perform_seek``, while its Fetcher already runs (the changelog recovery started it).
    aiokafka fetches every assigned partition, paused or not, so records of a newly assigned events
    partition fetched during the recovery reach the agent while the seek is still running; the seek
    then moves aiokafka's position back to the committed offset and drops its buffered records, and
    Faust's read offset (set by the records already delivered) drops the refetched ones below it:
    the records between are never delivered. The partition then stalls at that gap, or Faust counts
    the gap as committed and skips them. Seeking while the partitions are still paused leaves
    nothing to deliver before the seek.

    A partition without a committed offset (0 or none) is sought to its start: aiokafka's
    seek_to_committed leaves it where it is, and that may be past records no one received (a fetch
    that waited while Faust's set of active partitions was empty, as it is when the recovery pauses
    the changelog partitions again, returns the records of every partition, and Faust drops those
    of paused ones). The rest is Faust 0.15.3's method as it is."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [asyncio.ensure_future(table.on_recovery_completed(self.actives_for_table[table],
                                                                       self.standbys_for_table[table]))
                     for table in self.tables.values()]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(f"Recovery rebalancing again app id {self.app.consumer_generation_id}"
                             f" param {generation_id}")
            return
        streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            for tp in sorted(tp for tp in streams if not consumer._committed_offset.get(tp)):
                await self._wait(consumer.seek(tp, 0), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions(streams)
        self.completed.set()
        self.app.flow_control.resume()
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")


class WorkerTableManager(TableManager):
    """The table manager of the workers: its recovery is SeekFirstRecovery."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class StaleBatch(RuntimeError):
    """A batch finished after its partitions may have moved to another worker."""


def fenced(partitions: Iterable[int], assigned: Set[int], rebalance_age: float | None,
           limit: float) -> list[int]:
    """The partitions whose checkpoint this worker must not write: those no longer assigned to it,
    and all of them once a rebalance has waited ``limit`` seconds for it (Kafka then gives them to
    the other workers, whose newer checkpoints an old one must not follow)."""
    if rebalance_age is not None and rebalance_age >= limit:
        return sorted(partitions)
    return sorted(p for p in partitions if p not in assigned)


@dataclass(slots=True)
class PartitionState:
    """A partition's processor and the source position of the last record it processed."""

    processor: Processor
    source: tuple[int, int]
    offset: int  # Kafka offset of that record (-1: none yet)
    restored: bool = True  # no record seen since the restore


@dataclass(slots=True)
class StageState:
    """A correlation partition's stage (None without correlations) and, per events partition, the
    offset of the last part it took."""

    stage: CorrelationStage | None
    applied: dict[int, int]


class WorkerRuntime:
    """The Faust app and the per-partition processors of one worker process."""

    def __init__(self, settings: WorkerSettings, rules: RuleFiles):
        self.settings = settings
        self.reloads = RuleReloads(rules, self._apply_rules)
        self.layout = {"partitions": settings.partitions, "key": settings.partition_key, "state": STATE_FORMAT}
        self.ruleset: RuleSet | None = None
        self.states: dict[int, PartitionState] = {}
        self.stages: dict[int, StageState] = {}  # per correlation partition held
        self.router: Router | None = None  # re-keys hits by group (None without correlations)
        self.index_of: dict[str, int] = {}  # correlation rule id -> index in the running rule set
        self.exported: dict[int, dict[str, int]] = {}  # per partition: the counters last exported (metrics)
        self.pg = PostgresSink(settings.db_url)
        self.sweeper = PostgresSink(settings.db_url)  # its own connection: the sweep runs beside batches
        self.correlation_pg = PostgresSink(settings.db_url)  # the correlation side's: it runs beside the processors
        self._correlating = asyncio.Lock()  # the correlation agent and the clock's advances, one at a time
        self.sinks: list[FindingSink] = []  # NATS findings, then settings.sinks (from start())
        self.abort = asyncio.Event()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._lock = asyncio.Lock()  # the processors and stages serve one batch or one reload at a time
        # A record holds the events of one NATS message (often many): batches and the fetch
        # buffer count records, so bound them well below ``batch_size`` to bound memory.
        self.records_per_batch = max(50, settings.batch_size // 10)
        self.heartbeat_interval = max(0.5, settings.session_timeout / 6)
        self.datadir = tempfile.mkdtemp(prefix="opmas-worker-")  # Faust wants one; tables stay in memory
        atexit.register(shutil.rmtree, self.datadir, True)
        self.app = self._build_app()

    # -- the Faust app ---------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        app = WorkerApp(
            s.app_id, broker=f"kafka://{s.kafka_url.removeprefix('kafka://')}", store="memory://",
            datadir=self.datadir, web_enabled=False, autodiscover=False,
            topic_partitions=s.partitions, topic_replication_factor=s.replication,
            processing_guarantee="at_least_once", consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.session_timeout,
            broker_rebalance_timeout=s.rebalance_timeout,
            broker_heartbeat_interval=self.heartbeat_interval, table_standby_replicas=1,
            stream_buffer_maxsize=2 * self.records_per_batch,
            consumer_max_fetch_size=16 << 20,  # per partition per fetch: records carry many events
            broker_commit_interval=1.0,  # less to replay after a crash
            producer_max_request_size=CHECKPOINT_MAX_BYTES,
            broker_credentials=s.security.faust_credentials(),
            TableManager=WorkerTableManager,  # seeks the stream partitions before resuming them
        )
        events = app.topic(s.topic, partitions=s.partitions, key_type=bytes, value_type=bytes,
                           key_serializer="raw", value_serializer="raw")
        self.hits = app.topic(f"{s.app_id}-{HITS}", partitions=s.partitions, replicas=s.replication, internal=True,
                              key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        self.table, self.stage_table = (app.tables.add(CheckpointTable(
            app, name=name, partitions=s.partitions, key_type=int, value_type=bytes,
            extra_topic_configs={"max.message.bytes": str(CHECKPOINT_MAX_BYTES)},
            beacon=app.tables.beacon)) for name in (CHECKPOINTS, STAGES))  # int keys as JSON, bytes values raw

        @app.agent(events, name="opmas-processors")
        async def processors(stream):
            await self.start()
            async for batch in stream.take_events(self.records_per_batch, within=s.batch_wait):
                await self.uncancelled(self.handle(batch))

        @app.agent(self.hits, name="opmas-correlation")
        async def correlation(stream):
            await self.start()
            async for batch in stream.take_events(self.records_per_batch, within=s.batch_wait):
                await self.uncancelled(self.correlate(batch))

        @app.timer(interval=IDLE_POLL)
        async def close_quiet_windows() -> None:
            """On a live stream gone quiet, window-closing conditions close by the clock (stage.py)."""
            if self._started and self.stages:
                await self.uncancelled(self.advance_stages())

        @app.timer(interval=ANNOUNCE_SWEEP)
        async def announce_left() -> None:
            """Findings a worker that died stored but did not announce (its partitions moved here)."""
            if self._started:
                await announce_pending(self.sweeper, self.sinks, s.retry_max_delay, self.abort, ANNOUNCE_SWEEP)

        @app.on_partitions_revoked.connect
        async def on_revoked(app_: faust.App, revoked: set, **_: Any) -> None:
            dropped = sorted(tp.partition for tp in revoked
                             if tp.topic == s.topic and self.states.pop(tp.partition, None) is not None)
            for p in dropped:
                metrics.forget_partition(p)
            for tp in revoked:
                if tp.topic == self.hits.get_topic_name() and self.stages.pop(tp.partition, None) is not None:
                    metrics.forget_partition(_stage_label(tp.partition))
            log.info("partitions revoked", extra={"partitions": dropped})

        return app

    async def start(self) -> None:
        """Connect to NATS and PostgreSQL and load the rules (once, from the agent)."""
        async with self._start_lock:
            if self._started:
                return
            s = self.settings
            self.nc = await connect(s.nats_url, f"opmas-worker:{os.getpid()}", persistent=True, **s.nats_options)
            self.js = self.nc.jetstream()
            self.sinks = [NatsFindingSink(self.js), *build_sinks(s.sinks)]
            for sink in self.sinks:
                await sink.open()
            await retry(lambda: ensure_streams(self.js), "nats", NATS_ERRORS, s.retry_max_delay, self.abort)
            await retry(self.pg.migrate, "postgres", PG_ERRORS, s.retry_max_delay, self.abort)
            await announce_pending(self.pg, self.sinks, s.retry_max_delay, self.abort)
            _, ruleset = await self.reloads.load()
            self._set_rules(ruleset)
            tune_gc_for_rules()
            await self.nc.subscribe(RELOAD_SUBJECT, cb=self.reloads.on_request)  # every worker answers
            self._started = True
            log.info("worker ready", extra={"rules": len(self.ruleset.rules), "topic": s.topic,
                                            "partitions": s.partitions})

    async def _apply_rules(self, _sources: list, ruleset: RuleSet) -> None:
        """Swap a reloaded rule set into every partition's processor and stage (between batches)."""
        async with self._lock:
            self._set_rules(ruleset)
            for state in self.states.values():
                state.processor.replace_rules(ruleset)
            for held in self.stages.values():
                held.stage = CorrelationStage.reloaded(held.stage, ruleset.correlations, self.settings.partition_idle,
                                                       self.settings.partitions)

    def _set_rules(self, ruleset: RuleSet) -> None:
        cset = ruleset.correlations
        self.ruleset = ruleset
        self.router = None if cset is None else Router(cset, self.settings.partitions)
        self.index_of = {} if cset is None else {c.rule_id: i for i, c in enumerate(cset.correlations)}

    # -- one batch -------------------------------------------------------------------------

    async def uncancelled(self, work: Awaitable[None]) -> None:
        """Run a batch's work to the end even when the agent is cancelled (shutdown, rebalance):
        Faust acknowledges the batch right after, so it must be in the sinks and checkpointed.
        An unexpected error ends the process without acknowledging: the batch is replayed."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise
        except Exception:
            log.critical("batch failed; exiting without acknowledging it", exc_info=True)
            logging.shutdown()
            os._exit(70)

    async def handle(self, batch: Sequence[EventT]) -> None:
        s = self.settings
        grouped: dict[int, list[Event]] = {}
        last: dict[int, tuple[int, int]] = {}
        offsets: dict[int, int] = {}  # Kafka offset of each partition's last record handled in this batch
        states: dict[int, PartitionState] = {}  # held here: a rebalance may drop them from self.states
        dead: list[DeadLetter] = []
        for item in batch:
            message = item.message
            p = message.partition
            state = states.get(p)
            if state is None:
                state = states[p] = self.states.get(p) or self._restore(p)
            if state.restored:
                state.restored = False
                if state.offset >= 0 and message.offset > state.offset + 1:
                    metrics.CHECKPOINTS_BEHIND.labels(str(p)).inc()
                    log.error("checkpoint is behind the committed offset: records between were never"
                              " applied to this partition's state", extra={
                                  "partition": p, "checkpoint_offset": state.offset, "offset": message.offset})
            offsets[p] = message.offset  # every record handled moves the checkpoint: events, copies, dead letters
            try:
                records = decode(item.value)
            except ValueError as exc:
                dead.append(DeadLetter(reason=f"kafka record {p}:{message.offset}: {exc}",
                                       subject=f"kafka:{message.topic}", payload=item.value or b""))
                continue
            events = grouped.setdefault(p, [])
            for record in records:
                if record.source <= last.get(p, state.source):
                    continue  # already in this partition's checkpoint
                events.append(record.event)
                last[p] = record.source
        async with self._lock:
            findings, referenced, hits = await asyncio.to_thread(self._evaluate, states, grouped, offsets)
        await self._store(self.pg, findings, referenced, dead)
        advanced = {p: offset for p, offset in offsets.items() if offset > states[p].offset}
        self._fence(advanced, s.topic)
        # the events they cite are stored: the correlation side may cite them (a repeat is dropped by offset)
        await asyncio.gather(*(retry(lambda q=q, value=value: self.app.producer.send_and_wait(
            self.hits.get_topic_name(), None, value, partition=q, timestamp=None, headers=None),
            "kafka-hits", KAFKA_ERRORS, s.retry_max_delay, self.abort) for q, value in hits.items()))
        sources = {p: last.get(p, states[p].source) for p in advanced}
        async with self._lock:  # a rule reload replaces the processors' observers
            snapshots = await asyncio.to_thread(self._snapshots, states, sources, advanced)
        for p, value in snapshots.items():
            self.table[p] = value
            states[p].source, states[p].offset = sources[p], advanced[p]
            metrics.export_partition(p, asdict(states[p].processor.stats), self.exported.setdefault(p, {}))
        await self._flush_changelog()

    async def correlate(self, batch: Sequence[EventT]) -> None:
        """A batch of hits records: each correlation partition's stage takes the parts it has not taken,
        its findings are stored and announced, then its checkpoint written."""
        async with self._correlating:
            await self._correlate(batch)

    async def _correlate(self, batch: Sequence[EventT]) -> None:
        records: dict[int, list[EventT]] = {}
        for item in batch:
            records.setdefault(item.message.partition, []).append(item)
        dead: list[DeadLetter] = []
        async with self._lock:
            now = time.time()
            held = {q: self.stages.get(q) or self._restore_stage(q) for q in records}
            findings: list[Finding] = []
            for q, items in records.items():
                stage, applied = held[q].stage, held[q].applied
                for item in items:
                    try:
                        parts, unknown = decode_parts(item.value, self.index_of)
                    except ValueError as exc:
                        dead.append(DeadLetter(reason=f"kafka record {q}:{item.message.offset}: {exc}",
                                               subject=f"kafka:{item.message.topic}", payload=item.value or b""))
                        continue
                    if unknown:
                        log.warning("hits of correlations this worker does not run (a rule reload between"
                                    " workers)", extra={"partition": q, "hits": unknown})
                    for part in parts:
                        if stage is not None and part.offset > applied.get(part.partition, -1):
                            stage.take(part.partition, part.handoff, now)
                            applied[part.partition] = part.offset
                if stage is not None:
                    findings.extend(stage.advance(now))
        await self._store(self.correlation_pg, list(map(FindingRecord.of, findings)), [], dead)
        await self._checkpoint_stages(held)

    async def advance_stages(self) -> None:
        """The clock alone advances every stage held (a live stream gone quiet): store and announce what
        that makes final, then checkpoint the stages that gave findings."""
        async with self._correlating:
            async with self._lock:
                now = time.time()
                found = {q: (held, held.stage.advance(now)) for q, held in self.stages.items() if held.stage is not None}
            findings = [f for _, fs in found.values() for f in fs]
            if findings:
                await self._store(self.correlation_pg, list(map(FindingRecord.of, findings)), [], [])
                await self._checkpoint_stages({q: held for q, (held, fs) in found.items() if fs})

    async def _store(self, pg: PostgresSink, findings: list[FindingRecord], referenced: list[EventRecord],
                     dead: list[DeadLetter]) -> None:
        """Findings and the events they may cite to PostgreSQL (``pg``: one connection per side), the new
        findings to every sink, dead letters."""
        s = self.settings
        refused: list[DeadLetter] = []  # rows PostgreSQL refused, already dead-lettered
        new: list[FindingRecord] = []  # findings PostgreSQL stored for the first time, announced once
        if findings or referenced:
            refused, new = await write_store(pg, NatsDeadLetterSink(self.js), findings, referenced, None,
                                             s.retry_max_delay, self.abort)
            await announce(pg, self.sinks, new, s.retry_max_delay, self.abort)
        if dead:
            await retry(lambda: publish_dead_letters(self.js, dead), "nats-deadletter", NATS_ERRORS,
                        s.retry_max_delay, self.abort)
        report_dead_letters(log, dead + refused)
        report_findings(log, new)

    async def _checkpoint_stages(self, held: dict[int, StageState]) -> None:
        self._fence(held, self.hits.get_topic_name())
        async with self._lock:
            snapshots = await asyncio.to_thread(lambda: {q: encode_checkpoint({
                "layout": self.layout, "applied": {str(p): o for p, o in h.applied.items()},
                "stage": h.stage.snapshot() if h.stage is not None else None}) for q, h in held.items()})
        for q, value in snapshots.items():
            self.stage_table[q] = value
            stage = held[q].stage
            if stage is not None:
                metrics.export_partition(_stage_label(q), stage.stats(), self.exported.setdefault(_stage_label(q), {}))
        await self._flush_changelog()

    async def _flush_changelog(self) -> None:
        # One checkpoint record per changelog partition per produce request: Tansu reports a
        # partition's end offset as the last batch's base offset + 1, which is only right for
        # single-record batches, and Faust's table recovery reads up to that end offset.
        await self.app.producer.flush()

    def _fence(self, partitions: Iterable[int], topic: str) -> None:
        """Raise StaleBatch (the process exits without acknowledging) if a partition of the batch
        may belong to another worker by now. The coordinator started its rebalance timer up to a
        heartbeat before this worker heard of it."""
        started = self.app.rebalance_started
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        stale = fenced(partitions, assigned, None if started is None else time.monotonic() - started,
                       self.settings.rebalance_timeout - self.heartbeat_interval)
        if stale:
            raise StaleBatch(f"partitions {stale} may have moved to another worker during the batch:"
                             " their checkpoints are not written")

    def _restore(self, p: int) -> PartitionState:
        """The partition's processor from its checkpoint in the table (empty if none or if it
        belongs to another partition layout)."""
        raw = self.table.get(p)
        state, source, offset = None, (-1, -1), -1
        if raw is not None:
            checkpoint = decode_checkpoint(raw)
            if checkpoint["layout"] == self.layout:
                state, source, offset = checkpoint["state"], tuple(checkpoint["source"]), checkpoint["offset"]
            else:
                log.warning("checkpoint layout differs from the configuration: starting with empty state",
                            extra={"partition": p, "checkpoint_layout": checkpoint["layout"],
                                   "layout": self.layout})
        assert self.ruleset is not None
        restored = self.states[p] = PartitionState(Processor(self.ruleset, state, self.settings.max_future), source,
                                                   offset)
        log.info("partition assigned", extra={"partition": p, "resume_after": list(source),
                                              "checkpoint_offset": offset, "state_restored": state is not None})
        return restored

    def _restore_stage(self, q: int) -> StageState:
        """Correlation partition q's stage from its checkpoint in the table (empty if none or of
        another layout)."""
        raw = self.stage_table.get(q)
        state, applied = None, {}
        if raw is not None:
            checkpoint = decode_checkpoint(raw)
            if checkpoint["layout"] == self.layout:
                state, applied = checkpoint["stage"], {int(p): o for p, o in checkpoint["applied"].items()}
            else:
                log.warning("checkpoint layout differs from the configuration: starting with empty state",
                            extra={"partition": _stage_label(q), "checkpoint_layout": checkpoint["layout"],
                                   "layout": self.layout})
        assert self.ruleset is not None
        cset = self.ruleset.correlations
        # every events partition holds the watermark: they progress independently, on several workers
        stage = None if cset is None else CorrelationStage(cset, state, self.settings.partition_idle,
                                                           self.settings.partitions)
        restored = self.stages[q] = StageState(stage, applied)
        log.info("correlation partition assigned", extra={"partition": q, "state_restored": state is not None})
        return restored

    def _evaluate(self, states: dict[int, PartitionState], grouped: dict[int, list[Event]],
                  offsets: dict[int, int]) -> tuple[list[FindingRecord], list[EventRecord], dict[int, bytes]]:
        """Detection findings of the batch, the events PostgreSQL must hold (those the findings cite, and
        those handed to correlation: a correlation finding may cite them), encoded for the sinks; and
        the hits records, by correlation partition."""
        findings: list[Finding] = []
        referenced: dict[str, Event] = {}
        parts: dict[int, list[HandoffPart]] = {}
        router = self.router
        now = time.time()  # bounds how far ahead event time may move (core/processor.py)
        for p, events in grouped.items():
            if not events:
                continue
            processed = states[p].processor.process(events, now)
            findings.extend(processed.findings)
            metrics.EVENTS_PROCESSED.labels(str(p)).inc(len(events))
            referenced.update((e.id, e) for e in processed.correlated)
            if processed.findings:
                wanted = {event_id for f in processed.findings for event_id in f.event_ids}
                referenced.update((e.id, e) for e in events if e.id in wanted)
            if router is not None:
                for q, handoff in router.split(processed.handoff).items():
                    parts.setdefault(q, []).append(HandoffPart(p, offsets[p], handoff))
        hits = {q: encode_parts(qparts, router.rule_ids) for q, qparts in parts.items()} if router else {}
        return list(map(FindingRecord.of, findings)), list(map(EventRecord.of, referenced.values())), hits

    def _snapshots(self, states: dict[int, PartitionState], sources: dict[int, tuple[int, int]],
                   offsets: dict[int, int]) -> dict[int, bytes]:
        return {p: encode_checkpoint({"layout": self.layout, "source": list(source), "offset": offsets[p],
                                      "state": states[p].processor.snapshot()})
                for p, source in sources.items()}


def _stage_label(q: int) -> str:
    """The metrics partition label of correlation partition q."""
    return f"correlation-{q}"
