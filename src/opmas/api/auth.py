"""Principals, permissions, secrets and JWTs (HS256 with expiry, revocable by token id)."""
from __future__ import annotations

import math
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

PERMISSIONS: tuple[str, ...] = (
    "events:publish", "events:read",
    "findings:read", "findings:write",
    "rules:read", "rules:write", "hunts:run",
    "agents:register", "agents:read", "agents:admin",
    "principals:admin", "metrics:read",
)
AGENT_PERMISSIONS: tuple[str, ...] = ("events:publish",)
ALGORITHM = "HS256"
_SECRET_FILE = "jwt_secret"
MIN_SECRET_LENGTH = 32  # HS256 wants a key of at least 256 bits


class AuthError(Exception):
    """A token or credential that does not authenticate (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user/service or an agent, and what it may do."""

    id: str
    name: str
    kind: str  # "user" | "agent"
    permissions: frozenset[str]
    agent_id: str | None = None

    def can(self, permission: str) -> bool:
        return permission in self.permissions


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: float  # epoch seconds


def load_jwt_secret(configured: str | None, data_dir: Path) -> str:
    """The configured signing secret, else the one stored under ``data_dir`` (made on first use)."""
    if configured:
        if len(configured) < MIN_SECRET_LENGTH:
            raise ValueError(f"OPMAS_JWT_SECRET must have at least {MIN_SECRET_LENGTH} characters")
        return configured
    path = data_dir / "management" / _SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(value)
    return value


class TokenIssuer:
    """Signs and checks JWTs: ``sub`` is the principal id, ``jti`` the revocable token id."""

    def __init__(self, secret: str, ttl: float):
        self._secret = secret
        self.ttl = ttl

    def issue(self, principal_id: str, ttl: float | None = None) -> IssuedToken:
        now = time.time()
        expires = math.ceil(now + (ttl if ttl is not None else self.ttl))
        jti = uuid.uuid4().hex
        claims = {"sub": principal_id, "jti": jti, "iat": int(now), "exp": expires}
        return IssuedToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), jti, float(expires))

    def decode(self, token: str) -> dict:
        """The claims of a valid token; ``AuthError`` saying why otherwise."""
        try:
            return jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                              options={"require": ["exp", "sub", "jti"]})
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
