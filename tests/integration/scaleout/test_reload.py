"""A running worker takes a new rule on ``opmas.engine.reload`` and refuses a broken one."""
from __future__ import annotations

import asyncio

from opmas.connectors.nats.control import request_reload
from tests.integration.scaleout.conftest import wait_until
from tests.integration.scaleout.test_workers import finding_ids, publish

RULE = """title: Test Marker In Web Request
id: 9c1f3a52-7d44-4c6b-9e0a-2b8d6f1e4a37
logsource: {category: webserver}
detection:
    selection: {cs-uri-query|contains: opmas-scaleout-marker}
    condition: selection
level: high
"""


def request(marker: str, n: int) -> tuple[str, bytes]:
    return ("opmas.events.web-01", (
        '{"@timestamp": "2026-11-25T06:00:0%dZ", "event": {"dataset": "web.access"}, "http": {"request":'
        ' {"method": "GET"}, "response": {"status_code": 200}}, "url": {"path": "/", "query": "q=%s"},'
        ' "source": {"ip": "192.0.2.%d"}}' % (n, marker, n)).encode())


def test_worker_reloads_rules(spawn, nats_server, postgres, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "placeholder.yml").write_text(RULE.replace("opmas-scaleout-marker", "never-seen")
                                           .replace("9c1f3a52", "0d2e4b63"))
    bridge = spawn("bridge")
    worker = spawn("worker", OPMAS_RULES=str(rules))
    asyncio.run(publish(nats_server.url, [request("opmas-scaleout-marker", 1)]))
    wait_until(lambda: "partition assigned" in worker.log.read_text(), 60, "the worker to process", (bridge, worker))

    (rules / "broken.yml").write_text("title: broken\ndetection: [\n")
    refused = asyncio.run(request_reload(nats_server.url, timeout=20))
    assert not refused["ok"] and "broken.yml" in " ".join(refused["errors"])

    (rules / "broken.yml").unlink()
    (rules / "marker.yml").write_text(RULE)
    answer = asyncio.run(request_reload(nats_server.url, timeout=20))
    assert answer["ok"] and answer["rules"] == 2
    asyncio.run(publish(nats_server.url, [request("opmas-scaleout-marker", 2)]))
    wait_until(lambda: len(finding_ids(postgres.url)) == 1, 30, "the new rule's finding", (bridge, worker))
