"""NATS auth callout: agents authenticated by nats-server against the OPMAS registry.

nats-server (configured with :func:`callout_config`) sends every connecting client that is not
one of its ``auth_users`` to ``$SYS.REQ.USER.AUTH`` as an authorization request JWT signed by
the server. :class:`AuthCalloutService` answers it with an authorization response JWT signed by
the issuer account nkey: either a user JWT (the client is let in with its permissions) or an
error (the server refuses the connection).

An agent connects with user = its agent id and password = the secret it got at registration
(checked against ``principals.secret_hash`` of ``agent:<id>``, which must not be ``disabled``).
It gets a user limited to its own subjects: publish ``opmas.events.<id>`` and
``opmas.status.<id>``, subscribe ``opmas.control.<id>`` and ``_INBOX_<id>.>`` (its replies,
JetStream acknowledgements), nothing else. The user JWT expires after ``user_ttl`` seconds (the
server then disconnects the client, which reconnects through the callout again).

Revocation: :meth:`AuthCalloutService.disconnect` (or :func:`disconnect_user`) asks every
server of the system account for the agent's connections and kicks them; once the agent is
deleted or disabled in the registry the callout refuses it, so it cannot come back.

Requests and responses travel unencrypted (no ``xkey``): keep the callout's connection on
localhost or TLS.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nkeys
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from opmas.credentials import verify_secret, write_private
from opmas.connectors.nats import jwt as natsjwt
from opmas.connectors.nats.subjects import control_subject, events_subject, inbox_prefix, status_subject

log = logging.getLogger(__name__)

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
QUEUE = "opmas-auth-callout"
ACCOUNT = "OPMAS"                # the service and the agents
CALLOUT_ACCOUNT = "OPMAS_AUTH"   # only the callout's user: it alone reads the requests
SYSTEM_ACCOUNT = "SYS"
CALLOUT_USER = "opmas-auth"
ISSUER_SEED_FILE = "auth_callout_issuer.nk"
DEFAULT_USER_TTL = 3600.0

AgentRecord = tuple[str, bool]  # (secret_hash, disabled)
AgentLookup = Callable[[str], Awaitable[AgentRecord | None]]


# -- keys ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CalloutKeys:
    """The issuer account nkey signing responses and user JWTs, and where its seed lies."""

    issuer: nkeys.KeyPair
    path: Path

    @property
    def issuer_public_key(self) -> str:
        return natsjwt.public_key(self.issuer)


def load_or_create_keys(directory: Path) -> CalloutKeys:
    """The issuer account key stored in ``directory`` (file mode 0600), created on first use and
    reused afterwards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ISSUER_SEED_FILE
    if not path.exists():
        seed = natsjwt.create_keypair(natsjwt.PREFIX_ACCOUNT).seed
        write_private(path, seed + b"\n", replace=False)  # never over a key another process made meanwhile
    os.chmod(path, 0o600)
    seed = path.read_bytes().strip()
    try:
        keypair = nkeys.from_seed(bytearray(seed))
        prefix, _ = nkeys.decode_seed(bytearray(seed))
    except nkeys.NkeysError as exc:
        raise ValueError(f"{path} does not hold an nkey seed") from exc
    if prefix != natsjwt.PREFIX_ACCOUNT:
        raise ValueError(f"{path} holds a seed that is not an account key")
    return CalloutKeys(keypair, path)


# -- the registry -------------------------------------------------------------------------

_LOOKUP_SQL = ("SELECT p.secret_hash, p.disabled FROM principals p JOIN agents a ON a.id = p.agent_id"
               " WHERE p.agent_id = %s AND p.kind = 'agent'")


