"""Resuming: a checkpoint ahead of the events stream (stream recreated) does not skip new events."""
from __future__ import annotations

import nats
import orjson

from opmas.connectors.postgres.sink import PostgresSink
from opmas.connectors.store import Checkpoint
from tests.integration.pipeline.conftest import running
from tests.waiting import wait_until


async def test_checkpoint_ahead_of_a_new_stream_starts_from_its_beginning(config, archive):
    config = config.with_overrides(pipeline={"workers": 0})
    sink = PostgresSink(config.postgres.url)
    await sink.migrate()
    await sink.write([], [], Checkpoint(config.pipeline.consumer, 5000, {"partitions": config.pipeline.partitions,
                                                               "key": config.pipeline.partition_key}, {}))
    await sink.close()
    nc = await nats.connect(config.nats.url)
    async with running(config, archive) as pipeline:
        js = nc.jetstream()
        for i in range(3):
            ack = await js.publish("opmas.events.a1", orjson.dumps({"id": f"n{i}", "message": "hello"}))
        await wait_until(lambda: pipeline.stats.acked_seq >= ack.seq, 30, "the new events acked")
    await nc.close()
    assert archive.count() == 3
    sink = PostgresSink(config.postgres.url)
    assert (await sink.load_checkpoint(config.pipeline.consumer)).seq == 3
    await sink.close()
