"""`opmas up` on a fresh data dir: embedded servers, replay from a second process, findings, clean
Ctrl-C, and the data still there after a restart."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nats
import psycopg
import pytest

from opmas.config import Config
from opmas.runtime.embedded import free_port
from opmas.paths import RULES_DIR
from tests.expected import SAMPLE
from tests.natsauth import service_options


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


def servers_of(data_dir: Path) -> set[str]:
    """Which of nats-server and postgres run on ``data_dir``."""
    found = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(data_dir).encode() in a for a in args):
            found.update(name for name in ("nats-server", "postgres") if name.encode() in args[0])
    return found


def api_answers(api: str, secret: str) -> None:
    """The admin gets a token, and the token lists the agents."""
    deadline = time.monotonic() + 60
    while True:
        try:
            answer = httpx.post(f"{api}/auth/token", json={"principal_id": "admin", "secret": secret}, timeout=5)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the management API never answered"
            time.sleep(0.3)
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    agents = httpx.get(f"{api}/agents", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert agents.status_code == 200, agents.text


def open_to_others(data_dir: Path) -> list[str]:
    """Paths under the data dir that group or others may read, write or search (issue 11, item 12); the
    data dir itself may be searchable, not readable, where PostgreSQL runs as another user (root)."""
    found = [f"{data_dir}: {stat.filemode(data_dir.stat().st_mode)}"] if data_dir.stat().st_mode & 0o066 else []
    for path in data_dir.rglob("*"):
        info = path.lstat()
        if not (stat.S_ISLNK(info.st_mode) or stat.S_ISSOCK(info.st_mode)) and info.st_mode & 0o077:
            found.append(f"{path}: {stat.filemode(info.st_mode)}")
    return found


def findings_in(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM findings").fetchone()[0]


@pytest.mark.timeout(240)
async def max_payload(url: str, data_dir: Path) -> int:
    nc = await nats.connect(url, **service_options(data_dir))
    try:
        return nc.max_payload
    finally:
        await nc.close()


def test_up_replay_ctrl_c_restart(tmp_path):
    port = free_port()
    secret = "test-admin-secret-0123456789"
    env = os.environ | {"OPMAS_DATA_DIR": str(tmp_path / "data"), "OPMAS_NATS_PORT": str(port),
                        "OPMAS_RULES": str(RULES_DIR), "OPMAS_WORKERS": "1", "OPMAS_API_PORT": str(free_port()),
                        "OPMAS_ADMIN_TOKEN": secret}
    env.pop("NATS_URL", None), env.pop("OPMAS_DB_URL", None), env.pop("OPMAS_CLICKHOUSE_URL", None)
    log = tmp_path / "up.log"
    up = start_up(env, log)
    try:
        wait_for_line(log, r"OPMAS is up", up)
        db_url = wait_for_line(log, r"PostgreSQL  (\S+)", up).group(1)
        assert f"nats://127.0.0.1:{port}" in log.read_text()
        # the embedded server takes what the engine takes: clients split their batches below it
        assert asyncio.run(max_payload(f"nats://127.0.0.1:{port}", tmp_path / "data")) == Config().nats.max_message_bytes
        assert str(tmp_path / "data") in wait_for_line(log, r"ClickHouse  (\S+)  \(embedded\)", up).group(1)
        api_answers(wait_for_line(log, r"API +(http://\S+)", up).group(1), secret)
        assert servers_of(tmp_path / "data") == {"nats-server", "postgres"}
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
        assert open_to_others(tmp_path / "data") == []  # the archive, the NATS store, logs: the user's alone
        reload = subprocess.run([sys.executable, "-m", "opmas.cli", "rules", "reload"], env=tools_env,
                                capture_output=True, text=True, timeout=60)
        assert reload.returncode == 0 and "reloaded:" in reload.stdout, reload.stdout + reload.stderr
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        assert "opmas stopped" in log.read_text()
        assert not (tmp_path / "data" / "nats.url").exists()
        assert servers_of(tmp_path / "data") == set()  # Ctrl-C stopped nats-server and postgres
        stopped = log.read_text()
        identities = {f.name: f.read_bytes() for f in (tmp_path / "data" / "nats-auth").iterdir()}
        assert len(identities) == 4 and all(stat.S_IMODE(f.stat().st_mode) == 0o600
                                            for f in (tmp_path / "data" / "nats-auth").iterdir())

        up = start_up(env, log)
        wait_for_line(log, r"OPMAS is up", up, after=len(stopped))
        restarted = log.read_text()[len(stopped):]
        assert re.search(r'"resume_after_seq":[1-9]', restarted), restarted[-2000:]
        assert findings_in(db_url) == found  # PostgreSQL data survived; nothing re-fired
        assert {f.name: f.read_bytes() for f in (tmp_path / "data" / "nats-auth").iterdir()} == identities  # reused
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
