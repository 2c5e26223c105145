"""Live streams over WebSocket, fed from NATS: /ws/events, /ws/findings, /ws/agents, /ws/hunts/{id}.

Authentication as for REST: a ``token`` query parameter, an ``Authorization: Bearer`` header,
or (when neither is given) a first message ``{"token": "..."}`` within 10 s. Failures close
the socket with 4401 (not authenticated) or 4403 (missing permission); so does the check repeated
every ``ws_recheck_interval`` seconds and when the token expires (a revoked token, a deleted
principal or agent). Each message sent is ``{"stream", "subject", "data"}``; a slow client loses
the oldest messages (counted in ``dropped`` of the next message) rather than slowing the API.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import orjson
import psycopg
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from opmas.api.auth import AuthError
from opmas.connectors.nats.client import settle
from opmas.api.deps import authenticate
from opmas.api.hunts import hunt_subject
from opmas.api.liveness import agents_subject
from opmas.api.routes.agents import AGENT_ID_PATTERN
from opmas.api.state import ApiState

router = APIRouter(tags=["live"])

FIRST_MESSAGE_TIMEOUT = 10.0
QUEUE_SIZE = 1000
UNAUTHENTICATED, FORBIDDEN, UNAVAILABLE = 4401, 4403, 1011


async def _token(ws: WebSocket, query_token: str | None) -> str | None:
    if query_token:
        return query_token
    header = ws.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    try:
        first = await asyncio.wait_for(ws.receive_text(), FIRST_MESSAGE_TIMEOUT)
    except (asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
        return None
    try:
        message = orjson.loads(first)
    except orjson.JSONDecodeError:
        return first.strip() or None
    return message.get("token") if isinstance(message, dict) else None


async def _denial(state: ApiState, token: str, permission: str) -> tuple[int, str] | None:
    """Why ``token`` may not stream what ``permission`` guards (close code, reason); None if it may."""
    try:
        principal = await authenticate(state, token)
    except AuthError as exc:
        return UNAUTHENTICATED, str(exc)[:120]
    if not principal.can(permission):
        return FORBIDDEN, f"missing permission {permission}"
    return None


async def _authorize(ws: WebSocket, query_token: str | None, permission: str) -> str | None:
    """Accept, then authenticate; the token, or None after closing the socket."""
    await ws.accept()
    token = await _token(ws, query_token)
    denial = await _denial(ws.app.state.opmas, token, permission) if token else (UNAUTHENTICATED, "missing token")
    if denial:
        await ws.close(*denial)
        return None
    return token


async def _recheck(ws: WebSocket, token: str, permission: str) -> None:
    """Authenticate again every ``ws_recheck_interval`` seconds and when the token expires; returns
    after closing the socket once the token no longer holds (expired, revoked, principal gone)."""
    state: ApiState = ws.app.state.opmas
    expires = state.issuer.decode(token)["exp"]
    while True:
        await asyncio.sleep(min(state.settings.ws_recheck_interval, max(0.0, expires - time.time())))
        try:
            denial = await _denial(state, token, permission)
        except psycopg.OperationalError:
            denial = (UNAVAILABLE, "database unavailable, retry later")
        if denial:
            await ws.close(*denial)
            return


def _records(stream: str, subject: str, payload: bytes) -> list[dict[str, Any]]:
    out = []
    for line in payload.splitlines():
        if line.strip():
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                data = line.decode(errors="replace")
            out.append({"stream": stream, "subject": subject, "data": data})
    return out


async def _stream(ws: WebSocket, query_token: str | None, permission: str, stream: str, subject: str) -> None:
    """Authorize, then forward NATS messages on ``subject`` to the socket until the client goes away
    or the token stops holding."""
    token = await _authorize(ws, query_token, permission)
    if token is None:
        return
    state: ApiState = ws.app.state.opmas
    queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
    dropped = 0

    async def on_message(msg) -> None:
        nonlocal dropped
        for record in _records(stream, msg.subject, msg.data):
            if queue.full():
                queue.get_nowait()
                dropped += 1
            queue.put_nowait(record)

    sub = await state.nc.subscribe(subject, cb=on_message)
    await settle(state.nc)
    await ws.send_text(orjson.dumps({"stream": stream, "subscribed": subject}).decode())

    async def send_forever() -> None:
        nonlocal dropped
        while True:
            record = await queue.get()
            if dropped:
                record["dropped"], dropped = dropped, 0
            await ws.send_text(orjson.dumps(record).decode())

    async def until_disconnect() -> None:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    tasks = [asyncio.create_task(send_forever()), asyncio.create_task(until_disconnect()),
             asyncio.create_task(_recheck(ws, token, permission))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


@router.websocket("/ws/events")
async def ws_events(ws: WebSocket, token: str | None = None,
                    agent_id: str | None = Query(None, pattern=AGENT_ID_PATTERN)) -> None:
    """Events as agents publish them (optionally of one agent); needs events:read."""
    await _stream(ws, token, "events:read", "events", f"opmas.events.{agent_id or '>'}")


@router.websocket("/ws/findings")
async def ws_findings(ws: WebSocket, token: str | None = None,
                      severity: str | None = Query(None, pattern="^(informational|low|medium|high|critical)$")
                      ) -> None:
    """Findings as the engine publishes them (optionally of one severity); needs findings:read."""
    await _stream(ws, token, "findings:read", "findings", f"opmas.findings.{severity or '>'}")


@router.websocket("/ws/agents")
async def ws_agents(ws: WebSocket, token: str | None = None,
                    agent_id: str | None = Query(None, pattern=AGENT_ID_PATTERN)) -> None:
    """Agent liveness changes and heartbeats; needs agents:read."""
    await _stream(ws, token, "agents:read", "agents", agents_subject(agent_id or "*"))


@router.websocket("/ws/hunts/{hunt_id}")
async def ws_hunt(ws: WebSocket, hunt_id: uuid.UUID, token: str | None = None) -> None:
    """A retro-hunt's progress (its status object, as GET /hunts/{id} gives it) and findings (``{"finding":
    {...}}``) as it runs; the last message has a status other than running. Subscribe, then read the
    status with GET: a hunt that ended before the subscription sends nothing more. Needs hunts:run."""
    await _stream(ws, token, "hunts:run", "hunts", hunt_subject(str(hunt_id)))
