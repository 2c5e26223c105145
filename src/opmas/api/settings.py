"""Settings of the management API: its section of the configuration tree (``opmas.config.ApiConfig``)
plus what the running stack resolved (server URLs, data dir, rule files)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from opmas.config import ApiConfig, Config, PipelineConfig
from opmas.paths import DEFAULT_DATA_DIR
from opmas.runtime.nats_access import nats_options
from opmas.runtime.tls import ServerTls


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
    consumer: str = PipelineConfig.consumer  # the engine's durable consumer (its backlog is the overview's lag)
    clickhouse_url: str | None = None  # a ClickHouse server holding the event archive (GET /events)
    tls: ServerTls | None = None  # HTTPS and WSS only, with these files; None: plain HTTP
    nats_options: dict[str, Any] = field(default_factory=dict, repr=False)  # TLS trust, identity (nats_access.py)

    @property
    def base_url(self) -> str:
        """Where clients on this machine reach the API."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @classmethod
    def from_config(cls, config: Config, db_url: str, nats_url: str, **overrides: Any) -> "ApiSettings":
        """The ``api`` section of ``config`` with the stack's URLs, then ``overrides`` (None ignored)."""
        values: dict[str, Any] = {f.name: getattr(config.api, f.name) for f in fields(ApiConfig)}
        values.update(host=config.api_host, nats_options=nats_options(config), data_dir=config.data_dir,
                      rule_paths=tuple(config.pipeline.rules),
                      mappings=tuple(config.pipeline.mappings), lateness=config.pipeline.lateness,
                      consumer=config.pipeline.consumer,
                      clickhouse_url=config.clickhouse.url)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(db_url=db_url, nats_url=nats_url, **values)
