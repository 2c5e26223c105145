"""Validating event envelopes against ``schemas/event.schema.json``, fast.

``envelope_error(obj)`` checks the schema's constraints with plain type tests (the
hot path, a few hundred nanoseconds); only an object that fails them goes through
the compiled jsonschema validator, which explains what is wrong. A test keeps the
two in agreement.
"""
from __future__ import annotations

import functools
from typing import Any

import jsonschema
import orjson

from opmas.core.event import parse_time
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
