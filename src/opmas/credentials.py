"""Secrets of principals and agents: generated, hashed with bcrypt (the form nats-server also takes as
a password) and checked, by the API and by the NATS auth callout alike."""
from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

import bcrypt


def new_secret() -> str:
    """A fresh random credential (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """bcrypt hash of a secret (the form nats-server also accepts as a password); slow: call it off
    the event loop."""
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds=10)).decode()


@lru_cache(maxsize=1)
def _no_principal_hash() -> str:
    return hash_secret(new_secret())


def verify_secret(secret: str, secret_hash: str | None) -> bool:
    """Whether ``secret`` matches ``secret_hash``. Without a hash (no such principal) a dummy hash is
    checked, so that the answer takes as long and does not tell which principals exist. Slow (bcrypt):
    call it off the event loop."""
    try:
        matches = bcrypt.checkpw(secret.encode(), (secret_hash or _no_principal_hash()).encode())
    except ValueError:
        return False
    return matches and bool(secret_hash)


def write_private(path: Path, data: bytes, replace: bool = True) -> None:
    """Write ``data`` to ``path``, readable by its owner only (0600) and whole: through a temporary
    file of the same folder, renamed over ``path`` (``replace``), or linked where there is no file
    yet (not ``replace``: a file another process made meanwhile is kept)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if replace:
            os.replace(partial, path)
        else:
            try:
                os.link(partial, path)
            except FileExistsError:
                pass
    finally:
        partial.unlink(missing_ok=True)
