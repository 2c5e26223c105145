"""JSON objects as events: what an envelope is, whether it is valid, and the event it gives.

One predicate for every runtime (``looks_like_envelope``): an object with ``data`` and an
``agent_id`` or a ``type`` is meant as an OPMAS envelope and must be a valid one; any other
object is a raw event. ``envelope_error(obj)`` checks the schema's constraints with plain type tests (the
hot path, a few hundred nanoseconds); only an object that fails them goes through
the compiled jsonschema validator, which explains what is wrong. A test keeps the
two in agreement.
"""
from __future__ import annotations

import functools
from typing import Any

import jsonschema
import orjson

from opmas.core.event import Event, parse_time
from opmas.paths import SCHEMAS_DIR

SCHEMA_PATH = SCHEMAS_DIR / "event.schema.json"
_MAX_TEXT = 256


@functools.cache
def validator() -> jsonschema.protocols.Validator:
    """The compiled validator of the envelope schema."""
    schema = orjson.loads(SCHEMA_PATH.read_bytes())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def looks_like_envelope(obj: dict[str, Any]) -> bool:
    """An object with ``data`` and ``agent_id`` or ``type`` is meant as an envelope (and must be
    valid); anything else is a raw event."""
    return "data" in obj and ("agent_id" in obj or "type" in obj)


def _text(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= _MAX_TEXT


def _schema_valid(obj: dict[str, Any]) -> bool:
    if not (_text(obj.get("agent_id")) and _text(obj.get("type")) and type(obj.get("data")) is dict):
        return False
    if "id" in obj and not _text(obj["id"]):
        return False
    if "timestamp" in obj:
        ts = obj["timestamp"]
        return type(ts) in (str, int, float)
    return True


def envelope_error(obj: dict[str, Any]) -> str | None:
    """Why ``obj`` is not a valid envelope, or None where it is."""
    if _schema_valid(obj):
        if "timestamp" in obj and parse_time(obj["timestamp"]) is None:
            return f"timestamp {obj['timestamp']!r} is not a valid time"
        return None
    errors = sorted(validator().iter_errors(obj), key=lambda e: list(e.absolute_path))
    if not errors:  # the fast path is stricter than the schema only where a test would catch it
        return "envelope rejected by the fast path but valid under the schema"
    return "; ".join(
        f"{'/'.join(map(str, e.absolute_path)) or '(envelope)'}: {e.message}" for e in errors[:3])


class EnvelopeError(ValueError):
    """An object meant as an envelope (``looks_like_envelope``) is not a valid one."""


def event_from_obj(obj: dict[str, Any], raw: bytes | None = None) -> Event:
    """Build an Event from an envelope or a raw event object (``raw``: the JSON text it was parsed
    from); an object meant as an envelope but not a valid one raises :class:`EnvelopeError`.

    The object's own ``id`` is kept; an object without one gets a content hash (of the whole
    envelope, or of the raw event), so the same input always yields the same id. The timestamp is
    taken from the envelope here; for raw events the logsource mapping resolves it.
    """
    if looks_like_envelope(obj):
        error = envelope_error(obj)
        if error is not None:
            raise EnvelopeError(error)
        return envelope_event(obj, raw)
    event_id = obj.get("id")
    return Event(id=str(event_id) if event_id is not None else None, data=obj, raw=raw)


def envelope_event(obj: dict[str, Any], raw: bytes | None = None) -> Event:
    """The event of an envelope already found valid (``envelope_error(obj)`` is None)."""
    event_id = obj.get("id")
    return Event(id=str(event_id) if event_id else None, data=obj["data"], timestamp=parse_time(obj.get("timestamp")),
                 agent_id=obj.get("agent_id"), type=obj.get("type"), hashed=obj, raw=raw)
