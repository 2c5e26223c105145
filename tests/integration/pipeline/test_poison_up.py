"""`opmas up` against poison messages (issue 11, item 1), end to end: a message of 900,000 bytes of
0x80-0xFF (its dead letter, base64, was over the 1 MiB max payload and retried forever, so no agent's
event after it was processed) and an event whose finding is over the max payload do not stop the
pipeline; the dead letter carries the reason, size and SHA-256 and the whole payload is kept."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
import orjson
import psycopg
import pytest

from opmas.connectors.nats.subjects import DEADLETTER_STREAM, DEADLETTER_SUBJECT, PAYLOAD_BUCKET
from opmas.runtime.embedded import free_port
from tests.integration.pipeline.test_poison import POISON
from tests.integration.pipeline.test_up import start_up, wait_for_line
from tests.natsauth import service_options

RULE_ID = "0d0d0d0d-0000-4000-8000-0000000000aa"
MARKER = f"""title: Marker
id: {RULE_ID}
logsource: {{}}
level: low
detection:
  sel:
    marker|startswith: ok-
  condition: sel
finding:
  title: 'marker {{marker}}'
  description: 'marker {{marker}} again'
"""
BIG = "ok-big-" + "x" * 400_000  # its finding holds it three times: over 1 MiB


async def _publish(url: str, data_dir: Path) -> int:
    """The poison, then three agents' marker events, the big one among them; returns how many events."""
    nc = await nats.connect(url, **service_options(data_dir))
    js = nc.jetstream()
    sent = 0
    try:
        await js.publish("opmas.events.poison", POISON)
        for i in range(10):
            for agent in range(3):
                marker = BIG if (i, agent) == (5, 1) else f"ok-{agent}-{i}"
                await js.publish(f"opmas.events.agent-{agent}", orjson.dumps({"id": f"{agent}-{i}", "marker": marker}))
                sent += 1
    finally:
        await nc.close()
    return sent


async def _stored(url: str, data_dir: Path) -> tuple[list[dict], bytes, dict]:
    """The dead letters, the whole payload kept for the first, and the big finding as published."""
    nc = await nats.connect(url, **service_options(data_dir))
    js = nc.jetstream()
    try:
        sub = await js.pull_subscribe(DEADLETTER_SUBJECT, stream=DEADLETTER_STREAM)
        letters = [orjson.loads(m.data) for m in await sub.fetch(10, timeout=5)]
        kept = (await (await js.object_store(PAYLOAD_BUCKET)).get(letters[0]["payload_sha256"])).data
        sub = await js.pull_subscribe("opmas.findings.low", stream="OPMAS_FINDINGS")
        findings = [orjson.loads(m.data) for m in await sub.fetch(100, timeout=5)]
    finally:
        await nc.close()
    return letters, kept, next(f for f in findings if f["event_ids"] == ["1-5"])


def _count(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM findings WHERE rule_id = %s", (RULE_ID,)).fetchone()[0]


@contextmanager
def opmas_up(tmp_path: Path, rules: Path, port: int) -> Iterator[tuple[subprocess.Popen, Path]]:
    """`opmas up` on its own embedded servers with ``rules``; a run the test left running gets Ctrl-C."""
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "OPMAS_DB_URL", "OPMAS_CLICKHOUSE_URL")}
    env |= {"OPMAS_DATA_DIR": str(tmp_path / "data"), "OPMAS_NATS_PORT": str(port), "OPMAS_RULES": str(rules),
            "OPMAS_WORKERS": "1", "OPMAS_API_PORT": str(free_port()), "OPMAS_CACHE_DIR": "off"}
    log = tmp_path / "up.log"
    up = start_up(env, log)
    try:
        yield up, log
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)  # as Ctrl-C (a kill would leave the embedded servers)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()


@pytest.mark.timeout(300)
def test_a_poison_message_does_not_stop_a_running_engine(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "marker.yml").write_text(MARKER)
    port = free_port()
    with opmas_up(tmp_path, rules, port) as (up, log):
        wait_for_line(log, r"OPMAS is up", up)
        db_url = wait_for_line(log, r"PostgreSQL  (\S+)", up).group(1)
        url = f"nats://127.0.0.1:{port}"
        sent = asyncio.run(_publish(url, tmp_path / "data"))
        deadline = time.monotonic() + 60
        while _count(db_url) < sent and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _count(db_url) == sent  # every other agent's events, the one with the big finding too

        letters, kept, big = asyncio.run(_stored(url, tmp_path / "data"))
        assert len(letters) == 1
        letter = letters[0]
        assert letter["reason"].startswith("malformed JSON") and letter["subject"] == "opmas.events.poison"
        assert (letter["seq"], letter["payload_size"], letter["payload_truncated"]) == (1, len(POISON), True)
        assert letter["payload_sha256"] == hashlib.sha256(POISON).hexdigest() and kept == POISON
        assert big["details"]["truncated"] is True and big["title"] == f"marker {BIG}"
        with psycopg.connect(db_url) as conn:  # PostgreSQL holds the big finding whole
            details = conn.execute("SELECT details FROM findings WHERE event_ids = %s",
                                   (["1-5"],)).fetchone()[0]
        assert details["event"]["marker"] == BIG
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
