"""How ``opmas up`` stops: on time, whatever the engine is stuck in.

The first SIGINT/SIGTERM asks the engine to stop (it finishes its batch and checkpoints). The
second, or ``timeout`` seconds after the first, cuts it off: retries are given up, the engine task
is cancelled (every wait in it is cancellable) and its evaluator processes are killed. Should the
engine still not be done ``grace`` seconds later, ``last_resort`` runs and the process exits.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger("opmas.up")


class Shutdown:
    """Turns stop signals into a stop request, then a deadline."""

    def __init__(self, stop: asyncio.Event, abort: asyncio.Event, timeout: float, grace: float = 5.0):
        self.stop = stop
        self.abort = abort
        self.timeout = timeout
        self.grace = grace
        self.forced = False
        self._engine: asyncio.Task | None = None
        self._last_resort: Callable[[], None] = lambda: None
        self._timers: list[asyncio.TimerHandle] = []

    def watch(self, engine: asyncio.Task, last_resort: Callable[[], None]) -> None:
        """Cut ``engine`` off when the deadline comes; ``last_resort`` before a forced exit."""
        self._engine = engine
        self._last_resort = last_resort
        engine.add_done_callback(lambda _: self._disarm())

    def on_signal(self) -> None:
        if self.stop.is_set():
            self.force("second signal")
            return
        self.stop.set()
        self._later(self.timeout, lambda: self.force(f"not stopped {self.timeout:g}s after the signal"))

    def force(self, why: str) -> None:
        """Give up retries and cancel the engine."""
        self.abort.set()
        self.stop.set()
        if self._engine is None or self._engine.done() or self.forced:
            return
        self.forced = True
        log.warning("cutting the engine off", extra={"reason": why})
        self._engine.cancel()
        self._later(self.grace, self._exit)

    def _exit(self) -> None:
        log.error("the engine did not stop after it was cut off: exiting", extra={"grace": self.grace})
        try:
            self._last_resort()
        finally:
            os._exit(1)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(delay, action))

    def _disarm(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
