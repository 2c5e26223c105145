"""The routes the web console calls, on real servers: rule validation with each test case, bulk
triage with its history, findings' text search and sorting, the overview (from PostgreSQL, the
ClickHouse archive and JetStream) and the events of one host."""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import nats
import orjson
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig
from psycopg.types.json import Jsonb

from opmas.connectors.clickhouse.archive import Archive, connect, encode_row
from opmas.connectors.nats.subjects import DEADLETTER_SUBJECT, EVENTS_STREAM, ensure_streams, events_subject
from tests.integration.apiserver import ApiServer, api_settings
from tests.integration.management.test_resources import CASES, RULE

FINDING_SQL = ("INSERT INTO findings (id, rule_id, rule_title, severity, title, description, event_ids, agent_id,"
               " event_time, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def insert_findings(db_url: str, rows: list[dict]) -> list[str]:
    """Findings with defaults for what a row leaves out; their ids in order."""
    ids = [str(uuid.uuid4()) for _ in rows]
    with psycopg.connect(db_url) as conn:
        conn.cursor().executemany(FINDING_SQL, [
            (fid, row.get("rule_id", "r"), row.get("rule_title", "R"), row.get("severity", "low"), row["title"],
             row.get("description", ""), ["e"], row.get("agent_id"), row.get("at", "2026-03-01T00:00:00Z"),
             Jsonb(row.get("details", {}))) for fid, row in zip(ids, rows)])
    return ids


def principal_client(stack, admin, *permissions: str):
    created = admin.post("/principals", json={"name": "console-user", "permissions": list(permissions)})
    assert created.status_code == 201
    body = created.json()
    return body["id"], stack.client(stack.token(body["id"], body["secret"]))


# --- POST /rules/validate ------------------------------------------------------------------------------

def test_validate_reports_the_loaders_errors_with_their_lines(stack, admin):
    analyst_id, analyst = principal_client(stack, admin, "rules:read")
    with analyst:
        broken = RULE.replace("condition: selection", "condition: selection and missing_thing")
        r = analyst.post("/rules/validate", json={"yaml": broken})
        assert r.status_code == 200
        report = r.json()
        assert report["valid"] is False and report["tests"] == [] and report["title"] is None
        assert [(e["code"], e["line"], e["column"]) for e in report["errors"]] == [("UNDEFINED_SEARCH", 11, None)]  # the condition's line
        assert "missing_thing" in report["errors"][0]["message"]

        bad_yaml = RULE.replace("level: high", "level: high: oops")  # "mapping values are not allowed here"
        errors = analyst.post("/rules/validate", json={"yaml": bad_yaml}).json()["errors"]
        assert [(e["code"], e["line"]) for e in errors] == [("YAML_PARSE", 12)]
        aliased = RULE + "x: &a [1]\ny: *a\n"
        assert [e["code"] for e in analyst.post("/rules/validate", json={"yaml": aliased}).json()["errors"]] \
            == ["YAML_ALIAS"]
        assert analyst.post("/rules/validate", json={"yaml": ""}).status_code == 422
        assert analyst.post("/rules", json={"source": RULE}).status_code == 403  # only rules:read


def test_validate_runs_each_test_case_of_a_valid_rule(admin):
    rule = RULE.replace("-000000000001", "-00000000c001") + CASES
    report = admin.post("/rules/validate", json={"yaml": rule}).json()
    assert report["valid"] is True and report["errors"] == []
    assert (report["rule_id"], report["title"]) == ("5a6b7c8d-0000-4000-8000-00000000c001", "API Test Rule")
    assert report["tests"] == [
        {"name": "tests.match case #1", "passed": True, "message": "ok"},
        {"name": "tests.match case #2", "passed": False, "message": "expected a finding, got none"},
        {"name": "tests.no_match case #1", "passed": True, "message": "ok"},
    ]
    assert admin.get("/rules/5a6b7c8d-0000-4000-8000-00000000c001").status_code == 404  # nothing stored


def test_validate_checks_an_edit_beside_the_other_rules(admin):
    stored = RULE.replace("-000000000001", "-00000000c002")
    assert admin.post("/rules", json={"source": stored}).status_code == 201
    clash = admin.post("/rules/validate", json={"yaml": stored}).json()
    assert clash["valid"] is False and [e["code"] for e in clash["errors"]] == ["DUPLICATE_RULE_ID"]
    edit = admin.post("/rules/validate", json={"yaml": stored.replace("level: high", "level: low"),
                                               "rule_id": "5a6b7c8d-0000-4000-8000-00000000c002"}).json()
    assert edit["valid"] is True and edit["rule_id"] == "5a6b7c8d-0000-4000-8000-00000000c002"


# --- POST /findings/triage, history -------------------------------------------------------------------

def test_bulk_triage_updates_many_and_records_who_changed_what(stack, admin):
    ids = insert_findings(stack.db_url, [{"title": f"triage {i}"} for i in range(3)])
    unknown = str(uuid.uuid4())
    triager_id, triager = principal_client(stack, admin, "findings:read", "findings:write")
    with triager:
        r = triager.post("/findings/triage", json={"ids": [ids[0], unknown, ids[1], ids[0]],
                                                    "status": "acknowledged", "assignee": "ana"})
        assert r.status_code == 200
        body = r.json()
        assert body["updated"] == 2 and body["missing"] == [unknown]
        assert [(f["id"], f["status"], f["assignee"]) for f in body["items"]] == [
            (ids[0], "acknowledged", "ana"), (ids[1], "acknowledged", "ana")]
        assert admin.get(f"/findings/{ids[2]}").json()["status"] == "open"
        r = triager.patch(f"/findings/{ids[0]}", json={"status": "resolved", "note": "benign"})
        assert r.status_code == 200
    admin.post("/findings/triage", json={"ids": [ids[0]], "assignee": None})

    history = admin.get(f"/findings/{ids[0]}/history").json()["items"]
    assert [(h["principal_id"], h["status"], h["assignee"], h["note"], h["changed"]) for h in history] == [
        (triager_id, "acknowledged", "ana", None, ["status", "assignee"]),
        (triager_id, "resolved", "ana", "benign", ["status", "note"]),
        ("admin", "resolved", None, "benign", ["assignee"]),
    ]
    times = [datetime.fromisoformat(h["at"]) for h in history]
    assert times == sorted(times)
    assert len(admin.get(f"/findings/{ids[1]}/history").json()["items"]) == 1
    assert admin.get(f"/findings/{ids[2]}/history").json() == {"items": []}
    assert admin.get(f"/findings/{unknown}/history").status_code == 404


def test_triage_needs_findings_write_and_a_valid_body(stack, admin):
    ids = insert_findings(stack.db_url, [{"title": "not yours"}])
    _, reader = principal_client(stack, admin, "findings:read")
    with reader:
        denied = reader.post("/findings/triage", json={"ids": ids, "status": "resolved"})
        assert denied.status_code == 403 and denied.json()["detail"] == "missing permission findings:write"
        assert reader.get(f"/findings/{ids[0]}/history").json() == {"items": []}
    for body in ({"ids": ids}, {"ids": [], "status": "open"}, {"ids": ids, "status": None},
                 {"ids": ids, "status": "closed"}, {"ids": [str(uuid.uuid4())] * 501, "status": "open"},
                 {"ids": ["not-a-uuid"], "status": "open"}):
        assert admin.post("/findings/triage", json=body).status_code == 422, body
    assert admin.get(f"/findings/{ids[0]}").json()["status"] == "open"


# --- GET /findings: q and sort ------------------------------------------------------------------------

def test_findings_text_search_and_sort(stack, admin):
    tag = uuid.uuid4().hex[:8]
    insert_findings(stack.db_url, [
        {"title": f"{tag} a", "severity": "medium", "rule_title": "Bravo", "at": "2026-04-01T00:00:00Z"},
        {"title": f"{tag} b", "severity": "critical", "rule_title": "alpha", "at": "2026-04-02T00:00:00Z"},
        {"title": f"{tag} c", "severity": "informational", "rule_title": "Charlie", "at": "2026-04-03T00:00:00Z"},
        {"title": f"{tag} d", "severity": "high", "rule_title": "Delta", "at": "2026-04-04T00:00:00Z"},
        {"title": f"{tag} e", "severity": "low", "rule_title": "Echo 100%", "at": "2026-04-05T00:00:00Z",
         "description": "Lateral MOVEMENT seen"},
    ])

    def titles(**params) -> list[str]:
        r = admin.get("/findings", params={"q": tag, **params})
        assert r.status_code == 200
        return [f["title"].split()[1] for f in r.json()["items"]]

    assert titles() == ["e", "d", "c", "b", "a"]  # default: newest first
    assert titles(sort="time") == ["a", "b", "c", "d", "e"]
    assert titles(sort="-severity") == ["b", "d", "a", "e", "c"]  # by rank, not alphabetically
    assert titles(sort="severity") == ["c", "e", "a", "d", "b"]
    assert titles(sort="rule") == ["b", "a", "c", "d", "e"]  # rule titles ignoring case
    assert titles(sort="-rule") == ["e", "d", "c", "a", "b"]
    assert titles(q=tag.upper()) == ["e", "d", "c", "b", "a"]  # ignoring case
    assert titles(q="lateral movement") == ["e"]  # the description
    assert titles(q="100%") == ["e"] and titles(q="10_%") == []  # wildcards are plain characters
    assert titles(q="CHARLIE", severity="informational") == ["c"]  # with the other filters
    assert admin.get("/findings", params={"sort": "title"}).status_code == 422
    assert admin.get("/findings", params={"q": "x" * 201}).status_code == 422


# --- GET /overview and GET /events?host= ------------------------------------------------------------

def test_overview_counts_findings_per_bucket_and_tops(stack, admin):
    since = "2026-05-01T00:00:00Z"
    rows = [{"title": "o", "severity": sev, "rule_id": rule, "rule_title": rule.upper(), "agent_id": agent,
             "at": at, "details": {"event": event}}
            for sev, rule, agent, at, event in (
                ("high", "ov-r1", "ov-a1", "2026-05-01T00:10:00Z", {"host": {"name": "ov-web"}}),
                ("high", "ov-r1", "ov-a1", "2026-05-01T01:20:00Z", {"host": {"name": "ov-web"}}),
                ("high", "ov-r2", "ov-a2", "2026-05-01T01:30:00Z", {"Event": {"System": {"Computer": "ov-dc"}}}),
                ("low", "ov-r1", "ov-a2", "2026-05-01T02:59:59Z", {"hostname": "ov-web"}),
                ("critical", "ov-r3", None, "2026-05-01T00:00:00Z", {"message": "no host"}),
                ("high", "ov-r1", "ov-a1", "2026-05-01T03:00:00Z", {}),  # at until: out
                ("high", "ov-r1", "ov-a1", "2026-04-30T23:59:59Z", {}))]  # before since: out
    insert_findings(stack.db_url, rows)
    r = admin.get("/overview", params={"since": since, "until": "2026-05-01T03:00:00Z", "bucket": 3600})
    assert r.status_code == 200
    view = r.json()
    assert (view["since"], view["until"], view["bucket"]) == ("2026-05-01T00:00:00Z", "2026-05-01T03:00:00Z", 3600)
    hours = ["2026-05-01T00:00:00Z", "2026-05-01T01:00:00Z", "2026-05-01T02:00:00Z"]
    assert view["findings_by_severity"] == {
        "informational": [[h, 0] for h in hours], "medium": [[h, 0] for h in hours],
        "high": [[hours[0], 1], [hours[1], 2], [hours[2], 0]],
        "low": [[hours[0], 0], [hours[1], 0], [hours[2], 1]],
        "critical": [[hours[0], 1], [hours[1], 0], [hours[2], 0]]}
    assert view["top_rules"] == [{"rule_id": "ov-r1", "rule_title": "OV-R1", "count": 3},
                                 {"rule_id": "ov-r2", "rule_title": "OV-R2", "count": 1},
                                 {"rule_id": "ov-r3", "rule_title": "OV-R3", "count": 1}]
    assert view["top_agents"] == [{"agent_id": "ov-a1", "count": 2}, {"agent_id": "ov-a2", "count": 2}]
    assert view["top_hosts"] == [{"host": "ov-web", "count": 3}, {"host": "ov-dc", "count": 1}]
    assert view["events_per_second"] == []  # this API has no archive
    assert view["consumer_lag"] is None  # no engine consumer
    for params in ({"bucket": 59}, {"bucket": 86401}, {"since": since, "until": since},
                   {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T08:21:00Z", "bucket": 60},
                   {"since": "0001-01-01T00:00:00+01:00"}):
        assert admin.get("/overview", params=params).status_code == 422, params
    default = admin.get("/overview").json()  # the last 24 hours in hours
    assert len(default["findings_by_severity"]["high"]) == 24 and default["bucket"] == 3600
    _, reader = principal_client(stack, admin, "events:read")
    with reader:
        assert reader.get("/overview").status_code == 403


def test_events_of_one_host_from_postgresql(stack, admin):
    with psycopg.connect(stack.db_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO events (id, agent_id, timestamp, type, data) VALUES (%s, 'ha', %s, 'x', %s)",
            [("h-1", "2026-06-01T00:00:00Z", Jsonb({"host": {"name": "hs-1"}})),
             ("h-2", "2026-06-01T00:01:00Z", Jsonb({"hostname": "hs-1"})),
             ("h-3", "2026-06-01T00:02:00Z", Jsonb({"host": {"name": "hs-2"}})),
             ("h-4", "2026-06-01T00:03:00Z", Jsonb({"host": "hs-1"})),
             ("h-5", "2026-06-01T00:04:00Z", Jsonb({"host": {"name": "hs-1"}}))])
    page = admin.get("/events", params={"host": "hs-1", "since": "2026-06-01T00:00:30Z",
                                        "until": "2026-06-01T00:04:00Z"}).json()
    assert [e["id"] for e in page["items"]] == ["h-4", "h-2"] and page["total"] == 2
    assert admin.get("/events", params={"host": "hs-2"}).json()["total"] == 1


async def test_overview_and_host_filter_read_the_archive_and_jetstream(tmp_path, postgres, nats_server, chdb_dir):
    archive = Archive(connect(None, chdb_dir))
    archive.ensure_table()
    base = datetime(2026, 7, 1, tzinfo=timezone.utc).timestamp()
    events = [(f"ar-{i}", base + offset, {"host": {"name": host}, "n": i})
              for i, (offset, host) in enumerate([(10, "db-1"), (20, "db-1"), (70, "web-1"), (80, "db-1"),
                                                  (130, "db-1"), (200, "db-1")])]
    archive.insert_block(b"".join(encode_row(eid, at, "ag", "t", orjson.dumps(data), i)
                                  for i, (eid, at, data) in enumerate(events)))
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    await js.add_consumer(EVENTS_STREAM, ConsumerConfig(durable_name="opmas-engine", ack_policy=AckPolicy.ALL))
    for i in range(3):
        await js.publish(events_subject("ag"), b"{}")
    for i in range(2):
        await js.publish(DEADLETTER_SUBJECT, orjson.dumps({"reason": "test", "n": i}))
    server = await asyncio.to_thread(lambda: ApiServer(api_settings(postgres.url, nats_server.url, tmp_path / "api"),
                                                       archive).start())
    try:
        with server.client(await asyncio.to_thread(server.token)) as api:
            view = await asyncio.to_thread(api.get, "/overview", params={
                "since": "2026-07-01T00:00:00Z", "until": "2026-07-01T00:03:00Z", "bucket": 60})
            assert view.status_code == 200
            assert view.json()["events_per_second"] == [
                ["2026-07-01T00:00:00Z", round(2 / 60, 6)], ["2026-07-01T00:01:00Z", round(2 / 60, 6)],
                ["2026-07-01T00:02:00Z", round(1 / 60, 6)]]
            partial = (await asyncio.to_thread(api.get, "/overview", params={
                "since": "2026-07-01T00:00:00Z", "until": "2026-07-01T00:01:30Z", "bucket": 60})).json()
            assert partial["events_per_second"] == [["2026-07-01T00:00:00Z", round(2 / 60, 6)],
                                                    ["2026-07-01T00:01:00Z", round(2 / 30, 6)]]
            assert (view.json()["dead_letters"], view.json()["consumer_lag"]) == (2, 3)

            page = (await asyncio.to_thread(api.get, "/events", params={
                "host": "db-1", "since": "2026-07-01T00:00:15Z", "until": "2026-07-01T00:03:00Z"})).json()
            assert [e["id"] for e in page["items"]] == ["ar-4", "ar-3", "ar-1"] and page["total"] == 3
            assert (await asyncio.to_thread(api.get, "/events", params={"host": "web-1"})).json()["total"] == 1
            assert (await asyncio.to_thread(api.get, "/events", params={"host": "db 1"})).json()["total"] == 0
    finally:
        await asyncio.to_thread(server.stop)
        await nc.close()
        archive.close()
