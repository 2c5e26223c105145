"""`opmas up` on a fresh data dir: embedded servers, replay from a second process, findings, clean
Ctrl-C, and the data still there after a restart."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from opmas.embedded import free_port
from opmas.paths import RULES_DIR
from tests.pipeline.conftest import SAMPLE


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "opmas.cli", "up"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"), start_new_session=True)


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, after: int = 0, timeout: float = 90) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace")[after:])
        if match:
            return match
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in the log:\n{log.read_text()[-3000:]}")


def findings_in(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM findings").fetchone()[0]


@pytest.mark.timeout(240)
def test_up_replay_ctrl_c_restart(tmp_path):
    port = free_port()
    env = os.environ | {"OPMAS_DATA_DIR": str(tmp_path / "data"), "OPMAS_NATS_PORT": str(port),
                        "OPMAS_RULES": str(RULES_DIR), "OPMAS_WORKERS": "1"}
    env.pop("NATS_URL", None), env.pop("OPMAS_DB_URL", None), env.pop("OPMAS_CLICKHOUSE_URL", None)
    log = tmp_path / "up.log"
    up = start_up(env, log)
    try:
        wait_for_line(log, r"OPMAS is up", up)
        db_url = wait_for_line(log, r"PostgreSQL  (\S+)", up).group(1)
        assert f"nats://127.0.0.1:{port}" in log.read_text()
        tools_env = {k: v for k, v in env.items() if k != "OPMAS_NATS_PORT"}  # they find it via the data dir
        replay = subprocess.run([sys.executable, "-m", "opmas.cli", "replay", str(SAMPLE)], env=tools_env,
                                capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr
        assert re.search(r"replayed 272 events in \d+ messages", replay.stderr), replay.stderr
        deadline = time.monotonic() + 60
        while findings_in(db_url) == 0 and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(2)
        found = findings_in(db_url)
        assert found > 0
        reload = subprocess.run([sys.executable, "-m", "opmas.cli", "rules", "reload"], env=tools_env,
                                capture_output=True, text=True, timeout=60)
        assert reload.returncode == 0 and "reloaded:" in reload.stdout, reload.stdout + reload.stderr
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        assert "opmas stopped" in log.read_text()
        assert not (tmp_path / "data" / "nats.url").exists()
        stopped = log.read_text()

        up = start_up(env, log)
        wait_for_line(log, r"OPMAS is up", up, after=len(stopped))
        restarted = log.read_text()[len(stopped):]
        assert re.search(r'"resume_after_seq":[1-9]', restarted), restarted[-2000:]
        assert findings_in(db_url) == found  # PostgreSQL data survived; nothing re-fired
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
