"""The FastAPI application: lifespan (database, migrations, admin bootstrap, NATS, liveness) and routes."""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from connectors.clickhouse.archive import Archive, connect
from connectors.postgres.migrations import migrate
from management.auth import TokenIssuer, load_jwt_secret
from management.bootstrap import admin_banner, bootstrap_admin
from management.event_archive import EventArchive
from management.liveness import LivenessMonitor
from management.metrics import API_LATENCY, API_REQUESTS
from management.rule_store import file_rule_rows, sync_file_rules
from management.routes import agents, auth, events, findings, metrics, rules, ws
from management.settings import ApiSettings
from management.state import ApiState

API_PREFIX = "/api/v1"
log = logging.getLogger("opmas.api")


async def open_state(settings: ApiSettings, archive: Archive | None = None) -> ApiState:
    """Connect the database (migrating it), NATS, and the event archive: ``archive`` (the engine's,
    when the API runs in its process), else a client of the server at ``settings.clickhouse_url``."""
    async with await psycopg.AsyncConnection.connect(settings.db_url) as conn:
        await migrate(conn)
        if settings.rule_paths:
            await sync_file_rules(conn, await asyncio.to_thread(file_rule_rows, settings.rule_paths))
    pool = AsyncConnectionPool(settings.db_url, min_size=1, max_size=10, open=False, timeout=5,
                               kwargs={"autocommit": True, "row_factory": dict_row})
    await pool.open(wait=True, timeout=30)
    nc = await nats.connect(settings.nats_url, name="opmas-management", max_reconnect_attempts=-1)
    issuer = TokenIssuer(load_jwt_secret(settings.jwt_secret, settings.data_dir), settings.token_ttl)
    if archive is not None:
        events = EventArchive(archive, owned=False)
    elif settings.clickhouse_url:
        events = EventArchive(Archive(await asyncio.to_thread(connect, settings.clickhouse_url)), owned=True)
    else:
        events = None
    return ApiState(settings=settings, pool=pool, nc=nc, js=nc.jetstream(), issuer=issuer, archive=events)


async def close_state(state: ApiState) -> None:
    await state.nc.drain()
    await state.pool.close()
    if state.archive is not None:
        state.archive.close()


def create_app(settings: ApiSettings, archive: Archive | None = None) -> FastAPI:
    """The API as an ASGI app; serving it connects everything it needs and stops it on shutdown
    (``archive``: the engine's event archive, see ``open_state``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await open_state(settings, archive)
        app.state.opmas = state
        secret = await bootstrap_admin(state)
        if secret:
            print(admin_banner(secret, f"http://{settings.host}:{settings.port}"), file=sys.stderr, flush=True)
            log.warning("admin principal created; its secret was printed once")
        monitor = LivenessMonitor(state)
        app.state.liveness = monitor
        await monitor.start()
        try:
            yield
        finally:
            await monitor.stop()
            await close_state(state)

    app = FastAPI(title="OPMAS management API", version="1", lifespan=lifespan,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None,
                  description="Agents, events, findings and rules of OPMAS. Every route but "
                              "POST /api/v1/auth/token needs `Authorization: Bearer <JWT>`.")
    for module in (auth, agents, events, findings, rules, ws):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(metrics.router)

    @app.exception_handler(psycopg.OperationalError)
    async def database_unavailable(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        log.error("database unavailable", extra={"path": request.url.path, "error": str(exc)})
        return JSONResponse({"detail": "database unavailable, retry later"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        elapsed = time.perf_counter() - started
        API_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        API_LATENCY.labels(route).observe(elapsed)
        log.info("request", extra={"method": request.method, "path": request.url.path,
                                   "status": response.status_code, "ms": round(elapsed * 1000, 2),
                                   "principal": getattr(request.state, "principal_id", None)})
        return response

    return app
