"""Stable partitioning: which partition processor owns an event. Pure functions, no I/O."""
from __future__ import annotations

from typing import Any
from zlib import crc32

from opmas.core.event import Event

AGENT_KEY = "agent"


def partition_of(key: str, partitions: int) -> int:
    """The partition (0..partitions-1) of ``key``; the same on every run, machine and Python."""
    return crc32(key.encode("utf-8", "surrogatepass")) % partitions


def key_of(event: Event, key: str) -> str:
    """The partition key of ``event``: its agent for ``"agent"``, else the value at the dotted
    path ``key`` in its data (falling back to the agent where the event has no such field)."""
    if key != AGENT_KEY:
        value = event.data.get(key)  # flat "host.name" keys first, then nested objects
        if value is None:
            value = _dotted(event.data, key)
        if value is not None and not isinstance(value, (dict, list)):
            return str(value)
    return event.agent_id or ""


def _dotted(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
