"""The API in front of the running engine: a rule added through the API is hot-reloaded, an event
submitted through the API yields a finding on /ws/findings, in /findings and in the Prometheus
metrics, and is then triaged; with the engine's archive, /events has every event, matched or not."""
from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import connect

from opmas.config import Config, NatsConfig, PipelineConfig, PostgresConfig
from tests.integration.apiserver import ADMIN_SECRET, ApiServer, api_settings
from tests.integration.management.test_resources import RULE, metric
from tests.integration.pipeline.conftest import archive, running  # noqa: F401 - the archive fixture
from tests.waiting import wait_until


async def test_rule_event_finding_through_the_api(tmp_path, nats_server, postgres, archive):
    rules = tmp_path / "rules"
    rules.mkdir()
    config = Config(data_dir=tmp_path / "data", nats=NatsConfig(url=nats_server.url),
                    postgres=PostgresConfig(url=postgres.url),
                    pipeline=PipelineConfig(rules=(rules,), partitions=1, checkpoint_interval=0.2, watch_rules=False))
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


async def test_events_no_rule_matched_are_read_from_the_archive(tmp_path, nats_server, postgres, archive):
    rules = tmp_path / "rules"
    rules.mkdir()
    config = Config(data_dir=tmp_path / "data", nats=NatsConfig(url=nats_server.url),
                    postgres=PostgresConfig(url=postgres.url),
                    pipeline=PipelineConfig(rules=(rules,), partitions=1, checkpoint_interval=0.2, watch_rules=False))
    settings = api_settings(postgres.url, nats_server.url, tmp_path / "api")
    server = await asyncio.to_thread(lambda: ApiServer(settings, archive).start())  # as `opmas up` runs it
    try:
        async with running(config, archive), httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=30) as api:
            token = (await api.post("/auth/token", json={"principal_id": "admin", "secret": ADMIN_SECRET})).json()
            api.headers["Authorization"] = f"Bearer {token['access_token']}"
            events = [{"agent_id": "quiet-1", "type": "app.log", "timestamp": f"2026-11-25T05:0{i}:00Z",
                       "data": {"message": f"nothing to see {i}"}} for i in range(3)]
            submitted = await api.post("/events", json=events)
            assert submitted.status_code == 202
            ids = submitted.json()["ids"]

            async def archived() -> bool:
                return (await api.get(f"/events/{ids[0]}")).status_code == 200
            await wait_until(archived, 30, "the event in the archive")
            got = (await api.get(f"/events/{ids[1]}")).json()
            assert got == {"id": ids[1], "agent_id": "quiet-1", "type": "app.log",
                           "timestamp": "2026-11-25T05:01:00Z", "data": {"message": "nothing to see 1"}}
            page = (await api.get("/events", params={"agent_id": "quiet-1", "since": "2026-11-25T05:01:00Z",
                                                     "limit": 1, "offset": 1})).json()
            assert page["total"] == 2 and [e["id"] for e in page["items"]] == [ids[1]]
            assert (await api.get("/events", params={"type": "other"})).json()["total"] == 0
            assert (await api.get("/events/no-such-event")).status_code == 404
    finally:
        await asyncio.to_thread(server.stop)
