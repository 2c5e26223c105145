"""The sinks are idempotent: a batch written twice changes nothing."""
from __future__ import annotations

import os

import orjson
import pytest

from opmas.connectors.clickhouse.archive import Archive, connect, encode_row
from opmas.connectors.nats.client import settle
from opmas.connectors.postgres.sink import PostgresSink
from opmas.connectors.store import Checkpoint, Written
from opmas.connectors.records import EventRecord, FindingRecord
from opmas.core.event import Event
from opmas.core.finding import Finding, finding_id


def rows(n: int, start: int = 0) -> bytes:
    return b"".join(encode_row(f"ev-{i}", 1764043200.0 + i, f"agent-{i % 3}", "linux.auth",
                               b'{"message": "m%d"}' % i, i) for i in range(start, start + n))


def check_archive_dedup(archive: Archive) -> None:
    archive.ensure_table()
    archive.insert_block(rows(100))
    archive.insert_block(rows(100))  # the same batch re-sent after a crash
    archive.insert_block(rows(50, start=80))  # overlapping with the first
    assert archive.count() == 130
    newest = archive.events(limit=1)[0]
    assert newest["id"] == "ev-129" and newest["data"] == {"message": "m129"}
    assert archive.count("agent_id = {a:String}", {"a": "agent-0"}) == 44


def test_archive_deduplicates_re_sent_rows_embedded(chdb_dir):
    archive = Archive(connect(None, chdb_dir))
    try:
        check_archive_dedup(archive)
    finally:
        archive.close()


@pytest.mark.skipif(not os.environ.get("OPMAS_TEST_CLICKHOUSE_URL"),
                    reason="no ClickHouse server can be installed here; set OPMAS_TEST_CLICKHOUSE_URL "
                           "(e.g. http://default:@localhost:8123/opmas_test) to test the server path")
def test_archive_deduplicates_re_sent_rows_on_a_server():
    archive = Archive(connect(os.environ["OPMAS_TEST_CLICKHOUSE_URL"]))
    try:
        archive.client.command("DROP TABLE IF EXISTS events")
        check_archive_dedup(archive)
    finally:
        archive.close()


def records(findings: list[Finding], events: list[Event]) -> tuple[list[FindingRecord], list[EventRecord]]:
    return [FindingRecord.of(f) for f in findings], [EventRecord.of(e) for e in events]


def finding(n: int) -> Finding:
    return Finding(id=finding_id("r1", [f"e{n}"]), rule_id="r1", rule_title="Rule", severity="high",
                   tags=["attack.t1110"], event_ids=[f"e{n}"], timestamp=1764043200.0 + n, title=f"t{n}",
                   agent_id="a1", details={"n": n})


async def test_postgres_sink_is_idempotent_and_keeps_the_checkpoint(postgres):
    sink = PostgresSink(postgres.url)
    await sink.migrate()
    events = [Event(f"e{n}", {"n": n}, 1764043200.0 + n, "a1", "linux.auth") for n in range(3)]
    findings = [finding(n) for n in range(3)]
    await sink.write(*records(findings, events), Checkpoint("c1", 10, {"partitions": 2}, {"0": {"x": 1}}))
    await sink.write(*records(findings, events), Checkpoint("c1", 12, {"partitions": 2}, {"0": {"x": 2}}))
    conn = await sink._connection()
    cur = await conn.execute("SELECT count(*), min(severity), max(details->>'n') FROM findings")
    assert await cur.fetchone() == (3, "high", "2")
    cur = await conn.execute("SELECT count(*) FROM events")
    assert (await cur.fetchone())[0] == 3
    await conn.commit()
    checkpoint = await sink.load_checkpoint("c1")
    assert (checkpoint.seq, checkpoint.state) == (12, {"0": {"x": 2}})
    assert await sink.load_checkpoint("other") is None
    await sink.close()


