"""End to end on real servers: replayed events -> findings on NATS and in PostgreSQL, events archived."""
from __future__ import annotations


import nats
import orjson
import psycopg
import pytest

from opmas.connectors.inputs import check
from opmas.connectors.nats.replay import agent_of, replay
from opmas.connectors.nats.subjects import EVENTS_STREAM
from opmas.core.partition import partition_of
from opmas import metrics
from tests.integration.pipeline.conftest import finding_ids_in_postgres, running
from tests.expected import expected_findings, SAMPLE, sample_objects
from tests.integration.pipeline.test_crash import _correlation_rule_ids, brute_force
from tests.waiting import wait_until


@pytest.mark.parametrize("key, workers", [("agent", 2), ("host.name", 2), ("agent", 0)])
async def test_replayed_sample_reaches_every_sink(config, archive, rules_dir, key, workers):
    config = config.with_overrides(pipeline={"partition_key": key, "workers": workers})
    objects = sample_objects()
    expected = expected_findings(objects, rules_dir, lambda o: agent_of(o, None), config.pipeline.partitions, key)
    assert expected, "the shipped sample must trigger the shipped rules"
    findings_before = _total(metrics.FINDINGS)
    events_before = _total(metrics.EVENTS_PROCESSED)
    nc = await nats.connect(config.nats.url)
    on_nats: list[dict] = []

    async def collect(msg):
        on_nats.append(orjson.loads(msg.data) | {"subject": msg.subject})

    await nc.subscribe("opmas.findings.>", cb=collect)
    async with running(config, archive) as pipeline:
        result = await replay(check([str(SAMPLE)]), config.nats.url, batch=7)
        assert result.events == len(objects)
        last = (await nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq
        await wait_until(lambda: pipeline.stats.acked_seq >= last, what="the engine to ack every message")
        await wait_until(lambda: len({f["id"] for f in on_nats}) >= len(expected), 10, "findings on NATS")
    await nc.close()

    assert sorted(set(await finding_ids_in_postgres(config.postgres.url))) == sorted(expected)
    assert {f["id"] for f in on_nats} == set(expected)
    assert all(f["subject"] == f"opmas.findings.{f['severity']}" for f in on_nats)
    assert _total(metrics.FINDINGS) - findings_before == len(expected)
    assert _total(metrics.EVENTS_PROCESSED) - events_before == len(objects)
    distinct_ids = len({(o.get("id") or orjson.dumps(o, option=orjson.OPT_SORT_KEYS)) for o in objects})
    assert archive.count() == distinct_ids
    async with await psycopg.AsyncConnection.connect(config.postgres.url) as conn:
        cur = await conn.execute("SELECT count(*) FROM events e WHERE EXISTS"
                                 " (SELECT 1 FROM findings f WHERE e.id = ANY(f.event_ids))")
        referenced = (await cur.fetchone())[0]
        cur = await conn.execute("SELECT count(DISTINCT x) FROM findings, unnest(event_ids) x")
        assert referenced == (await cur.fetchone())[0] > 0


async def test_bad_input_goes_to_dead_letters_and_the_stream_goes_on(config, archive):
    config = config.with_overrides(nats={"max_message_bytes": 4096})
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    letters: list[dict] = []

    async def collect(msg):
        letters.append(orjson.loads(msg.data))

    await nc.subscribe("opmas.deadletter", cb=collect)
    counted_before = _dead_letters_counted()
    good = {"id": "ok-1", "agent_id": "web-1", "type": "web.access", "timestamp": "2026-11-25T04:00:00Z",
            "data": {"message": "hello"}}
    async with running(config, archive) as pipeline:
        await js.publish("opmas.events.web-1", b"{not json")
        await js.publish("opmas.events.web-1", b"\xff\xfe binary")
        await js.publish("opmas.events.web-1", orjson.dumps({"agent_id": "web-1", "type": 7, "data": {}}))
        await js.publish("opmas.events.web-1", orjson.dumps(good | {"timestamp": "yesterday-ish"}))
        await js.publish("opmas.events.web-1", b"[1, 2]")
        await js.publish("opmas.events.web-1", b'{"message": "' + b"x" * 5000 + b'"}')
        await js.publish("opmas.events.web-1", orjson.dumps(good) + b"\n{broken\n" + orjson.dumps(
            good | {"id": "ok-2"}))
        last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
        await wait_until(lambda: pipeline.stats.acked_seq >= last, what="every message acked")
        await wait_until(lambda: len(letters) >= 8, 10, "dead letters")
        assert pipeline.stats.dead_letters == 8
    await nc.close()
    assert _dead_letters_counted() - counted_before == 8
    reasons = sorted(letter["reason"].split(":")[0] for letter in letters)
    assert reasons == sorted(["malformed JSON", "malformed JSON", "schema", "schema", "not a JSON object",
                              "not a JSON object", "oversized", "malformed JSON"])
    binary = next(letter for letter in letters if letter["payload_encoding"] == "base64")
    assert binary["subject"] == "opmas.events.web-1" and binary["seq"] == 2
    broken = next(letter for letter in letters if letter.get("line") == 2)
    assert broken["payload"] == "{broken"
    assert archive.count() == 2  # the two good events of the last message
    assert {e["id"] for e in archive.events()} == {"ok-1", "ok-2"}


POISON = [{"agent_id": "a", "type": "t", "timestamp": 1e17, "data": {}},
          {"id": "absurd-time", "@timestamp": 1e17, "event": {"dataset": "linux.auth"}, "host": {"name": "app-03"},
           "process": {"name": "groupadd", "pid": 7504}, "message": "new group: name=wheel2, GID=1005"}]


async def test_absurd_event_times_do_not_stop_the_stream(config, archive, rules_dir):
    objects = sample_objects()
    expected = expected_findings(POISON + objects, rules_dir, lambda o: "poison" if o in POISON else agent_of(o, None),
                                 config.pipeline.partitions)
    assert expected
    untimed_before, late_before = _total(metrics.UNTIMED_EVENTS), _total(metrics.LATE_EVENTS)
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    async with running(config, archive) as pipeline:
        for obj in POISON:
            await js.publish("opmas.events.poison", orjson.dumps(obj))
        await replay(check([str(SAMPLE)]), config.nats.url, batch=7)
        last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
        await wait_until(lambda: pipeline.stats.acked_seq >= last, what="every message acked")
        await wait_until(lambda: _total(metrics.LATE_EVENTS) > late_before, 15, "the late events counted")
    assert _total(metrics.UNTIMED_EVENTS) > untimed_before  # an unparsable time: untimed, as offline
    await nc.close()
    assert sorted(set(await finding_ids_in_postgres(config.postgres.url))) == sorted(expected)
    assert archive.count("id = 'absurd-time'") == 1  # untimed: archived at its arrival time


async def test_events_of_a_correlation_finding_are_stored_when_it_fires_batches_later(config, archive, rules_dir):
    config = config.with_overrides(pipeline={"batch_size": 1})  # every event in a batch of its own
    events = [event for ip in range(8) for event in brute_force(ip)]
    expected = expected_findings(events, rules_dir, lambda o: agent_of(o, None), config.pipeline.partitions)
    correlated = {f for f, rule in expected.items() if rule in _correlation_rule_ids(rules_dir)}
    assert correlated
    nc = await nats.connect(config.nats.url)
    async with running(config, archive) as pipeline:
        for event in events:
            await nc.jetstream().publish(f"opmas.events.{agent_of(event, None)}", orjson.dumps(event))
        last = (await nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq
        await wait_until(lambda: pipeline.stats.acked_seq >= last, what="every message acked")
    await nc.close()
    async with await psycopg.AsyncConnection.connect(config.postgres.url) as conn:
        cur = await conn.execute("SELECT f.id::text, x FROM findings f, unnest(f.event_ids) x"
                                 " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = x)")
        assert await cur.fetchall() == []
    assert correlated <= set(await finding_ids_in_postgres(config.postgres.url))


def _total(counter) -> float:
    return sum(sample.value for metric in counter.collect() for sample in metric.samples
               if sample.name.endswith("_total"))


def _dead_letters_counted() -> float:
    return _total(metrics.DEAD_LETTERS)


@pytest.mark.parametrize("workers", [2, 0])
async def test_a_correlation_sees_one_address_across_agents_in_other_partitions(config, archive, rules_dir, workers):
    """The shipped SSH brute force (grouped by source.ip) from one address over three agents, each
    in its own partition, fires as it does over the whole log offline; per partition it could not."""
    config = config.with_overrides(pipeline={"workers": workers, "batch_size": 1})
    agents = _agents_in_distinct_partitions(3, config.pipeline.partitions)
    attack = brute_force(1)
    for j, event in enumerate(attack):
        event["host"]["name"] = agents[j % 3]
    later = [brute_force(9)[-1] | {"id": f"tick-{a}", "host": {"name": a}} for a in agents]  # moves each agent's time
    events = attack + later
    whole = expected_findings(events, rules_dir, lambda o: o["host"]["name"], partitions=1)
    correlated = {f for f, rule in whole.items() if rule in _correlation_rule_ids(rules_dir)}
    assert correlated  # found over the whole log
    assert correlated == {f for f, rule in expected_findings(events, rules_dir, lambda o: o["host"]["name"],
                                                             config.pipeline.partitions).items()
                          if rule in _correlation_rule_ids(rules_dir)}
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    async with running(config, archive) as pipeline:
        for event in events:
            await js.publish(f"opmas.events.{event['host']['name']}", orjson.dumps(event))
        last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
        await wait_until(lambda: pipeline.stats.acked_seq >= last, what="every message acked")
    await nc.close()
    assert correlated <= set(await finding_ids_in_postgres(config.postgres.url))


def _agents_in_distinct_partitions(count: int, partitions: int) -> list[str]:
    chosen: dict[int, str] = {}
    for i in range(100):
        chosen.setdefault(partition_of(f"bastion-{i}", partitions), f"bastion-{i}")
    assert len(chosen) >= count
    return list(chosen.values())[:count]