class PostgresAgentLookup:
    """``lookup(agent_id) -> (secret_hash, disabled) | None`` over the management tables, through a
    psycopg async pool (given) or a connection URL (a connection per lookup)."""

    def __init__(self, pool: Any = None, url: str | None = None):
        if (pool is None) == (url is None):
            raise ValueError("give a pool or a url")
        self._pool, self._url = pool, url

    async def __call__(self, agent_id: str) -> AgentRecord | None:
        if self._pool is not None:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(_LOOKUP_SQL, (agent_id,))).fetchone()
        else:
            import psycopg

            async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                row = await (await conn.execute(_LOOKUP_SQL, (agent_id,))).fetchone()
        if row is None:
            return None
        row = tuple(row.values()) if isinstance(row, dict) else tuple(row)
        return str(row[0]), bool(row[1])


# -- permissions --------------------------------------------------------------------------

def agent_permissions(agent_id: str) -> tuple[list[str], list[str]]:
    """What an agent may publish and subscribe to."""
    return ([events_subject(agent_id), status_subject(agent_id)],
            [control_subject(agent_id), f"{inbox_prefix(agent_id)}.>"])


def valid_agent_id(agent_id: str) -> bool:
    """An id usable as one subject token (no wildcards, dots, spaces)."""
    return bool(agent_id) and len(agent_id) <= 256 and not any(c in agent_id for c in ".*> \t\r\n\0")


# -- the service --------------------------------------------------------------------------

