"""FastAPI dependencies: the shared state, the authenticated principal, permission checks, paging."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from opmas.api.auth import AuthError, Principal
from opmas.api.state import ApiState
from opmas.api.validation import MAX_OFFSET

_bearer = HTTPBearer(auto_error=False, description="JWT from POST /api/v1/auth/token")

_PRINCIPAL_OF_TOKEN = (
    "SELECT p.id, p.name, p.kind, p.permissions, p.agent_id FROM tokens t"
    " JOIN principals p ON p.id = t.principal_id"
    " WHERE t.jti = %s AND t.principal_id = %s AND t.revoked_at IS NULL"
    " AND t.expires_at > now() AND NOT p.disabled"
)


def get_state(request: Request) -> ApiState:
    return request.app.state.opmas


async def authenticate(state: ApiState, token: str) -> Principal:
    """The principal a JWT stands for; ``AuthError`` if it is bad, expired, revoked or disabled."""
    claims = state.issuer.decode(token)
    async with state.pool.connection() as conn:
        cur = await conn.execute(_PRINCIPAL_OF_TOKEN, (claims["jti"], claims["sub"]))
        row = await cur.fetchone()
    if row is None:
        raise AuthError("token revoked or principal disabled")
    return Principal(id=row["id"], name=row["name"], kind=row["kind"],
                     permissions=frozenset(row["permissions"]), agent_id=row["agent_id"])


def unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=message,
                         headers={"WWW-Authenticate": "Bearer"})


async def current_principal(request: Request,
                            creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
    """Every request but the token exchange goes through here: 401 without a valid token."""
    if creds is None:
        raise unauthorized("missing bearer token (Authorization: Bearer <JWT>)")
    try:
        principal = await authenticate(get_state(request), creds.credentials)
    except AuthError as exc:
        raise unauthorized(str(exc)) from exc
    request.state.principal_id = principal.id
    return principal


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the principal, if it holds ``permission`` (403 otherwise)."""

    async def check(principal: Principal = Depends(current_principal)) -> Principal:
        if not principal.can(permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"missing permission {permission}")
        return principal

    return check


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int
    offset: int


def paging(limit: int = Query(50, ge=1, le=1000, description="page size"),
           offset: int = Query(0, ge=0, le=MAX_OFFSET, description="rows to skip")) -> Paging:
    return Paging(limit, offset)
