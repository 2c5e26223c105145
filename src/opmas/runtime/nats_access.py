"""Who may use the embedded NATS server, and how OPMAS's own processes reach it.

Authentication is always on (docs/nats-auth.md): three identities of OPMAS (the service, which the
engine, the API and the command-line tools use; the auth callout's; the system account's), their
passwords generated once under the data dir (``nats-auth/``, files 0600) and given to the server as
bcrypt hashes; agents sign in with their own id and secret, checked by the auth callout
(connectors/nats/auth_callout.py) against the agent registry. An external NATS server takes
``nats.user``/``nats.password`` instead.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg_pool import AsyncConnectionPool

from opmas.config import Config
from opmas.connectors.nats.auth_callout import (CALLOUT_USER, AuthCalloutService, CalloutKeys, PostgresAgentLookup,
                                                callout_config, load_or_create_keys)
from opmas.connectors.nats.client import NATS_ERRORS, connect
from opmas.connectors.nats.subjects import REVOKED_SUBJECT
from opmas.credentials import hash_secret, new_secret, write_private
from opmas.runtime.tls import client_tls

if TYPE_CHECKING:
    from opmas.runtime.stack import Stack

log = logging.getLogger("opmas.nats_auth")
SERVICE_USER, SYSTEM_USER = "opmas", "opmas-system"
RESERVED_USERS = (SERVICE_USER, SYSTEM_USER, CALLOUT_USER)  # never an agent's id


@dataclass(frozen=True)
class EmbeddedNatsAuth:
    """The embedded server's identities: the callout's issuer key and each identity's password."""

    keys: CalloutKeys
    passwords: dict[str, str] = field(repr=False)  # user -> password

    @classmethod
    def load_or_create(cls, directory: Path) -> "EmbeddedNatsAuth":
        """The identities of ``directory``, created on the first call (the same on every restart)."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        passwords = {}
        for user in RESERVED_USERS:
            path = secret_path(directory, user)
            if not path.exists():
                write_private(path, new_secret().encode(), replace=False)
            passwords[user] = path.read_text().strip()
        return cls(load_or_create_keys(directory), passwords)

    def server_config(self) -> str:
        """The nats.conf fragment: accounts, identities (as bcrypt hashes), the auth callout."""
        hashed = {user: hash_secret(password) for user, password in self.passwords.items()}
        return callout_config(self.keys.issuer_public_key, SERVICE_USER, hashed[SERVICE_USER], SYSTEM_USER,
                              hashed[SYSTEM_USER], callout_password=hashed[CALLOUT_USER])


def auth_dir(config: Config) -> Path:
    return config.data_dir / "nats-auth"


def secret_path(directory: Path, user: str) -> Path:
    """Where an identity's password is kept (0600)."""
    return directory / f"{user}.secret"


def nats_options(config: Config) -> dict[str, Any]:
    """How an OPMAS process connects to NATS (``connectors.nats.client.connect`` options): what it
    trusts of a TLS server, and as whom: ``nats.user``/``nats.password``, else the service identity
    of the data dir's embedded server (where there is one)."""
    options: dict[str, Any] = {}
    tls = client_tls(config)
    if tls is not None:
        options["tls"] = tls
    if config.nats.user:
        options.update(user=config.nats.user, password=config.nats.password or "")
    elif not config.nats.url and (secret := secret_path(auth_dir(config), SERVICE_USER)).exists():
        options.update(user=SERVICE_USER, password=secret.read_text().strip())  # read only: opmas up made it
    return options


async def callout_service(config: Config, stack: "Stack", stop: asyncio.Event) -> None:
    """``opmas up``'s auth callout, for its embedded NATS server (an external server authenticates its
    clients itself, or through ``opmas api nats-callout``)."""
    if stack.nats_auth is not None:
        await run_callout(stack.nats_url, client_tls(config), stack.nats_auth.keys, stack.nats_auth.passwords,
                          stack.db_url, stop)


async def run_callout(nats_url: str, tls: ssl.SSLContext | None, keys: CalloutKeys, passwords: dict[str, str],
                      db_url: str, stop: asyncio.Event) -> None:
    """The auth callout until ``stop`` is set: answers the server's authorization requests for agents
    from the agent registry in PostgreSQL, and cuts an agent off at once when the API announces it
    deleted (``opmas.auth.revoked``). ``passwords``: of the callout's, the system and the service
    users (RESERVED_USERS)."""
    trust = {"tls": tls} if tls is not None else {}
    pool = AsyncConnectionPool(db_url, min_size=1, max_size=4, open=False, timeout=5, kwargs={"autocommit": True})
    connections = []
    try:
        await pool.open(wait=False)
        for user in (CALLOUT_USER, SYSTEM_USER, SERVICE_USER):
            connections.append(await connect(nats_url, f"opmas-{user}", persistent=True, **trust, user=user,
                                             password=passwords[user]))
        callout, system, service_nc = connections
        service = AuthCalloutService(callout, keys, PostgresAgentLookup(pool=pool), system_nc=system,
                                     reserved_users=RESERVED_USERS)

        async def on_revoked(msg) -> None:
            agent_id = msg.data.decode(errors="replace")
            try:
                kicked = await service.disconnect(agent_id)
            except (ValueError, *NATS_ERRORS) as exc:
                log.warning("revoked agent not disconnected", extra={"agent": agent_id, "reason": str(exc)[:200]})
            else:
                log.info("revoked agent disconnected", extra={"agent": agent_id, "connections": kicked})

        async with service:
            await service_nc.subscribe(REVOKED_SUBJECT, cb=on_revoked)
            await stop.wait()
    finally:
        for nc in connections:
            await nc.close()
        await pool.close()
