"""What both streaming runtimes (pipeline.py, faust_worker.py) do with a batch's output once it
is evaluated: PostgreSQL writes whose refused rows become dead letters, and the finding logs."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

import nats.errors
import nats.js.errors
import psycopg
from nats.js import JetStreamContext

from connectors.nats.publishers import DeadLetter, publish_dead_letters
from connectors.nats.subjects import events_subject, findings_subject
from connectors.postgres.sink import Checkpoint, PostgresSink, Rejected
from connectors.records import EventRecord, FindingRecord
from opmas import metrics
from opmas.runtime.retry import retry

PG_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)


async def write_postgres(pg: PostgresSink, js: JetStreamContext, findings: Sequence[FindingRecord],
                         events: Sequence[EventRecord], checkpoint: Checkpoint | None, max_delay: float,
                         abort: asyncio.Event) -> list[DeadLetter]:
    """Write findings, their events and the checkpoint (retried while a server is away). Rows
    PostgreSQL refuses for their content are published as dead letters, then the checkpoint is
    saved alone; returns those dead letters."""
    rejected = await retry(lambda: pg.write(findings, events, checkpoint), "postgres", PG_ERRORS, max_delay, abort)
    if not rejected:
        return []
    letters = [rejected_letter(r) for r in rejected]
    await retry(lambda: publish_dead_letters(js, letters), "nats-deadletter", NATS_ERRORS, max_delay, abort)
    if checkpoint is not None:
        await retry(lambda: pg.write((), (), checkpoint), "postgres", PG_ERRORS, max_delay, abort)
    return letters


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
