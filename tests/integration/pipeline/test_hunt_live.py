"""A retro-hunt gives what live processing gave (issue 14): ``opmas up`` takes the sample log and a brute
force live, then
a hunt of every enabled rule over its archive, through the API, finds the same findings with the same
ids, correlations included."""
from __future__ import annotations

import time

import httpx
import orjson

from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR
from tests.archived import log
from tests.upstack import running_stack, wait_until_replayed


def _all(stack, path: str, token: str) -> list[dict]:
    found, offset = [], 0
    while True:
        page = stack.get(path, token, limit=1000, offset=offset).json()
        found += page["items"]
        offset += 1000
        if offset >= page["total"]:
            return found


def test_a_hunt_over_the_archive_finds_what_live_processing_found(tmp_path):
    correlations = {r.id for r in load_ruleset(sources_from_paths([RULES_DIR]))[0].rules if r.kind == "correlation"}
    logged = tmp_path / "log.jsonl"
    logged.write_bytes(b"\n".join(orjson.dumps(obj) for obj in log()))  # the sample, then a brute force
    with running_stack() as stack:
        stack.replay(logged)
        wait_until_replayed(stack)
        token = stack.token()
        previous, deadline = -1, time.monotonic() + 60
        while (live := _all(stack, "/findings", token)) and len(live) != previous:  # until no new finding comes
            assert time.monotonic() < deadline
            previous = len(live)
            time.sleep(3)
        started = httpx.post(f"{stack.api}/hunts", json={"since": "2000-01-01T00:00:00Z"},
                             headers={"Authorization": f"Bearer {token}"}, verify=stack.verify)
        assert started.status_code == 202, started.text
        hunt_id, deadline = started.json()["id"], time.monotonic() + 60
        while (hunt := stack.get(f"/hunts/{hunt_id}", token).json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert hunt["status"] == "done", hunt
        hunted = _all(stack, f"/hunts/{hunt_id}/findings", token)
    assert {f["rule_id"] for f in live} & correlations  # correlations included
    assert sorted(f["id"] for f in hunted) == sorted(f["id"] for f in live)
    assert hunt["in_range"] == len(log())
