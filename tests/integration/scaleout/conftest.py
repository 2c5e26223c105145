"""Fixtures for the scale-out tests: a Tansu broker, and the bridge/worker/archiver as real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opmas.runtime.tansu import TansuBroker, start_tansu
from tests.waiting import wait_until_blocking
from tests.paths import PROJECT_ROOT

PARTITIONS = 4
SESSION_TIMEOUT = 6.0  # seconds; Tansu also holds a group's join for half of it


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    """A fresh in-memory Tansu broker on a free port."""
    broker = start_tansu(log_file=tmp_path / "tansu.log")
    yield broker
    broker.stop()


@dataclass
class Proc:
    """An ``opmas`` sub-command running as its own process, logging to a file."""

    name: str
    process: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no goodbye to the group, no last commit."""
        self.process.kill()
        self.process.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def scaleout_env(nats_server, postgres, tansu, tmp_path: Path) -> dict[str, str]:
    """Environment of the scale-out processes: the test's NATS, PostgreSQL and Tansu."""
    return {
        **os.environ,
        "NATS_URL": nats_server.url, "OPMAS_DB_URL": postgres.url, "OPMAS_KAFKA_URL": tansu.url,
        "OPMAS_PARTITIONS": str(PARTITIONS), "OPMAS_KAFKA_SESSION_TIMEOUT": str(SESSION_TIMEOUT),
        "OPMAS_DATA_DIR": str(tmp_path / "data"), "OPMAS_BATCH_SIZE": "500", "OPMAS_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def spawn(scaleout_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``spawn("worker", *args, name="w1", **env)`` starts ``opmas worker``; every process is stopped after."""
    procs: list[Proc] = []

    def start(command: str, *args: str, name: str | None = None, **env: str) -> Proc:
        name = name or command
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen([sys.executable, "-m", "opmas.cli", command, *args], cwd=PROJECT_ROOT,
                                   env={**scaleout_env, **env}, stdout=open(log, "ab"),
                                   stderr=subprocess.STDOUT)
        proc = Proc(name, process, log)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str, procs: tuple[Proc, ...] = ()) -> None:
    """:func:`tests.waiting.wait_until_blocking`; on timeout the test fails with the processes' last log lines."""
    wait_until_blocking(check, timeout, what, explain=lambda: "\n".join(
        f"--- {p.name} ({'alive' if p.alive() else 'exited'})\n{p.tail()}" for p in procs))
