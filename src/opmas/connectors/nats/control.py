"""Engine control over NATS: asking the running engine to reload its rules."""
from __future__ import annotations

from typing import Any

import orjson

from opmas.connectors.nats.client import connect
from opmas.connectors.nats.subjects import RELOAD_SUBJECT


async def request_reload(nats_url: str, timeout: float = 60.0, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask the engine to reload its rule files; its answer: ``{"ok": bool, "rules": n, "errors": [...]}``.

    Raises ``nats.errors.NoRespondersError`` when no engine listens.
    """
    nc = await connect(nats_url, "opmas-rules-reload", **(options or {}))
    try:
        reply = await nc.request(RELOAD_SUBJECT, b"{}", timeout=timeout)
        return orjson.loads(reply.data)
    finally:
        await nc.close()
