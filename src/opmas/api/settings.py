"""Settings of the management API: its section of the configuration tree (``opmas.config.ApiConfig``)
plus what the running stack resolved (server URLs, data dir, rule files)."""
from __future__ import annotations

import ssl
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from opmas.config import ApiConfig, Config
from opmas.paths import DEFAULT_DATA_DIR
from opmas.runtime.tls import ServerTls, client_tls


@dataclass(frozen=True, kw_only=True)
class ApiSettings(ApiConfig):
    """Where the API listens, what it talks to, and its authentication and liveness knobs."""

    db_url: str
    nats_url: str
    host: str = "127.0.0.1"  # resolved: api.host, else the configuration's listen address
    data_dir: Path = DEFAULT_DATA_DIR
    rule_paths: tuple[Path, ...] = ()  # the engine's rule files, listed read-only by /rules
    mappings: tuple[Path, ...] = ()  # the engine's extra logsource mappings and lateness: hunts load rules as it does
    lateness: float | None = None
    clickhouse_url: str | None = None  # a ClickHouse server holding the event archive (GET /events)
    tls: ServerTls | None = None  # HTTPS and WSS only, with these files; None: plain HTTP
    nats_tls: ssl.SSLContext | None = None  # what the API trusts of a NATS server speaking TLS

    @property
    def base_url(self) -> str:
        """Where clients on this machine reach the API."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @classmethod
    def from_config(cls, config: Config, db_url: str, nats_url: str, **overrides: Any) -> "ApiSettings":
        """The ``api`` section of ``config`` with the stack's URLs, then ``overrides`` (None ignored)."""
        values: dict[str, Any] = {f.name: getattr(config.api, f.name) for f in fields(ApiConfig)}
        values.update(host=config.api_host, nats_tls=client_tls(config), data_dir=config.data_dir,
                      rule_paths=tuple(config.pipeline.rules),
                      mappings=tuple(config.pipeline.mappings), lateness=config.pipeline.lateness,
                      clickhouse_url=config.clickhouse.url)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(db_url=db_url, nats_url=nats_url, **values)
