"""Run the management API: alone (``opmas api``) or as one service of ``opmas up``."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from dataclasses import replace

import uvicorn

from opmas.connectors.clickhouse.archive import Archive
from opmas.api.app import API_PREFIX, create_app
from opmas.api.settings import ApiSettings
from opmas.config import Config
from opmas.runtime.embedded import free_port, port_available
from opmas.runtime.stack import Stack

log = logging.getLogger("management")
WS_MAX_MESSAGE_BYTES = 64 * 1024  # what a client sends on a live stream: its token (a larger message closes it)


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (``opmas up``)."""

    def capture_signals(self):
        return contextlib.nullcontext()


async def serve(settings: ApiSettings, stop_event: asyncio.Event | None = None,
                archive: Archive | None = None) -> None:
    """Serve the API on ``settings.host:port`` until ``stop_event`` is set (or, without one,
    until SIGINT/SIGTERM); ``archive``: the engine's event archive, when in its process."""
    tls = settings.tls
    config = uvicorn.Config(create_app(settings, archive), host=settings.host, port=settings.port,
                            log_config=None, access_log=False, lifespan="on", ws="websockets-sansio",
                            ws_max_size=WS_MAX_MESSAGE_BYTES, ssl_certfile=tls and str(tls.cert),
                            ssl_keyfile=tls and str(tls.key))
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


def port_or_free(host: str, port: int) -> int:
    """``port`` if a server may listen on it (closed connections in TIME_WAIT do not count), else a
    free one (with a warning)."""
    if port_available(host, port):
        return port
    chosen = free_port(host)
    log.warning("API port in use, using another", extra={"wanted": port, "port": chosen})
    return chosen


async def up_service(config: Config, stack: Stack, stop: asyncio.Event) -> None:
    """The management API as a service of ``opmas up`` (on the stack's NATS and PostgreSQL; reading
    the stack's embedded chdb archive, or with a client of its own the ClickHouse server)."""
    settings = ApiSettings.from_config(config, stack.db_url, stack.nats_url, tls=stack.tls)
    settings = replace(settings, port=port_or_free(settings.host, settings.port))
    print(f"  API         {settings.base_url}{API_PREFIX}  (OpenAPI {API_PREFIX}/docs, Prometheus /metrics)",
          file=sys.stderr, flush=True)
    print(f"  console     {settings.base_url}/  (sign in: principal admin and its secret)", file=sys.stderr, flush=True)
    try:
        await serve(settings, stop, stack.archive if "clickhouse" in stack.embedded else None)
    except Exception:  # the engine keeps running without its API
        log.exception("management API stopped")
