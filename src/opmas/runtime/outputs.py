"""What both streaming runtimes (pipeline.py, faust_worker.py) do with a batch's output once it
is evaluated: PostgreSQL writes whose refused rows become dead letters; findings announced on NATS
once, when PostgreSQL first stores them (the outbox, connectors/postgres/sink.py), to every finding
sink (connectors/sinks.py); the finding logs."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from nats.js import JetStreamContext

from opmas.connectors.nats.client import NATS_ERRORS
from opmas.connectors.nats.publishers import DeadLetter, publish_dead_letters
from opmas.connectors.nats.subjects import events_subject, findings_subject
from opmas.connectors.postgres.sink import PG_ERRORS, Checkpoint, PostgresSink, Rejected
from opmas.connectors.records import EventRecord, FindingRecord
from opmas.connectors.sinks import FindingSink
from opmas import metrics
from opmas.runtime.retry import retry



async def write_postgres(pg: PostgresSink, js: JetStreamContext, findings: Sequence[FindingRecord],
                         events: Sequence[EventRecord], checkpoint: Checkpoint | None, max_delay: float,
                         abort: asyncio.Event) -> tuple[list[DeadLetter], list[FindingRecord]]:
    """Write findings, their events and the checkpoint (retried while a server is away). Rows
    PostgreSQL refuses for their content are published as dead letters, then the checkpoint is
    saved alone. Returns those dead letters, and the findings stored for the first time: the
    caller announces them (:func:`announce`)."""
    written = await retry(lambda: pg.write(findings, events, checkpoint), "postgres", PG_ERRORS, max_delay, abort)
    stored = set(written.stored)
    new = [f for f in findings if f.id in stored]
    if not written.rejected:
        return [], new
    letters = [rejected_letter(r) for r in written.rejected]
    await retry(lambda: publish_dead_letters(js, letters), "nats-deadletter", NATS_ERRORS, max_delay, abort)
    if checkpoint is not None:
        await retry(lambda: pg.write((), (), checkpoint), "postgres", PG_ERRORS, max_delay, abort)
    return letters, new


async def announce(pg: PostgresSink, sinks: Sequence[FindingSink], findings: Sequence[FindingRecord],
                   max_delay: float, abort: asyncio.Event) -> None:
    """Write findings PostgreSQL stored for the first time to every finding sink (NATS first), each
    retried on its own errors, then take them out of the outbox. A crash in between leaves them
    there for :func:`announce_pending`: announced at least once, and a replayed log's findings,
    already stored, not again."""
    if not findings:
        return
    for sink in sinks:
        await retry(lambda sink=sink: sink.write(findings), sink.name, sink.errors, max_delay, abort)
    ids = [f.id for f in findings]
    await retry(lambda: pg.write((), (), None, ids), "postgres", PG_ERRORS, max_delay, abort)


async def announce_pending(pg: PostgresSink, sinks: Sequence[FindingSink], max_delay: float, abort: asyncio.Event,
                           older_than: float = 0.0) -> int:
    """Announce the findings a crash left stored but unannounced (at start; the Faust workers also
    sweep for another worker's, ``older_than`` seconds old); returns how many."""
    total = 0
    while records := await retry(lambda: pg.unannounced(older_than), "postgres", PG_ERRORS, max_delay, abort):
        await announce(pg, sinks, records, max_delay, abort)
        total += len(records)
    return total


def rejected_letter(rejected: Rejected) -> DeadLetter:
    """A dead letter for a finding or event PostgreSQL refused, with the item as JSON."""
    item = rejected.item
    if isinstance(item, FindingRecord):
        kind, subject = "finding", findings_subject(item.severity)
    else:
        kind, subject = "event", events_subject(item.agent_id or "")
    return DeadLetter(reason=f"postgres: {kind} {item.id} refused: {rejected.reason}", subject=subject,
                      payload=item.json)


def report_findings(log: logging.Logger, findings: Sequence[FindingRecord]) -> None:
    """Count and log findings that every sink holds (the counters once per severity and rule)."""
    for (severity, rule_id), n in Counter((f.severity, f.rule_id) for f in findings).items():
        metrics.FINDINGS.labels(severity, rule_id).inc(n)
    if not log.isEnabledFor(logging.INFO):
        return
    for finding in findings:
        log.info("finding", extra={"finding_id": finding.id, "rule_id": finding.rule_id,
                                   "severity": finding.severity, "event_ids": finding.event_ids[:10]})


def report_dead_letters(log: logging.Logger, letters: Sequence[DeadLetter]) -> None:
    """Count and log dead letters that are stored."""
    for letter in letters:
        metrics.DEAD_LETTERS.labels(letter.reason.split(":", 1)[0]).inc()
        log.warning("dead letter", extra={"reason": letter.reason, "subject": letter.subject,
                                          "seq": letter.seq, "line": letter.line})
