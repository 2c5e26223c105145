"""The console in a real browser: ``opmas up`` in a subprocess (free ports, a temp data dir) for
the session, and Playwright driving Debian's chromium headless (never a downloaded browser).

Without chromium (``/usr/bin/chromium``, or ``OPMAS_CHROMIUM``) or the ``playwright`` package, the
tests skip and say why. The session's stack is shared: ``replayed`` replays the sample log once."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from opmas.paths import RULES_DIR
from opmas.runtime.embedded import free_port
from tests.expected import SAMPLE

ADMIN_SECRET = "browser-admin-secret-0123456789"


def chromium_path() -> str | None:
    chosen = os.environ.get("OPMAS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return chosen if Path(chosen).is_file() and os.access(chosen, os.X_OK) else None


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return "no chromium: the browser tests need Debian's chromium (apt-get install chromium) or OPMAS_CHROMIUM"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason:
        for item in items:
            if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(pytest.mark.skip(reason=reason))


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


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if _skip_reason():
        pytest.skip(_skip_reason())
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


@pytest.fixture(scope="session")
def replayed(stack: Stack) -> Stack:
    """The sample log replayed (by the live-finding test, else here), its findings stored and its
    events archived."""
    if not stack.replayed:
        stack.replay()
    token = stack.token()
    deadline = time.monotonic() + 90
    while True:
        findings = stack.get("/findings", token, limit=1).json()["total"]
        events = stack.get("/events", token, limit=1).json()["total"]
        if findings > 0 and events >= 272:
            return stack
        assert time.monotonic() < deadline, f"{findings} findings, {events} events archived"
        time.sleep(0.5)


@pytest.fixture(scope="session")
def browser(stack: Stack):
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium's sandbox refuses root
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        yield launched
        launched.close()


class PageProblems(list):
    """Script errors and Content-Security-Policy refusals a page logged."""


@pytest.fixture
def new_page(browser):
    """``new_page()``: a page in a fresh browser context (its own sessionStorage); after the test, no
    page may have had a script error or a CSP refusal."""
    contexts, problems = [], PageProblems()

    def make():
        context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="UTC")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on("console", lambda message: problems.append(f"console: {message.text}")
                if "Content Security Policy" in message.text or "Refused to" in message.text else None)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems, problems


def sign_in(page, stack: Stack, principal: str = "admin", secret: str = ADMIN_SECRET) -> None:
    page.goto(stack.base)
    page.get_by_label("Principal id").fill(principal)
    page.get_by_label("Secret").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()
