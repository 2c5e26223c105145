"""The event as the engine sees it, and how JSON objects become events.

An incoming object is either an OPMAS envelope
(``{"id", "agent_id", "timestamp", "type", "data"}``) or a raw event (EVTX-JSON,
ECS-like JSON, a CloudTrail record...). Rules always match against ``data``.
"""
from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from typing import Any

import orjson


class Event:
    """One event: its id, the data rules match against, and its event time.

    ``id=None``: the event has no id of its own and gets a content hash of ``hashed`` (the object
    it arrived as; default ``data``), computed when the id is first read: most events of a log
    match no rule, and offline nothing else needs their id.

    ``raw``: the JSON text ``data`` was parsed from (or that of an object holding it, such as its
    envelope), where the event came as text: the keyword prefilter searches it instead of
    serialising ``data`` again (core/sigma/prefilter.py). Not part of the event's value."""

    __slots__ = ("_id", "_hashed", "data", "timestamp", "agent_id", "type", "raw")

    def __init__(self, id: str | None, data: dict[str, Any], timestamp: float | None = None,
                 agent_id: str | None = None, type: str | None = None, hashed: Any = None,
                 raw: bytes | None = None) -> None:
        self._id = id
        self._hashed = hashed
        self.raw = raw
        self.data = data
        self.timestamp = timestamp  # event time, epoch seconds (UTC)
        self.agent_id = agent_id
        self.type = type

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = content_id(self.data if self._hashed is None else self._hashed)
            self._hashed = None
        return self._id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    def _fields(self) -> tuple[Any, ...]:
        return self.id, self.data, self.timestamp, self.agent_id, self.type

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (f"Event(id={self.id!r}, data={self.data!r}, timestamp={self.timestamp!r}, "
                f"agent_id={self.agent_id!r}, type={self.type!r})")


def content_id(obj: Any) -> str:
    """A deterministic id for an object without one: hash of its canonical JSON."""
    digest = hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return digest[:32]


# datetime's range in epoch seconds: 0001-01-01T00:00:00Z up to (excluding) 10000-01-01T00:00:00Z
_FIRST_EPOCH = -62135596800.0
_END_EPOCH = 253402300800.0


_SECONDS: dict[str, float] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch: consecutive events share it


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string, epoch seconds or epoch milliseconds.

    None for anything else, including NaN, infinities and times outside datetime's range.
    """
    if value.__class__ is str and len(value) >= 20 and value[10] in "T " and value[-1] == "Z":
        fast = _utc_text(value)
        if fast is not None:
            return fast
    epoch = _epoch(value)
    return epoch if epoch is not None and _FIRST_EPOCH <= epoch < _END_EPOCH else None


def _utc_text(value: str) -> float | None:
    """The usual case fast: ``YYYY-MM-DD[T ]HH:MM:SS[.fraction]Z`` (None: let the general path decide)."""
    head = value[:19]
    base = _SECONDS.get(head)
    if base is None:
        try:
            base = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            return None
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[head] = base
    rest = value[19:-1]
    if not rest:
        return base
    if rest[0] == "." and rest[1:].isdigit():
        return base + float(rest[:7])
    return None


def _epoch(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value) / 1000.0 if value > 1e11 else float(value)
        except OverflowError:  # an int beyond float
            return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not (text[:4].isdigit() and text[4:5] == "-"):  # "YYYY-..." is ISO 8601, never a number
            try:
                return _epoch(float(text))
            except ValueError:
                pass
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # EVTX writes up to 9 fractional digits; datetime takes 6.
        if "." in text:
            head, _, rest = text.partition(".")
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = head + "." + rest[:min(digits, 6)] + rest[digits:]
        text = text.replace(" ", "T", 1)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return None


_TEXTS: dict[float, str] = {}  # whole epoch second -> "YYYY-MM-DDTHH:MM:SS": consecutive findings share it


def format_time(epoch: float | None) -> str | None:
    """ISO 8601 (UTC, microseconds, ``Z``) for an epoch time; None for None or a time datetime cannot hold.

    The same text as ``datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")``:
    microseconds rounded half to even as datetime rounds them, the seconds' text cached."""
    if epoch is None:
        return None
    try:
        fraction, whole = math.modf(epoch)
        micros = round(fraction * 1e6)
    except (OverflowError, TypeError, ValueError):  # not a number, inf, nan
        return None
    if micros >= 1_000_000:
        micros -= 1_000_000
        whole += 1
    elif micros < 0:
        micros += 1_000_000
        whole -= 1
    head = _TEXTS.get(whole)
    if head is None:
        try:
            head = datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return None
        if len(_TEXTS) > 4096:
            _TEXTS.clear()
        _TEXTS[whole] = head
    return f"{head}.{micros:06d}Z"


# Where an event's data names its host, first found first: EVTX ``Event.System.Computer``, ECS
# ``host.name`` / ``host.hostname``, a flat ``host.name``, ``hostname`` or ``host`` key. Only text counts.
HOST_PATHS: tuple[tuple[str, ...], ...] = (("Event", "System", "Computer"), ("host", "name"), ("host", "hostname"),
                                            ("host.name",), ("hostname",), ("host",))


def event_host(data: Any) -> str | None:
    """The host an event's data names (``HOST_PATHS``), or None."""
    for path in HOST_PATHS:
        value = data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    return None
