"""The auth callout against a real nats-server (JetStream on) and the registry on a real PostgreSQL:
agents get in with their secret and only to their own subjects; anyone else is refused; a revoked
agent is cut off and stays out."""
from __future__ import annotations

import asyncio
import os
import stat
import time

import nats
import pytest
from nats.errors import Error as NatsError

from opmas.connectors.nats import jwt as natsjwt
from opmas.connectors.nats.auth_callout import (AuthCalloutService, CalloutKeys, PostgresAgentLookup, disconnect_user,
                                                load_or_create_keys)
from opmas.connectors.nats.subjects import (control_subject, ensure_streams, events_subject, inbox_prefix,
                                            status_subject)

from .conftest import SERVICE_USER, connect_callout_user, start_callout_nats

pytestmark = pytest.mark.timeout(120)


async def _quiet(_exc: Exception) -> None:
    pass


async def connect_agent(url: str, agent_id: str | None, secret: str | None, **kwargs) -> nats.NATS:
    options = dict(allow_reconnect=False, connect_timeout=5, error_cb=_quiet,
                   inbox_prefix=inbox_prefix(agent_id or "x"))
    if agent_id is not None:
        options["user"] = agent_id
    if secret is not None:
        options["password"] = secret
    options.update(kwargs)
    return await nats.connect(url, **options)


async def assert_refused(url: str, agent_id: str | None, secret: str | None) -> None:
    with pytest.raises(NatsError, match="Authorization Violation"):
        nc = await connect_agent(url, agent_id, secret)
        await nc.close()  # not reached when refused


async def test_agent_publishes_on_its_subjects(callout_nats, registry, callout):
    await registry.add("agent-1", "right-secret")
    await ensure_streams(callout.nc.jetstream())
    events = await callout.nc.subscribe(events_subject("agent-1"))
    status = await callout.nc.subscribe(status_subject("agent-1"))
    await callout.nc.flush()

    agent = await connect_agent(callout_nats.url, "agent-1", "right-secret")
    try:
        ack = await agent.jetstream().publish(events_subject("agent-1"), b'{"message": "hello"}', timeout=5)
        assert ack.stream == "OPMAS_EVENTS" and ack.seq == 1
        await agent.publish(status_subject("agent-1"), b'{"status": "running"}')
        await agent.flush()
        assert (await events.next_msg(timeout=5)).data == b'{"message": "hello"}'
        assert (await status.next_msg(timeout=5)).data == b'{"status": "running"}'
        # the configuration the management API sends on the agent's control subject reaches it
        control = await agent.subscribe(control_subject("agent-1"))
        await agent.flush()
        await callout.nc.publish(control_subject("agent-1"), b'{"config": 1}')
        assert (await control.next_msg(timeout=5)).data == b'{"config": 1}'
    finally:
        await agent.close()
    assert callout.service.stats["allowed"] == 1


async def test_refused_without_the_right_credentials(callout_nats, registry, callout):
    await registry.add("agent-1", "right-secret")
    await registry.add("agent-off", "its-secret", disabled=True)
    url = callout_nats.url
    await assert_refused(url, None, None)                      # no credentials
    await assert_refused(url, "agent-1", None)                 # no password
    await assert_refused(url, "agent-1", "wrong-secret")
    await assert_refused(url, "agent-2", "right-secret")       # unknown agent
    await assert_refused(url, "agent-off", "its-secret")       # disabled
    await assert_refused(url, "agent-1.>", "right-secret")     # not an id
    await assert_refused(url, SERVICE_USER, "right-secret")    # an auth user, by its own password only
    assert callout.service.stats["allowed"] == 0
    assert callout.service.stats["denied"] == 6
    # the right secret still gets in (the refusals above were about the credentials)
    agent = await connect_agent(url, "agent-1", "right-secret")
    await agent.close()
    log = callout_nats.log_text()
    assert "wrong secret" in log and "unknown agent" in log and "agent disabled" in log


async def test_an_agent_cannot_use_other_subjects(callout_nats, registry, callout):
    await registry.add("agent-1", "secret-1")
    await registry.add("agent-2", "secret-2")
    await ensure_streams(callout.nc.jetstream())
    seen = await callout.nc.subscribe(">")
    await callout.nc.flush()

    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    agent = await connect_agent(callout_nats.url, "agent-1", "secret-1", error_cb=on_error)
    try:
        for subject in (events_subject("agent-2"), status_subject("agent-2"), "opmas.findings.high",
                        "opmas.engine.reload", "$JS.API.STREAM.DELETE.OPMAS_EVENTS"):
            await agent.publish(subject, b"forged")
        await agent.subscribe(control_subject("agent-2"))
        await agent.subscribe(f"{inbox_prefix('agent-2')}.>")
        await agent.subscribe("opmas.events.>")
        await agent.flush()
        await asyncio.sleep(0.5)
        texts = [str(e).lower() for e in errors]  # nats-py lowers the server's text
        for subject in (events_subject("agent-2"), status_subject("agent-2"), "opmas.findings.high",
                        "opmas.engine.reload", "$JS.API.STREAM.DELETE.OPMAS_EVENTS"):
            assert any("permissions violation for publish" in t and subject.lower() in t
                       for t in texts), (subject, texts)
        for subject in (control_subject("agent-2"), f"{inbox_prefix('agent-2')}.>", "opmas.events.>"):
            assert any("permissions violation for subscription" in t and subject.lower() in t
                       for t in texts), (subject, texts)
        # nothing the agent forged was delivered; its own subject still works on the same connection
        await agent.publish(events_subject("agent-1"), b"own")
        await agent.flush()
        msg = await seen.next_msg(timeout=5)
        while msg.subject.startswith("$JS.EVENT."):  # the server's own advisories arrive when they will
            msg = await seen.next_msg(timeout=5)
        assert (msg.subject, msg.data) == (events_subject("agent-1"), b"own")
        with pytest.raises(nats.errors.TimeoutError):
            while True:
                msg = await seen.next_msg(timeout=0.3)
                assert msg.data != b"forged", msg.subject
    finally:
        await agent.close()
    info = await callout.nc.jetstream().stream_info("OPMAS_EVENTS")
    assert info.state.messages == 1  # the agent's own event, not the forged one


