"""Connecting to NATS the same way everywhere: named, with connection problems logged, not printed."""
from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

log = logging.getLogger("opmas.nats")
# what a retry may mend: the server away, a publish not yet confirmed
NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError)


async def connect(url: str, name: str, persistent: bool = False, tls: ssl.SSLContext | None = None,
                  **options: Any) -> Client:
    """A NATS connection. ``persistent`` (servers): reconnect forever, problems logged as warnings;
    otherwise (command-line tools): fail fast after a couple of tries, problems logged at debug.
    ``tls``: what the client trusts when the server speaks TLS (runtime/tls.py ``client_tls``; None:
    the system's CAs)."""
    level = logging.WARNING if persistent else logging.DEBUG

    async def on_error(exc: Exception) -> None:
        log.log(level, "nats connection problem", extra={"url": url, "reason": f"{type(exc).__name__}: {exc}"})

    if persistent:
        options.setdefault("max_reconnect_attempts", -1)
        options.setdefault("reconnect_time_wait", 0.5)
    else:
        options.setdefault("max_reconnect_attempts", 2)
        options.setdefault("reconnect_time_wait", 0.2)
        options.setdefault("connect_timeout", 3)
    if tls is not None:
        options["tls"] = tls
    return await nats.connect(url, name=name, error_cb=on_error, **options)


async def settle(nc: Client) -> None:
    """Return once the server has processed every command this client sent so far: a subscription
    just made is live. nats-py's ``flush()`` writes its PING straight to the socket, ahead of
    commands still queued for its flusher task (a new SUB), so its PONG can come back before the
    SUB reached the server. The first round trip lets the flusher write them; the second is sent
    behind them."""
    await nc.flush()
    await nc.flush()