async def test_only_findings_stored_for_the_first_time_wait_in_the_outbox(postgres):
    sink = PostgresSink(postgres.url)
    await sink.migrate()
    first = await sink.write(*records([finding(1), finding(2)], []), Checkpoint("c1", 1, {}, {}))
    assert sorted(first.stored) == sorted([finding(1).id, finding(2).id])
    again = await sink.write(*records([finding(2), finding(3)], []), Checkpoint("c1", 2, {}, {}), announced=first.stored[:1])
    assert again.stored == [finding(3).id]  # finding 2 was stored before: not announced twice
    assert await sink.unannounced(older_than=3600) == []  # a sweep leaves a live writer's rows to it
    left = await sink.unannounced()
    assert sorted(r.id for r in left) == sorted([*first.stored[1:], finding(3).id])
    record = next(r for r in left if r.id == finding(3).id)
    assert orjson.loads(record.json) == orjson.loads(FindingRecord.of(finding(3)).json)  # as it was published
    await sink.write([], [], announced=[r.id for r in left])
    assert await sink.unannounced() == []
    await sink.close()


async def test_postgres_sink_takes_nul_and_absurd_times_and_refuses_only_the_bad_row(postgres):
    sink = PostgresSink(postgres.url)
    await sink.migrate()
    nul = Event("e\x00nul", {"message": "a\x00b", "k\x00": ["\x00", "\\u0000 stays"]}, 1e14, "a1", "linux.auth")
    absurd = finding(1)
    absurd.title, absurd.event_ids, absurd.timestamp = "t\x00itle", [nul.id], float("inf")
    absurd.details = {"event": nul.data}
    assert (await sink.write(*records([absurd], [nul]), Checkpoint("c1", 5, {}, {}))).rejected == []
    conn = await sink._connection()
    cur = await conn.execute("SELECT id, timestamp, data FROM events")
    assert await cur.fetchall() == [("enul", None, {"message": "ab", "k": ["", "\\u0000 stays"]})]
    cur = await conn.execute("SELECT title, event_ids, event_time, details FROM findings")
    assert await cur.fetchall() == [("title", ["enul"], None, {"event": {"message": "ab", "k": ["", "\\u0000 stays"]}})]
    await conn.commit()

    not_a_uuid = finding(2)
    not_a_uuid.id = "not-a-uuid"
    written = await sink.write(*records([finding(3), not_a_uuid], [Event("e4", {"n": 4})]), Checkpoint("c1", 9, {}, {}))
    assert [(r.item.id, r.reason.split(":")[0]) for r in written.rejected] == [("not-a-uuid", "InvalidTextRepresentation")]
    assert written.stored == [finding(3).id]
    cur = await conn.execute("SELECT count(*) FROM findings")
    assert (await cur.fetchone())[0] == 2  # the good rows of the batch are written
    cur = await conn.execute("SELECT count(*) FROM events WHERE id = 'e4'")
    assert (await cur.fetchone())[0] == 1
    await conn.commit()
    assert (await sink.load_checkpoint("c1")).seq == 5  # the caller saves it once the rejects are recorded
    await sink.close()


async def test_rows_postgres_refuses_become_dead_letters_then_the_checkpoint_is_saved(postgres, nats_server):
    """write_store, which the pipeline and the Faust workers share."""
    import asyncio

    import nats
    import orjson

    from opmas.connectors.nats.subjects import ensure_streams
    from opmas.connectors.nats.publishers import NatsDeadLetterSink
    from opmas.runtime.outputs import write_store

    sink = PostgresSink(postgres.url)
    await sink.migrate()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    letters: list[dict] = []

    async def collect(msg) -> None:
        letters.append(orjson.loads(msg.data))

    await nc.subscribe("opmas.deadletter", cb=collect)
    await settle(nc)
    bad = finding(2)
    bad.id = "not-a-uuid"
    dead, new = await write_store(sink, NatsDeadLetterSink(js), *records([finding(1), bad], []),
                                  Checkpoint("c1", 7, {}, {}), 0.5, asyncio.Event())
    assert [d.reason.split(": ")[:2] for d in dead] == [["postgres", "finding not-a-uuid refused"]]
    assert [f.id for f in new] == [finding(1).id]
    await nc.flush()
    assert [(letter["subject"], orjson.loads(letter["payload"])["id"]) for letter in letters] == \
        [("opmas.findings.high", "not-a-uuid")]
    assert (await sink.load_checkpoint("c1")).seq == 7
    await nc.close()
    await sink.close()


