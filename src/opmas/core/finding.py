"""Findings: what a rule reports, with an id that the same input always reproduces."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from opmas.core.event import format_time

SEVERITIES = ("informational", "low", "medium", "high", "critical")


def finding_id(rule_id: str, event_ids: list[str], discriminator: str = "") -> str:
    """Deterministic UUID-formatted id from the rule, the events and an optional discriminator
    (group key, window start...)."""
    h = hashlib.sha256("\x1f".join([rule_id, discriminator, *event_ids]).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"  # str(uuid.UUID(bytes=digest[:16]))


@dataclass(slots=True)
class Finding:
    """A detection: which rule, which events, how severe, and the details."""

    id: str
    rule_id: str
    rule_title: str
    severity: str
    tags: list[str]
    event_ids: list[str]
    timestamp: float | None  # event time of the (last) matched event, epoch seconds
    title: str
    description: str = ""
    agent_id: str | None = None
    group_key: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``timestamp`` as ISO 8601. Shallow: ``details`` (the matched event's data among
        them) is shared with the finding, not copied."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["timestamp"] = format_time(self.timestamp)
        return out

    def to_json(self) -> bytes:
        """The finding as one JSON object (orjson; nothing copied on the way)."""
        return orjson.dumps(self.to_dict())


_FIELDS = tuple(f.name for f in fields(Finding))
