"""Prometheus exposition of the default registry (pipeline and API metrics); needs metrics:read."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

import opmas.metrics  # noqa: F401 - registers the pipeline's metrics even when the API runs alone
from opmas.api.auth import Principal
from opmas.api.deps import require
from opmas.api.errors import responses

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (bearer token with metrics:read)",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **responses(401, 403)})
async def metrics(_: Principal = Depends(require("metrics:read"))) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
