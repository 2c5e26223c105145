"""Faust workers over Tansu give exactly the findings of the embedded engine and of opmas detect over the
same log, correlations included, with each brute force spread over agents (hence partitions and
workers), even when a worker is SIGKILLed mid-stream and its partitions move to the other one."""
from __future__ import annotations

import asyncio
import threading
import time

import nats
import orjson
import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from opmas.connectors.clickhouse.archive import Archive, connect
from opmas.connectors.source import SourceMessage
from opmas.core.detector import Detector
from opmas.connectors.nats.subjects import (DEADLETTER_STREAM, DEADLETTER_SUBJECT, FINDINGS_STREAM, ensure_streams,
                                      events_subject)
from opmas.runtime.embedded import free_port
from opmas.paths import RULES_DIR
from opmas.runtime.intake import Intake
from opmas.runtime.rules import RuleFiles
from tests.integration.pipeline.conftest import UNSTORED_CITED_EVENTS
from tests.expected import BRUTE_FORCE_SUCCEEDED, TOO_FEW, TOO_FEW_ID, event_log, offline_findings
from tests.integration.scaleout.conftest import PARTITIONS, wait_until

def offline_event_times(messages: list[tuple[str, bytes]]) -> dict[str, float]:
    """id -> event time of every event, as the embedded runtime archives it (the processor's)."""
    _, ruleset, _ = RuleFiles((RULES_DIR,)).load()
    events = Intake(1 << 20).decode([SourceMessage(subject, data, seq, 0.0, None, None)
                                     for seq, (subject, data) in enumerate(messages, 1)]).events
    Detector(ruleset).process(events)
    return {e.id: e.timestamp for e in events}


async def publish(url: str, messages: list[tuple[str, bytes]], pause: float = 0.0) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for subject, data in messages:
        await js.publish(subject, data)
        await asyncio.sleep(pause)
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


async def produce(kafka_url: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_url)
    await producer.start()
    await producer.send_and_wait("opmas-events", value, partition=0)
    await producer.stop()


async def dead_letters(url: str) -> list[dict]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(DEADLETTER_SUBJECT, stream=DEADLETTER_STREAM)
    try:
        return [orjson.loads(m.data) for m in await sub.fetch(10, timeout=1)]
    except nats.errors.TimeoutError:
        return []
    finally:
        await nc.close()


def test_workers_find_what_the_embedded_engine_finds(spawn, nats_server, postgres, tansu, chdb_dir):
    messages = event_log(3000, seed=11)
    expected = set(offline_findings(messages))
    assert len(expected) > 80
    total = sum(data.count(b"\n") + 1 for _, data in messages)
    bridge_port, worker_port, archiver_port = free_port(), free_port(), free_port()
    bridge = spawn("bridge", "--metrics-port", str(bridge_port))
    worker = spawn("worker", "--metrics-port", str(worker_port))
    archiver = spawn("archiver", "--metrics-port", str(archiver_port), OPMAS_DATA_DIR=str(chdb_dir.parent),
                     OPMAS_CLICKHOUSE_URL="")
    asyncio.run(publish(nats_server.url, messages))
    procs = (bridge, worker, archiver)
    wait_until(lambda: len(finding_ids(postgres.url)) >= len(expected), 90, "findings in PostgreSQL", procs)
    assert set(finding_ids(postgres.url)) == expected
    assert asyncio.run(findings_on_nats(nats_server.url)) == len(expected)
    assert metric_total(worker_port, "opmas_events_processed_total") == total
    # the correlation metrics of the partitions it holds: its checkpointed state, the brute forces' groups
    assert metric_total(worker_port, "opmas_state_bytes") > 0 and metric_total(worker_port, "opmas_state_keys") > 0
    logged = [orjson.loads(line) for line in worker.log.read_text(errors="replace").splitlines()
              if line.startswith("{")]
    assert {r["finding_id"] for r in logged if r["message"] == "finding"} == expected
    assert list(offline_findings(messages).values()).count(BRUTE_FORCE_SUCCEEDED) == 12  # over agents
    wait_until(lambda: metric_total(bridge_port, "opmas_bridge_acked_seq") == len(messages), 30,
               "the bridge acknowledging the last message", procs)
    assert metric_total(bridge_port, "opmas_bridged_events_total") == total
    assert metric_total(bridge_port, "opmas_messages_received_total") == len(messages)
    asyncio.run(produce(tansu.url, b"not an OPMAS record"))  # a foreign producer on the topic
    wait_until(lambda: asyncio.run(dead_letters(nats_server.url)), 30, "the dead letter", procs)
    [letter] = asyncio.run(dead_letters(nats_server.url))
    assert letter["reason"].startswith("kafka record 0:") and letter["payload"] == "not an OPMAS record"
    wait_until(lambda: metric_total(archiver_port, "opmas_archived_events_total") == total
               and metric_total(archiver_port, "opmas_archive_skipped_records_total") == 1, 30,
               "the archiver's counters: every event archived, the foreign record skipped", procs)
    archiver.stop()
    archive = Archive(connect(None, chdb_dir.parent / "clickhouse"))
    archived = {e["id"]: e["timestamp"].timestamp() for e in archive.events(limit=1_000_000)}
    archive.close()
    expected_times = offline_event_times(messages)
    assert len(archived) == len(expected_times) == sum(data.count(b"\n") + 1 for _, data in messages)
    assert None not in expected_times.values()
    assert archived == pytest.approx(expected_times, abs=1e-6)  # event time, not arrival time


