"""Retrying a sink write while its server is away: exponential backoff, bounded delay.

An error no retry can mend (``retryable`` says which) is raised at once, whatever the caller retries on.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from opmas.metrics import SINK_RETRIES

log = logging.getLogger("opmas.retry")
T = TypeVar("T")

PERMANENT: tuple[type[BaseException], ...] = (
    nats.errors.MaxPayloadError, nats.errors.BadSubjectError, nats.errors.BadHeaderError,
    nats.errors.BadTimeoutError, nats.errors.InvalidCallbackTypeError, nats.js.errors.BadRequestError,
    nats.js.errors.InvalidBucketNameError, nats.js.errors.InvalidObjectNameError, nats.js.errors.InvalidKeyError,
)


def retryable(exc: BaseException) -> bool:
    """Whether trying again may succeed: not for a message over the max payload, a malformed subject,
    header or request, which would be refused the same way every time."""
    return not isinstance(exc, PERMANENT)


async def retry(op: Callable[[], Awaitable[T]], sink: str, retry_on: tuple[type[BaseException], ...],
                max_delay: float = 10.0, abort: asyncio.Event | None = None) -> T:
    """Run ``op`` until it succeeds, sleeping 0.1 s, 0.2 s ... up to ``max_delay`` between tries.

    Errors not in ``retry_on``, or not ``retryable``, propagate at once; so does the last error once
    ``abort`` is set.
    """
    delay = 0.1
    attempt = 0
    while True:
        try:
            return await op()
        except retry_on as exc:
            attempt += 1
            if not retryable(exc) or (abort is not None and abort.is_set()):
                raise
            SINK_RETRIES.labels(sink).inc()
            log.warning("sink unavailable, retrying", extra={
                "sink": sink, "attempt": attempt, "retry_in": delay, "reason": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
