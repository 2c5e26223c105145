"""A real nats-server configured for the auth callout (JetStream on, the fragment of
``callout_config``), the agent registry on a real PostgreSQL, and the callout service."""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import psycopg
import pytest

from opmas.api.auth import AGENT_PERMISSIONS
from opmas.credentials import hash_secret
from opmas.connectors.nats.auth_callout import (AuthCalloutService, CalloutKeys, PostgresAgentLookup,
                                                callout_config, load_or_create_keys)
from opmas.connectors.postgres.migrations import migrate
from opmas.runtime.embedded import NatsServer, free_port, nats_server_binary

SERVICE_USER, SERVICE_PASSWORD = "opmas", "service-password-for-tests"
SYSTEM_USER, SYSTEM_PASSWORD = "opmas-system", "system-password-for-tests"
CALLOUT_USER, CALLOUT_PASSWORD = "opmas-auth", "callout-password-for-tests"


@dataclass
class CalloutNats:
    server: NatsServer
    keys: CalloutKeys
    log: Path

    @property
    def url(self) -> str:
        return self.server.url

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_callout_nats(base: Path, keys: CalloutKeys) -> CalloutNats:
    """nats-server with JetStream and the callout fragment (the service password as a bcrypt hash,
    as ``opmas up`` would write it), on a free port."""
    base.mkdir(parents=True, exist_ok=True)
    config = base / "nats.conf"
    config.write_text("max_payload: 1048576\n" + callout_config(
        keys.issuer_public_key, SERVICE_USER, hash_secret(SERVICE_PASSWORD), SYSTEM_USER, SYSTEM_PASSWORD,
        callout_user=CALLOUT_USER, callout_password=hash_secret(CALLOUT_PASSWORD)))
    port = free_port()
    server = NatsServer([nats_server_binary(), "-c", str(config), "-js", "-sd", str(base / "js"),
                         "-a", "127.0.0.1", "-p", str(port)], "127.0.0.1", port, base / "js", base / "nats.log")
    server.start()
    return CalloutNats(server, keys, base / "nats.log")


@pytest.fixture
def callout_nats(tmp_path: Path) -> Iterator[CalloutNats]:
    keys = load_or_create_keys(tmp_path / "keys")
    running = start_callout_nats(tmp_path / "nats", keys)
    try:
        yield running
    finally:
        running.server.stop()


@dataclass
class Registry:
    """The agents and principals tables of a migrated test database."""

    url: str
    secrets: dict[str, str] = field(default_factory=dict)

    async def add(self, agent_id: str, secret: str, disabled: bool = False) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute("INSERT INTO agents (id, name, type) VALUES (%s, %s, 'tail')", (agent_id, agent_id))
            await conn.execute(
                "INSERT INTO principals (id, name, kind, agent_id, permissions, secret_hash, disabled)"
                " VALUES (%s, %s, 'agent', %s, %s, %s, %s)",
                (f"agent:{agent_id}", agent_id, agent_id, list(AGENT_PERMISSIONS), hash_secret(secret), disabled))
        self.secrets[agent_id] = secret

    async def delete(self, agent_id: str) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute("DELETE FROM agents WHERE id = %s", (agent_id,))


@pytest.fixture
async def registry(postgres) -> Registry:
    async with await psycopg.AsyncConnection.connect(postgres.url) as conn:
        await migrate(conn)
    return Registry(postgres.url)


async def connect_callout_user(url: str) -> nats.NATS:
    return await nats.connect(url, user=CALLOUT_USER, password=CALLOUT_PASSWORD, allow_reconnect=False)


@dataclass
class Callout:
    service: AuthCalloutService
    nc: nats.NATS         # the OPMAS service identity (full access to the OPMAS account)
    system_nc: nats.NATS  # the system account


@pytest.fixture
async def callout(callout_nats: CalloutNats, registry: Registry) -> AsyncIterator[Callout]:
    callout_nc = await connect_callout_user(callout_nats.url)
    nc = await nats.connect(callout_nats.url, user=SERVICE_USER, password=SERVICE_PASSWORD,
                            allow_reconnect=False)
    system_nc = await nats.connect(callout_nats.url, user=SYSTEM_USER, password=SYSTEM_PASSWORD,
                                   allow_reconnect=False)
    service = AuthCalloutService(callout_nc, callout_nats.keys, PostgresAgentLookup(url=registry.url),
                                 system_nc=system_nc, reserved_users=(SERVICE_USER, SYSTEM_USER, CALLOUT_USER))
    await service.start()
    try:
        yield Callout(service, nc, system_nc)
    finally:
        await service.stop()
        for conn in (callout_nc, nc, system_nc):
            await conn.close()
