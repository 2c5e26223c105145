"""Issue 13, part 1, end to end: on a live stream that goes quiet, a correlation is not held until some
later event arrives. The SSH brute force published into a running engine, and nothing after it, gives
its finding within ``lateness`` plus the idle timeout plus the runtime's idle poll."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import nats
import orjson
import psycopg

from opmas.connectors.nats.subjects import ensure_streams
from tests.integration.pipeline.conftest import running
from tests.waiting import wait_until

BRUTE_FORCE_SUCCEEDED = "7b6f1e0a-3c2d-4e59-9a51-0c9d2f4e8a10"  # rules/correlation/ssh_brute_force_success.yml
LATENESS, IDLE = 2.0, 1.0


def _auth(at: float, outcome: str, port: int) -> bytes:
    verb = "Failed" if outcome == "failure" else "Accepted"
    return orjson.dumps({
        "@timestamp": datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z"),
        "event": {"dataset": "linux.auth", "outcome": outcome}, "host": {"name": "web-live"},
        "process": {"name": "sshd", "pid": port}, "user": {"name": "deploy"},
        "source": {"ip": "203.0.113.99", "port": port},
        "message": f"{verb} password for deploy from 203.0.113.99 port {port} ssh2"})


def _found(db_url: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        return [r[0] for r in conn.execute("SELECT rule_id FROM findings WHERE rule_id = %s",
                                           (BRUTE_FORCE_SUCCEEDED,)).fetchall()]


async def test_a_brute_force_fires_on_a_quiet_live_stream(config, archive):
    config = config.with_overrides(pipeline={"lateness": LATENESS, "partition_idle": IDLE})
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    await ensure_streams(js)
    async with running(config, archive):
        now = time.time()
        for i in range(5):
            await js.publish("opmas.events.web-live", _auth(now - 6 + i, "failure", 50000 + i))
        await js.publish("opmas.events.web-live", _auth(now - 0.5, "success", 50010))
        sent = time.monotonic()
        # nothing after it: the finding must come from the clock, within lateness + idle + a poll or two
        await wait_until(lambda: _found(config.postgres.url), 30, "the brute-force finding with no later event")
        waited = time.monotonic() - sent
    await nc.close()
    assert _found(config.postgres.url) == [BRUTE_FORCE_SUCCEEDED]
    assert waited < LATENESS + IDLE + 15  # the documented bound, with room for a loaded machine
