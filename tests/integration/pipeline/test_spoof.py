"""Agent spoofing (issue 11, item 9): an envelope may not name another agent than the subject it was
published on (before: a message on ``opmas.events.test`` gave events and findings as ``victim-agent``,
around the per-subject permissions of ``nats-auth``). An agent id the subject holds sanitized (as
``opmas replay`` publishes ``host.example`` on ``opmas.events.host_example``) is the same agent."""
from __future__ import annotations

import nats
import orjson
import psycopg

from opmas.connectors.source import SourceMessage
from opmas.connectors.nats.subjects import EVENTS_STREAM
from opmas.runtime.intake import Intake
from tests.integration.pipeline.conftest import running
from tests.waiting import wait_until

MARKER = """title: Spoof marker
id: 0f0f0f0f-0000-4000-8000-000000000001
logsource: {}
level: high
detection:
  sel:
    marker|startswith: spoof-
  condition: sel
"""


def envelope(agent: str, n: int) -> bytes:
    return orjson.dumps({"id": f"spoof-{agent}-{n}", "agent_id": agent, "type": "test",
                         "timestamp": "2026-11-25T04:00:00Z", "data": {"marker": f"spoof-{n}"}})


def message(subject: str, data: bytes, seq: int = 1) -> SourceMessage:
    return SourceMessage(subject, data, seq, 0.0, None, None)


def test_an_envelope_naming_another_agent_is_a_dead_letter():
    decoded = Intake(1 << 20).decode([
        message("opmas.events.test", envelope("victim-agent", 1), 1),
        message("opmas.events.test", envelope("victim-agent", 2) + b"\n" + envelope("test", 3), 2),
        message("opmas.events.host_example", envelope("host.example", 4), 3),
        message("opmas.events.test", envelope(" test ", 5), 4),
    ])
    assert [(e.id, e.agent_id) for e in decoded.events] == [
        ("spoof-test-3", "test"), ("spoof-host.example-4", "host.example"), ("spoof- test -5", " test ")]
    assert [(d.seq, d.line) for d in decoded.dead] == [(1, None), (2, 1)]
    assert decoded.dead[0].reason == ("agent: envelope agent_id 'victim-agent' differs from the agent of "
                                      "subject opmas.events.test")


async def test_a_spoofed_agent_gets_no_events_or_findings(config, archive, rules_dir):
    (rules_dir / "spoof_marker.yml").write_text(MARKER)
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    letters: list[dict] = []

    async def collect(msg) -> None:
        letters.append(orjson.loads(msg.data))

    await nc.subscribe("opmas.deadletter", cb=collect)
    async with running(config, archive) as pipeline:
        await js.publish("opmas.events.test", envelope("victim-agent", 1))
        await js.publish("opmas.events.test", envelope("test", 2))
        await js.publish("opmas.events.host_example", envelope("host.example", 3))
        last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
        await wait_until(lambda: pipeline.stats.acked_seq >= last, what="every message acked")
        await wait_until(lambda: letters, 10, "the dead letter")
    await nc.close()
    with psycopg.connect(config.postgres.url) as conn:
        found = conn.execute("SELECT agent_id FROM findings WHERE rule_id = %s ORDER BY agent_id",
                             ("0f0f0f0f-0000-4000-8000-000000000001",)).fetchall()
    assert [row[0] for row in found] == ["host.example", "test"]
    assert {e["agent_id"] for e in archive.events()} == {"host.example", "test"}
    assert [(d["reason"].split(":")[0], d["subject"], d["seq"]) for d in letters] == [
        ("agent", "opmas.events.test", 1)]
