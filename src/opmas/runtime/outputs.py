"""What both streaming runtimes (pipeline.py, faust_worker.py) do with a batch's output once it
is evaluated: the state store's write (PostgreSQL), whose refused rows become dead letters;
findings announced once, when the store first holds them (its outbox), to every finding sink
(connectors/sinks.py); the finding logs. Each step is retried on the errors its component names."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from opmas.connectors.nats.publishers import DeadLetter
from opmas.connectors.nats.subjects import events_subject, findings_subject
from opmas.connectors.records import EventRecord, FindingRecord
from opmas.connectors.sinks import FindingSink
from opmas.connectors.store import Checkpoint, Rejected, StateStore
from opmas import metrics
from opmas.runtime.retry import retry


class DeadLetterSink(Protocol):
    """Where dead letters go (``opmas.deadletter`` on NATS; a list in tests)."""

    name: str
    errors: tuple[type[BaseException], ...]

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        """Hold ``letters`` durably before returning."""


async def write_store(store: StateStore, dead_letters: DeadLetterSink, findings: Sequence[FindingRecord],
                      events: Sequence[EventRecord], checkpoint: Checkpoint | None, max_delay: float,
                      abort: asyncio.Event) -> tuple[list[DeadLetter], list[FindingRecord]]:
    """Write findings, their events and the checkpoint (retried while the store is away). Rows
    the store refuses for their content become dead letters, then the checkpoint is saved
    alone. Returns those dead letters, and the findings stored for the first time: the caller
    announces them (:func:`announce`)."""
    written = await retry(lambda: store.write(findings, events, checkpoint), store.name, store.errors, max_delay,
                          abort)
    stored = set(written.stored)
    new = [f for f in findings if f.id in stored]
    if not written.rejected:
        return [], new
    letters = [rejected_letter(r) for r in written.rejected]
    await retry(lambda: dead_letters.write(letters), dead_letters.name, dead_letters.errors, max_delay, abort)
    if checkpoint is not None:
        await retry(lambda: store.write((), (), checkpoint), store.name, store.errors, max_delay, abort)
    return letters, new


async def announce(store: StateStore, sinks: Sequence[FindingSink], findings: Sequence[FindingRecord],
                   max_delay: float, abort: asyncio.Event) -> None:
    """Write findings the store holds for the first time to every finding sink (NATS first), each
    retried on its own errors, then take them out of the outbox. A crash in between leaves them
    there for :func:`announce_pending`: announced at least once, and a replayed log's findings,
    already stored, not again."""
    if not findings:
        return
    for sink in sinks:
        await retry(lambda sink=sink: sink.write(findings), sink.name, sink.errors, max_delay, abort)
    ids = [f.id for f in findings]
    await retry(lambda: store.write((), (), None, ids), store.name, store.errors, max_delay, abort)


async def announce_pending(store: StateStore, sinks: Sequence[FindingSink], max_delay: float, abort: asyncio.Event,
                           older_than: float = 0.0) -> int:
    """Announce the findings a crash left stored but unannounced (at start; the Faust workers also
    sweep for another worker's, ``older_than`` seconds old); returns how many."""
    total = 0
    while records := await retry(lambda: store.unannounced(older_than), store.name, store.errors, max_delay, abort):
        await announce(store, sinks, records, max_delay, abort)
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
