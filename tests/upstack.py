"""``opmas up`` for tests that drive it from outside, as a user would: a subprocess on free ports in
a temp data dir, with the sample log replayed into it on demand (tests/browser, tests/integration/
security, scripts/screenshots.py)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from opmas.paths import RULES_DIR
from opmas.runtime.embedded import free_port
from opmas.runtime.tls import client_context
from tests.expected import SAMPLE

ADMIN_SECRET = "browser-admin-secret-0123456789"


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 90) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in the log:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class Stack:
    base: str  # the console, http://127.0.0.1:<port>/
    api: str  # http://127.0.0.1:<port>/api/v1
    env: dict[str, str]
    log: Path
    data_dir: Path
    replayed: bool = False
    notes: dict = field(default_factory=dict)

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client on this machine trusts of the stack's API: its local CA, where TLS is on."""
        ca = self.data_dir / "tls" / "ca.pem"
        return client_context(ca) if self.base.startswith("https") else True

    def token(self, principal: str = "admin", secret: str = ADMIN_SECRET) -> str:
        answer = httpx.post(f"{self.api}/auth/token", json={"principal_id": principal, "secret": secret}, timeout=10,
                            verify=self.verify)
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def get(self, path: str, token: str | None = None, **params) -> httpx.Response:
        return httpx.get(f"{self.api}{path}", params=params, timeout=30, verify=self.verify,
                         headers={"Authorization": f"Bearer {token or self.token()}"})

    def replay(self, log: Path = SAMPLE) -> None:
        """Replay a log (the sample) into the running stack, as the README's second terminal does."""
        tools_env = {k: v for k, v in self.env.items() if k != "OPMAS_NATS_PORT"}  # found through the data dir
        done = subprocess.run([sys.executable, "-m", "opmas.cli", "replay", str(log)], env=tools_env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        self.replayed = True


@contextmanager
def running_stack(settings: dict[str, str] | None = None) -> Iterator[Stack]:
    """``opmas up`` on free ports in a temp data dir (with ``OPMAS_ADMIN_TOKEN`` set, and the environment
    ``settings``), until the block ends: then Ctrl-C to its process group, SIGKILL after 60 s. Used by
    the browser and security tests and by scripts/screenshots.py."""
    base = Path(tempfile.mkdtemp(prefix="opmas-console-"))  # not under pytest's basetemp (see tests/conftest.py)
    env = os.environ | {"OPMAS_DATA_DIR": str(base / "data"), "OPMAS_NATS_PORT": str(free_port()),
                        "OPMAS_RULES": str(RULES_DIR), "OPMAS_WORKERS": "1", "OPMAS_API_PORT": str(free_port()),
                        "OPMAS_ADMIN_TOKEN": ADMIN_SECRET, **(settings or {})}
    for name in ("NATS_URL", "OPMAS_DB_URL", "OPMAS_CLICKHOUSE_URL"):
        env.pop(name, None)
    log = base / "up.log"
    with open(log, "ab") as out:
        up = subprocess.Popen([sys.executable, "-m", "opmas.cli", "up"], env=env, stdout=subprocess.DEVNULL,
                              stderr=out, start_new_session=True)
    try:
        console = wait_for_line(log, r"console +(https?://\S+/)", up).group(1)
        wait_for_line(log, r"OPMAS is up", up)
        running = Stack(base=console, api=console + "api/v1", env=env, log=log, data_dir=base / "data")
        deadline = time.monotonic() + 60
        while True:
            try:
                running.token()
                break
            except (httpx.TransportError, AssertionError):
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.3)
        yield running
    finally:
        try:
            os.killpg(up.pid, signal.SIGINT)
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
        except ProcessLookupError:
            pass
        shutil.rmtree(base, ignore_errors=True)


def wait_until_replayed(stack: Stack) -> None:
    """Until the sample's findings are stored and its 272 events archived."""
    token = stack.token()
    deadline = time.monotonic() + 90
    while True:
        findings = stack.get("/findings", token, limit=1).json()["total"]
        events = stack.get("/events", token, limit=1).json()["total"]
        if findings > 0 and events >= 272:
            return
        assert time.monotonic() < deadline, f"{findings} findings, {events} events archived"
        time.sleep(0.5)
