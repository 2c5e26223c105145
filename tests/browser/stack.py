"""The console's test stack: ``opmas up`` in a subprocess on free ports in a temp data dir, and
Debian's chromium for Playwright (never a downloaded browser). Used by the browser tests' fixtures
(conftest.py) and by scripts/screenshots.py."""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
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
from tests.expected import SAMPLE

ADMIN_SECRET = "browser-admin-secret-0123456789"


def chromium_path() -> str | None:
    chosen = os.environ.get("OPMAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return chosen if Path(chosen).is_file() and os.access(chosen, os.X_OK) else None


def skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "no chromium: the browser tests need Debian's chromium (apt-get install chromium) or OPMAS_CHROMIUM"
    return None


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
    replayed: bool = False
    notes: dict = field(default_factory=dict)

    def token(self, principal: str = "admin", secret: str = ADMIN_SECRET) -> str:
        answer = httpx.post(f"{self.api}/auth/token", json={"principal_id": principal, "secret": secret}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def get(self, path: str, token: str | None = None, **params) -> httpx.Response:
        return httpx.get(f"{self.api}{path}", params=params, timeout=30,
                         headers={"Authorization": f"Bearer {token or self.token()}"})

    def replay(self) -> None:
        """Replay the sample log into the running stack (as the README's second terminal does)."""
        tools_env = {k: v for k, v in self.env.items() if k != "OPMAS_NATS_PORT"}  # found through the data dir
        done = subprocess.run([sys.executable, "-m", "opmas.cli", "replay", str(SAMPLE)], env=tools_env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        self.replayed = True


@contextmanager
def running_stack() -> Iterator[Stack]:
    """``opmas up`` on free ports in a temp data dir (with ``OPMAS_ADMIN_TOKEN`` set), until the block
    ends: then Ctrl-C to its process group, SIGKILL after 60 s. Also used by scripts/screenshots.py."""
    base = Path(tempfile.mkdtemp(prefix="opmas-console-"))  # not under pytest's basetemp (see tests/conftest.py)
    env = os.environ | {"OPMAS_DATA_DIR": str(base / "data"), "OPMAS_NATS_PORT": str(free_port()),
                        "OPMAS_RULES": str(RULES_DIR), "OPMAS_WORKERS": "1", "OPMAS_API_PORT": str(free_port()),
                        "OPMAS_ADMIN_TOKEN": ADMIN_SECRET}
    for name in ("NATS_URL", "OPMAS_DB_URL", "OPMAS_CLICKHOUSE_URL"):
        env.pop(name, None)
    log = base / "up.log"
    with open(log, "ab") as out:
        up = subprocess.Popen([sys.executable, "-m", "opmas.cli", "up"], env=env, stdout=subprocess.DEVNULL,
                              stderr=out, start_new_session=True)
    try:
        console = wait_for_line(log, r"console +(http://\S+/)", up).group(1)
        wait_for_line(log, r"OPMAS is up", up)
        running = Stack(base=console, api=console + "api/v1", env=env, log=log)
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


def launch(playwright):
    """Debian's chromium, headless (its sandbox refuses root: then without it)."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=args)


def sign_in(page, stack: Stack, principal: str = "admin", secret: str = ADMIN_SECRET) -> None:
    page.goto(stack.base)
    page.get_by_label("Principal id").fill(principal)
    page.get_by_label("Secret").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()
