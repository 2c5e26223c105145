"""GET /health, without authentication: whether the API's database and NATS answer and, under
`opmas up`, whether the engine and the embedded servers run (and how often they were restarted)."""
from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from opmas import health as process_health
from opmas.api.errors import ERROR_RESPONSES

router = APIRouter(tags=["operations"])


class ComponentHealth(BaseModel):
    up: bool
    since: float | None = None  # epoch seconds of its last change (supervised components)
    restarts: int = 0
    error: str | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    components: dict[str, ComponentHealth]


async def _database_answers(request: Request) -> bool:
    async def ask() -> None:
        async with request.app.state.opmas.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    try:
        await asyncio.wait_for(ask(), 3)
    except Exception:  # any failure is the answer
        return False
    return True


@router.get("/health", response_model=Health, summary="Whether everything runs (no authentication)",
            responses={503: {"model": Health, "description": "something is down (see components)"}})
async def health(request: Request) -> JSONResponse:
    components = {name: ComponentHealth(**c) for name, c in process_health.snapshot().items()}
    components["api.database"] = ComponentHealth(up=await _database_answers(request))
    components["api.nats"] = ComponentHealth(up=request.app.state.opmas.nc.is_connected)
    ok = all(c.up for c in components.values())
    body = Health(status="ok" if ok else "degraded", components=components)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/tls/ca", summary="The CA certificate clients of this server trust (no authentication; "
                               "check its fingerprint against the one opmas up printed before trusting it)",
            response_class=Response, responses={
                200: {"description": "the CA certificate (PEM)",
                      "content": {"application/x-pem-file": {"schema": {"type": "string"}}}},
                404: {**ERROR_RESPONSES[404], "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Problem"}}}}})
async def tls_ca(request: Request) -> Response:
    tls = request.app.state.opmas.settings.tls
    if tls is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="TLS is off")
    return Response(tls.ca.read_bytes(), media_type="application/x-pem-file")
