"""Issue 13, part 1, end to end: on a live stream that goes quiet, a correlation is not held until some
later event arrives. The SSH brute force (thresholds: fire on crossing) published into a running engine,
and nothing after it, gives its finding at once, though lateness is a minute and no partition turns
idle; a ``lt`` count (window-closing) gives its finding ``lateness`` plus the idle timeout plus a poll
after its window's end."""
from __future__ import annotations

import time
from datetime import datetime, timezone

import nats
import orjson
import psycopg

from opmas.connectors.nats.subjects import ensure_streams
from tests.expected import TOO_FEW, TOO_FEW_ID
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


async def test_a_brute_force_fires_at_once_on_a_quiet_live_stream(config, archive):
    config = config.with_overrides(pipeline={"lateness": 60.0})  # and partitions never idle (the fixture's)
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    await ensure_streams(js)
    async with running(config, archive):
        now = time.time()
        for i in range(5):
            await js.publish("opmas.events.web-live", _auth(now - 6 + i, "failure", 50000 + i))
        await js.publish("opmas.events.web-live", _auth(now - 0.5, "success", 50010))
        sent = time.monotonic()
        # nothing after it, and the watermark stays a minute behind: only firing on crossing gives it
        await wait_until(lambda: _found(config.postgres.url), 30, "the brute-force finding with no later event")
        waited = time.monotonic() - sent
    await nc.close()
    assert _found(config.postgres.url) == [BRUTE_FORCE_SUCCEEDED]
    assert waited < 15  # a batch or two, with room for a loaded machine; the watermark alone would take 60 s


async def test_a_window_closing_count_fires_after_its_window_on_a_quiet_live_stream(config, archive, rules_dir):
    (rules_dir / "too_few.yml").write_text(TOO_FEW)
    config = config.with_overrides(pipeline={"lateness": LATENESS, "partition_idle": IDLE})
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    await ensure_streams(js)
    async with running(config, archive):
        event = orjson.loads(_auth(time.time(), "failure", 50020))
        event["message"] = "heartbeat from web-live"
        await js.publish("opmas.events.web-live", orjson.dumps(event))
        sent = time.monotonic()
        with psycopg.connect(config.postgres.url) as conn:
            def found() -> list:
                return conn.execute("SELECT id FROM findings WHERE rule_id = %s",
                                    (TOO_FEW_ID,)).fetchall()
            await wait_until(found, 30, "the too-few finding with no later event")
        waited = time.monotonic() - sent
    await nc.close()
    assert 3 + LATENESS - 1 < waited < 3 + LATENESS + IDLE + 15  # window, lateness, idle: the documented bound
