"""The syslog agent: receives RFC 3164 and RFC 5424 messages over UDP and TCP and publishes them.

TCP takes both framings of RFC 6587: octet counting (``<length> <message>``) and
newline-delimited. A message that is not syslog is published with its text in ``message``.
Each event carries ``log.source.address`` (the sender).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from opmas.agents.parse import parse_syslog
from opmas.agents.sdk import AgentSettings, AgentStats, SecurityAgent

log = logging.getLogger("opmas.agent.syslog")
SYSLOG_DEFAULTS = {"host": "0.0.0.0", "port": 5514, "protocols": ["udp", "tcp"]}
MAX_MESSAGE = 64 * 1024


def syslog_event(text: str, peer: Any) -> dict[str, Any]:
    data = parse_syslog(text) or {"message": text.strip()}
    address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
    log_field = data.get("log") if isinstance(data.get("log"), dict) else {}
    return {**data, "log": {**log_field, "source": {"address": address}}}


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue, stats: AgentStats):
        self.queue = queue
        self.stats = stats

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.queue.put_nowait((data.decode(errors="replace"), addr))
        except asyncio.QueueFull:  # UDP has no backpressure: count what the full queue refuses
            self.stats.dropped += 1


async def read_frames(reader: asyncio.StreamReader):
    """Syslog messages of a TCP stream, octet-counted or newline-delimited (RFC 6587)."""
    while True:
        first = await reader.read(1)
        if not first:
            return
        if first.isdigit():
            digits = first + await reader.readuntil(b" ")
            length = int(digits[:-1])
            if length > MAX_MESSAGE:
                raise ValueError(f"syslog frame of {length} bytes is over {MAX_MESSAGE}")
            yield (await reader.readexactly(length)).decode(errors="replace")
        else:
            line = first + await reader.readline()
            if line.strip():
                yield line.decode(errors="replace")


class SyslogAgent(SecurityAgent):
    """Listens where ``syslog`` in its configuration says (or the host/port it was given)."""

    def __init__(self, settings: AgentSettings, host: str | None = None, port: int | None = None,
                 protocols: list[str] | None = None):
        super().__init__(settings)
        self._given = {k: v for k, v in {"host": host, "port": port, "protocols": protocols}.items() if v is not None}
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=100_000)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}  # handler task -> its writer
        self._pump: asyncio.Task | None = None
        self.bound: dict[str, int] = {}

    @property
    def listen(self) -> dict[str, Any]:
        return {**SYSLOG_DEFAULTS, **self._given, **self.config.get("syslog", {})}

    async def on_start(self) -> None:
        self._pump = asyncio.create_task(self._publish_forever())
        await self._open()

    async def on_config(self, config: dict[str, Any]) -> None:
        await self._close()
        await self._open()

    async def on_stop(self) -> None:
        await self._close()
        while not self._queue.empty():
            text, peer = self._queue.get_nowait()
            await self.publish(syslog_event(text, peer), type="syslog")
        if self._pump is not None:
            self._pump.cancel()

    async def _open(self) -> None:
        cfg = self.listen
        loop = asyncio.get_running_loop()
        if "udp" in cfg["protocols"]:
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self._queue, self.stats),
                                                               local_addr=(cfg["host"], cfg["port"]))
            self.bound["udp"] = self._udp.get_extra_info("sockname")[1]
        if "tcp" in cfg["protocols"]:
            self._tcp = await asyncio.start_server(self._on_tcp, cfg["host"], cfg["port"])
            self.bound["tcp"] = self._tcp.sockets[0].getsockname()[1]
        log.info("syslog listening", extra={"agent_id": self.agent_id, "host": cfg["host"], **self.bound})

    async def _close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()  # no new connections
            await asyncio.sleep(0)  # take in what the open connections have sent so far
            for writer in self._connections.values():
                writer.close()  # its handler queues the frames already received, then sees the end
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._tcp.wait_closed()  # (since Python 3.12 it waits for every connection)
            self._tcp = None
        self.bound.clear()

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        self._connections[task] = writer
        try:
            async for text in read_frames(reader):
                await self._queue.put((text, peer))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            log.warning("closing a syslog connection", extra={"peer": str(peer), "error": repr(exc)})
        finally:
            del self._connections[task]
            writer.close()

    async def _publish_forever(self) -> None:
        while True:
            text, peer = await self._queue.get()
            await self.publish(syslog_event(text, peer), type="syslog")
