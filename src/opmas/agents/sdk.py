"""The agent SDK: ``SecurityAgent`` registers with management, gets its JWT, publishes events,
takes configuration from management and reports a heartbeat.

Life of an agent:

1. credentials: given, or read from ``credentials_file``, or obtained by registering
   (``POST /api/v1/agents``) with an enrollment token (a JWT holding ``agents:register``) and
   kept in ``credentials_file`` (mode 0600);
2. a JWT from ``POST /api/v1/auth/token`` (renewed before it expires) and its configuration from
   ``GET /api/v1/agents/<id>``;
3. NATS, as user ``<id>`` with its secret as password (ignored by an open embedded server);
   events go as OPMAS envelopes, in JSON-lines batches, to ``opmas.events.<id>`` through
   JetStream (a batch leaves the buffer only once the stream stored it: at-least-once);
   configuration arrives on ``opmas.control.<id>``; heartbeats go to ``opmas.status.<id>``.

Subclasses override ``on_start``, ``on_stop`` and ``on_config`` and call ``publish``.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson

from opmas.agents.config import config_errors
from opmas.agents.trust import UntrustedServer, agent_tls
from opmas.connectors.nats.subjects import control_subject, events_subject, inbox_prefix, status_subject
from opmas.core.event import format_time, parse_time
from opmas.credentials import write_private

log = logging.getLogger("opmas.agent")

MAX_BATCH_BYTES = 512 * 1024  # JSON-lines payload of one message (NATS' default max is 1 MiB)
DEFAULTS = {"enabled": True, "heartbeat_interval": 10.0, "batch_size": 500, "flush_interval": 0.5}


def envelope(agent_id: str, data: dict[str, Any], type: str, event_id: str,
             observed: float | None = None) -> dict[str, Any]:
    """The OPMAS envelope of one event. Its ``timestamp`` is the data's ``@timestamp`` where that is a
    valid time, else ``observed`` (when the agent read the event; stored in the envelope, so every
    replay of it gives the same time). The engine prefers the time in the data itself (EVTX
    ``TimeCreated``, CloudTrail ``eventTime``...) through its mapping; the envelope's is the fallback."""
    out = {"id": event_id, "agent_id": agent_id, "type": type, "data": data}
    if parse_time(data.get("@timestamp")) is not None:
        out["timestamp"] = data["@timestamp"]
    elif observed is not None:
        out["timestamp"] = format_time(observed)
    return out


class AgentError(Exception):
    """The agent cannot start: no credentials, refused registration, unreachable management."""


@dataclass
class AgentSettings:
    """How an agent finds management and NATS, and who it is."""

    management_url: str
    nats_url: str
    name: str
    type: str
    agent_id: str | None = None
    enroll_token: str | None = None           # JWT with agents:register, used once to register
    credentials_file: Path | None = None      # keeps {agent_id, principal_id, secret}
    ca_file: Path | None = None               # the CA of the API and NATS (TLS); else the pinned one:
    ca_fingerprint: str | None = None         # SHA-256 of OPMAS's CA, fetched and kept once it matches
    principal_id: str | None = None
    secret: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # sent at registration
    max_buffer: int = 20_000                  # events held while NATS is away; publish() waits beyond


@dataclass
class Credentials:
    agent_id: str
    principal_id: str
    secret: str


@dataclass
class AgentStats:
    published: int = 0
    batches: int = 0
    dropped: int = 0         # events refused: agent disabled by its configuration, receive queue full
    publish_errors: int = 0
    pending: int = 0
    queued: int = 0          # events ever buffered; the first ``published`` of them are in JetStream
    oversized: int = 0       # events larger than a NATS message, dropped


