"""Limits that hold before authentication: the size of a request body, and failed token exchanges.

``BodyLimit`` (ASGI middleware): a body declared larger than ``max_bytes`` (``Content-Length``) is
answered 413 at once, before the app runs or any of it is read; a body sent without a length
(chunked) is counted as it is read and refused with 413 once it passes the limit.

``FailureLimiter``: token buckets per key (principal id, client address) that only failures
drain. ``POST /auth/token`` takes one token from the principal's and the address's bucket before
it checks the secret (so that concurrent guesses are bounded too) and gives them back when the
secret is right; an empty bucket is a 429 with ``Retry-After``. In-process: each API process
counts on its own, and forgets on restart.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int):
        super().__init__(413, detail=f"request body over {max_bytes} bytes (OPMAS_API_MAX_BODY_BYTES)")


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 (JSON ``{"detail": ...}``)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:  # raised where no exception handler turned it into the answer
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": BodyTooLarge(self.max_bytes).detail})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class FailureLimiter:
    """Token buckets of ``per_minute`` failures (refilled continuously) for each key, at most
    ``max_keys`` of them (the least recently used are forgotten). ``per_minute`` <= 0: no limit."""

    def __init__(self, per_minute: float, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may fail once more (0: it may now)."""
        if self.capacity <= 0:
            return 0.0
        level = self._level(key, self.clock())
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def take(self, key: str) -> None:
        """Count one failure (or attempt) of ``key``."""
        if self.capacity <= 0:
            return
        now = self.clock()
        self._buckets[key] = (self._level(key, now) - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def give_back(self, key: str) -> None:
        """Undo a ``take`` (the attempt succeeded)."""
        if self.capacity <= 0 or key not in self._buckets:
            return
        now = self.clock()
        self._buckets[key] = (min(self.capacity, self._level(key, now) + 1), now)


class TokenGuard:
    """The token exchange's limits: failures per principal id and per client address."""

    def __init__(self, per_principal: float, per_address: float):
        self.principals = FailureLimiter(per_principal)
        self.addresses = FailureLimiter(per_address)

    def acquire(self, principal_id: str, address: str) -> int | None:
        """Count an attempt; None if it may go on, else seconds to wait (nothing counted)."""
        wait = max(self.principals.retry_after(principal_id), self.addresses.retry_after(address))
        if wait > 0:
            return max(1, math.ceil(wait))
        self.principals.take(principal_id)
        self.addresses.take(address)
        return None

    def release(self, principal_id: str, address: str) -> None:
        """Give back what ``acquire`` counted: the attempt did not fail."""
        self.principals.give_back(principal_id)
        self.addresses.give_back(address)
