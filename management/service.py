"""Run the management API: alone (``opmas api``) or as one service of ``opmas up``."""
from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from management.app import create_app
from management.settings import ApiSettings


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (``opmas up``)."""

    def capture_signals(self):
        return contextlib.nullcontext()


async def serve(settings: ApiSettings, stop_event: asyncio.Event | None = None) -> None:
    """Serve the API on ``settings.host:port`` until ``stop_event`` is set (or, without one,
    until SIGINT/SIGTERM)."""
    config = uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                            log_config=None, access_log=False, lifespan="on", ws="websockets-sansio")
    server = (_EmbeddedServer if stop_event is not None else uvicorn.Server)(config)
    watcher = None
    if stop_event is not None:
        async def stop_when_asked() -> None:
            await stop_event.wait()
            server.should_exit = True
        watcher = asyncio.create_task(stop_when_asked())
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits when the lifespan (database, NATS) fails
        raise RuntimeError(f"management API failed to start on {settings.host}:{settings.port}") from exc
    finally:
        if watcher is not None:
            watcher.cancel()
