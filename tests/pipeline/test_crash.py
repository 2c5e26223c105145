"""kill -9 in the middle of a stream: after a restart no finding is lost, none doubled, every event
archived once."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import orjson
import pytest
from nats.js.errors import NotFoundError

from connectors.clickhouse.archive import Archive, connect
from connectors.nats.subjects import EVENTS_STREAM, FINDINGS_STREAM, ensure_streams
from opmas.commands.replay import agent_of
from tests.pipeline.conftest import (expected_finding_ids, finding_ids_in_postgres, sample_objects,
                                     wait_until)

EVENTS = 2400


def numbered_events() -> list[dict]:
    """The sample log cycled to EVENTS events, each with its own id."""
    sample = sample_objects()
    return [sample[i % len(sample)] | {"id": f"evt-{i:05d}"} for i in range(EVENTS)]


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
    expected = expected_finding_ids(events, rules_dir, lambda o: agent_of(o, None))
    env = os.environ | {
        "NATS_URL": nats_server.url, "OPMAS_DB_URL": postgres.url, "OPMAS_DATA_DIR": str(tmp_path / "data"),
        "OPMAS_RULES": str(rules_dir), "OPMAS_WATCH_RULES": "0", "OPMAS_BATCH_SIZE": "20",
        "OPMAS_CHECKPOINT_INTERVAL": "0.3", "OPMAS_WORKERS": "2", "OPMAS_PARTITIONS": "4",
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
    assert set(in_pg) == expected, f"lost {len(expected - set(in_pg))}, unexpected {len(set(in_pg) - expected)}"
    assert on_nats == len(expected)  # re-published findings were dropped by the NATS duplicate window
    archive = Archive(connect(None, tmp_path / "data" / "clickhouse"))
    try:
        assert archive.count() == EVENTS
        rows = archive.client.query("SELECT count(), uniqExact(id) FROM events FINAL").result_rows[0]
        assert rows == (EVENTS, EVENTS)
    finally:
        archive.close()


async def _at_least(js, seq: int) -> bool:
    return await acked(js) >= seq
