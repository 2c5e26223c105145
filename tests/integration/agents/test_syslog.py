"""The syslog agent receives RFC 3164 over UDP and RFC 5424 over TCP (both framings) and publishes them."""
from __future__ import annotations

import asyncio
import socket

from opmas.agents.sdk import AgentSettings
from opmas.agents.syslog import SyslogAgent
from tests.integration.agents.conftest import EventTap

RFC3164 = "<38>Nov 25 04:10:00 web-1 sshd[4410]: Failed password for root from 198.51.100.4 port 40222 ssh2"
RFC5424 = '<86>1 2026-11-25T04:10:01.5Z web-2 sudo 99 - [origin ip="10.0.0.2"] bob : TTY=pts/0 ; USER=root ; COMMAND=/bin/sh'


async def test_syslog_over_udp_and_tcp(stack, enroll_token, tmp_path):
    agent = SyslogAgent(AgentSettings(management_url=stack.url, nats_url=stack.nats_url, name="syslog", type="syslog",
                                      agent_id="syslog-1", enroll_token=enroll_token,
                                      credentials_file=tmp_path / "c.json", config={"flush_interval": 0.05}),
                        host="127.0.0.1", port=0)
    async with EventTap(stack.nats_url) as tap:
        await agent.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(RFC3164.encode(), ("127.0.0.1", agent.bound["udp"]))
            (udp_event,) = await tap.take(1)
            reader, writer = await asyncio.open_connection("127.0.0.1", agent.bound["tcp"])
            framed = RFC5424.encode()
            writer.write(b"%d %s" % (len(framed), framed))          # octet counting
            writer.write(b"Nov 25 04:10:02 web-3 kernel: plain newline framing\n")
            writer.write(b"not syslog at all\n")
            await writer.drain()
            tcp_events = await tap.take(3)
            writer.close()
        finally:
            await agent.stop()
    data = udp_event["data"]
    assert udp_event["agent_id"] == "syslog-1" and udp_event["type"] == "syslog"
    assert data["process"] == {"name": "sshd", "pid": 4410} and data["user"] == {"name": "root"}
    assert data["source"] == {"ip": "198.51.100.4", "port": 40222}
    assert data["log"]["syslog"]["facility"]["name"] == "auth" and data["log"]["source"]["address"].startswith("127.0.0.1:")
    first, second, third = (e["data"] for e in tcp_events)
    assert first["@timestamp"] == "2026-11-25T04:10:01.500000Z" and first["host"] == {"name": "web-2"}
    assert first["process"] == {"name": "sudo", "pid": 99} and first["user"] == {"name": "bob"}
    assert first["log"]["syslog"]["facility"]["name"] == "authpriv"
    assert second["message"] == "plain newline framing" and second["process"] == {"name": "kernel"}
    assert third["message"] == "not syslog at all" and "event" not in third


async def test_stop_with_a_tcp_sender_still_connected(stack, enroll_token, tmp_path):
    """Senders keep their connection open: stopping closes it (promptly, on every Python) after taking
    in what was sent."""
    agent = SyslogAgent(AgentSettings(management_url=stack.url, nats_url=stack.nats_url, name="syslog", type="syslog",
                                      agent_id="syslog-2", enroll_token=enroll_token,
                                      credentials_file=tmp_path / "c.json"),
                        host="127.0.0.1", port=0, protocols=["tcp"])
    async with EventTap(stack.nats_url) as tap:
        await agent.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", agent.bound["tcp"])
            writer.write(b"Nov 25 04:20:00 web-4 sshd[1]: first\nNov 25 04:20:01 web-4 sshd[1]: second\n")
            await writer.drain()
        finally:
            await asyncio.wait_for(agent.stop(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the agent closed the connection
        writer.close()
        events = await tap.take(2)
    assert [e["data"]["message"] for e in events] == ["first", "second"]
