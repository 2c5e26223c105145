"""Findings and events encoded once, where they are made, for every sink.

The evaluator processes turn each finding into a ``FindingRecord`` (its NATS message, its
PostgreSQL COPY line, and the few fields logs and metrics need) and each event a finding cites
into an ``EventRecord``; the engine process then only joins bytes, instead of unpickling whole
findings with their events' data and encoding them again, one by one, for NATS and PostgreSQL.
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from connectors.postgres.sink import event_line, finding_line
from engine.event import Event, format_time
from engine.finding import Finding


@dataclass(slots=True)
class FindingRecord:
    """A finding as the sinks take it."""

    id: str
    rule_id: str
    severity: str
    event_ids: list[str]
    json: bytes  # the finding as one JSON object: the NATS message (Finding.to_json)
    line: bytes  # its row of the findings table in COPY text format

    @classmethod
    def of(cls, finding: Finding) -> FindingRecord:
        return cls(finding.id, finding.rule_id, finding.severity, finding.event_ids, finding.to_json(),
                   finding_line(finding))


@dataclass(slots=True)
class EventRecord:
    """An event a finding cites (or may cite), as the PostgreSQL sink takes it."""

    id: str
    agent_id: str | None
    line: bytes  # its row of the events table in COPY text format
    json: bytes  # the event as one JSON object (a dead letter's payload, should PostgreSQL refuse it)

    @classmethod
    def of(cls, event: Event) -> EventRecord:
        return cls(event.id, event.agent_id, event_line(event), orjson.dumps({
            "id": event.id, "agent_id": event.agent_id, "timestamp": format_time(event.timestamp),
            "type": event.type, "data": event.data}, option=orjson.OPT_NON_STR_KEYS))
