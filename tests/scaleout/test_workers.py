"""Faust workers over Tansu give exactly the findings of the single-process engine, even when a worker
is SIGKILLed mid-stream and its partitions move to the other one."""
from __future__ import annotations

import asyncio

import nats
import orjson
import psycopg

from benchmarks.generate import generate
from connectors.clickhouse.archive import Archive, connect
from connectors.nats.source import SourceMessage
from connectors.nats.subjects import FINDINGS_STREAM, ensure_streams, events_subject
from opmas.paths import RULES_DIR
from opmas.runtime.intake import Intake
from opmas.runtime.partitions import Partitions
from opmas.runtime.rules import RuleFiles
from tests.scaleout.conftest import PARTITIONS, wait_until

AGENTS = 8
PER_MESSAGE = 25  # events per NATS message (JSON lines)


def event_log(count: int, seed: int) -> list[tuple[str, bytes]]:
    """(subject, payload) messages of a generated mixed log, spread over AGENTS agents."""
    events = list(generate("mixed", count, seed))
    out = []
    for start in range(0, count, PER_MESSAGE):
        chunk = events[start:start + PER_MESSAGE]
        agent = f"agent-{(start // PER_MESSAGE) % AGENTS}"
        out.append((events_subject(agent), b"\n".join(orjson.dumps(e) for e in chunk)))
    return out


def offline_finding_ids(messages: list[tuple[str, bytes]]) -> set[str]:
    """The findings of the embedded runtime's partition processors over the same messages, in order."""
    ruleset, _ = RuleFiles((RULES_DIR,)).load()
    decoded = Intake(1 << 20).decode([SourceMessage(subject, data, seq, 0.0, None, None)
                                      for seq, (subject, data) in enumerate(messages, 1)])
    assert not decoded.dead
    return {f.id for f in Partitions(ruleset, PARTITIONS, "agent").process(decoded.events)}


async def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for subject, data in messages:
        await js.publish(subject, data)
    await nc.close()


async def findings_on_nats(url: str) -> int:
    nc = await nats.connect(url)
    info = await nc.jetstream().stream_info(FINDINGS_STREAM)
    await nc.close()
    return info.state.messages


def finding_ids(db_url: str) -> list[str]:
    try:
        with psycopg.connect(db_url) as conn:
            return [row[0] for row in conn.execute("SELECT id::text FROM findings")]
    except psycopg.errors.UndefinedTable:
        return []


def test_workers_find_what_the_embedded_engine_finds(spawn, nats_server, postgres, chdb_dir):
    messages = event_log(3000, seed=11)
    expected = offline_finding_ids(messages)
    assert len(expected) > 300  # the log exercises many rules
    bridge = spawn("bridge")
    worker = spawn("worker")
    archiver = spawn("archiver", OPMAS_DATA_DIR=str(chdb_dir.parent), OPMAS_CLICKHOUSE_URL="")
    asyncio.run(publish(nats_server.url, messages))
    procs = (bridge, worker, archiver)
    wait_until(lambda: len(finding_ids(postgres.url)) >= len(expected), 90, "findings in PostgreSQL", procs)
    assert set(finding_ids(postgres.url)) == expected
    assert asyncio.run(findings_on_nats(nats_server.url)) == len(expected)
    archiver.stop()
    archive = Archive(connect(None, chdb_dir.parent / "clickhouse"))
    assert archive.count() == 3000
    archive.close()