async def test_revoked_agent_is_cut_off_and_stays_out(callout_nats, registry, callout):
    await registry.add("agent-1", "secret-1")
    await registry.add("agent-2", "secret-2")
    cut = asyncio.Event()

    async def on_disconnect() -> None:
        cut.set()

    # the agent reconnects by itself, as the agent SDK does: it must not get back in
    agent = await connect_agent(callout_nats.url, "agent-1", "secret-1", allow_reconnect=True,
                                reconnect_time_wait=0.2, max_reconnect_attempts=-1,
                                disconnected_cb=on_disconnect)
    other = await connect_agent(callout_nats.url, "agent-2", "secret-2")
    try:
        assert agent.is_connected
        started = time.monotonic()
        await registry.delete("agent-1")
        assert await callout.service.disconnect("agent-1") == 1
        await asyncio.wait_for(cut.wait(), timeout=5)
        assert time.monotonic() - started < 5
        await asyncio.sleep(1.5)  # several reconnection attempts, all refused
        assert not agent.is_connected
        assert "Authorization Violation" in str(agent.last_error)
        await assert_refused(callout_nats.url, "agent-1", "secret-1")
        # only that agent was cut
        assert other.is_connected
        await other.publish(events_subject("agent-2"), b"still here")
        await other.flush(timeout=5)
        assert await disconnect_user(callout.system_nc, "agent-1") == 0  # nothing left to cut
    finally:
        await agent.close()
        await other.close()


async def test_user_jwt_expires(callout_nats, registry, callout):
    """The second bound: the user JWT expires and the server drops the connection then."""
    await registry.add("agent-1", "secret-1")
    callout.service.user_ttl = 2
    cut = asyncio.Event()

    async def on_disconnect() -> None:
        cut.set()

    agent = await connect_agent(callout_nats.url, "agent-1", "secret-1", disconnected_cb=on_disconnect)
    try:
        started = time.monotonic()
        await asyncio.wait_for(cut.wait(), timeout=10)
        assert 1 <= time.monotonic() - started < 5
    finally:
        await agent.close()
        assert "expired" in str(agent.last_error).lower(), agent.last_error


async def test_keys_are_private_and_reused(tmp_path, registry):
    keys = load_or_create_keys(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(keys.path).st_mode) == 0o600
    assert keys.issuer_public_key.startswith("A")
    again = load_or_create_keys(tmp_path / "keys")
    assert again.issuer_public_key == keys.issuer_public_key
    assert os.listdir(tmp_path / "keys") == [keys.path.name]
    assert load_or_create_keys(tmp_path / "other").issuer_public_key != keys.issuer_public_key

    # a server restarted on the same key directory accepts what the callout signs with the kept key
    await registry.add("agent-1", "secret-1")
    for _ in range(2):
        running = start_callout_nats(tmp_path / "nats", load_or_create_keys(tmp_path / "keys"))
        try:
            nc = await connect_callout_user(running.url)
            service = AuthCalloutService(nc, load_or_create_keys(tmp_path / "keys"),
                                         PostgresAgentLookup(url=registry.url))
            await service.start()
            agent = await connect_agent(running.url, "agent-1", "secret-1")
            await agent.close()
            await service.stop()
            await nc.close()
        finally:
            running.server.stop()


async def test_a_response_signed_by_another_key_is_refused(callout_nats, registry):
    """The server checks the issuer: a callout answering with a key it was not configured with
    lets nobody in (so the test above does test the signature)."""
    await registry.add("agent-1", "secret-1")
    nc = await connect_callout_user(callout_nats.url)
    stranger = CalloutKeys(natsjwt.create_keypair(natsjwt.PREFIX_ACCOUNT), callout_nats.keys.path)
    service = AuthCalloutService(nc, stranger, PostgresAgentLookup(url=registry.url))
    await service.start()
    try:
        await assert_refused(callout_nats.url, "agent-1", "secret-1")
        assert service.stats["allowed"] == 1  # the callout said yes; the server did not trust it
    finally:
        await service.stop()
        await nc.close()


async def test_postgres_lookup(registry):
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    await registry.add("agent-1", "secret-1")
    await registry.add("agent-off", "secret-2", disabled=True)
    async with AsyncConnectionPool(registry.url, open=False, kwargs={"row_factory": dict_row}) as pool:
        for lookup in (PostgresAgentLookup(url=registry.url), PostgresAgentLookup(pool=pool)):
            secret_hash, disabled = await lookup("agent-1")
            assert secret_hash.startswith("$2") and disabled is False
            assert (await lookup("agent-off"))[1] is True
            assert await lookup("agent-2") is None
            assert await lookup("agent:agent-1") is None  # ids, not principal ids
        await registry.delete("agent-1")
        assert await PostgresAgentLookup(pool=pool)("agent-1") is None