def assigned(proc) -> set[int]:
    """Partitions a worker restored a processor for, from its log."""
    found = set()
    for line in proc.log.read_text(errors="replace").splitlines():
        if "partition assigned" in line and '"partition":' in line:
            found.add(int(line.split('"partition":')[1].split(",")[0].strip(" }")))
    return found


def test_killed_worker_loses_and_doubles_nothing(spawn, nats_server, postgres):
    messages = event_log(6000, seed=23)
    offline = offline_findings(messages)
    expected = set(offline)
    assert list(offline.values()).count(BRUTE_FORCE_SUCCEEDED) == 12  # windows open across the kill
    third = len(messages) // 3
    bridge = spawn("bridge")
    w1 = spawn("worker", name="w1")
    w2 = spawn("worker", name="w2")
    procs = (bridge, w1, w2)
    asyncio.run(publish(nats_server.url, messages[:third]))
    wait_until(lambda: assigned(w1) and assigned(w2), 60, "both workers to own partitions", procs)
    wait_until(lambda: len(finding_ids(postgres.url)) > 0, 60, "first findings", procs)
    middle = threading.Thread(target=asyncio.run, args=(publish(nats_server.url, messages[third:2 * third], 0.02),))
    middle.start()  # the second third trickles in: w2 is busy with it when it is killed
    time.sleep(0.6)
    w2.kill()
    middle.join()
    lost = assigned(w2)
    asyncio.run(publish(nats_server.url, messages[2 * third:]))
    wait_until(lambda: len(finding_ids(postgres.url)) >= len(expected), 60, "all findings", procs)
    assert lost <= assigned(w1)  # the survivor took the killed worker's partitions
    assert "checkpoint is behind" not in w1.log.read_text()  # it resumed them from their checkpoints
    ids = finding_ids(postgres.url)
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    with psycopg.connect(postgres.url) as conn:  # every event a finding cites is stored, correlations' too
        assert conn.execute(UNSTORED_CITED_EVENTS).fetchone()[0] == 0
    # a finding w2 stored but had no time to announce is announced by w1's sweep (ANNOUNCE_SWEEP)
    wait_until(lambda: asyncio.run(findings_on_nats(nats_server.url)) >= len(expected), 30,
               "every finding on NATS", procs)
    assert asyncio.run(findings_on_nats(nats_server.url)) == len(expected)


def metric_total(port: int, name: str) -> float:
    """Sum of a metric's series on a process's /metrics (0 while it is not serving yet)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    except httpx.ConnectError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + "{", name + " ")))


def test_records_without_new_events_move_the_checkpoint(spawn, nats_server, tansu):
    """A batch of only dead letters is committed: its partition's checkpoint moves with it, so the
    next owner finds the checkpoint at the committed offset, not behind it."""
    first, later = event_log(400, seed=5, attackers=0), event_log(400, seed=6, attackers=0)
    bridge = spawn("bridge")
    p1, p2 = free_port(), free_port()
    w1 = spawn("worker", "--metrics-port", str(p1), name="w1")
    asyncio.run(publish(nats_server.url, first))
    wait_until(lambda: metric_total(p1, "opmas_events_processed_total") == 400, 90, "the first events",
               (bridge, w1))
    asyncio.run(produce(tansu.url, b"not an OPMAS record"))  # partition 0's next batch: a dead letter only
    wait_until(lambda: asyncio.run(dead_letters(nats_server.url)), 30, "the dead letter", (bridge, w1))
    w1.stop()  # commits past the dead letter
    assert w1.process.returncode == 0 and "batch failed" not in w1.log.read_text()
    w2 = spawn("worker", "--metrics-port", str(p2), name="w2")
    asyncio.run(publish(nats_server.url, later))
    wait_until(lambda: metric_total(p2, "opmas_events_processed_total") == 400, 90, "the later events",
               (bridge, w2))
    assert assigned(w2) == set(range(PARTITIONS))
    assert "checkpoint is behind" not in w2.log.read_text()
    assert metric_total(p2, "opmas_checkpoints_behind_total") == 0


def test_a_window_closing_count_fires_on_a_quiet_live_stream(spawn, nats_server, postgres, tmp_path):
    """The workers' stages advance by the clock: a ``lt`` count over one live event, with nothing after
    it, fires once its window, lateness and the idle timeout have passed."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "too_few.yml").write_text(TOO_FEW)
    bridge = spawn("bridge")
    worker = spawn("worker", OPMAS_RULES=str(rules), OPMAS_LATENESS="2", OPMAS_PARTITION_IDLE="1")
    procs = (bridge, worker)
    wait_until(lambda: "worker ready" in worker.log.read_text(), 60, "the worker", procs)
    heartbeat = {"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": {"name": "web-live"},
                 "event": {"dataset": "linux.auth"}, "process": {"name": "sshd"}, "message": "heartbeat from web-live"}
    asyncio.run(publish(nats_server.url, [(events_subject("web-live"), orjson.dumps(heartbeat))]))
    wait_until(lambda: len(finding_ids(postgres.url)) == 1, 60, "the too-few finding", procs)
    with psycopg.connect(postgres.url) as conn:
        [(rule_id,)] = conn.execute("SELECT rule_id FROM findings").fetchall()
    assert rule_id == TOO_FEW_ID
    assert "batch failed" not in worker.log.read_text()
