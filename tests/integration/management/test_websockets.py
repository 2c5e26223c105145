"""Live streams: NATS messages reach /ws/findings, /ws/events and /ws/agents; same authentication."""
from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def publish(nats_url: str, subject: str, payload: dict | bytes) -> None:
    async def go() -> None:
        nc = await nats.connect(nats_url)
        await nc.publish(subject, payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        await nc.flush()
        await nc.close()
    asyncio.run(go())


def subscribed(ws) -> dict:
    return json.loads(ws.recv(timeout=10))


def test_a_finding_published_on_nats_appears_on_ws_findings(stack):
    token = stack.token()
    with connect(f"{stack.ws_url}/ws/findings?token={token}") as ws:
        assert subscribed(ws) == {"stream": "findings", "subscribed": "opmas.findings.>"}
        finding = {"id": "f-1", "rule_id": "r", "severity": "high", "title": "Brute force on web-1"}
        publish(stack.nats_url, "opmas.findings.high", finding)
        got = json.loads(ws.recv(timeout=10))
        assert got == {"stream": "findings", "subject": "opmas.findings.high", "data": finding}


def test_ws_events_with_header_auth_and_agent_filter(stack):
    headers = {"Authorization": f"Bearer {stack.token()}"}
    with connect(f"{stack.ws_url}/ws/events?agent_id=web-1", additional_headers=headers) as ws:
        assert subscribed(ws)["subscribed"] == "opmas.events.web-1"
        publish(stack.nats_url, "opmas.events.db-9", {"id": "other"})
        lines = b'{"id": "e1", "data": {}}\n{"id": "e2", "data": {}}\n'
        publish(stack.nats_url, "opmas.events.web-1", lines)
        assert [json.loads(ws.recv(timeout=10))["data"]["id"] for _ in range(2)] == ["e1", "e2"]


def test_ws_agents_with_first_message_auth_shows_heartbeats(stack, admin):
    admin.post("/agents", json={"id": "ws-agent", "name": "w", "type": "tail"})
    with connect(f"{stack.ws_url}/ws/agents?agent_id=ws-agent") as ws:
        ws.send(json.dumps({"token": stack.token()}))
        assert subscribed(ws)["subscribed"] == "opmas.agents.ws-agent"
        publish(stack.nats_url, "opmas.status.ws-agent", {"state": "running", "config_version": 0})
        states = [json.loads(ws.recv(timeout=10))["data"]["status"] for _ in range(2)]
        assert states[0] == "online"
        assert states[1] == "stale"  # no more heartbeats: the sweep says so


@pytest.mark.parametrize("query, first, code, reason", [
    ("?token=garbage", None, 4401, "invalid token"),
    ("", "not a token", 4401, "invalid token"),
    ("", json.dumps({"hello": 1}), 4401, "missing token"),
])
def test_ws_authentication_failures_close_with_4401(stack, query, first, code, reason):
    with connect(f"{stack.ws_url}/ws/findings{query}") as ws:
        if first:
            ws.send(first)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == code and reason in closed.value.rcvd.reason


def test_ws_missing_permission_closes_with_4403(stack, admin):
    p = admin.post("/principals", json={"name": "rules only", "permissions": ["rules:read"]}).json()
    with connect(f"{stack.ws_url}/ws/events?token={stack.token(p['id'], p['secret'])}") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 4403 and closed.value.rcvd.reason == "missing permission events:read"


def closed_within(ws, seconds: float):
    """The close frame the server sends within ``seconds`` (messages before it are skipped)."""
    deadline = time.monotonic() + seconds
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    return closed.value.rcvd


def test_ws_closes_when_its_token_expires(stack):
    with connect(f"{stack.ws_url}/ws/findings?token={stack.token(ttl=2)}") as ws:
        assert subscribed(ws)["subscribed"] == "opmas.findings.>"
        opened = time.monotonic()
        closed = closed_within(ws, 5)
    assert (closed.code, closed.reason) == (4401, "token expired") and time.monotonic() - opened > 0.5


def test_ws_closes_when_its_token_is_revoked_or_its_principal_deleted(stack, admin):
    sockets = {}
    for name in ("revoked", "deleted"):
        p = admin.post("/principals", json={"name": name, "permissions": ["events:read"]}).json()
        token = stack.token(p["id"], p["secret"])
        sockets[name] = connect(f"{stack.ws_url}/ws/events?token={token}")
        assert subscribed(sockets[name])["subscribed"] == "opmas.events.>"
        if name == "revoked":
            with stack.client(token) as client:
                assert client.post("/auth/revoke").status_code == 204
        else:
            assert admin.delete(f"/principals/{p['id']}").status_code == 204
    for ws in sockets.values():
        with ws:
            closed = closed_within(ws, 5)
            assert (closed.code, closed.reason) == (4401, "token revoked or principal disabled")
