"""Settings of the management API (plain data, read from the environment or given by ``opmas up``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from opmas.paths import DEFAULT_DATA_DIR


@dataclass
class ApiSettings:
    """Where the API listens, what it talks to, and its authentication and liveness knobs."""

    db_url: str
    nats_url: str
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8080
    jwt_secret: str | None = None      # OPMAS_JWT_SECRET; else generated under data_dir
    admin_token: str | None = None     # OPMAS_ADMIN_TOKEN: the admin principal's secret
    token_ttl: float = 3600.0          # seconds a JWT is valid
    stale_after: float = 30.0          # no heartbeat for this long: stale
    offline_after: float = 120.0       # no heartbeat for this long: offline
    liveness_interval: float = 1.0     # how often liveness is re-evaluated
    reload_timeout: float = 5.0        # wait for the engine's reply to opmas.engine.reload

    @classmethod
    def from_env(cls, db_url: str, nats_url: str, **overrides) -> "ApiSettings":
        """Settings with the secrets taken from OPMAS_JWT_SECRET and OPMAS_ADMIN_TOKEN."""
        overrides.setdefault("jwt_secret", os.environ.get("OPMAS_JWT_SECRET") or None)
        overrides.setdefault("admin_token", os.environ.get("OPMAS_ADMIN_TOKEN") or None)
        return cls(db_url=db_url, nats_url=nats_url, **overrides)