async def test_postgres_copy_takes_odd_values_unchanged(postgres):
    """The bulk path (COPY text format): escapes, quotes, unicode, NULL look-alikes and huge values come back as
    they went in (NUL characters dropped, as PostgreSQL cannot hold them)."""
    sink = PostgresSink(postgres.url)
    await sink.migrate()

    async def no_row_by_row(*args):
        raise AssertionError("the batch fell back to row-by-row writes")

    sink._write_rows = no_row_by_row
    odd = ["tab\there", "new\nline", "cr\rret", "back\\slash", "\\N", "NULL", "", "quote\"d", "{brace},comma",
           "ünïcödé ✓ 🛡️ שלום", "e\u0301", "\\\\double", "trailing\\"]
    huge = "x" * (4 << 20) + "\\\t\n"
    data = {o: o for o in odd} | {"nul\x00key": "a\x00b", "literal": "\\u0000 stays",
                                  "nested": {"list": odd, "n": 1.5, "none": None, "t": True}}
    events = [Event(f"ev{i} {o}", {"v": o, "all": data}, 1764043200.0 + i, o or None, o) for i, o in enumerate(odd)]
    findings = []
    for i, o in enumerate(odd):
        f = finding(i)
        f.rule_id, f.rule_title, f.title, f.description, f.group_key = o, o + "!", o, o, o
        f.tags, f.event_ids, f.details = odd, [o, f"ev{i} {o}"], {"event": data}
        findings.append(f)
    findings[0].agent_id = None
    events[0].data["huge"] = findings[0].details["huge"] = huge
    assert (await sink.write(*records(findings, events), Checkpoint("c1", 3, {}, {}))).rejected == []
    clean = {o: o for o in odd} | {"nulkey": "ab", "literal": "\\u0000 stays", "nested": data["nested"]}
    conn = await sink._connection()
    cur = await conn.execute("SELECT id, agent_id, type, data FROM events ORDER BY timestamp")
    assert await cur.fetchall() == [(f"ev{i} {o}", o or None, o, {"v": o, "all": clean} | ({"huge": huge} if i == 0 else {}))
                                    for i, o in enumerate(odd)]
    cur = await conn.execute("SELECT rule_id, rule_title, title, description, group_key, tags, event_ids, agent_id,"
                             " details FROM findings ORDER BY event_time")
    rows = await cur.fetchall()
    assert rows == [(o, o + "!", o, o, o, odd, [o, f"ev{i} {o}"], None if i == 0 else "a1",
                     {"event": clean} | ({"huge": huge} if i == 0 else {})) for i, o in enumerate(odd)]
    await conn.commit()
    # written again (a replay): nothing changes, and the staging tables are empty after each commit
    assert await sink.write(*records(findings, events), Checkpoint("c1", 4, {}, {})) == Written([], [])
    cur = await conn.execute("SELECT (SELECT count(*) FROM findings), (SELECT count(*) FROM events),"
                             " (SELECT count(*) FROM opmas_findings_in), (SELECT count(*) FROM opmas_events_in)")
    assert await cur.fetchone() == (len(odd), len(odd), 0, 0)
    await conn.commit()
    await sink.close()


def test_records_give_back_the_finding_and_the_event_as_json():
    """A FindingRecord's NATS message is the finding's JSON; an EventRecord's dead-letter payload is read back
    from its COPY row, escapes undone."""
    import orjson

    f = finding(1)
    f.title, f.details = "tab\there", {"event": {"path": "C:\\x\ty\n", "none": None}}
    assert orjson.loads(FindingRecord.of(f).json) == orjson.loads(f.to_json())
    event = Event("e\t1", {"a": "x\\y\n\r", "b": [1, None], "\\N": "\\N"}, 1764043200.5, None, "t\\y")
    assert orjson.loads(EventRecord.of(event).json) == {
        "id": "e\t1", "agent_id": None, "timestamp": "2025-11-25T04:00:00.500000+00:00", "type": "t\\y",
        "data": {"a": "x\\y\n\r", "b": [1, None], "\\N": "\\N"}}
