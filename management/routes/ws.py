"""Live streams over WebSocket, fed from NATS: /ws/events, /ws/findings, /ws/agents.

Authentication as for REST: a ``token`` query parameter, an ``Authorization: Bearer`` header,
or (when neither is given) a first message ``{"token": "..."}`` within 10 s. Failures close
the socket with 4401 (not authenticated) or 4403 (missing permission). Each message sent is
``{"stream", "subject", "data"}``; a slow client loses the oldest messages (counted in
``dropped`` of the next message) rather than slowing the API.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from management.auth import AuthError, Principal
from management.deps import authenticate
from management.liveness import agents_subject
from management.routes.agents import AGENT_ID_PATTERN
from management.state import ApiState

router = APIRouter(tags=["live"])

FIRST_MESSAGE_TIMEOUT = 10.0
QUEUE_SIZE = 1000
UNAUTHENTICATED, FORBIDDEN = 4401, 4403


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


async def _authorize(ws: WebSocket, query_token: str | None, permission: str) -> Principal | None:
    """Accept, then authenticate; closes the socket and returns None on failure."""
    await ws.accept()
    state: ApiState = ws.app.state.opmas
    token = await _token(ws, query_token)
    if not token:
        await ws.close(UNAUTHENTICATED, "missing token")
        return None
    try:
        principal = await authenticate(state, token)
    except AuthError as exc:
        await ws.close(UNAUTHENTICATED, str(exc)[:120])
        return None
    if not principal.can(permission):
        await ws.close(FORBIDDEN, f"missing permission {permission}")
        return None
    return principal


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


async def _pump(ws: WebSocket, stream: str, subject: str) -> None:
    """Forward NATS messages on ``subject`` to the socket until the client goes away."""
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
    await state.nc.flush()
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

    tasks = [asyncio.create_task(send_forever()), asyncio.create_task(until_disconnect())]
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
    if await _authorize(ws, token, "events:read"):
        await _pump(ws, "events", f"opmas.events.{agent_id or '>'}")


@router.websocket("/ws/findings")
async def ws_findings(ws: WebSocket, token: str | None = None,
                      severity: str | None = Query(None, pattern="^(informational|low|medium|high|critical)$")
                      ) -> None:
    """Findings as the engine publishes them (optionally of one severity); needs findings:read."""
    if await _authorize(ws, token, "findings:read"):
        await _pump(ws, "findings", f"opmas.findings.{severity or '>'}")


@router.websocket("/ws/agents")
async def ws_agents(ws: WebSocket, token: str | None = None,
                    agent_id: str | None = Query(None, pattern=AGENT_ID_PATTERN)) -> None:
    """Agent liveness changes and heartbeats; needs agents:read."""
    if await _authorize(ws, token, "agents:read"):
        await _pump(ws, "agents", agents_subject(agent_id or "*"))