class AuthCalloutService:
    """Answers the server's authorization requests for agents.

    ``nc`` is a connection of the callout's user (an ``auth_users`` identity of the callout account;
    it subscribes to ``$SYS.REQ.USER.AUTH``); ``account`` the account agents are placed in;
    ``system_nc``, a connection of the system account, is needed only for :meth:`disconnect`.
    ``user_ttl``: seconds a user JWT is valid (the server then disconnects the client).
    ``secret_cache_ttl``: seconds a verified (agent, secret) is trusted without bcrypt (the
    registry is still read on every connection, so a deleted or disabled agent is refused at
    once). ``reserved_users``: names never taken as agent ids (the ``auth_users``).
    """

    def __init__(self, nc: NATS, keys: CalloutKeys, lookup: AgentLookup, *, account: str = ACCOUNT,
                 system_nc: NATS | None = None, user_ttl: float = DEFAULT_USER_TTL,
                 secret_cache_ttl: float = 300.0, reserved_users: Iterable[str] = ()):
        self.nc, self.system_nc = nc, system_nc
        self.keys, self.lookup, self.account = keys, lookup, account
        self.user_ttl, self.secret_cache_ttl = user_ttl, secret_cache_ttl
        self.reserved_users = frozenset(reserved_users)
        self._cache: dict[tuple[str, str, str], float] = {}  # (agent, sha256(secret), hash) -> until
        self._sub = None
        self.stats = {"allowed": 0, "denied": 0, "invalid": 0}

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(AUTH_SUBJECT, queue=QUEUE, cb=self._on_request)
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection may be closed already
                pass
            self._sub = None

    async def __aenter__(self) -> AuthCalloutService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- checking credentials

    def invalidate(self, agent_id: str | None = None) -> None:
        """Forget verified secrets (of one agent, or all)."""
        if agent_id is None:
            self._cache.clear()
        else:
            for key in [k for k in self._cache if k[0] == agent_id]:
                del self._cache[key]

    async def check(self, user: str, password: str) -> str | None:
        """``None`` when ``user``/``password`` are a registered, enabled agent's id and secret; else
        why not (said to the server, which logs it; the client only learns it was refused)."""
        if not user or not password:
            return "no credentials"
        if not valid_agent_id(user) or user in self.reserved_users:
            return "not an agent id"
        record = await self.lookup(user)
        if record is None:
            self.invalidate(user)
            await asyncio.to_thread(verify_secret, password, None)  # as slow as a real check
            return "unknown agent"
        secret_hash, disabled = record
        if disabled:
            self.invalidate(user)
            return "agent disabled"
        key = (user, hashlib.sha256(password.encode()).hexdigest(), secret_hash)
        now = time.monotonic()
        if self._cache.get(key, 0.0) > now:
            return None
        if not await asyncio.to_thread(verify_secret, password, secret_hash):
            return "wrong secret"
        if len(self._cache) > 10_000:
            self._cache = {k: v for k, v in self._cache.items() if v > now}
        self._cache[key] = now + self.secret_cache_ttl
        return None

    def user_jwt(self, user_nkey: str, agent_id: str, now: float | None = None) -> str:
        """The user JWT of an agent: its own subjects only, expiring after ``user_ttl``."""
        now = time.time() if now is None else now
        publish, subscribe = agent_permissions(agent_id)
        claims = natsjwt.user_claims(user_nkey, self.account, agent_id, publish, subscribe,
                                     expires=int(now + self.user_ttl))
        return natsjwt.encode(claims, self.keys.issuer, now)

    async def respond(self, request_token: str) -> str | None:
        """The signed response to an authorization request JWT; ``None`` for a request that does not
        verify (signed by a server key named in it, addressed to the callout, not expired):
        nothing can be answered and the server times it out as a refusal."""
        try:
            claims = natsjwt.decode(request_token, claim_type=natsjwt.AUTHORIZATION_REQUEST_CLAIM)
        except natsjwt.JWTError as exc:
            log.warning("auth callout: request ignored: %s", exc)
            self.stats["invalid"] += 1
            return None
        request = claims["nats"]
        server_id = (request.get("server_id") or {}).get("id", "")
        user_nkey = request.get("user_nkey", "")
        if (claims["iss"] != server_id or not natsjwt.is_public_key(server_id, natsjwt.PREFIX_SERVER)
                or claims.get("aud") != natsjwt.AUTHORIZATION_REQUEST_AUDIENCE
                or not natsjwt.is_public_key(user_nkey, natsjwt.PREFIX_USER)):
            log.warning("auth callout: request ignored: not from a server, or without a user nkey")
            self.stats["invalid"] += 1
            return None
        opts = request.get("connect_opts") or {}
        user, password = str(opts.get("user") or ""), str(opts.get("pass") or "")
        try:
            reason = await self.check(user, password)
        except Exception as exc:  # the registry is away: refuse, the client retries
            log.warning("auth callout: cannot check %r: %s", user, exc)
            reason = "registry unavailable"
        if reason is None:
            self.stats["allowed"] += 1
            response = natsjwt.authorization_response_claims(user_nkey, server_id,
                                                             jwt=self.user_jwt(user_nkey, user))
        else:
            self.stats["denied"] += 1
            log.info("auth callout: refused %r from %s: %s", user,
                     (request.get("client_info") or {}).get("host", "?"), reason)
            response = natsjwt.authorization_response_claims(user_nkey, server_id, error=reason)
        return natsjwt.encode(response, self.keys.issuer)

    async def _on_request(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            answer = await self.respond(msg.data.decode(errors="replace"))
            if answer is not None:
                await msg.respond(answer.encode())
        except Exception:
            log.exception("auth callout: request failed")

    # -- revocation

    async def disconnect(self, agent_id: str, timeout: float = 1.0) -> int:
        """Cut ``agent_id``'s connections on every server now (forgetting its verified secret);
        how many were kicked. Delete or disable the agent in the registry first, or it reconnects."""
        self.invalidate(agent_id)
        if self.system_nc is None:
            raise RuntimeError("disconnect needs a connection of the system account (system_nc)")
        if agent_id in self.reserved_users:
            raise ValueError(f"{agent_id!r} is a service user, not an agent")
        return await disconnect_user(self.system_nc, agent_id, account=self.account, timeout=timeout)


async def _gather(nc: NATS, subject: str, payload: bytes, timeout: float) -> list[dict[str, Any]]:
    """Every answer to a request sent to all servers, collected for ``timeout`` seconds."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(subject, payload, reply=inbox)
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                break
            try:
                answers.append(json.loads(msg.data))
            except ValueError:
                continue
    finally:
        await sub.unsubscribe()
    return answers


async def disconnect_user(system_nc: NATS, user: str, account: str | None = ACCOUNT,
                          timeout: float = 1.0) -> int:
    """Kick every connection of ``user`` (in ``account``) on every server answering the system
    account's ``$SYS.REQ.SERVER.PING.CONNZ``, through ``$SYS.REQ.SERVER.<id>.KICK``; how many.
    ``system_nc`` is connected as a user of the system account."""
    query: dict[str, Any] = {"user": user, "auth": True, "limit": 100_000}
    if account:
        query["acc"] = account
    kicked = 0
    for answer in await _gather(system_nc, "$SYS.REQ.SERVER.PING.CONNZ", json.dumps(query).encode(), timeout):
        server_id = (answer.get("server") or {}).get("id")
        data = answer.get("data") or {}
        for conn in data.get("connections") or []:
            if conn.get("authorized_user") != user or (account and conn.get("account") not in (None, account)):
                continue
            reply = await system_nc.request(f"$SYS.REQ.SERVER.{server_id}.KICK",
                                            json.dumps({"cid": conn["cid"]}).encode(), timeout=timeout)
            result = json.loads(reply.data or b"{}")
            if result.get("error"):
                log.warning("auth callout: kicking %s (cid %s) failed: %s", user, conn["cid"], result["error"])
            else:
                kicked += 1
    return kicked


# -- the server configuration -------------------------------------------------------------

def _q(text: str) -> str:
    return json.dumps(text)


def callout_config(issuer_public_key: str, service_user: str, service_password: str,
                   system_user: str, system_password: str, *, callout_password: str,
                   callout_user: str = CALLOUT_USER, account: str = ACCOUNT,
                   callout_account: str = CALLOUT_ACCOUNT, system_account: str = SYSTEM_ACCOUNT,
                   jetstream: bool = True) -> str:
    """The nats-server configuration fragment for the callout:

    - ``account`` (JetStream enabled) with the OPMAS service user (full access in it); agents are
      placed in it too, by the ``aud`` of their user JWTs;
    - ``callout_account`` with only the callout's user: the authorization requests (which carry
      the clients' passwords) go to ``$SYS.REQ.USER.AUTH`` of that account, so no other identity
      can read them;
    - ``system_account`` with its user (monitoring, and kicking connections on revocation);
    - ``auth_callout`` naming the issuer and these three users as ``auth_users``: they
      authenticate by their passwords, never through the callout.

    Passwords may be bcrypt hashes (``$2...``), which nats-server checks as such. The user names
    are reserved: an agent with one of these ids cannot connect."""
    def users(*pairs: tuple[str, str]) -> str:
        return "\n".join(f"      {{user: {_q(u)}, password: {_q(p)}}}" for u, p in pairs)

    if len({service_user, system_user, callout_user}) != 3:
        raise ValueError("the service, system and callout users need different names")
    auth_users = ", ".join(_q(u) for u in (callout_user, service_user, system_user))
    return (
        "accounts {\n"
        f"  {_q(account)}: {{\n"
        + ("    jetstream: enabled\n" if jetstream else "")
        + f"    users: [\n{users((service_user, service_password))}\n    ]\n"
        "  }\n"
        f"  {_q(callout_account)}: {{\n"
        f"    users: [\n{users((callout_user, callout_password))}\n    ]\n"
        "  }\n"
        f"  {_q(system_account)}: {{\n"
        f"    users: [\n{users((system_user, system_password))}\n    ]\n"
        "  }\n"
        "}\n"
        f"system_account: {_q(system_account)}\n"
        "authorization {\n"
        "  auth_callout {\n"
        f"    issuer: {_q(issuer_public_key)}\n"
        f"    account: {_q(callout_account)}\n"
        f"    auth_users: [{auth_users}]\n"
        "  }\n"
        "}\n"
    )
