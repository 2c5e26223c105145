"""Restarting what crashed, with backoff: the engine (from its checkpoint) and the embedded servers."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from opmas import health

log = logging.getLogger("opmas.supervise")
MAX_BACKOFF = 30.0
STEADY = 60.0  # a run this long resets the backoff


class Server(Protocol):
    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def supervise_engine(run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run the engine until ``stop``; when it fails, run it again (it resumes from its checkpoint)
    after 1 s, 2 s ... up to MAX_BACKOFF."""
    delay = 1.0
    while True:
        started = time.monotonic()
        health.report("engine", True)
        try:
            await run()
            return
        except Exception as exc:
            if stop.is_set():
                raise
            health.report("engine", False, f"{type(exc).__name__}: {exc}")
            log.exception("engine failed, restarting it", extra={"retry_in": delay})
        if time.monotonic() - started > STEADY:
            delay = 1.0
        await _pause(stop, delay)
        if stop.is_set():
            return
        delay = min(delay * 2, MAX_BACKOFF)


async def supervise_servers(servers: dict[str, Server], stop: asyncio.Event, every: float = 0.5) -> None:
    """Start again each server that exited, with backoff, until ``stop``."""
    delays = dict.fromkeys(servers, 1.0)
    for name in servers:
        health.report(name, True)
    while not stop.is_set():
        for name, server in servers.items():
            if server.alive or stop.is_set():
                continue
            health.report(name, False, "exited")
            log.error("embedded server exited, restarting it", extra={"server": name})
            try:
                await asyncio.to_thread(server.start)
            except Exception as exc:
                health.report(name, False, f"{type(exc).__name__}: {exc}")
                log.exception("restarting an embedded server failed", extra={"server": name,
                                                                              "retry_in": delays[name]})
                await _pause(stop, delays[name])
                delays[name] = min(delays[name] * 2, MAX_BACKOFF)
                continue
            delays[name] = 1.0
            health.report(name, True)
        await _pause(stop, every)
