"""The FastAPI application: lifespan (database, migrations, admin bootstrap, NATS, liveness) and routes."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from opmas.connectors.clickhouse.archive import Archive, connect
from opmas.connectors.nats.client import connect as connect_nats
from opmas.connectors.postgres.migrations import migrate
from opmas.api.auth import TokenIssuer, load_jwt_secret
from opmas.api.bootstrap import bootstrap_admin, deliver_admin_secret
from opmas.api.errors import (COMMON, database_refused_value, database_unavailable, http_error,
                               request_validation_error, responses)
from opmas.api.event_archive import EventArchive
from opmas.api.limits import BodyLimit, TokenGuard
from opmas.api.liveness import LivenessMonitor
from opmas.api.metrics import API_LATENCY, API_REQUESTS
from opmas.connectors.postgres.rule_store import file_rule_rows, sync_file_rules
from opmas.api.routes import agents, auth, events, findings, health, hunts, metrics, rules, ws
from opmas.api.routes import overview
from opmas.api.settings import ApiSettings
from opmas.api.state import ApiState
from opmas.api.validation import document_nul_refusal, refuse_nul
from opmas.console import ConsoleFiles, register_console_paths

API_PREFIX = "/api/v1"
log = logging.getLogger("management")


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
    nc = await connect_nats(settings.nats_url, "opmas-management", persistent=True, **settings.nats_options)
    issuer = TokenIssuer(load_jwt_secret(settings.jwt_secret, settings.data_dir), settings.token_ttl)
    if archive is not None:
        events = EventArchive(archive, owned=False)
    elif settings.clickhouse_url:
        events = EventArchive(Archive(await asyncio.to_thread(connect, settings.clickhouse_url)), owned=True)
    else:
        events = None
    guard = TokenGuard(settings.auth_failures_per_principal, settings.auth_failures_per_address)
    return ApiState(settings=settings, pool=pool, nc=nc, js=nc.jetstream(), issuer=issuer, archive=events,
                    token_guard=guard)


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
            path = deliver_admin_secret(secret, settings.base_url, settings.data_dir)
            if path is None:
                log.warning("admin principal created; its secret was printed on the terminal, once")
            else:
                log.warning("admin principal created; no terminal, so its secret is in a file readable by "
                            "this user only: read it, then delete the file", extra={"path": str(path)})
        monitor = LivenessMonitor(state)
        app.state.liveness = monitor
        await monitor.start()
        try:
            yield
        finally:
            await monitor.stop()
            await state.hunts.stop_all()
            await close_state(state)

    app = FastAPI(title="OPMAS management API", version="1", lifespan=lifespan,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs", redoc_url=None,
                  description="Agents, events, findings and rules of OPMAS. Every route but "
                              "POST /api/v1/auth/token needs `Authorization: Bearer <JWT>`. Request bodies "
                              f"are limited to {settings.max_body_bytes} bytes (413 past that). Failed token "
                              "exchanges are limited per principal and per client address (429).",
                  exception_handlers={StarletteHTTPException: http_error,
                                      RequestValidationError: request_validation_error,
                                      psycopg.DataError: database_refused_value,
                                      psycopg.OperationalError: database_unavailable})
    checked = dict(dependencies=[Depends(refuse_nul)], responses=responses(*COMMON))
    for module in (auth, agents, events, findings, rules, hunts, overview):
        app.include_router(module.router, prefix=API_PREFIX, **checked)
    app.include_router(ws.router, prefix=API_PREFIX)
    app.include_router(health.router, prefix=API_PREFIX, dependencies=[Depends(refuse_nul)],
                       responses=responses(413, 422))
    app.include_router(metrics.router, **checked)
    # last, for GET and HEAD, and for no path of the API's: the API's routes win, another method on one of
    # their paths is the API's 405, an unknown path under /api/ its 404
    register_console_paths()
    app.router.routes.append(Route("/{path:console}", ConsoleFiles(), methods=["GET", "HEAD"], name="console",
                                   include_in_schema=False))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    generate_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document_nul_refusal(generate_openapi())  # generates app.openapi_schema, then adds to it
        return app.openapi_schema

    app.openapi = openapi

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
