"""The pipeline loop's guarantees, with the in-memory source, store, archive and sinks
(connectors/testing.py) and no server: every batch is in the archive, the dead letters and the
state store before its findings are announced, and all of that before the source commits it; a
restart resumes from the checkpoint and announces nothing twice; components that are away are
waited for, never skipped."""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import orjson

from opmas.config import Config, PipelineConfig
from opmas.connectors.nats.replay import agent_of
from opmas.connectors.testing import (Journal, MemoryArchive, MemoryDeadLetters, MemoryFindingSink, MemorySource,
                                      MemoryStore)
from opmas.paths import RULES_DIR
from opmas.runtime.pipeline import Pipeline, PipelineIO
from tests.expected import expected_findings, sample_objects
from tests.waiting import wait_until

PARTITIONS = 2
BAD = b'{"agent_id": "web-1", "type": "x", "data": [1]}'  # meant as an envelope, data not an object


def _messages(objects: list[dict]) -> list[tuple[str, bytes]]:
    return [(f"opmas.events.{agent_of(o, None)}", orjson.dumps(o)) for o in objects]


def _config(tmp_path: Path) -> Config:
    return Config(data_dir=tmp_path, pipeline=PipelineConfig(
        rules=(RULES_DIR,), partitions=PARTITIONS, workers=0, batch_size=40, batch_wait=0.01, checkpoint_interval=0.0,
        retry_max_delay=0.2, watch_rules=False, partition_idle=3600.0))


class Memory:
    """One in-memory world: what survives a pipeline's stop (the source's commit, the store)."""

    def __init__(self, objects: list[dict], store_failures: int = 0, sink_failures: int = 0):
        self.journal = Journal()
        self.source = MemorySource(_messages(objects), self.journal)
        self.store = MemoryStore(self.journal, store_failures)
        self.archive = MemoryArchive(self.journal)
        self.dead = MemoryDeadLetters(self.journal)
        self.sink = MemoryFindingSink(self.journal, sink_failures)

    @asynccontextmanager
    async def io(self):
        yield PipelineIO(self.source, self.store, self.archive, self.dead, [self.sink])

    async def run(self, config: Config) -> Pipeline:
        """One pipeline run until the source's every message is committed."""
        pipeline = Pipeline(config, self.io)
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))
        await wait_until(lambda: task.done() or self.source.committed == len(self.source.messages), 60,
                         "every message committed")
        stop.set()
        await task
        return pipeline


def _expected(objects: list[dict]) -> dict[str, str]:
    return expected_findings(objects, RULES_DIR, lambda o: agent_of(o, None), PARTITIONS)


async def test_each_batch_is_in_every_sink_before_it_is_committed(tmp_path):
    objects = sample_objects()
    memory = Memory(objects)
    memory.source.add([("opmas.events.web-1", BAD)])
    pipeline = await memory.run(_config(tmp_path))
    expected = _expected(objects)
    assert expected and sorted(memory.store.findings) == sorted(expected)
    assert sorted(f.id for f in memory.sink.findings) == sorted(expected)  # announced once each
    assert not memory.store.outbox
    assert [d.reason.split(":")[0] for d in memory.dead.letters] == ["schema"]
    assert pipeline.stats.events == len(objects) and memory.archive.blocks  # each archived (RowBinary)
    batch: list[tuple[str, str]] = []
    for component, what, detail in memory.journal.entries:
        if (component, what) != ("memory-source", "ack"):
            batch.append((component, what))
            continue
        stored = batch.index(("memory-store", "write"))  # the batch's findings and checkpoint
        assert all(c in ("memory-archive", "memory-deadletters") for c, _ in batch[:stored]), batch
        assert all(c != "memory-findings" for c, _ in batch[:stored]), batch  # announced only once stored
        assert memory.store.checkpoints["opmas-engine"].seq >= detail
        batch = []
    assert memory.source.committed == len(memory.source.messages)


async def test_a_restart_resumes_from_the_checkpoint_and_announces_nothing_twice(tmp_path):
    objects = sample_objects()
    half = len(objects) // 2
    memory = Memory(objects[:half])
    await memory.run(_config(tmp_path))
    first = set(memory.store.findings)
    memory.source.add(_messages(objects[half:]))  # more events arrive while the engine is down
    await memory.run(_config(tmp_path))  # a new pipeline: state from the store's checkpoint
    assert sorted(memory.store.findings) == sorted(_expected(objects))  # correlations across the stop included
    announced = [f.id for f in memory.sink.findings]
    assert len(announced) == len(set(announced)) and set(announced) == set(memory.store.findings) > first
    assert memory.store.checkpoints["opmas-engine"].seq == len(objects)


async def test_a_store_or_sink_that_is_away_is_waited_for_and_nothing_is_committed_before(tmp_path):
    objects = sample_objects()[:80]
    memory = Memory(objects, store_failures=3, sink_failures=2)
    await memory.run(_config(tmp_path))
    entries = memory.journal.entries
    first_ack = next(i for i, e in enumerate(entries) if e[:2] == ("memory-source", "ack"))
    first_store = next(i for i, e in enumerate(entries) if e[:2] == ("memory-store", "write"))
    assert first_store < first_ack
    assert memory.store.failures == 0 and memory.sink.failures == 0  # both were retried until they came back
    assert sorted(memory.store.findings) == sorted(_expected(objects))
    assert sorted(f.id for f in memory.sink.findings) == sorted(memory.store.findings) and not memory.store.outbox
