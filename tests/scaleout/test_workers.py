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


def assigned(proc) -> set[int]:
    """Partitions a worker restored a processor for, from its log."""
    found = set()
    for line in proc.log.read_text(errors="replace").splitlines():
        if "partition assigned" in line and '"partition":' in line:
            found.add(int(line.split('"partition":')[1].split(",")[0].strip(" }")))
    return found


def test_killed_worker_loses_and_doubles_nothing(spawn, nats_server, postgres):
    messages = event_log(6000, seed=23)
    expected = offline_finding_ids(messages)
    third = len(messages) // 3
    bridge = spawn("bridge")
    w1 = spawn("worker", name="w1")
    w2 = spawn("worker", name="w2")
    procs = (bridge, w1, w2)
    asyncio.run(publish(nats_server.url, messages[:third]))
    wait_until(lambda: assigned(w1) and assigned(w2), 60, "both workers to own partitions", procs)
    wait_until(lambda: len(finding_ids(postgres.url)) > 0, 60, "first findings", procs)
    asyncio.run(publish(nats_server.url, messages[third:2 * third]))
    w2.kill()
    lost = assigned(w2)
    asyncio.run(publish(nats_server.url, messages[2 * third:]))
    wait_until(lambda: len(finding_ids(postgres.url)) >= len(expected), 120, "all findings", procs)
    assert lost <= assigned(w1)  # the survivor took the killed worker's partitions
    ids = finding_ids(postgres.url)
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert asyncio.run(findings_on_nats(nats_server.url)) == len(expected)
