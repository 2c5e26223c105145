"""Retro-hunts through the API (issue 14): started with POST /hunts, run in the background over the
event archive, read with GET and streamed on /ws/hunts/{id}; the findings and ids of live processing,
stored linked to the hunt only when asked; permissions and bad rules refused."""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psycopg
import pytest
from websockets.sync.client import connect

from opmas.connectors.clickhouse.archive import encode_row
from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR
from opmas.runtime.embedded import start_nats
from tests.archived import archived, log, processed
from tests.integration.apiserver import ApiServer, api_settings

SINCE = "2020-01-01T00:00:00Z"
SSH_FAILURE_RULE = """title: Failed SSH password
id: 5a7e61c2-9d43-4b8e-8f1e-2d0c7a9b1e01
logsource: {product: linux, service: auth}
detection:
    failed:
        message|contains: 'Failed password'
    condition: failed
level: low
"""


@pytest.fixture(scope="module")
def hunting(shared_postgres) -> Iterator[tuple[ApiServer, set[str], list]]:
    """An API over the shipped rules and an archive holding the sample log and a brute force; the finding
    ids live processing gives for those events, and the events."""
    base = Path(tempfile.mkdtemp(prefix="opmas-hunts-"))
    events, live = processed(log())
    archive = archived(base / "chdb", events)
    nats_server = start_nats(base / "nats")
    try:
        with shared_postgres.database() as database:
            settings = api_settings(database.url, nats_server.url, base / "data", rule_paths=(RULES_DIR,))
            server = ApiServer(settings, archive=archive).start()
            server.db_url = database.url
            try:
                yield server, live, events
            finally:
                server.stop()
    finally:
        nats_server.stop()
        archive.close()
        shutil.rmtree(base, ignore_errors=True)


