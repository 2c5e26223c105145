"""Token exchange (credentials -> JWT), the caller's identity, and principal administration."""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field, field_validator

from management.auth import PERMISSIONS, Principal, hash_secret, new_secret, verify_secret
from management.db import execute, fetch_one, fetch_page
from management.deps import Paging, current_principal, get_state, paging, require, unauthorized
from management.state import ApiState

router = APIRouter(tags=["auth"])


class TokenRequest(BaseModel):
    principal_id: str = Field(min_length=1, max_length=200)
    secret: str = Field(min_length=1, max_length=500)
    ttl: float | None = Field(None, gt=0, le=30 * 86400, description="seconds; default the server's")


class PrincipalIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    permissions: list[str]

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


@router.post("/auth/token", summary="Exchange a principal's id and secret for a JWT")
async def token(body: TokenRequest, state: ApiState = Depends(get_state)) -> dict:
    row = await fetch_one(state, "SELECT secret_hash, disabled FROM principals WHERE id = %s",
                          (body.principal_id,))
    valid = await asyncio.to_thread(verify_secret, body.secret, row["secret_hash"] if row else None)
    if not valid or row["disabled"]:
        raise unauthorized("unknown principal or wrong secret")
    return await issue_token(state, body.principal_id, body.ttl)


@router.get("/auth/me", summary="Who the token belongs to and what it may do")
async def me(principal: Principal = Depends(current_principal)) -> dict:
    return {"id": principal.id, "name": principal.name, "kind": principal.kind,
            "agent_id": principal.agent_id, "permissions": sorted(principal.permissions)}


@router.post("/principals", status_code=status.HTTP_201_CREATED,
             summary="Create a user/service principal; its secret is shown only in this answer")
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


@router.get("/principals", summary="List principals")
async def list_principals(state: ApiState = Depends(get_state), page: Paging = Depends(paging),
                          _: Principal = Depends(require("principals:admin"))) -> dict:
    return await fetch_page(state, "id, name, kind, agent_id, permissions, disabled, created_at",
                            "principals", [], "created_at, id", page)


@router.delete("/principals/{principal_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a principal (its tokens stop working at once)")
async def delete_principal(principal_id: str, state: ApiState = Depends(get_state),
                           caller: Principal = Depends(require("principals:admin"))) -> None:
    if principal_id == caller.id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="a principal cannot delete itself")
    row = await fetch_one(state, "DELETE FROM principals WHERE id = %s AND kind = 'user' RETURNING id",
                          (principal_id,))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no user principal {principal_id}")


@router.post("/auth/revoke", status_code=status.HTTP_204_NO_CONTENT,
             summary="Revoke every token of the calling principal")
async def revoke(state: ApiState = Depends(get_state),
                 principal: Principal = Depends(current_principal)) -> None:
    await execute(state, "UPDATE tokens SET revoked_at = now() WHERE principal_id = %s"
                         " AND revoked_at IS NULL", (principal.id,))
