"""The generated nats-server authorization, on a real nats-server: each agent publishes only under
its own subjects and reads only its own control subject; the service user has full access."""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess

import nats
import psycopg
import pytest
from nats.errors import NoServersError

from opmas.connectors.nats.subjects import inbox_prefix
from opmas.connectors.nats.client import settle
from opmas.api.nats_auth import SERVICE_USER, authorization_from_db
from opmas.runtime.embedded import free_port, wait_for_port

SERVICE_PASSWORD = "service-password-for-tests"


@pytest.fixture(scope="module")
def secured_nats(stack, admin, tmp_path_factory):
    """Agents a1/a2 registered through the API, and a nats-server run with the generated config."""
    secrets = {}
    for agent_id in ("sec-a1", "sec-a2"):
        secrets[agent_id] = admin.post("/agents", json={"id": agent_id, "name": agent_id, "type": "t"}).json()[
            "credentials"]["secret"]

    async def render() -> str:
        async with await psycopg.AsyncConnection.connect(stack.db_url) as conn:
            return await authorization_from_db(conn, SERVICE_PASSWORD)

    tmp_path = tmp_path_factory.mktemp("secured-nats")
    port = free_port()
    conf = tmp_path / "nats.conf"

    def write_config() -> None:
        conf.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                        + asyncio.run(render()))

    write_config()
    process = subprocess.Popen([shutil.which("nats-server"), "-c", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port)

    def register_and_reload(agent_id: str) -> str:
        """Register an agent, regenerate the config and have the running server reload it (SIGHUP)."""
        secret = admin.post("/agents", json={"id": agent_id, "name": agent_id, "type": "t"}).json()[
            "credentials"]["secret"]
        write_config()
        process.send_signal(signal.SIGHUP)
        return secret

    yield f"nats://127.0.0.1:{port}", secrets, register_and_reload
    process.terminate()
    process.wait(10)


async def test_an_agent_publishes_only_under_its_own_subjects(secured_nats):
    url, secrets, _ = secured_nats
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    service = await nats.connect(url, user=SERVICE_USER, password=SERVICE_PASSWORD)
    seen = await service.subscribe("opmas.>")
    await service.jetstream().add_stream(name="OPMAS_EVENTS", subjects=["opmas.events.>"])
    agent = await nats.connect(url, user="sec-a1", password=secrets["sec-a1"], error_cb=on_error,
                               inbox_prefix=inbox_prefix("sec-a1"))

    ack = await agent.jetstream().publish("opmas.events.sec-a1", b'{"ok": 1}')  # acks reach its own inbox
    assert ack.stream == "OPMAS_EVENTS"
    await agent.publish("opmas.status.sec-a1", b"{}")
    await agent.publish("opmas.events.sec-a2", b'{"spoofed": 1}')
    await agent.publish("opmas.findings.critical", b'{"forged": 1}')
    await agent.subscribe("opmas.control.sec-a2")
    await agent.subscribe("opmas.control.sec-a1")
    await settle(agent)
    await asyncio.sleep(0.5)

    subjects = []
    while True:
        try:
            subjects.append((await seen.next_msg(timeout=0.3)).subject)
        except nats.errors.TimeoutError:
            break
    assert subjects == ["opmas.events.sec-a1", "opmas.status.sec-a1"]
    violations = " ".join(str(e) for e in errors)
    for denied in ('publish to "opmas.events.sec-a2"', 'publish to "opmas.findings.critical"',
                   'subscription to "opmas.control.sec-a2"'):
        assert denied in violations.lower(), (denied, violations)
    assert "opmas.control.sec-a1" not in violations

    control = await agent.subscribe("opmas.control.sec-a1")
    await settle(agent)
    await service.publish("opmas.control.sec-a1", b'{"type": "config"}')
    assert (await control.next_msg(timeout=5)).data == b'{"type": "config"}'
    await agent.close()
    await service.close()


async def test_a_wrong_password_is_refused(secured_nats):
    url, _, _ = secured_nats
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await connect_once(url, "sec-a1", "wrong")


async def connect_once(url: str, user: str, password: str):
    return await nats.connect(url, user=user, password=password, max_reconnect_attempts=0,
                              allow_reconnect=False, connect_timeout=2)


async def test_an_agent_registered_later_gets_in_after_a_reload(secured_nats):
    url, _, register_and_reload = secured_nats
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await connect_once(url, "sec-a3", "not registered yet")
    secret = await asyncio.to_thread(register_and_reload, "sec-a3")
    for _ in range(50):  # the server reloads its configuration asynchronously
        try:
            nc = await connect_once(url, "sec-a3", secret)
            break
        except (NoServersError, nats.errors.Error, OSError):
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("the reloaded server did not let the new agent in")
    await nc.publish("opmas.status.sec-a3", b"{}")
    await nc.flush()
    await nc.close()
