"""REST resources on the real stack: agents, events, findings, rules, metrics; 403/404/409/422 paths."""
from __future__ import annotations

import asyncio
import uuid

import httpx
import nats
import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb

from opmas.connectors.nats.client import settle
from opmas.connectors.nats.subjects import RELOAD_SUBJECT, ensure_streams
from opmas.connectors.postgres.rule_store import stored_rule_sources
from opmas.runtime.rules import RuleFiles
from opmas.connectors.nats.client import settle

RULE = """title: API Test Rule
id: 5a6b7c8d-0000-4000-8000-000000000001
status: test
logsource:
    product: linux
    service: auth
detection:
    selection:
        process.name: sshd
        message|contains: 'Failed password'
    condition: selection
level: high
"""
BROKEN_RULE = (RULE.replace("-000000000001", "-000000000002")
               .replace("condition: selection", "condition: selection and missing_thing"))


def test_agent_crud_and_pagination(stack, admin):
    created = [admin.post("/agents", json={"id": f"crud-{i}", "name": f"host {i}", "type": "tail"}) for i in range(3)]
    assert [r.status_code for r in created] == [201] * 3
    creds = created[0].json()["credentials"]
    assert creds["principal_id"] == "agent:crud-0" and creds["nats_user"] == "crud-0" and creds["secret"]
    assert admin.post("/agents", json={"id": "crud-0", "name": "again", "type": "tail"}).status_code == 409
    page = admin.get("/agents", params={"type": "tail", "limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["limit"] == 2
    rest = admin.get("/agents", params={"type": "tail", "limit": 2, "offset": 2}).json()
    assert [a["id"] for a in page["items"] + rest["items"]] == ["crud-0", "crud-1", "crud-2"]
    got = admin.get("/agents/crud-1").json()
    assert got["name"] == "host 1" and got["status"] == "offline" and got["config_version"] == 0
    updated = admin.put("/agents/crud-1", json={"name": "renamed"}).json()
    assert updated["name"] == "renamed" and updated["config_version"] == 0
    for field in ("name", "type", "config"):  # absent keeps a field; null is not a value of any of them
        assert admin.put("/agents/crud-1", json={field: None}).status_code == 422
    assert admin.delete("/agents/crud-2").status_code == 204
    assert admin.get("/agents/crud-2").status_code == 404
    assert admin.delete("/agents/crud-2").status_code == 404


def test_agent_input_is_validated(admin):
    bad_id = admin.post("/agents", json={"id": "has.dot", "name": "x", "type": "tail"})
    assert bad_id.status_code == 422 and bad_id.json()["detail"][0]["loc"] == ["body", "id"]
    for reserved, why in (("opmas", "the NATS user of the OPMAS services"), ("api", "events users submit")):
        r = admin.post("/agents", json={"id": reserved, "name": "x", "type": "tail"})
        assert r.status_code == 422 and f"agent id '{reserved}' is reserved" in r.json()["detail"][0]["msg"]
        assert why in r.json()["detail"][0]["msg"] and admin.get(f"/agents/{reserved}").status_code == 404
    bad_config = admin.post("/agents", json={"name": "x", "type": "tail", "config": {"heartbeat_interval": -1}})
    assert bad_config.status_code == 422
    assert "heartbeat_interval" in bad_config.json()["detail"][0]["msg"]
    assert admin.get("/agents", params={"status": "sleeping"}).status_code == 422
    assert admin.get("/agents", params={"limit": 0}).status_code == 422


async def test_config_change_is_pushed_on_the_control_subject(stack, admin):
    admin.post("/agents", json={"id": "push-1", "name": "p", "type": "tail"})
    nc = await nats.connect(stack.nats_url)
    sub = await nc.subscribe("opmas.control.push-1")
    await settle(nc)
    r = await asyncio.to_thread(admin.put, "/agents/push-1", json={"config": {"heartbeat_interval": 2}})
    assert r.json()["config_version"] == 1 and r.json()["config_pushed"] is True
    msg = orjson.loads((await sub.next_msg(timeout=5)).data)
    assert msg == {"type": "config", "version": 1, "config": {"heartbeat_interval": 2}}
    await nc.close()


def test_agent_credentials_allow_only_its_own_things(stack, admin):
    creds = admin.post("/agents", json={"id": "own-1", "name": "o", "type": "tail"}).json()["credentials"]
    admin.post("/agents", json={"id": "own-2", "name": "o", "type": "tail"})
    with stack.client(stack.token(creds["principal_id"], creds["secret"])) as agent:
        assert agent.get("/agents/own-1").status_code == 200
        assert agent.get("/agents/own-2").status_code == 403
        assert agent.get("/agents").status_code == 403
        assert agent.get("/findings").status_code == 403
        r = agent.post("/events", json={"agent_id": "own-2", "data": {"message": "spoof"}})
        assert r.status_code == 403
        assert admin.delete("/agents/own-1").status_code == 204
        assert agent.get("/agents/own-1").status_code == 401


async def test_events_are_submitted_to_jetstream(stack, admin):
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    sub = await js.subscribe("opmas.events.>", ordered_consumer=True)
    body = [{"id": "ev-sub-1", "type": "linux.auth", "timestamp": "2026-11-25T04:00:00Z",
             "data": {"message": "hello"}},
            {"data": {"message": "no id"}, "agent_id": "edge-7"}]
    r = await asyncio.to_thread(admin.post, "/events", json=body)
    assert r.status_code == 202 and r.json()["accepted"] == 2
    first = await sub.next_msg(timeout=5)
    second = await sub.next_msg(timeout=5)
    assert first.subject == "opmas.events.api" and second.subject == "opmas.events.edge-7"
    envelope = orjson.loads(first.data)
    assert envelope == {"id": "ev-sub-1", "agent_id": "api", "type": "linux.auth",
                        "timestamp": "2026-11-25T04:00:00.000000Z", "data": {"message": "hello"}}
    assert orjson.loads(second.data)["id"] == r.json()["ids"][1]
    bad = await asyncio.to_thread(admin.post, "/events", json={"timestamp": "yesterday-ish", "data": {}})
    assert bad.status_code == 422 and "cannot read 'yesterday-ish' as a time" in bad.text
    assert (await asyncio.to_thread(admin.post, "/events", json={"data": "not an object"})).status_code == 422
    await nc.close()


async def test_users_publish_as_api_unless_agents_admin_and_oversized_events_are_413(stack, admin):
    nc = await nats.connect(stack.nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    p = admin.post("/principals", json={"name": "feeder", "permissions": ["events:publish"]}).json()
    with stack.client(await asyncio.to_thread(stack.token, p["id"], p["secret"])) as feeder:
        spoof = await asyncio.to_thread(feeder.post, "/events", json={"agent_id": "edge-9", "data": {}})
        assert spoof.status_code == 403 and "needs agents:admin" in spoof.json()["detail"]
        own = await asyncio.to_thread(feeder.post, "/events", json=[{"data": {"n": 1}}, {"agent_id": "api", "data": {}}])
        assert own.status_code == 202 and own.json()["accepted"] == 2
    stored = (await js.stream_info("OPMAS_EVENTS")).state.messages
    big = [{"id": "small", "data": {}}, {"id": "too-big", "data": {"message": "x" * nc.max_payload}}]
    r = await asyncio.to_thread(admin.post, "/events", json=big)
    assert r.status_code == 413 and r.json()["detail"].startswith("event too-big is ")
    assert f"over NATS' maximum message size of {nc.max_payload} bytes" in r.json()["detail"]
    assert (await js.stream_info("OPMAS_EVENTS")).state.messages == stored  # none of them was published
    await nc.close()


def _insert(db_url: str, sql: str, rows: list[tuple]) -> None:
    with psycopg.connect(db_url) as conn:
        conn.cursor().executemany(sql, rows)


def test_events_get_and_list_by_agent_and_time(stack, admin):
    _insert(stack.db_url, "INSERT INTO events (id, agent_id, timestamp, type, data) VALUES (%s, %s, %s, %s, %s)",
            [(f"ev-{i}", "a1" if i % 2 else "a2", f"2026-01-0{i}T00:00:00Z", "linux.auth", Jsonb({"n": i}))
             for i in range(1, 7)])
    page = admin.get("/events", params={"agent_id": "a1", "since": "2026-01-02T00:00:00Z",
                                        "until": "2026-01-06T00:00:00Z"}).json()
    assert [e["id"] for e in page["items"]] == ["ev-5", "ev-3"] and page["total"] == 2
    assert admin.get("/events", params={"limit": 1}).json()["total"] == 6
    assert admin.get("/events/ev-4").json()["data"] == {"n": 4}
    assert admin.get("/events/none").status_code == 404
    assert admin.get("/events", params={"since": "not a time"}).status_code == 422


FINDING_SQL = ("INSERT INTO findings (id, rule_id, rule_title, severity, title, event_ids, agent_id, event_time, status)"
               " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")


def test_findings_filters_get_and_triage(stack, admin):
    ids = [str(uuid.uuid4()) for _ in range(5)]
    _insert(stack.db_url, FINDING_SQL, [
        (ids[0], "r1", "R1", "high", "t0", ["e0"], "h1", "2026-02-01T00:00:00Z", "open"),
        (ids[1], "r1", "R1", "low", "t1", ["e1"], "h2", "2026-02-02T00:00:00Z", "open"),
        (ids[2], "r2", "R2", "high", "t2", ["e2"], "h1", "2026-02-03T00:00:00Z", "resolved"),
        (ids[3], "r2", "R2", "critical", "t3", ["e3"], "h1", "2026-02-04T00:00:00Z", "open"),
        (ids[4], "r3", "R3", "medium", "t4", ["e4"], "h3", "2026-02-05T00:00:00Z", "acknowledged"),
    ])

    def listed(**params) -> list[str]:
        return [f["title"] for f in admin.get("/findings", params=params).json()["items"]]

    assert listed(severity=["high", "critical"]) == ["t3", "t2", "t0"]
    assert listed(rule_id="r1") == ["t1", "t0"]
    assert listed(status="open", agent_id="h1") == ["t3", "t0"]
    assert listed(since="2026-02-02T00:00:00Z", until="2026-02-04T00:00:00Z") == ["t2", "t1"]
    page = admin.get("/findings", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and [f["title"] for f in page["items"]] == ["t3", "t2"]
    assert admin.get("/findings", params={"severity": "severe"}).status_code == 422

    assert admin.get(f"/findings/{ids[0]}").json()["rule_id"] == "r1"
    assert admin.get(f"/findings/{uuid.uuid4()}").status_code == 404
    assert admin.get("/findings/not-a-uuid").status_code == 422

    r = admin.patch(f"/findings/{ids[0]}", json={"status": "acknowledged", "assignee": "ana"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged" and r.json()["assignee"] == "ana"
    r = admin.patch(f"/findings/{ids[0]}", json={"status": "resolved", "note": "false positive"}).json()
    assert (r["status"], r["assignee"], r["note"]) == ("resolved", "ana", "false positive")
    r = admin.patch(f"/findings/{ids[0]}", json={"assignee": None}).json()  # null clears, absent keeps
    assert (r["status"], r["assignee"], r["note"]) == ("resolved", None, "false positive")
    r = admin.patch(f"/findings/{ids[0]}", json={"status": "open", "note": None, "assignee": "bo"}).json()
    assert (r["status"], r["assignee"], r["note"]) == ("open", "bo", None)
    assert admin.patch(f"/findings/{ids[0]}", json={"status": None}).status_code == 422
    assert admin.patch(f"/findings/{ids[0]}", json={"status": "closed"}).status_code == 422
    assert admin.patch(f"/findings/{ids[0]}", json={}).status_code == 422
    assert admin.patch(f"/findings/{uuid.uuid4()}", json={"status": "open"}).status_code == 404


@pytest.fixture
def engine_stub(stack):
    """Something answering opmas.engine.reload (as the running engine does), recording requests."""
    requests: list[dict] = []
    reply = {"ok": True, "rules": 1}
    ready, stop = asyncio.Event(), None

    async def answer() -> None:
        nonlocal stop
        stop = asyncio.Event()
        nc = await nats.connect(stack.nats_url)

        async def on_reload(msg) -> None:
            requests.append(orjson.loads(msg.data))
            await msg.respond(orjson.dumps(reply))

        await nc.subscribe(RELOAD_SUBJECT, cb=on_reload)
        await settle(nc)
        ready.set()
        await stop.wait()
        await nc.close()

    return requests, answer, ready, lambda: stop.set(), reply


async def test_rules_create_validate_update_enable_delete(stack, admin, engine_stub):
    requests, answer, ready, done, _ = engine_stub
    task = asyncio.create_task(answer())
    await ready.wait()
    call = asyncio.to_thread

    broken = await call(admin.post, "/rules", json={"source": BROKEN_RULE})
    assert broken.status_code == 422
    error = broken.json()["detail"]["errors"][0]
    assert error["file"] == "api:new rule" and error["rule_id"] == "5a6b7c8d-0000-4000-8000-000000000002"
    assert error["line"] and "missing_thing" in error["message"] and error["code"] == "UNDEFINED_SEARCH"
    not_yaml = await call(admin.post, "/rules", json={"source": "title: [unclosed"})
    assert not_yaml.status_code == 422 and not_yaml.json()["detail"]["errors"][0]["line"] in (1, 2)
    assert not_yaml.json()["detail"]["errors"][0]["code"] == "YAML_PARSE"

    created = await call(admin.post, "/rules", json={"source": RULE})
    assert created.status_code == 201, created.text
    rule_id = created.json()["id"]
    assert created.json()["level"] == "high" and created.json()["reload"] == {"ok": True, "rules": 1}
    assert (await call(admin.post, "/rules", json={"source": RULE})).status_code in (409, 422)
    assert (await call(admin.get, f"/rules/{rule_id}")).json()["source"] == RULE
    assert (await call(admin.get, "/rules", params={"level": "high"})).json()["total"] == 1

    updated = await call(admin.put, f"/rules/{rule_id}", json={"source": RULE.replace("level: high", "level: low")})
    assert updated.status_code == 200 and updated.json()["level"] == "low"
    other_id = await call(admin.put, f"/rules/{rule_id}", json={"source": RULE.replace("-000000000001", "-000000000009")})
    assert other_id.status_code == 422 and "differs" in other_id.json()["detail"]["message"]
    assert (await call(admin.put, f"/rules/{rule_id}", json={"source": BROKEN_RULE.replace("-000000000002", "-000000000001")})).status_code == 422

    assert [s.name for s in stored_rule_sources(stack.db_url)] == [f"rules:{rule_id}"]
    _, engine_rules, _ = RuleFiles((), (), stack.db_url).load()  # what the engine loads on reload
    assert [(r.id, r.level) for r in engine_rules.rules] == [(rule_id, "low")]
    assert (await call(admin.post, f"/rules/{rule_id}/disable")).json()["enabled"] is False
    assert stored_rule_sources(stack.db_url) == []
    assert (await call(admin.get, "/rules", params={"enabled": "false"})).json()["total"] == 1
    assert (await call(admin.post, f"/rules/{rule_id}/enable")).json()["enabled"] is True
    assert (await call(admin.delete, f"/rules/{rule_id}")).json()["deleted"] is True
    assert (await call(admin.get, f"/rules/{rule_id}")).status_code == 404
    assert (await call(admin.post, f"/rules/{rule_id}/enable")).status_code == 404
    assert [r["reason"] for r in requests] == [
        f"rule {rule_id} created", f"rule {rule_id} updated", f"rule {rule_id} disabled",
        f"rule {rule_id} enabled", f"rule {rule_id} deleted"]
    done()
    await task


async def test_a_change_the_engine_refuses_is_undone(stack, admin, engine_stub):
    requests, answer, ready, done, reply = engine_stub
    call = asyncio.to_thread
    kept = RULE.replace("-000000000001", "-000000000004")
    assert (await call(admin.post, "/rules", json={"source": kept})).status_code == 201  # no engine yet
    kept_id = "5a6b7c8d-0000-4000-8000-000000000004"
    task = asyncio.create_task(answer())
    await ready.wait()
    reply.clear()
    reply.update({"ok": False, "errors": ["rules:x:3: [x] error: duplicate rule id [DUPLICATE_RULE_ID]",
                                          "rules:y:1: error: an engine's text without a code"]})

    refused = await call(admin.post, "/rules", json={"source": RULE.replace("-000000000001", "-000000000005")})
    assert refused.status_code == 422 and "change was undone" in refused.json()["detail"]["message"]
    assert refused.json()["detail"]["errors"] == [
        {"code": "DUPLICATE_RULE_ID", "message": "rules:x:3: [x] error: duplicate rule id [DUPLICATE_RULE_ID]"},
        {"code": None, "message": "rules:y:1: error: an engine's text without a code"}]
    assert (await call(admin.get, "/rules/5a6b7c8d-0000-4000-8000-000000000005")).status_code == 404
    assert (await call(admin.put, f"/rules/{kept_id}", json={"source": kept.replace("level: high", "level: low")})
            ).status_code == 422
    assert (await call(admin.post, f"/rules/{kept_id}/disable")).status_code == 422
    assert (await call(admin.delete, f"/rules/{kept_id}")).status_code == 422
    after = (await call(admin.get, f"/rules/{kept_id}")).json()
    assert (after["source"], after["enabled"], after["level"]) == (kept, True, "high")
    assert len(requests) == 4
    done()
    await task


async def test_a_rule_deleted_while_its_update_is_validated_is_404(stack, admin):
    rule = RULE.replace("-000000000001", "-000000000007")
    rule_id = "5a6b7c8d-0000-4000-8000-000000000007"
    assert (await asyncio.to_thread(admin.post, "/rules", json={"source": rule})).status_code == 201
    async with await psycopg.AsyncConnection.connect(stack.db_url) as deleting, \
            await psycopg.AsyncConnection.connect(stack.db_url, autocommit=True) as watching:
        await deleting.execute("DELETE FROM rules WHERE id = %s", (rule_id,))  # uncommitted: holds the row
        put = asyncio.create_task(asyncio.to_thread(
            admin.put, f"/rules/{rule_id}", json={"source": rule.replace("level: high", "level: low")}))
        for _ in range(100):  # the API validated the rule it read and now waits to update it
            cur = await watching.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                         " AND query LIKE 'UPDATE rules SET title%'")
            if (await cur.fetchone())[0]:
                break
            await asyncio.sleep(0.1)
        await deleting.commit()
    r = await put
    assert r.status_code == 404 and r.json()["detail"] == f"no rule {rule_id}"


def test_rule_change_without_an_engine_says_so(admin):
    r = admin.post("/rules", json={"source": RULE.replace("-000000000001", "-000000000003")})
    assert r.status_code == 201 and r.json()["reload"] == {"status": "no engine listening"}


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` (with these labels) of a Prometheus exposition; 0 if none."""
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def scrape(stack, client: httpx.Client) -> str:
    r = httpx.get(f"{stack.url}/metrics", headers=client.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


def test_metrics_expose_pipeline_and_api_metrics(stack, admin):
    before = scrape(stack, admin)
    for _ in range(3):
        assert admin.get("/rules").status_code == 200
    assert admin.get("/agents/no-such-agent").status_code == 404
    after = scrape(stack, admin)
    ok = {"method": "GET", "route": "/rules", "status": "200"}
    assert metric(after, "opmas_api_requests_total", **ok) - metric(before, "opmas_api_requests_total", **ok) == 3
    missing = {"method": "GET", "route": "/agents/{agent_id}", "status": "404"}
    assert metric(after, "opmas_api_requests_total", **missing) - metric(before, "opmas_api_requests_total",
                                                                         **missing) == 1
    assert metric(after, "opmas_api_request_seconds_count", route="/rules") >= 3
    families = {family.name for family in text_string_to_metric_families(after)}
    assert {"opmas_events_processed", "opmas_findings", "opmas_processing_latency_seconds", "opmas_consumer_lag",
            "opmas_dead_letters", "opmas_late_events", "opmas_state_bytes", "opmas_agent_heartbeats"} <= families


CASES = """tests:
    match:
        - {event: {dataset: linux.auth}, process: {name: sshd}, message: "Failed password for root"}
        - {event: {dataset: linux.auth}, process: {name: sshd}, message: "Accepted password for root"}
    no_match:
        - {event: {dataset: linux.auth}, process: {name: sudo}, message: "Failed password for root"}
"""


def test_a_rule_whose_tests_fail_is_refused(admin):
    rule = RULE.replace("-000000000001", "-000000000006") + CASES
    refused = admin.post("/rules", json={"source": rule})
    assert refused.status_code == 422
    assert refused.json()["detail"]["errors"] == [{
        "file": "api:new rule", "line": 1, "rule_id": "5a6b7c8d-0000-4000-8000-000000000006",
        "code": "RULE_TEST_FAILED", "message": "tests.match case #2: expected a finding, got none"}]
    fixed = "\n".join(line for line in rule.splitlines() if "Accepted password" not in line)
    assert admin.post("/rules", json={"source": fixed}).status_code == 201
