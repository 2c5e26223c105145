"""The API in front of the running engine: a rule added through the API is hot-reloaded, an event
submitted through the API yields a finding on /ws/findings, in /findings and in the Prometheus
metrics, and is then triaged."""
from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import connect

from opmas.config import Config
from tests.apiserver import ADMIN_SECRET, ApiServer, api_settings
from tests.management.test_resources import RULE, metric
from tests.pipeline.conftest import archive, running, wait_until  # noqa: F401 - the archive fixture


async def test_rule_event_finding_through_the_api(tmp_path, nats_server, postgres, archive):
    rules = tmp_path / "rules"
    rules.mkdir()
    config = Config(data_dir=tmp_path / "data", nats_url=nats_server.url, db_url=postgres.url, rules=(rules,),
                    partitions=1, checkpoint_interval=0.2, watch_rules=False)
    server = await asyncio.to_thread(lambda: ApiServer(api_settings(postgres.url, nats_server.url,
                                                                    tmp_path / "api")).start())
    try:
        async with running(config, archive), httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as api:
            token = (await api.post("/auth/token", json={"principal_id": "admin", "secret": ADMIN_SECRET})).json()
            api.headers["Authorization"] = f"Bearer {token['access_token']}"
            metrics_before = (await api.get(f"{server.url}/metrics")).text
            created = await api.post("/rules", json={"source": RULE})
            assert created.status_code == 201 and created.json()["reload"]["ok"] is True
            async with connect(f"{server.ws_url}/ws/findings?token={token['access_token']}") as ws:
                assert json.loads(await ws.recv())["subscribed"] == "opmas.findings.>"
                event = {"agent_id": "web-9", "type": "linux.auth", "timestamp": "2026-11-25T05:00:00Z",
                         "data": {"event": {"dataset": "linux.auth"}, "process": {"name": "sshd"},
                                  "host": {"name": "web-9"}, "message": "Failed password for root from 192.0.2.1"}}
                assert (await api.post("/events", json=event)).status_code == 202
                live = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert live["subject"] == "opmas.findings.high" and live["data"]["rule_id"] == created.json()["id"]
            for _ in range(100):
                found = (await api.get("/findings", params={"rule_id": created.json()["id"]})).json()
                if found["total"]:
                    break
                await asyncio.sleep(0.1)
            assert found["items"][0]["id"] == live["data"]["id"] and found["items"][0]["agent_id"] == "web-9"

            async def counted() -> bool:  # the engine counts a batch once every sink holds it
                text = (await api.get(f"{server.url}/metrics")).text
                return all(metric(text, name, **labels) > metric(metrics_before, name, **labels) for name, labels in (
                    ("opmas_findings_total", {"severity": "high", "rule_id": created.json()["id"]}),
                    ("opmas_processing_latency_seconds_count", {}),
                    ("opmas_events_processed_total", {"partition": "0"})))
            await wait_until(counted, 10, "the finding and its event in the metrics")
            triaged = await api.patch(f"/findings/{live['data']['id']}", json={"status": "resolved", "note": "test"})
            assert triaged.json()["status"] == "resolved"
    finally:
        await asyncio.to_thread(server.stop)
