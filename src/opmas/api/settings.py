"""Settings of the management API: its section of the configuration tree (``opmas.config.ApiConfig``)
plus what the running stack resolved (server URLs, data dir, rule files)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from opmas.config import ApiConfig, Config
from opmas.paths import DEFAULT_DATA_DIR


@dataclass(frozen=True, kw_only=True)
class ApiSettings(ApiConfig):
    """Where the API listens, what it talks to, and its authentication and liveness knobs."""

    db_url: str
    nats_url: str
    data_dir: Path = DEFAULT_DATA_DIR
    rule_paths: tuple[Path, ...] = ()  # the engine's rule files, listed read-only by /rules
    mappings: tuple[Path, ...] = ()  # the engine's extra logsource mappings and lateness: hunts load rules as it does
    lateness: float | None = None
    clickhouse_url: str | None = None  # a ClickHouse server holding the event archive (GET /events)

    @classmethod
    def from_config(cls, config: Config, db_url: str, nats_url: str, **overrides: Any) -> "ApiSettings":
        """The ``api`` section of ``config`` with the stack's URLs, then ``overrides`` (None ignored)."""
        values: dict[str, Any] = {f.name: getattr(config.api, f.name) for f in fields(ApiConfig)}
        values.update(data_dir=config.data_dir, rule_paths=tuple(config.pipeline.rules),
                      mappings=tuple(config.pipeline.mappings), lateness=config.pipeline.lateness,
                      clickhouse_url=config.clickhouse.url)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(db_url=db_url, nats_url=nats_url, **values)
