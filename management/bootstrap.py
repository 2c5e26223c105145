"""The first administrator: principal ``admin`` with every permission.

Its secret is ``OPMAS_ADMIN_TOKEN`` when set (kept in step on every start), else generated
on the first start and returned once so the caller prints it; it is never stored in clear.
"""
from __future__ import annotations

from management.auth import PERMISSIONS, hash_secret, new_secret, verify_secret
from management.db import execute, fetch_one
from management.state import ApiState

ADMIN_ID = "admin"


async def bootstrap_admin(state: ApiState) -> str | None:
    """Ensure the admin principal exists; the generated secret if one was made now, else None."""
    configured = state.settings.admin_token
    secret = configured or new_secret()
    created = await fetch_one(
        state,
        "INSERT INTO principals (id, name, kind, permissions, secret_hash) VALUES (%s, 'administrator', 'user', %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (ADMIN_ID, list(PERMISSIONS), hash_secret(secret)),
    )
    if created is None:
        row = await fetch_one(state, "SELECT secret_hash FROM principals WHERE id = %s", (ADMIN_ID,))
        if configured and not verify_secret(configured, row["secret_hash"]):
            await execute(state, "UPDATE principals SET secret_hash = %s, updated_at = now() WHERE id = %s",
                          (hash_secret(configured), ADMIN_ID))
        await execute(state, "UPDATE principals SET permissions = %s WHERE id = %s",
                      (list(PERMISSIONS), ADMIN_ID))
        return None
    return None if configured else secret


def admin_banner(secret: str, base_url: str) -> str:
    """What to print once when the admin secret was generated."""
    return (
        "OPMAS admin principal created. Its secret is shown only now; keep it:\n"
        f"  principal_id: {ADMIN_ID}\n  secret:       {secret}\n"
        f"Get a token:  curl -s -X POST {base_url}/api/v1/auth/token -H 'content-type: application/json'"
        f" -d '{{\"principal_id\": \"{ADMIN_ID}\", \"secret\": \"{secret}\"}}'\n"
        "(set OPMAS_ADMIN_TOKEN to choose the admin secret yourself)"
    )
