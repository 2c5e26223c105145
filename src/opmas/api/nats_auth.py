"""nats-server authorization for non-embedded deployments, generated from the agents table.

Each agent is a NATS user named by its id, its password the bcrypt hash of its secret (the
one issued at registration); it may publish only ``opmas.events.<id>`` and
``opmas.status.<id>`` and subscribe only ``opmas.control.<id>`` (plus its own reply inbox
``_INBOX_<id>.>``, for JetStream acknowledgements). The OPMAS services (engine, management) use one service user
with full access. Include the output in nats-server.conf and reload the server (SIGHUP or
``nats-server --signal reload``) after agents change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg

from opmas.connectors.nats.subjects import control_subject, events_subject, inbox_prefix, status_subject
from opmas.credentials import hash_secret

SERVICE_USER = "opmas"
_AGENTS_SQL = ("SELECT a.id, p.secret_hash FROM agents a JOIN principals p ON p.agent_id = a.id"
               " WHERE NOT p.disabled ORDER BY a.id")


@dataclass(frozen=True, slots=True)
class NatsUser:
    user: str
    password_hash: str  # bcrypt
    publish: tuple[str, ...] | None = None    # None: everything
    subscribe: tuple[str, ...] | None = None  # None: everything


def agent_user(agent_id: str, secret_hash: str) -> NatsUser:
    return NatsUser(
        user=agent_id, password_hash=secret_hash,
        publish=(events_subject(agent_id), status_subject(agent_id)),
        subscribe=(control_subject(agent_id), f"{inbox_prefix(agent_id)}.>"),
    )


def render_authorization(users: list[NatsUser]) -> str:
    """The ``authorization { users = [...] }`` block of a nats-server configuration."""
    lines = ["authorization {", "  users = ["]
    for u in users:
        entry = f"    {{user: {json.dumps(u.user)}, password: {json.dumps(u.password_hash)}"
        if u.publish is not None or u.subscribe is not None:
            perms = []
            if u.publish is not None:
                perms.append(f"publish: {{allow: {json.dumps(list(u.publish))}}}")
            if u.subscribe is not None:
                perms.append(f"subscribe: {{allow: {json.dumps(list(u.subscribe))}}}")
            entry += ", permissions: {" + ", ".join(perms) + "}"
        lines.append(entry + "}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


async def authorization_from_db(conn: psycopg.AsyncConnection, service_password: str) -> str:
    """The authorization block for every registered agent plus the OPMAS service user."""
    cur = await conn.execute(_AGENTS_SQL)
    users = [NatsUser(SERVICE_USER, hash_secret(service_password))]
    users += [agent_user(agent_id, secret_hash) for agent_id, secret_hash in await cur.fetchall()]
    return render_authorization(users)
