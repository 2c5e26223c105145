"""Settings of the management API (plain data, read from the environment or given by ``opmas up``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

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
    ws_recheck_interval: float = 30.0  # how often an open WebSocket's token is checked again
    rule_paths: tuple[Path, ...] = ()  # the engine's rule files, listed read-only by /rules
    clickhouse_url: str | None = None  # a ClickHouse server holding the event archive (GET /events)
    max_body_bytes: int = 2 << 20      # a larger request body is refused (413) before it is read
    auth_failures_per_principal: float = 10.0  # failed token exchanges per minute and principal id (429 past)
    auth_failures_per_address: float = 30.0    # ... and per client address; 0: no limit

    @classmethod
    def from_env(cls, db_url: str, nats_url: str, env: Mapping[str, str] | None = None,
                 **overrides: Any) -> "ApiSettings":
        """Settings from the environment (``ENV_VARS``), then ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for var, (name, kind) in ENV_VARS.items():
            if env.get(var):
                try:
                    values[name] = kind(env[var])
                except ValueError as exc:
                    raise ValueError(f"{var}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(db_url=db_url, nats_url=nats_url, **values)


ENV_VARS: dict[str, tuple[str, type]] = {
    "OPMAS_API_HOST": ("host", str),
    "OPMAS_API_PORT": ("port", int),
    "OPMAS_JWT_SECRET": ("jwt_secret", str),
    "OPMAS_ADMIN_TOKEN": ("admin_token", str),
    "OPMAS_TOKEN_TTL": ("token_ttl", float),
    "OPMAS_AGENT_STALE_AFTER": ("stale_after", float),
    "OPMAS_AGENT_OFFLINE_AFTER": ("offline_after", float),
    "OPMAS_WS_RECHECK_INTERVAL": ("ws_recheck_interval", float),
    "OPMAS_API_MAX_BODY_BYTES": ("max_body_bytes", int),
    "OPMAS_AUTH_FAILURES_PER_PRINCIPAL": ("auth_failures_per_principal", float),
    "OPMAS_AUTH_FAILURES_PER_ADDRESS": ("auth_failures_per_address", float),
}
