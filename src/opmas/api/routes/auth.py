"""Token exchange (credentials -> JWT), the caller's identity, and principal administration."""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import Field, field_validator

from opmas.api.auth import PERMISSIONS, Principal
from opmas.credentials import hash_secret, new_secret, verify_secret
from opmas.api.db import execute, fetch_one, fetch_page
from opmas.api.deps import Paging, current_principal, get_state, paging, require, unauthorized
from opmas.api.errors import responses
from opmas.api.state import ApiState
from opmas.api.validation import ApiModel

router = APIRouter(tags=["auth"])


class TokenRequest(ApiModel):
    principal_id: str = Field(min_length=1, max_length=200)
    secret: str = Field(min_length=1, max_length=500)
    ttl: float | None = Field(None, gt=0, le=30 * 86400, allow_inf_nan=False,
                              description="seconds; default the server's")


class PrincipalIn(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    permissions: list[str] = Field(json_schema_extra={"items": {"enum": list(PERMISSIONS)}})

    @field_validator("permissions")
    @classmethod
    def known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PERMISSIONS))
        if unknown:
            raise ValueError(f"unknown permissions {unknown}; known: {list(PERMISSIONS)}")
        return sorted(set(value))


async def issue_token(state: ApiState, principal_id: str, ttl: float | None = None) -> dict:
    """Sign a JWT for a principal and record its id (so it can be revoked)."""
    issued = state.issuer.issue(principal_id, ttl)
    expires = datetime.fromtimestamp(issued.expires_at, tz=timezone.utc)
    async with state.pool.connection() as conn:
        await conn.execute("INSERT INTO tokens (jti, principal_id, expires_at) VALUES (%s, %s, %s)",
                           (issued.jti, principal_id, expires))
        await conn.execute("DELETE FROM tokens WHERE expires_at < now() - interval '1 day'")
    return {"access_token": issued.token, "token_type": "bearer", "expires_at": expires,
            "principal_id": principal_id}


@router.post("/auth/token", summary="Exchange a principal's id and secret for a JWT",
             description="Failed exchanges are limited per principal id (OPMAS_AUTH_FAILURES_PER_PRINCIPAL, "
                         "10 a minute) and per client address (OPMAS_AUTH_FAILURES_PER_ADDRESS, 30 a minute), "
                         "counted by each API process: past that, 429 with Retry-After until the limit refills.",
             responses=responses(400, 401, 429))
async def token(body: TokenRequest, request: Request, state: ApiState = Depends(get_state)) -> dict:
    address = request.client.host if request.client else "unknown"
    wait = state.token_guard.acquire(body.principal_id, address)
    if wait is not None:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(wait)},
                            detail=f"too many failed token requests for this principal or from this address; "
                                   f"retry in {wait} s")
    try:
        row = await fetch_one(state, "SELECT secret_hash, disabled FROM principals WHERE id = %s",
                              (body.principal_id,))
        valid = await asyncio.to_thread(verify_secret, body.secret, row["secret_hash"] if row else None)
    except BaseException:  # the database is away, the client left: not a failed guess
        state.token_guard.release(body.principal_id, address)
        raise
    if not valid or row["disabled"]:
        raise unauthorized("unknown principal or wrong secret")
    state.token_guard.release(body.principal_id, address)
    return await issue_token(state, body.principal_id, body.ttl)


@router.get("/auth/me", summary="Who the token belongs to and what it may do", responses=responses(401))
async def me(principal: Principal = Depends(current_principal)) -> dict:
    return {"id": principal.id, "name": principal.name, "kind": principal.kind,
            "agent_id": principal.agent_id, "permissions": sorted(principal.permissions)}


@router.post("/principals", status_code=status.HTTP_201_CREATED,
             summary="Create a user/service principal; its secret is shown only in this answer",
             responses=responses(400, 401, 403))
async def create_principal(body: PrincipalIn, state: ApiState = Depends(get_state),
                           _: Principal = Depends(require("principals:admin"))) -> dict:
    principal_id, secret = uuid.uuid4().hex, new_secret()
    row = await fetch_one(
        state,
        "INSERT INTO principals (id, name, kind, permissions, secret_hash) VALUES (%s, %s, 'user', %s, %s)"
        " RETURNING id, name, kind, permissions, created_at",
        (principal_id, body.name, body.permissions, await asyncio.to_thread(hash_secret, secret)),
    )
    return {**row, "secret": secret}


@router.get("/principals", summary="List principals", responses=responses(401, 403))
async def list_principals(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                          _: Principal = Depends(require("principals:admin"))) -> dict:
    return await fetch_page(state, "id, name, kind, agent_id, permissions, disabled, created_at",
                            "principals", [], "created_at, id", page)


@router.delete("/principals/{principal_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a principal (its tokens stop working at once)", responses=responses(401, 403, 404))
async def delete_principal(principal_id: str, state: ApiState = Depends(get_state),
                           caller: Principal = Depends(require("principals:admin"))) -> None:
    if principal_id == caller.id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="a principal cannot delete itself")
    row = await fetch_one(state, "DELETE FROM principals WHERE id = %s AND kind = 'user' RETURNING id",
                          (principal_id,))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user principal {principal_id}")


@router.post("/auth/revoke", status_code=status.HTTP_204_NO_CONTENT,
             summary="Revoke every token of the calling principal", responses=responses(401))
async def revoke(state: ApiState = Depends(get_state),
                 principal: Principal = Depends(current_principal)) -> None:
    await execute(state, "UPDATE tokens SET revoked_at = now() WHERE principal_id = %s"
                         " AND revoked_at IS NULL", (principal.id,))
