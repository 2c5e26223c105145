"""A finding is announced once (issue 13): published on opmas.findings.<severity> and logged only when
PostgreSQL first stores it; one a stop left stored but unannounced is announced at the next start."""
from __future__ import annotations

import logging

import nats
import orjson

from opmas.connectors.inputs import check
from opmas.connectors.nats.replay import agent_of, replay
from opmas.connectors.nats.subjects import EVENTS_STREAM
from opmas.connectors.postgres.sink import PostgresSink
from opmas.connectors.store import Checkpoint
from opmas.connectors.records import FindingRecord
from opmas.core.finding import Finding, finding_id
from tests.integration.pipeline.conftest import running
from tests.expected import expected_findings, SAMPLE, sample_objects
from tests.waiting import wait_until


async def _subscribed(url: str) -> tuple[nats.NATS, list[dict]]:
    """A core NATS subscriber to every finding publication: it sees repeats JetStream would deduplicate."""
    nc = await nats.connect(url)
    seen: list[dict] = []

    async def collect(msg) -> None:
        seen.append(orjson.loads(msg.data))

    await nc.subscribe("opmas.findings.>", cb=collect)
    await nc.flush()
    await nc.flush()
    return nc, seen


def _file_ids(path) -> list[str]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()]


async def test_a_replayed_log_announces_its_findings_once(config, archive, rules_dir, caplog, tmp_path):
    """On NATS, in the log, and in a configured file sink (``--sink file:PATH``)."""
    findings_file = tmp_path / "findings.jsonl"
    config = config.with_overrides(sinks=[f"file:{findings_file}"])
    objects = sample_objects()
    expected = expected_findings(objects, rules_dir, lambda o: agent_of(o, None), config.pipeline.partitions,
                                 config.pipeline.partition_key)
    nc, seen = await _subscribed(config.nats.url)
    caplog.set_level(logging.INFO, logger="opmas")
    async with running(config, archive) as pipeline:
        for _ in range(2):
            await replay(check([str(SAMPLE)]), config.nats.url, batch=7)
            last = (await nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq
            await wait_until(lambda: pipeline.stats.acked_seq >= last, what="the engine to ack every message")
        assert pipeline.stats.findings >= 2 * len(expected)  # the engine found them both times
    await nc.flush()
    await nc.close()
    assert sorted(f["id"] for f in seen) == sorted(expected)  # published once each
    assert sorted(_file_ids(findings_file)) == sorted(expected)  # written once each
    logged = [r.finding_id for r in caplog.records if r.getMessage() == "finding"]
    assert sorted(logged) == sorted(expected)


async def test_findings_a_stop_left_unannounced_are_announced_at_start(config, archive, tmp_path):
    """The state a kill between PostgreSQL's commit and the publish leaves: stored, in the outbox.
    Every sink gets them: NATS and a file sink."""
    findings_file = tmp_path / "findings.jsonl"
    config = config.with_overrides(sinks=[f"file:{findings_file}"])
    sink = PostgresSink(config.postgres.url)
    await sink.migrate()
    findings = [Finding(id=finding_id("left", [f"e{n}"]), rule_id="left", rule_title="Left", severity="high",
                        tags=[], event_ids=[f"e{n}"], timestamp=1764043200.0 + n, title="Left", details={"n": n})
                for n in range(3)]
    written = await sink.write([FindingRecord.of(f) for f in findings], [], Checkpoint(config.pipeline.consumer, 0, {}, {}))
    assert len(written.stored) == 3
    await sink.close()
    nc, seen = await _subscribed(config.nats.url)
    async with running(config, archive):
        await wait_until(lambda: len(seen) >= 3, 30, "the left findings on NATS")
    await nc.close()
    assert sorted(f["id"] for f in seen) == sorted(f.id for f in findings)
    assert sorted(_file_ids(findings_file)) == sorted(f.id for f in findings)
    assert [f["details"] for f in sorted(seen, key=lambda f: f["details"]["n"])] == [{"n": n} for n in range(3)]
    sink = PostgresSink(config.postgres.url)
    assert await sink.unannounced() == []
    await sink.close()
