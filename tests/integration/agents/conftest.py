"""Agents run against the real stack (PostgreSQL, NATS with JetStream, the API) of tests.integration.management."""
from __future__ import annotations

import asyncio

import nats
import orjson
import pytest

from opmas.connectors.nats.subjects import ensure_streams
from tests.integration.management.conftest import admin, stack  # noqa: F401 - shared module fixtures


class EventTap:
    """Reads what agents published on opmas.events.<agent> from JetStream (JSON-lines batches)."""

    def __init__(self, nats_url: str):
        self.nats_url = nats_url

    async def __aenter__(self) -> "EventTap":
        self.nc = await nats.connect(self.nats_url)
        await ensure_streams(self.nc.jetstream())
        self.sub = await self.nc.jetstream().subscribe("opmas.events.>", ordered_consumer=True,
                                                       deliver_policy=nats.js.api.DeliverPolicy.NEW)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.close()

    async def take(self, count: int, timeout: float = 10.0) -> list[dict]:
        """The next ``count`` envelopes."""
        out: list[dict] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"only {len(out)} of {count} events arrived: {out}")
            msg = await self.sub.next_msg(timeout=remaining)
            out += [orjson.loads(line) for line in msg.data.splitlines()]
        return out


@pytest.fixture
def enroll_token(stack, admin) -> str:
    """A JWT that may only register agents."""
    p = admin.post("/principals", json={"name": "enroller", "permissions": ["agents:register"]}).json()
    return stack.token(p["id"], p["secret"])
