"""`opmas up` against hostile rules (issue 11, items 3 and 4), end to end: a rule of catastrophically
backtracking regexes added through the API and another dropped in the rules directory do not freeze
event processing (before: 0 of 4 other agents' events processed in 120 s), a YAML alias bomb dropped
in the rules directory is refused with its file and line while the engine's memory stays bounded
(before: 6.3 GB), and through the API it is a located 422; the API answers throughout."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import nats
import orjson
import psycopg
import pytest

from opmas.runtime.embedded import free_port
from tests.unit.engine.test_rule_check import REDOS_RULE
from tests.unit.engine.test_yaml_limits import BOMB
from tests.integration.pipeline.test_up import start_up, wait_for_line
from tests.natsauth import service_options

MARKER = """title: Marker
id: 0e0e0e0e-0000-4000-8000-000000000001
logsource: {}
level: low
detection:
  sel:
    marker|startswith: ok-
  condition: sel
"""
FILE_REDOS = (REDOS_RULE.replace("0c0c0c0c-0000-4000-8000-000000000011", "0e0e0e0e-0000-4000-8000-000000000002")
              .replace("Backtracking", "Backtracking file").replace("CommandLine|re:", "Payload|re:")
              .replace("{CommandLine:", "{Payload:"))
NEAR_MISS = "a" * 49 + "!"


def _peak_rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0]) / 1024


async def _publish(url: str, per_agent: int, tag: str, data_dir: Path) -> int:
    """Four agents' marker events and an attacker's near misses for the backtracking rules, interleaved
    (``tag`` makes them differ from other calls': an event without an id is known by its content)."""
    nc = await nats.connect(url, **service_options(data_dir))
    js = nc.jetstream()
    sent = 0
    try:
        for i in range(per_agent):
            await js.publish("opmas.events.attacker", orjson.dumps(
                {"CommandLine": NEAR_MISS, "Payload": NEAR_MISS, "n": f"{tag}-{i}"}))
            for agent in range(4):
                await js.publish(f"opmas.events.agent-{agent}", orjson.dumps(
                    {"marker": f"ok-{tag}-{agent}-{i}", "CommandLine": NEAR_MISS, "Payload": "a" * 50}))
                sent += 1
    finally:
        await nc.close()
    return sent


def _count(db_url: str, rule_id: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM findings WHERE rule_id = %s", (rule_id,)).fetchone()[0]


@pytest.mark.timeout(400)
def test_hostile_rules_do_not_freeze_or_blow_up_a_running_engine(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "marker.yml").write_text(MARKER)
    port, secret = free_port(), "test-admin-secret-0123456789"
    env = os.environ | {"OPMAS_DATA_DIR": str(tmp_path / "data"), "OPMAS_NATS_PORT": str(port),
                        "OPMAS_RULES": str(rules), "OPMAS_WORKERS": "1", "OPMAS_API_PORT": str(free_port()),
                        "OPMAS_ADMIN_TOKEN": secret, "OPMAS_CACHE_DIR": "off"}
    for name in ("NATS_URL", "OPMAS_DB_URL", "OPMAS_CLICKHOUSE_URL"):
        env.pop(name, None)
    log = tmp_path / "up.log"
    up = start_up(env, log)
    try:
        wait_for_line(log, r"OPMAS is up", up)
        db_url = wait_for_line(log, r"PostgreSQL  (\S+)", up).group(1)
        api = wait_for_line(log, r"API +(http://\S+)", up).group(1)
        token = httpx.post(f"{api}/auth/token", json={"principal_id": "admin", "secret": secret},
                           timeout=30).json()["access_token"]
        client = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=120)

        started = time.monotonic()  # through the API: checked (tests: on a near miss), stored, reloaded
        created = client.post("/rules", json={"source": REDOS_RULE})
        assert created.status_code == 201 and created.json()["reload"]["ok"] is True, created.text
        assert time.monotonic() - started < 60

        seen = len(log.read_text(errors="replace"))  # dropped in the rules directory: hot-reloaded
        (rules / "redos.yml").write_text(FILE_REDOS)
        wait_for_line(log, r'"message":"rules reloaded".*"rules":3', up, after=seen, timeout=60)

        sent = asyncio.run(_publish(f"nats://127.0.0.1:{port}", 25, "first", tmp_path / "data"))
        deadline = time.monotonic() + 60
        while _count(db_url, "0e0e0e0e-0000-4000-8000-000000000001") < sent and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _count(db_url, "0e0e0e0e-0000-4000-8000-000000000001") == sent  # every agent's events
        assert _count(db_url, "0e0e0e0e-0000-4000-8000-000000000002") == sent  # Payload "a" * 50 matches
        assert _count(db_url, "0c0c0c0c-0000-4000-8000-000000000011") == 0  # near misses only

        seen = len(log.read_text(errors="replace"))
        (rules / "laughs.yml").write_text(MARKER.replace("-000000000001", "-000000000003")
                                          + "".join(f"x{line}\n" for line in BOMB.splitlines()))
        started = time.monotonic()
        refused = wait_for_line(log, r'"message":"[^"]*laughs\.yml:(\d+): error: YAML alias \*a is not allowed',
                                up, after=seen, timeout=60)
        assert refused.group(1) == "10" and time.monotonic() - started < 30
        assert "reload refused, the running rule set stays" in log.read_text(errors="replace")[seen:]
        assert _peak_rss_mib(up.pid) < 1024  # the engine process: the issue saw 6.3 GB
        started = time.monotonic()
        assert client.get("/auth/me").status_code == 200 and time.monotonic() - started < 2

        bomb = client.post("/rules", json={"source": MARKER.replace("-000000000001", "-000000000004")
                                           + "".join(f"x{line}\n" for line in BOMB.splitlines())})
        assert bomb.status_code == 422
        assert bomb.json()["detail"]["errors"][0]["line"] == 10
        assert "YAML alias *a" in bomb.json()["detail"]["errors"][0]["message"]

        (rules / "laughs.yml").unlink()  # the engine still processes with the set it kept
        more = asyncio.run(_publish(f"nats://127.0.0.1:{port}", 5, "then", tmp_path / "data"))
        deadline = time.monotonic() + 60
        while _count(db_url, "0e0e0e0e-0000-4000-8000-000000000001") < sent + more and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _count(db_url, "0e0e0e0e-0000-4000-8000-000000000001") == sent + more
        client.close()
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:  # a failed test: stop it as Ctrl-C does (a kill leaves the embedded servers)
            up.send_signal(signal.SIGINT)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
