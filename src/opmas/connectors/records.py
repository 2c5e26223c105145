"""Findings and events encoded once, where they are made, for every sink.

The evaluator processes turn each finding into a ``FindingRecord`` (its details as JSON once, the
rest of its NATS message and of its PostgreSQL COPY row, and the few fields logs and metrics
need) and each event a finding cites into an ``EventRecord`` (its COPY row); the engine process
then only joins bytes, instead of unpickling whole findings with their events' data and encoding
them again, one by one, for NATS and PostgreSQL. The details (the matched event among them) cross
the pipe once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from opmas.connectors.postgres.sink import copy_fields, copy_json, event_line, finding_head
from opmas.core.event import Event
from opmas.core.finding import Finding


@dataclass(slots=True)
class FindingRecord:
    """A finding as the sinks take it."""

    id: str
    rule_id: str
    severity: str
    event_ids: list[str]
    head: bytes  # the finding as a JSON object without its details (Finding.to_json but details)
    row: bytes  # its row of the findings table in COPY text format up to details, the last column
    details: bytes  # its details as JSON

    @classmethod
    def of(cls, finding: Finding) -> FindingRecord:
        out = finding.to_dict()
        details = orjson.dumps(out.pop("details"), option=orjson.OPT_NON_STR_KEYS)
        return cls(finding.id, finding.rule_id, finding.severity, finding.event_ids, orjson.dumps(out),
                   finding_head(finding), details)

    @property
    def json(self) -> bytes:
        """The finding as one JSON object: the NATS message."""
        return b"".join((self.head[:-1], b',"details":', self.details, b"}"))

    def bounded(self, limit: int) -> bytes:
        """The NATS message within ``limit`` bytes: the finding, or where that is larger, the finding with
        its details replaced by their size and SHA-256 (``{"truncated": true, ...}``; PostgreSQL holds them
        whole), or where even that is larger, only its id, rule, severity and that."""
        whole = self.json
        if len(whole) <= limit:
            return whole
        note = orjson.dumps({"truncated": True, "size": len(self.details),
                             "sha256": hashlib.sha256(self.details).hexdigest()})
        bounded = b"".join((self.head[:-1], b',"details":', note, b"}"))
        if len(bounded) <= limit:
            return bounded
        return orjson.dumps({"id": self.id, "rule_id": self.rule_id, "severity": self.severity,
                             "details": orjson.Fragment(note)})

    @property
    def line(self) -> bytes:
        """Its row of the findings table in COPY text format."""
        return b"".join((self.row, copy_json(self.details), b"\n"))


@dataclass(slots=True)
class EventRecord:
    """An event a finding cites (or may cite), as the PostgreSQL sink takes it."""

    id: str
    agent_id: str | None
    line: bytes  # its row of the events table in COPY text format

    @classmethod
    def of(cls, event: Event) -> EventRecord:
        return cls(event.id, event.agent_id, event_line(event))

    @property
    def json(self) -> bytes:
        """The event as one JSON object, read back from its row (a dead letter's payload, should PostgreSQL
        refuse it)."""
        id_, agent_id, timestamp, type_, data = copy_fields(self.line)
        return orjson.dumps({"id": id_, "agent_id": agent_id, "timestamp": timestamp, "type": type_,
                             "data": orjson.Fragment(data)})
