"""``opmas up`` with TLS on, end to end (issue 15): an agent enrolled with the CA's fingerprint
publishes over TLS as itself and its finding arrives; a wrong CA, no credentials, another agent's
subject and a deleted agent are refused at the NATS layer, and nothing of theirs is stored; an agent
given only the string of ``opmas agent enroll`` pins the CA and publishes."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time

import httpx
import nats
import nats.errors
import orjson
import pytest

from opmas.agents.enrollment import read_enrollment
from opmas.agents.sdk import AgentError, AgentSettings, SecurityAgent
from opmas.connectors.nats.subjects import EVENTS_STREAM, events_subject, inbox_prefix
from opmas.runtime.tls import client_context, local_server_tls
from tests.expected import sample_objects
from tests.natsauth import service_options
from tests.upstack import ADMIN_SECRET, Stack, running_stack

ROOT_USER_CREATED = next(obj for obj in sample_objects() if "UID=0," in obj.get("message", ""))


@pytest.fixture(scope="module")
def secure() -> Stack:
    with running_stack({"OPMAS_TLS": "on"}) as stack:
        yield stack


def _fingerprint(stack: Stack) -> str:
    return re.search(r"fingerprint (SHA256:\S+)", stack.log.read_text()).group(1)


def _nats_url(stack: Stack) -> str:
    return f"tls://127.0.0.1:{stack.env['OPMAS_NATS_PORT']}"


def _enroll_token(stack: Stack) -> str:
    admin = stack.token()
    enroller = httpx.post(f"{stack.api}/principals", json={"name": "enroller", "permissions": ["agents:register"]},
                          headers={"Authorization": f"Bearer {admin}"}, verify=stack.verify).json()
    return stack.token(enroller["id"], enroller["secret"])


def _agent(stack: Stack, tmp_path, name: str, fingerprint: str) -> SecurityAgent:
    return SecurityAgent(AgentSettings(management_url=stack.base.rstrip("/"), nats_url=_nats_url(stack), name=name,
                                       type="test", enroll_token=_enroll_token(stack),
                                       credentials_file=tmp_path / f"{name}.json", ca_fingerprint=fingerprint))


async def _connect_as(stack: Stack, agent_id: str | None, secret: str | None, **options) -> nats.aio.client.Client:
    credentials = {"user": agent_id, "password": secret} if agent_id else {}
    return await nats.connect(_nats_url(stack), tls=client_context(stack.data_dir / "tls" / "ca.pem"),
                              inbox_prefix=inbox_prefix(agent_id or "x"), max_reconnect_attempts=0,
                              allow_reconnect=False, connect_timeout=5, **credentials, **options)


async def _stored_on(stack: Stack, subject: str) -> bool:
    nc = await nats.connect(_nats_url(stack), **service_options(stack.data_dir))
    try:
        await nc.jetstream().get_last_msg(EVENTS_STREAM, subject)
        return True
    except nats.js.errors.NotFoundError:
        return False
    finally:
        await nc.close()


def test_an_agent_pinned_to_the_ca_publishes_over_tls_and_its_finding_arrives(secure, tmp_path):
    fingerprint = _fingerprint(secure)
    assert "https://" in secure.base and f"tls://127.0.0.1:{secure.env['OPMAS_NATS_PORT']}" in secure.log.read_text()

    async def run() -> str:
        agent = _agent(secure, tmp_path, "pinned", fingerprint)
        await agent.start()
        try:
            await agent.publish(ROOT_USER_CREATED)
            assert await agent.flush()
        finally:
            await agent.stop()
        return agent.agent_id

    agent_id = asyncio.run(run())
    for kept in (tmp_path / "pinned.json", tmp_path / "pinned.ca.pem"):
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert (tmp_path / "pinned.ca.pem").read_bytes() == (secure.data_dir / "tls" / "ca.pem").read_bytes()
    deadline = time.monotonic() + 60
    while secure.get("/findings", agent_id=agent_id).json()["total"] == 0:
        assert time.monotonic() < deadline, "no finding of the agent's event"
        time.sleep(0.5)
    with pytest.raises(httpx.TransportError):  # the API refuses plain HTTP
        httpx.get(secure.base.replace("https://", "http://") + "api/v1/health", timeout=5)


def test_a_wrong_pin_a_wrong_ca_or_no_credentials_are_refused(secure, tmp_path):
    other_ca = local_server_tls(tmp_path / "other", ("127.0.0.1",))
    with pytest.raises(AgentError, match="not the one"):
        asyncio.run(_agent(secure, tmp_path, "mispinned", other_ca.fingerprint).start())
    assert not (tmp_path / "mispinned.json").exists()  # it never registered

    async def refused() -> None:
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSL"):
            await nats.connect(_nats_url(secure), tls=client_context(other_ca.ca), user="opmas",
                               password="x", max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=5)
        with pytest.raises(Exception, match="Authorization Violation|no servers"):
            await _connect_as(secure, None, None)
        with pytest.raises(Exception, match="Authorization Violation|no servers"):
            await _connect_as(secure, "nobody", "wrong-secret")

    asyncio.run(refused())


def test_another_agents_subject_and_a_deleted_agent_are_cut_off(secure, tmp_path):
    admin = {"Authorization": f"Bearer {secure.token()}"}
    agents = {}
    for name in ("alice", "bob"):
        made = httpx.post(f"{secure.api}/agents", json={"name": name, "type": "test"}, headers=admin,
                          verify=secure.verify)
        assert made.status_code == 201, made.text
        agents[name] = (made.json()["id"], made.json()["credentials"]["secret"])
    alice, bob = agents["alice"], agents["bob"]

    async def run() -> float:
        errors: list[Exception] = []
        lost = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        async def on_disconnect() -> None:
            lost.set()

        nc = await _connect_as(secure, *alice, error_cb=on_error, disconnected_cb=on_disconnect)
        await nc.publish(events_subject(bob[0]), b'{"message": "forged as bob"}')
        await nc.flush()
        await asyncio.sleep(0.5)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
        assert not await _stored_on(secure, events_subject(bob[0]))
        ack = await nc.jetstream().publish(events_subject(alice[0]), b'{"message": "from alice"}')
        assert ack.seq > 0 and await _stored_on(secure, events_subject(alice[0]))  # its own subject works

        deleted = await asyncio.to_thread(httpx.delete, f"{secure.api}/agents/{alice[0]}", headers=admin,
                                          verify=secure.verify)
        assert deleted.status_code == 204
        started = time.monotonic()
        await asyncio.wait_for(lost.wait(), 5)
        cut_after = time.monotonic() - started
        await nc.close()
        with pytest.raises(Exception, match="Authorization Violation|no servers"):
            await _connect_as(secure, *alice)
        bob_nc = await _connect_as(secure, *bob)  # the others are unaffected
        await bob_nc.close()
        return cut_after

    assert asyncio.run(run()) < 5


def _opmas(args: list[str], env: dict[str, str], **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opmas.cli", *args], env=env, capture_output=True, text=True,
                          **options)


def test_an_agent_given_only_the_enrollment_string_pins_the_ca_and_its_finding_arrives(secure, tmp_path):
    refused = _opmas(["agent", "enroll"], secure.env | {"OPMAS_SECRET": "wrong"}, timeout=60)
    assert refused.returncode == 2 and "401" in refused.stderr and refused.stdout == ""
    made = _opmas(["agent", "enroll", "--ttl", "600"], secure.env | {"OPMAS_SECRET": ADMIN_SECRET}, timeout=60)
    assert made.returncode == 0, made.stderr
    enrollment = read_enrollment(made.stdout.strip())
    assert enrollment.ca_fingerprint == _fingerprint(secure) and enrollment.api_url == secure.base.rstrip("/")
    assert enrollment.nats_url == _nats_url(secure)
    assert ADMIN_SECRET not in made.stdout + made.stderr

    # the agent's machine: its own data dir (so no local CA to trust by itself) and the string alone
    log = tmp_path / "auth.log"
    log.write_text(orjson.dumps(ROOT_USER_CREATED).decode() + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPMAS_", "NATS_"))}
    env |= {"OPMAS_DATA_DIR": str(tmp_path / "agent-data"), "OPMAS_ENROLL_TOKEN": made.stdout.strip()}
    agent = subprocess.Popen([sys.executable, "-m", "opmas.cli", "agent", "tail", str(log), "--from-beginning",
                              "--format", "json", "--name", "enrolled"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        credentials = tmp_path / "agent-data" / "agents" / "enrolled.json"
        deadline = time.monotonic() + 60
        while not credentials.exists():
            assert agent.poll() is None and time.monotonic() < deadline, agent.communicate()[1][-3000:]
            time.sleep(0.3)
        time.sleep(0.5)  # written whole by rename
        agent_id = orjson.loads(credentials.read_bytes())["agent_id"]
        pinned = tmp_path / "agent-data" / "agents" / "enrolled.ca.pem"
        assert pinned.read_bytes() == (secure.data_dir / "tls" / "ca.pem").read_bytes()
        while secure.get("/findings", agent_id=agent_id).json()["total"] == 0:
            assert agent.poll() is None and time.monotonic() < deadline, "no finding of the enrolled agent's event"
            time.sleep(0.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-3000:]
