"""The one way tests wait for something: poll a check until it holds, or fail saying what was awaited."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest


async def wait_until(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", *,
                     blocking: bool = False, explain: Callable[[], str] | None = None) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy, and return that. ``check`` may
    return an awaitable; ``blocking``: it blocks (an HTTP call, ``asyncio.run``), so it runs in a
    thread and the event loop keeps serving. On timeout the test fails with ``what`` and
    ``explain()`` (e.g. the last log lines of the processes involved)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check) if blocking else check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f"\n{explain()}" if explain else ""))
        await asyncio.sleep(0.1)


def wait_until_blocking(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition", *,
                        explain: Callable[[], str] | None = None) -> Any:
    """:func:`wait_until` for a test that is not a coroutine."""
    return asyncio.run(wait_until(check, timeout, what, blocking=True, explain=explain))