class SecurityAgent:
    """Base class of OPMAS agents (see the module docstring)."""

    def __init__(self, settings: AgentSettings):
        self.settings = settings
        self.agent_id: str | None = None
        self.config: dict[str, Any] = dict(DEFAULTS)
        self.config_version = 0
        self.config_problems: list[str] = []
        self.stats = AgentStats()
        self.nc: nats.aio.client.Client | None = None
        self._creds: Credentials | None = None
        self._http: httpx.AsyncClient | None = None
        self._token: tuple[str, float] | None = None
        self._buffer: list[bytes] = []
        self._space = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    # -- hooks ---------------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Start monitoring (called once connected and configured)."""

    async def on_stop(self) -> None:
        """Stop monitoring (called before the last flush)."""

    async def on_config(self, config: dict[str, Any]) -> None:
        """A new, valid configuration is in ``self.config``."""

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register (if needed), authenticate, take the configuration, connect, start monitoring."""
        s = self.settings
        try:
            trust = await asyncio.to_thread(agent_tls, s.management_url, s.ca_file, s.ca_fingerprint,
                                            s.credentials_file and s.credentials_file.with_suffix(".ca.pem"))
        except (UntrustedServer, httpx.HTTPError) as exc:
            raise AgentError(f"management at {s.management_url}: {exc}") from exc
        self._http = httpx.AsyncClient(base_url=s.management_url.rstrip("/") + "/api/v1", timeout=15,
                                       verify=trust if trust is not None else True)
        try:
            self._creds = await self._credentials()
            self.agent_id = self._creds.agent_id
            record = (await self.api("GET", f"/agents/{self.agent_id}")).json()
        except BaseException as exc:
            await self._http.aclose()
            if isinstance(exc, httpx.HTTPError):
                raise AgentError(f"management at {self.settings.management_url}: {exc}") from exc
            raise
        await self._apply_config(record["config"], record["config_version"])
        self.nc = await nats.connect(self.settings.nats_url, user=self.agent_id, password=self._creds.secret,
                                     name=f"opmas-agent-{self.agent_id}", inbox_prefix=inbox_prefix(self.agent_id),
                                     max_reconnect_attempts=-1, error_cb=self._nats_error,
                                     **({"tls": trust} if trust is not None else {}))
        self._js = self.nc.jetstream()
        await self.nc.subscribe(control_subject(self.agent_id), cb=self._on_control)
        await self.heartbeat()
        self._tasks = [asyncio.create_task(self._heartbeat_forever()), asyncio.create_task(self._flush_forever())]
        await self.on_start()
        log.info("agent started", extra={"agent_id": self.agent_id, "config_version": self.config_version})

    async def stop(self) -> None:
        """Stop monitoring, publish what is buffered, say goodbye (state ``stopped``), disconnect."""
        await self.on_stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.flush()
                await self.heartbeat("stopped")
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - NATS is away: just close
                await self.nc.close()
            if self._buffer:
                log.warning("events not published at stop", extra={"agent_id": self.agent_id,
                                                                    "events": len(self._buffer)})
        if self._http is not None:
            await self._http.aclose()
        log.info("agent stopped", extra={"agent_id": self.agent_id, **asdict(self.stats)})

    # -- events --------------------------------------------------------------------------------

    async def publish(self, data: dict[str, Any], type: str = "event", event_id: str | None = None) -> None:
        """Queue one event (as an envelope) for ``opmas.events.<id>``; waits while the buffer is full."""
        if not self.config.get("enabled", True):
            self.stats.dropped += 1
            return
        if self.config.get("labels"):
            data = {**data, "labels": {**self.config["labels"], **data.get("labels", {})}}
        event = orjson.dumps(envelope(self.agent_id, data, type, event_id or uuid.uuid4().hex, time.time()))
        while len(self._buffer) >= self.settings.max_buffer:
            self._space.clear()
            await self._space.wait()
        self._buffer.append(event)
        self.stats.queued += 1
        self.stats.pending = len(self._buffer)
        if len(self._buffer) >= self.config["batch_size"] and not self._flush_lock.locked():
            await self.flush()

    async def flush(self) -> bool:
        """Publish the buffer in batches; True when empty. A batch that fails stays for the next try
        (its Nats-Msg-Id makes a resent batch a duplicate JetStream drops)."""
        async with self._flush_lock:
            while self._buffer:
                batch = self._next_batch()
                if not batch:
                    continue
                payload = b"\n".join(batch)
                try:
                    await self._js.publish(events_subject(self.agent_id), payload, timeout=5,
                                           headers={"Nats-Msg-Id": hashlib.sha256(payload).hexdigest()[:32]})
                except Exception as exc:  # noqa: BLE001 - keep the batch, report, retry later
                    self.stats.publish_errors += 1
                    log.warning("publishing a batch failed, will retry", extra={"error": repr(exc)})
                    return False
                del self._buffer[: len(batch)]
                self.stats.published += len(batch)
                self.stats.batches += 1
                self.stats.pending = len(self._buffer)
                self._space.set()
        return True

    def _next_batch(self) -> list[bytes]:
        """Up to ``batch_size`` events within the server's message size; an event too large to send
        at all is dropped (and counted) rather than blocking the ones behind it."""
        limit = min(MAX_BATCH_BYTES, self.nc.max_payload)
        if len(self._buffer[0]) > limit:
            log.error("event larger than a NATS message dropped", extra={"agent_id": self.agent_id,
                                                                         "bytes": len(self._buffer.pop(0))})
            self.stats.oversized += 1
            self.stats.pending = len(self._buffer)
            return []
        batch, size = [], 0
        for item in self._buffer[: self.config["batch_size"]]:
            if size + len(item) + 1 > limit:
                break
            batch.append(item)
            size += len(item) + 1
        return batch

    @property
    def settled(self) -> int:
        """How many of the events ever queued are done with: stored by JetStream or dropped as oversized
        (they settle in queue order)."""
        return self.stats.published + self.stats.oversized

    # -- control and status --------------------------------------------------------------------

    async def heartbeat(self, state: str = "running") -> None:
        """Publish this agent's status on ``opmas.status.<id>``."""
        beat = {"agent_id": self.agent_id, "state": state, "time": format_time(time.time()),
                "config_version": self.config_version,
                "info": {"name": self.settings.name, "type": self.settings.type, "hostname": socket.gethostname(),
                         "pid": os.getpid(), "stats": asdict(self.stats), "config_errors": self.config_problems}}
        await self.nc.publish(status_subject(self.agent_id), orjson.dumps(beat))
        await self.nc.flush()

    async def _on_control(self, msg) -> None:
        try:
            command = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            log.warning("unreadable control message", extra={"agent_id": self.agent_id})
            return
        if isinstance(command, dict) and command.get("type") == "config":
            await self._apply_config(command.get("config"), command.get("version"))
            await self.heartbeat()

    async def _apply_config(self, config: Any, version: Any) -> None:
        problems = config_errors(config)
        if problems:
            self.config_problems = problems
            log.error("configuration refused", extra={"agent_id": self.agent_id, "errors": problems})
            return
        self.config = {**DEFAULTS, **config}
        self.config_version = version if isinstance(version, int) else self.config_version
        self.config_problems = []
        if self._tasks:  # running: tell the subclass (at start, on_start reads self.config)
            await self.on_config(self.config)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(float(self.config["heartbeat_interval"]))
            try:
                await self.heartbeat()
            except Exception as exc:  # noqa: BLE001 - NATS away: try again next time
                log.warning("heartbeat failed", extra={"error": repr(exc)})

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(float(self.config["flush_interval"]))
            await self.flush()

    async def _nats_error(self, exc: Exception) -> None:
        log.warning("nats error", extra={"agent_id": self.agent_id, "error": repr(exc)})

    # -- management API ------------------------------------------------------------------------

    async def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        """Call the management API with this agent's JWT (renewed a minute before it expires)."""
        if self._token is None or self._token[1] - time.time() < 60:
            r = await self._http.post("/auth/token", json={"principal_id": self._creds.principal_id,
                                                          "secret": self._creds.secret})
            if r.status_code != 200:
                raise AgentError(f"management refused the agent's credentials: {r.status_code} {r.text}")
            body = r.json()
            self._token = (body["access_token"], parse_time(body["expires_at"]) or time.time())
        r = await self._http.request(method, path, headers={"Authorization": f"Bearer {self._token[0]}"}, **kwargs)
        r.raise_for_status()
        return r

    async def _credentials(self) -> Credentials:
        s = self.settings
        if s.agent_id and s.principal_id and s.secret:
            return Credentials(s.agent_id, s.principal_id, s.secret)
        if s.credentials_file and s.credentials_file.exists():
            return Credentials(**orjson.loads(s.credentials_file.read_bytes()))
        if not s.enroll_token:
            raise AgentError("no credentials: give an enrollment token (a JWT with agents:register) "
                             "or the agent's credentials")
        body = {"name": s.name, "type": s.type, "config": s.config, **({"id": s.agent_id} if s.agent_id else {})}
        r = await self._http.post("/agents", json=body, headers={"Authorization": f"Bearer {s.enroll_token}"})
        if r.status_code == 409:
            raise AgentError(f"agent {s.agent_id} is registered already and its credentials are not at "
                             f"{s.credentials_file}")
        if r.status_code != 201:
            raise AgentError(f"registration refused: {r.status_code} {r.text}")
        issued = r.json()["credentials"]
        creds = Credentials(r.json()["id"], issued["principal_id"], issued["secret"])
        if s.credentials_file:
            s.credentials_file.parent.mkdir(parents=True, exist_ok=True)
            write_private(s.credentials_file, orjson.dumps(asdict(creds)))
        return creds


async def run_until_signalled(agent: SecurityAgent) -> None:
    """Start ``agent``, run until SIGINT/SIGTERM, stop it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    try:
        await stop.wait()
    finally:
        await agent.stop()
