"""Agent liveness from heartbeats on ``opmas.status.<agent_id>``: online, stale, offline.

Each heartbeat marks its agent online (a ``stopped`` heartbeat marks it offline at once);
a periodic sweep turns agents without a recent heartbeat stale, then offline. Every change
and every heartbeat is republished on ``opmas.agents.<agent_id>`` for ``/ws/agents``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from nats.aio.msg import Msg
from psycopg.types.json import Jsonb

from opmas.connectors.nats.subjects import status_subject
from opmas.api.db import fetch_all, fetch_one
from opmas.api.metrics import AGENT_HEARTBEATS
from opmas.api.routes.agents import AGENT_COLUMNS, agent_state_message
from opmas.api.state import ApiState

STATUS_SUBJECTS = status_subject("*")
log = logging.getLogger(__name__)

_HEARTBEAT = (
    "UPDATE agents SET last_seen = now(), status = %s, info = %s,"
    " applied_config_version = COALESCE(%s, applied_config_version)"
    f" WHERE id = %s RETURNING {AGENT_COLUMNS}"
)
_SWEEP = (
    "WITH computed AS ("
    " SELECT id, CASE WHEN last_seen IS NULL OR last_seen < now() - make_interval(secs => %s) THEN 'offline'"
    " WHEN last_seen < now() - make_interval(secs => %s) THEN 'stale' ELSE 'online' END AS computed"
    " FROM agents WHERE status <> 'offline')"
    " UPDATE agents a SET status = c.computed FROM computed c"
    f" WHERE a.id = c.id AND a.status <> c.computed RETURNING {', '.join('a.' + c.strip() for c in AGENT_COLUMNS.split(','))}"
)


def agents_subject(agent_id: str) -> str:
    return f"opmas.agents.{agent_id}"


class LivenessMonitor:
    """Consumes heartbeats and sweeps for silent agents while the API runs."""

    def __init__(self, state: ApiState):
        self.state = state
        self._sub = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._sub = await self.state.nc.subscribe(STATUS_SUBJECTS, cb=self._on_status)
        self._task = asyncio.create_task(self._sweep_forever(), name="liveness-sweep")

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _on_status(self, msg: Msg) -> None:
        agent_id = msg.subject.split(".", 2)[2]
        try:
            beat: dict[str, Any] = orjson.loads(msg.data)
            if not isinstance(beat, dict):
                raise ValueError("heartbeat is not a JSON object")
        except ValueError as exc:
            AGENT_HEARTBEATS.labels("unreadable").inc()
            log.warning("unreadable heartbeat", extra={"subject": msg.subject, "error": str(exc)})
            return
        status = "offline" if beat.get("state") == "stopped" else "online"
        version = beat.get("config_version")
        try:
            row = await fetch_one(self.state, _HEARTBEAT, (
                status, Jsonb(beat.get("info") or {}), version if isinstance(version, int) else None, agent_id))
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the subscription
            log.exception("recording a heartbeat failed", extra={"agent_id": agent_id})
            return
        if row is None:
            AGENT_HEARTBEATS.labels("unknown_agent").inc()
            log.warning("heartbeat from an unknown agent", extra={"agent_id": agent_id})
            return
        AGENT_HEARTBEATS.labels("ok").inc()
        await self._announce([row])

    async def sweep(self) -> list[dict[str, Any]]:
        """Re-evaluate every agent's liveness now; returns the agents whose status changed."""
        settings = self.state.settings
        rows = await fetch_all(self.state, _SWEEP, (settings.offline_after, settings.stale_after))
        await self._announce(rows)
        return rows

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.liveness_interval)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - keep sweeping through database outages
                log.exception("liveness sweep failed")

    async def _announce(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            await self.state.nc.publish(agents_subject(row["id"]), orjson.dumps(agent_state_message(row)))
