"""Issue 11, item 6: failures are supervised. A SIGKILLed evaluator process and a SIGKILLed embedded
postmaster are restarted; the API keeps answering and reports the outage on /health; events sent
after each kill are processed. Before: the killed evaluator took all of `opmas up` down, and a
killed postmaster was never started again (the pipeline stalled, the API answered 503)."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import nats
import orjson
import psutil
import psycopg
import pytest

from opmas.runtime.embedded import free_port
from tests.integration.pipeline.test_hostile_rules_up import MARKER
from tests.integration.pipeline.test_kill9 import up_env
from tests.integration.pipeline.test_up import start_up, wait_for_line
from tests.natsauth import service_options

MARKER_ID = "0e0e0e0e-0000-4000-8000-000000000001"


async def _publish(url: str, tag: str, data_dir: Path, count: int = 5) -> None:
    nc = await nats.connect(url, **service_options(data_dir))
    try:
        js = nc.jetstream()
        for i in range(count):
            await js.publish(f"opmas.events.agent-{i}", orjson.dumps({"id": f"{tag}-{i}", "marker": f"ok-{tag}-{i}"}))
    finally:
        await nc.close()


def _findings(db_url: str, tag: str) -> int:
    try:
        with psycopg.connect(db_url, connect_timeout=3) as conn:
            return conn.execute("SELECT count(*) FROM findings WHERE rule_id = %s AND event_ids[1] LIKE %s",
                                (MARKER_ID, f"{tag}-%")).fetchone()[0]
    except psycopg.OperationalError:
        return 0


def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.3)


def _health(api: str) -> tuple[int, dict]:
    answer = httpx.get(f"{api}/health", timeout=10)
    return answer.status_code, answer.json()


@pytest.mark.timeout(400)
def test_killed_evaluator_and_postmaster_are_restarted(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "marker.yml").write_text(MARKER)
    data, nats_port = tmp_path / "data", free_port()
    env = up_env(data, nats_port, free_port()) | {"OPMAS_RULES": str(rules)}
    nats_url, log = f"nats://127.0.0.1:{nats_port}", tmp_path / "up.log"
    up = start_up(env, log)
    try:
        wait_for_line(log, r"OPMAS is up", up)
        db_url = wait_for_line(log, r"PostgreSQL  (\S+)", up).group(1)
        api = wait_for_line(log, r"API +(http://\S+)", up).group(1)
        _until(lambda: _health(api)[0] == 200, 60, "a healthy start")
        asyncio.run(_publish(nats_url, "before", tmp_path / "data"))
        _until(lambda: _findings(db_url, "before") == 5, 60, "findings before the kills")

        [worker] = [p for p in psutil.Process(up.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        worker.kill()
        asyncio.run(_publish(nats_url, "evaluator", tmp_path / "data"))
        _until(lambda: _findings(db_url, "evaluator") == 5, 90, "findings after the evaluator was killed")
        assert up.poll() is None
        status, body = _health(api)
        assert status == 200 and body["components"]["engine"]["restarts"] >= 1, body

        postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        asyncio.run(_publish(nats_url, "postmaster", tmp_path / "data"))
        _until(lambda: _findings(db_url, "postmaster") == 5, 120, "findings after the postmaster was killed")
        _until(lambda: _health(api)[0] == 200, 60, "/health to recover")
        assert _health(api)[1]["components"]["postgres"]["restarts"] >= 1
        assert up.poll() is None
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
