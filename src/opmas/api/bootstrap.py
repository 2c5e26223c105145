"""The first administrator: principal ``admin`` with every permission.

Its secret is ``OPMAS_ADMIN_TOKEN`` when set (kept in step on every start), else generated
on the first start and handed over once (``deliver_admin_secret``): printed on the terminal, or,
when there is none (stderr is a file, a pipe, a journal), written to a 0600 file in the data dir
whose path is logged. It never goes to a log, and PostgreSQL holds only its hash.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from opmas.api.auth import PERMISSIONS
from opmas.credentials import hash_secret, new_secret, verify_secret, write_private
from opmas.api.db import execute, fetch_one
from opmas.api.state import ApiState

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


ADMIN_SECRET_FILE = "admin_secret"  # under <data dir>/management/, when there is no terminal


def admin_secret_path(data_dir: Path) -> Path:
    return Path(data_dir) / "management" / ADMIN_SECRET_FILE


def deliver_admin_secret(secret: str, base_url: str, data_dir: Path, terminal: TextIO | None = None) -> Path | None:
    """Hand the generated admin secret over once, never through a log: print the banner on
    ``terminal`` (default stderr) if it is a terminal and return None; else write it to
    ``<data dir>/management/admin_secret`` (mode 0600, its folder 0700) and return that path,
    for the caller to log."""
    terminal = sys.stderr if terminal is None else terminal
    banner = admin_banner(secret, base_url)
    try:
        interactive = terminal.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        interactive = False
    if interactive:
        print(banner, file=terminal, flush=True)
        return None
    path = admin_secret_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    write_private(path, (banner + "\n(delete this file once the secret is kept elsewhere)\n").encode())
    return path
