"""Rules reload while the engine runs: a good set swaps in, a set with errors is refused (with the
errors) and the running set stays; file changes reload too."""
from __future__ import annotations

import asyncio
import itertools
import logging

import nats
import orjson

from opmas.connectors.nats.control import request_reload
from tests.integration.pipeline.conftest import running
from tests.waiting import wait_until

RULE = """title: Canary {n}
id: 5f0c7b5e-0000-4000-8000-00000000000{n}
logsource: {{product: linux, service: auth}}
detection:
    selection: {{message|contains: 'opmas-canary-{n}'}}
    condition: selection
level: medium
"""
BAD = """title: Broken
id: 5f0c7b5e-0000-4000-8000-0000000000ff
logsource: {product: linux, service: auth}
detection:
    selection: {message|nosuchmodifier: 'x'}
    condition: selection
level: low
"""
_ids = itertools.count()


def canary(n: int) -> bytes:
    return orjson.dumps({"id": f"canary-{next(_ids)}", "@timestamp": "2026-11-25T05:00:00Z",
                         "event": {"dataset": "linux.auth"}, "process": {"name": "sshd"},
                         "host": {"name": "lab-1"}, "message": f"saw opmas-canary-1 opmas-canary-2 ({n})"})


async def test_good_rules_swap_in_bad_rules_are_refused(config, archive, rules_dir):
    config = config.with_overrides(pipeline={"watch_rules": True})
    nc = await nats.connect(config.nats.url)
    js = nc.jetstream()
    rules_seen: list[str] = []

    async def collect(msg):
        rules_seen.append(orjson.loads(msg.data)["rule_id"])

    await nc.subscribe("opmas.findings.>", cb=collect)
    canary1, canary2 = "5f0c7b5e-0000-4000-8000-000000000001", "5f0c7b5e-0000-4000-8000-000000000002"
    async with running(config, archive) as pipeline:
        before = pipeline.rule_count
        await js.publish("opmas.events.lab-1", canary(0))
        await wait_until(lambda: pipeline.stats.events >= 1, what="the first canary")
        assert canary1 not in rules_seen

        (rules_dir / "canary1.yml").write_text(RULE.format(n=1))
        answer = await request_reload(config.nats.url)
        assert answer["ok"] is True and answer["rules"] == before + 1
        await js.publish("opmas.events.lab-1", canary(1))
        await wait_until(lambda: canary1 in rules_seen, 20, "a finding of the reloaded rule")

        (rules_dir / "broken.yml").write_text(BAD)
        answer = await request_reload(config.nats.url)
        assert answer["ok"] is False
        assert any("broken.yml" in e and "nosuchmodifier" in e for e in answer["errors"]), answer
        assert answer["rules"] == before + 1
        count = rules_seen.count(canary1)
        await js.publish("opmas.events.lab-1", canary(2))
        await wait_until(lambda: rules_seen.count(canary1) > count, 20, "the old rule set still running")

        (rules_dir / "broken.yml").unlink()
        (rules_dir / "canary2.yml").write_text(RULE.format(n=2))

        async def reloaded_by_watcher() -> bool:
            await js.publish("opmas.events.lab-1", canary(3))
            await wait_until(lambda: pipeline.stats.acked_seq >= pipeline.source.last_seq, 10, "acks")
            return canary2 in rules_seen

        await wait_until(reloaded_by_watcher, 30, "the file watcher to load canary2.yml")
        assert pipeline.rule_count == before + 2
    await nc.close()


async def test_watching_goes_on_after_a_failed_reload(config, archive, rules_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, "opmas.pipeline")
    extra = tmp_path / "extra.yml"
    extra.write_text(RULE.format(n=3))
    config = config.with_overrides(pipeline={"watch_rules": True, "rules": (rules_dir, extra)})
    async with running(config, archive) as pipeline:
        before = pipeline.rule_count
        extra.unlink()  # a configured rule path gone: the reload fails
        await wait_until(lambda: "rule files changed" in caplog.text, 20, "the reload attempt")
        await asyncio.sleep(0.5)  # it fails (FileNotFoundError)
        extra.write_text(RULE.format(n=3))
        (rules_dir / "canary4.yml").write_text(RULE.format(n=4))
        await wait_until(lambda: pipeline.rule_count == before + 1, 20, "the reload of a later edit")
