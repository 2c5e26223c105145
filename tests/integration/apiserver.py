"""A real management API (uvicorn on a free port, its own thread and loop) over real servers, for tests."""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from opmas.connectors.clickhouse.archive import Archive
from opmas.api.service import serve
from opmas.api.settings import ApiSettings
from opmas.runtime.embedded import free_port, wait_for_port

ADMIN_SECRET = "test-admin-secret"
JWT_SECRET = "test-jwt-secret-of-enough-length-for-hs256"


@dataclass
class ApiServer:
    settings: ApiSettings
    archive: Archive | None = None  # the engine's event archive (as in ``opmas up``)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _error: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.settings.host}:{self.settings.port}/api/v1"

    def start(self) -> "ApiServer":
        ready = threading.Event()

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            ready.set()
            try:
                await serve(self.settings, self._stop, self.archive)
            except BaseException as exc:  # noqa: BLE001 - reported by start()
                self._error.append(exc)

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 60
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                wait_for_port(self.settings.host, self.settings.port, timeout=0.5)
                return self
            except TimeoutError:
                pass
        raise RuntimeError(f"API did not start: {self._error}")

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(20)

    def token(self, principal_id: str = "admin", secret: str = ADMIN_SECRET, **extra) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/token",
                       json={"principal_id": principal_id, "secret": secret, **extra})
        r.raise_for_status()
        return r.json()["access_token"]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30)


def api_settings(db_url: str, nats_url: str, data_dir: Path, **overrides) -> ApiSettings:
    """Test settings: known secrets, fast liveness and WebSocket token re-checks."""
    values = dict(db_url=db_url, nats_url=nats_url, data_dir=data_dir, port=free_port(),
                  jwt_secret=JWT_SECRET, admin_token=ADMIN_SECRET, stale_after=1.0, offline_after=2.0,
                  liveness_interval=0.2, reload_timeout=2.0, ws_recheck_interval=0.5)
    values.update(overrides)
    return ApiSettings(**values)
