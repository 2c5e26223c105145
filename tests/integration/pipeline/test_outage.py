"""PostgreSQL goes away mid-stream: the engine waits and retries, then every finding arrives."""
from __future__ import annotations

import asyncio

import nats
import orjson

from opmas.connectors.nats.replay import agent_of
from opmas.connectors.nats.subjects import EVENTS_STREAM
from opmas import metrics
from tests.integration.pipeline.conftest import finding_ids_in_postgres, running
from tests.expected import expected_findings, sample_objects
from tests.waiting import wait_until


def _retries() -> float:
    return metrics.SINK_RETRIES.labels("postgres")._value.get()


async def test_postgres_outage_delays_but_loses_nothing(config, archive, own_postgres, rules_dir):
    events = [obj | {"id": f"out-{i}"} for i, obj in enumerate(sample_objects() * 2)]
    half = len(events) // 2
    expected = expected_findings(events, rules_dir, lambda o: agent_of(o, None), config.pipeline.partitions)
    config = config.with_overrides(pipeline={"workers": 0})
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()

    async def publish(batch: list[dict]) -> int:
        for event in batch:
            ack = await js.publish(f"opmas.events.{agent_of(event, None)}", orjson.dumps(event))
        return ack.seq

    async with running(config, archive) as pipeline:
        first = await publish(events[:half])
        await wait_until(lambda: pipeline.stats.acked_seq >= first, what="the first half acked")
        await asyncio.to_thread(own_postgres.stop)
        retries_before = _retries()
        last = await publish(events[half:])
        await wait_until(lambda: _retries() > retries_before + 2, 30, "the postgres sink to retry")
        assert pipeline.stats.acked_seq < last, "nothing may be acked while PostgreSQL is away"
        await asyncio.to_thread(own_postgres.start)
        await wait_until(lambda: pipeline.stats.acked_seq >= last, 60, "every message acked after the outage")
        assert (await js.stream_info(EVENTS_STREAM)).state.last_seq == last
    await nc.close()
    assert sorted(await finding_ids_in_postgres(config.postgres.url)) == sorted(expected)
    assert archive.count() == len(events)
