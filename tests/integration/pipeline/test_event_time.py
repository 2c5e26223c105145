"""Event time in the streaming pipeline: the wall clock bounds how far ahead it may move."""
from __future__ import annotations

import logging
import time

import nats
import orjson

from opmas.connectors.nats.subjects import EVENTS_STREAM
from opmas.core.event import format_time
from opmas import metrics
from tests.integration.pipeline.conftest import finding_ids_in_postgres, running
from tests.expected import expected_findings
from tests.waiting import wait_until
from tests.integration.pipeline.test_crash import _correlation_rule_ids, brute_force
from tests.integration.pipeline.test_flow import _total


def ssh_line(event_id: str, when: float) -> dict:
    """A raw SSH log line of agent ``bastion`` at ``when``."""
    line = {"id": event_id, "event": {"dataset": "linux.auth", "outcome": "failure"}, "host": {"name": "bastion"},
            "process": {"name": "sshd", "pid": 7}, "source": {"ip": "192.0.2.99", "port": 50000},
            "user": {"name": "root"}, "message": "Failed password for root from 192.0.2.99 port 50000 ssh2"}
    return line | {"@timestamp": format_time(when)}


async def publish_all(url: str, events: list[dict]) -> int:
    """Publish each event as a message of agent ``bastion`` (one partition); the last sequence."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    for event in events:
        await js.publish("opmas.events.bastion", orjson.dumps(event))
    last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
    await nc.close()
    return last


async def test_an_event_dated_a_year_ahead_does_not_stop_later_events_from_correlating(config, archive, rules_dir,
                                                                                      caplog):
    caplog.set_level(logging.INFO)
    events = [event for ip in range(8) for event in brute_force(ip)]
    expected = expected_findings(events, rules_dir, lambda o: "bastion", config.pipeline.partitions)
    correlated = {f for f, rule in expected.items() if rule in _correlation_rule_ids(rules_dir)}
    assert correlated
    future = ssh_line("from-the-future", time.time() + 365 * 86400)
    counted = _total(metrics.FUTURE_EVENTS)
    async with running(config, archive) as pipeline:
        last = await publish_all(config.nats.url, [future] + events)
        await wait_until(lambda: pipeline.stats.acked_seq >= last, what="every message acked")
        await wait_until(lambda: _total(metrics.FUTURE_EVENTS) > counted, 15, "the future event counted")
    assert _total(metrics.FUTURE_EVENTS) - counted == 1
    assert correlated <= set(await finding_ids_in_postgres(config.postgres.url))
    logged = {r.finding_id for r in caplog.records if r.getMessage() == "finding"}
    assert correlated <= logged  # each finding is logged with its id
