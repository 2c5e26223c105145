"""kill -9 in the middle of a stream: after a restart no finding is lost, none doubled, every event
archived once; correlation windows open at the kill (SSH brute force then success) still fire once."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import orjson
import psycopg
import pytest
from nats.js.errors import NotFoundError

from opmas.connectors.clickhouse.archive import Archive, connect
from opmas.core.event import format_time
from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.connectors.nats.replay import agent_of
from opmas.connectors.nats.subjects import EVENTS_STREAM, FINDINGS_STREAM, ensure_streams
from tests.integration.pipeline.conftest import UNSTORED_CITED_EVENTS, finding_ids_in_postgres
from tests.expected import expected_findings, sample_objects
from tests.waiting import wait_until

EVENTS = 2400


def brute_force(ip: int) -> list[dict]:
    """Five failed SSH logins from one address, then a successful one (the shipped correlation)."""
    base = 1795651200 + ip * 20  # from 2026-11-26T00:00:00Z (after the sample's times), one every 20 s
    out = []
    for j in range(6):
        outcome, verb = ("success", "Accepted") if j == 5 else ("failure", "Failed")
        out.append({"id": f"ssh-{ip}-{j}", "@timestamp": format_time(base + j * 5),
                    "event": {"dataset": "linux.auth", "outcome": outcome}, "host": {"name": f"bastion-{ip % 3}"},
                    "process": {"name": "sshd", "pid": 1000 + j}, "source": {"ip": f"203.0.113.{ip}", "port": 50000 + j},
                    "user": {"name": "deploy"},
                    "message": f"{verb} password for deploy from 203.0.113.{ip} port {50000 + j} ssh2"})
    return out


def numbered_events() -> list[dict]:
    """The sample log cycled with its own ids, every third event an SSH brute force step; one
    second apart in stream order, as a live stream of all the agents is."""
    sample = sample_objects()
    attacks = [event for ip in range(EVENTS // 18) for event in brute_force(ip)]
    out = []
    for i in range(EVENTS - len(attacks)):
        out.append(sample[i % len(sample)] | {"id": f"evt-{i:05d}"})
        if i % 2 == 1 and attacks:
            out.append(attacks.pop(0))
    out += attacks
    for n, event in enumerate(out):
        if "@timestamp" in event:
            event["@timestamp"] = format_time(1795651200 + n)
    return out


def start_engine(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opmas.cli", "up"], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


async def acked(js) -> int:
    try:
        info = await js.consumer_info(EVENTS_STREAM, "opmas-engine")
    except NotFoundError:
        return 0
    return info.ack_floor.stream_seq if info.ack_floor else 0


@pytest.mark.timeout(180)
async def test_sigkill_mid_stream_loses_and_doubles_nothing(tmp_path, nats_server, postgres, rules_dir):
    events = numbered_events()
    assert len(events) == EVENTS
    expected = expected_findings(events, rules_dir, lambda o: agent_of(o, None), 4)
    correlation_rules = _correlation_rule_ids(rules_dir)
    correlated = {f for f, rule in expected.items() if rule in correlation_rules}
    assert len(correlated) >= 50, "the stream must exercise correlation windows"
    env = os.environ | {
        "NATS_URL": nats_server.url, "OPMAS_DB_URL": postgres.url, "OPMAS_DATA_DIR": str(tmp_path / "data"),
        "OPMAS_RULES": str(rules_dir), "OPMAS_WATCH_RULES": "0", "OPMAS_BATCH_SIZE": "20",
        "OPMAS_CHECKPOINT_INTERVAL": "0.3", "OPMAS_WORKERS": "2", "OPMAS_PARTITIONS": "4",
        "OPMAS_PARTITION_IDLE": "3600",  # the restart must not make a partition idle: findings as expected
    }
    log = tmp_path / "engine.log"
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)

    async def publish() -> None:  # one event per message, at a pace the engine keeps up with
        for i, event in enumerate(events):
            await js.publish(f"opmas.events.{agent_of(event, None)}", orjson.dumps(event))
            if i % 20 == 19:
                await asyncio.sleep(0.01)

    engine = start_engine(env, log)
    publisher = asyncio.create_task(publish())
    try:
        await wait_until(lambda: acked(js), 60, "the engine to ack a first batch")
        await wait_until(lambda: _at_least(js, 600), 60, "600 events acked")
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        killed_at = await acked(js)
        assert killed_at < EVENTS, "the kill must land mid-stream"
        await asyncio.sleep(0.5)
        engine = start_engine(env, log)
        await publisher
        await wait_until(lambda: _at_least(js, EVENTS), 120, "every message acked after the restart")
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(60) == 0, log.read_text()[-3000:]
        on_nats = (await js.stream_info(FINDINGS_STREAM)).state.messages
    finally:
        if engine.poll() is None:
            engine.kill()
        publisher.cancel()
        await nc.close()

    in_pg = await finding_ids_in_postgres(postgres.url)
    assert len(in_pg) == len(set(in_pg))
    lost, unexpected = set(expected) - set(in_pg), set(in_pg) - set(expected)
    assert not lost and not unexpected, f"lost {len(lost)}, unexpected {len(unexpected)}"
    assert correlated <= set(in_pg)
    async with await psycopg.AsyncConnection.connect(postgres.url) as conn:  # every cited event is stored
        cur = await conn.execute(UNSTORED_CITED_EVENTS)
        assert (await cur.fetchone())[0] == 0
    assert on_nats == len(expected)  # re-published findings were dropped by the NATS duplicate window
    archive = Archive(connect(None, tmp_path / "data" / "clickhouse"))
    try:
        assert archive.count() == EVENTS
        rows = archive.client.query("SELECT count(), uniqExact(id) FROM events FINAL").result_rows[0]
        assert rows == (EVENTS, EVENTS)
    finally:
        archive.close()


def _correlation_rule_ids(rules: Path) -> set[str]:
    ruleset, _ = load_ruleset(sources_from_paths([rules]))
    return {r.id for r in ruleset.rules if r.kind == "correlation"}


async def _at_least(js, seq: int) -> bool:
    return await acked(js) >= seq
