"""``opmas api nats-callout`` for a nats-server OPMAS does not start: it prints the server's
configuration fragment, then runs the callout against it; an agent of the registry gets in, a wrong
secret does not, and a revocation announced on ``opmas.auth.revoked`` cuts the agent off."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import nats
import pytest

from opmas.connectors.nats.subjects import REVOKED_SUBJECT, events_subject, inbox_prefix
from opmas.runtime.embedded import free_port, start_nats
from tests.integration.nats_auth.conftest import CALLOUT_PASSWORD, SERVICE_PASSWORD, SYSTEM_PASSWORD


async def test_the_callout_command_serves_an_external_server(tmp_path, registry):
    port = free_port()
    env = os.environ | {"OPMAS_DATA_DIR": str(tmp_path / "data"), "NATS_URL": f"nats://127.0.0.1:{port}",
                        "OPMAS_DB_URL": registry.url, "NATS_PASSWORD": SERVICE_PASSWORD,
                        "OPMAS_NATS_CALLOUT_PASSWORD": CALLOUT_PASSWORD,
                        "OPMAS_NATS_SYSTEM_PASSWORD": SYSTEM_PASSWORD}
    env.pop("NATS_USER", None)
    command = [sys.executable, "-m", "opmas.cli", "api", "nats-callout"]
    printed = subprocess.run([*command, "--print-config"], env=env, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert SERVICE_PASSWORD not in printed.stdout and "auth_callout" in printed.stdout  # hashes, not passwords
    server = start_nats(tmp_path / "nats", port=port, authorization=printed.stdout)
    callout = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        await registry.add("ext-a1", "ext-secret-1")
        agent = None
        for _ in range(100):  # until the callout answers
            try:
                agent = await nats.connect(server.url, user="ext-a1", password="ext-secret-1", allow_reconnect=False,
                                           inbox_prefix=inbox_prefix("ext-a1"), connect_timeout=2)
                break
            except (nats.errors.Error, OSError):
                assert callout.poll() is None, callout.stderr.read()
                await asyncio.sleep(0.2)
        assert agent is not None and agent.is_connected
        with pytest.raises(Exception, match="Authorization Violation|no servers"):
            await nats.connect(server.url, user="ext-a1", password="wrong", allow_reconnect=False,
                               max_reconnect_attempts=0, connect_timeout=2)
        lost = asyncio.Event()

        async def on_disconnect() -> None:
            lost.set()

        watched = await nats.connect(server.url, user="ext-a1", password="ext-secret-1", allow_reconnect=False,
                                     inbox_prefix=inbox_prefix("ext-a1"), disconnected_cb=on_disconnect)
        await watched.publish(events_subject("ext-a1"), b"{}")
        await registry.delete("ext-a1")
        service = await nats.connect(server.url, user="opmas", password=SERVICE_PASSWORD)
        await service.publish(REVOKED_SUBJECT, b"ext-a1")  # what DELETE /agents/{id} announces
        await service.flush()
        await asyncio.wait_for(lost.wait(), 5)
        for nc in (agent, watched, service):
            await nc.close()
    finally:
        callout.send_signal(signal.SIGINT)
        assert callout.wait(20) == 0
        server.stop()