def _finished(client, hunt_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hunt = client.get(f"/hunts/{hunt_id}").json()
        if hunt["status"] != "running":
            return hunt
        time.sleep(0.1)
    raise AssertionError(f"hunt {hunt_id} still running: {hunt}")


def _all_findings(client, hunt_id: str) -> list[dict]:
    found, offset = [], 0
    while True:
        page = client.get(f"/hunts/{hunt_id}/findings", params={"limit": 100, "offset": offset}).json()
        found += page["items"]
        offset += 100
        if offset >= page["total"]:
            return found


def test_a_hunt_gives_live_processings_findings_and_streams_its_progress(hunting):
    server, live, events = hunting
    with server.client(server.token()) as client:
        started = client.post("/hunts", json={"since": SINCE})
        assert started.status_code == 202, started.text
        hunt_id = started.json()["id"]
        with connect(f"{server.ws_url}/ws/hunts/{hunt_id}") as ws:
            ws.send(orjson.dumps({"token": server.token()}).decode())  # the token in a message, not the URL
            assert "subscribed" in orjson.loads(ws.recv(10))
            hunt = client.get(f"/hunts/{hunt_id}").json()
            streamed = []
            while hunt["status"] == "running":  # it ended before the subscription: GET told
                message = orjson.loads(ws.recv(60))["data"]
                if "finding" in message:
                    streamed.append(message["finding"]["id"])
                else:
                    hunt = message
        assert hunt["status"] == "done", hunt
        found = _all_findings(client, hunt_id)
        assert {f["id"] for f in found} == live  # the same ids, correlations included
        correlations = {r.id for r in load_ruleset(sources_from_paths([RULES_DIR]))[0].rules if r.kind == "correlation"}
        assert {f["rule_id"] for f in found} & correlations
        assert set(streamed) <= live
        assert hunt["in_range"] == len({e.id for e in events}) and hunt["findings"] == len(live)
        listed = client.get("/hunts").json()["items"]
        assert hunt_id in {h["id"] for h in listed}
    with psycopg.connect(server.db_url) as conn:  # not stored: only the hunt's record
        assert conn.execute("SELECT count(*) FROM hunt_findings WHERE hunt_id = %s", (hunt_id,)).fetchone()[0] == 0
        assert conn.execute("SELECT status, findings FROM hunts WHERE id = %s", (hunt_id,)).fetchone() == \
            ("done", len(live))


def test_a_stored_hunt_links_its_findings_and_a_rule_as_text_hunts_alone(hunting):
    server, live, events = hunting
    with server.client(server.token()) as client:
        hunt_id = client.post("/hunts", json={"since": SINCE, "yaml": SSH_FAILURE_RULE, "store": True}).json()["id"]
        hunt = _finished(client, hunt_id)
        assert hunt["status"] == "done" and hunt["rule_ids"] == ["5a7e61c2-9d43-4b8e-8f1e-2d0c7a9b1e01"]
        failed = [e for e in events if "Failed password" in str(e.data.get("message", ""))]
        assert hunt["findings"] == len(failed) > 0
        assert hunt["read"] < hunt["in_range"]  # ClickHouse left out what the rule cannot match
    with psycopg.connect(server.db_url) as conn:
        stored = conn.execute("SELECT f.rule_id, f.event_ids FROM findings f JOIN hunt_findings h ON h.finding_id = f.id"
                              " WHERE h.hunt_id = %s", (hunt_id,)).fetchall()
        outbox = conn.execute("SELECT count(*) FROM finding_outbox").fetchone()[0]
    assert sorted(ids[0] for _, ids in stored) == sorted(e.id for e in failed)
    assert outbox == 0  # a hunt's findings are not announced as live ones


def test_bad_rules_permissions_and_ranges_are_refused(hunting):
    server, _, _ = hunting
    with server.client(server.token()) as admin:
        broken = SSH_FAILURE_RULE.replace("    condition: failed", "    condition: failed and nothing")
        answer = admin.post("/hunts", json={"since": SINCE, "yaml": broken})
        assert answer.status_code == 422
        errors = answer.json()["detail"]["errors"]
        assert errors and errors[0]["file"] == "hunt.yml" and errors[0]["line"] is not None
        assert admin.post("/hunts", json={"since": SINCE, "rule_ids": ["no-such-rule"]}).status_code == 404
        assert admin.post("/hunts", json={"since": SINCE, "until": SINCE}).status_code == 422
        reader = admin.post("/principals", json={"name": "hunter", "permissions": ["hunts:run"]}).json()
    with server.client(server.token(reader["id"], reader["secret"])) as hunter:
        assert hunter.post("/hunts", json={"since": SINCE, "store": True}).status_code == 403  # no findings:write
        hunt_id = hunter.post("/hunts", json={"since": SINCE, "yaml": SSH_FAILURE_RULE}).json()["id"]
        assert _finished(hunter, hunt_id)["status"] == "done"
        assert hunter.delete(f"/hunts/{hunt_id}").status_code == 409  # it has ended
        assert hunter.get("/findings").status_code == 403
    with server.client(server.token()) as admin:
        nobody = admin.post("/principals", json={"name": "reader", "permissions": ["findings:read"]}).json()
    with server.client(server.token(nobody["id"], nobody["secret"])) as reader:
        assert reader.post("/hunts", json={"since": SINCE}).status_code == 403
        assert reader.get(f"/hunts/{hunt_id}").status_code == 403


def test_a_running_hunt_is_cancelled_between_batches(hunting):
    server, _, _ = hunting
    start = datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()  # after the range of the other tests' hunts
    server.archive.insert_block(b"".join(
        encode_row(f"bulk-{i:07d}", start + i * 0.02, "bulk", "", orjson.dumps({"message": f"sshd line {i}"}), i)
        for i in range(200_000)))  # 67 minutes: several slices, each read in batches
    with server.client(server.token()) as client:
        hunt_id = client.post("/hunts", json={"since": "2030-01-01T00:00:00Z",
                                              "until": "2030-01-02T00:00:00Z"}).json()["id"]
        cancelled = client.delete(f"/hunts/{hunt_id}")  # answers once the hunt has stopped
        assert cancelled.status_code == 200, cancelled.text
        hunt = cancelled.json()
        assert hunt["status"] == "cancelled" and 0 < hunt["read"] < hunt["in_range"] == 200_000
        assert client.delete(f"/hunts/{hunt_id}").status_code == 409
    with psycopg.connect(server.db_url) as conn:
        assert conn.execute("SELECT status FROM hunts WHERE id = %s", (hunt_id,)).fetchone() == ("cancelled",)
