"""Typed runtime configuration: embedded defaults under one data dir, a YAML file, then env vars.

Precedence (lowest first): the defaults below, the YAML file given by ``--config``
(or ``OPMAS_CONFIG``), environment variables, command-line flags. A server URL
left empty means "start the embedded one under the data dir".
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from opmas.core.correlation import DEFAULT_IDLE_TIMEOUT, DEFAULT_LATENESS, DEFAULT_MAX_FUTURE
from opmas.core.sigma.yamldoc import YamlError, load_yaml
from opmas.paths import DEFAULT_DATA_DIR, RULES_DIR

# Environment variable -> Config field.
ENV_VARS: dict[str, str] = {
    "OPMAS_DATA_DIR": "data_dir",
    "NATS_URL": "nats_url",
    "OPMAS_DB_URL": "db_url",
    "OPMAS_CLICKHOUSE_URL": "clickhouse_url",
    "OPMAS_RULES": "rules",
    "OPMAS_MAPPINGS": "mappings",
    "OPMAS_PARTITIONS": "partitions",
    "OPMAS_PARTITION_KEY": "partition_key",
    "OPMAS_WORKERS": "workers",
    "OPMAS_BATCH_SIZE": "batch_size",
    "OPMAS_BATCH_WAIT": "batch_wait",
    "OPMAS_MAX_MESSAGE_BYTES": "max_message_bytes",
    "OPMAS_CHECKPOINT_INTERVAL": "checkpoint_interval",
    "OPMAS_NATS_PORT": "nats_port",
    "OPMAS_LOG_LEVEL": "log_level",
    "OPMAS_LATENESS": "lateness",
    "OPMAS_PARTITION_IDLE": "partition_idle",
    "OPMAS_MAX_FUTURE": "max_future",
    "OPMAS_WATCH_RULES": "watch_rules",
    "OPMAS_SHUTDOWN_TIMEOUT": "shutdown_timeout",
    "OPMAS_KAFKA_URL": "kafka_url",
    "OPMAS_KAFKA_TOPIC": "kafka_topic",
    "OPMAS_KAFKA_SESSION_TIMEOUT": "kafka_session_timeout",
    "OPMAS_KAFKA_REPLICATION": "kafka_replication",
    "OPMAS_KAFKA_SECURITY_PROTOCOL": "kafka_security_protocol",
    "OPMAS_KAFKA_SASL_MECHANISM": "kafka_sasl_mechanism",
    "OPMAS_KAFKA_SASL_USERNAME": "kafka_sasl_username",
    "OPMAS_KAFKA_SASL_PASSWORD": "kafka_sasl_password",
    "OPMAS_KAFKA_SSL_CAFILE": "kafka_ssl_cafile",
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class Config:
    """Everything the pipeline needs to run."""

    data_dir: Path = DEFAULT_DATA_DIR
    nats_url: str | None = None  # None: embedded nats-server under data_dir/nats
    nats_port: int = 4222  # port of the embedded nats-server
    db_url: str | None = None  # None: embedded PostgreSQL in data_dir/postgres
    clickhouse_url: str | None = None  # None: chdb in data_dir/clickhouse; else http(s)://user:pw@host:port/db
    rules: tuple[Path, ...] = (RULES_DIR,)
    mappings: tuple[Path, ...] = ()
    partitions: int = 4  # number of partition processors
    workers: int = 2  # evaluator processes (0: evaluate in the engine process)
    partition_key: str = "agent"  # "agent" (the publishing agent) or a dotted path into the event data
    batch_size: int = 100  # max JetStream messages fetched per batch
    batch_wait: float = 0.05  # seconds a fetch waits for a batch to fill
    max_message_bytes: int = 1 << 20  # larger messages are dead-lettered
    checkpoint_interval: float = 1.0  # seconds between processor state snapshots
    lateness: float = DEFAULT_LATENESS  # seconds events may arrive out of order and still count in windows
    max_future: float = DEFAULT_MAX_FUTURE  # seconds an event may be dated ahead of the clock and move event time
    partition_idle: float = DEFAULT_IDLE_TIMEOUT  # seconds before a quiet partition stops holding correlation windows open
    retry_max_delay: float = 10.0  # backoff ceiling while a database is away
    stream_max_age: float = 7 * 24 * 3600.0  # seconds JetStream keeps events
    stream_max_bytes: int = 10 << 30
    consumer: str = "opmas-engine"  # durable consumer and checkpoint name
    watch_rules: bool = True  # reload rules when their files change
    log_level: str = "INFO"
    shutdown_timeout: float = 10.0  # seconds `opmas up` waits for the engine after a stop signal before cutting it off
    # Scale-out (opmas bridge / worker / archiver): a Kafka-protocol log between NATS and the workers.
    kafka_url: str | None = None  # host:port[,host:port]; required by the scale-out commands
    kafka_topic: str = "opmas-events"  # the events topic, with `partitions` partitions
    kafka_session_timeout: float = 10.0  # seconds before a silent worker's partitions move
    kafka_replication: int = 1  # replication factor of the topics OPMAS creates (3 in production)
    # Kafka client security, checked by opmas.connectors.kafka.security.KafkaSecurity.
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_* protocols)
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None  # CA bundle of the brokers' certificates (default: the system's)

    @property
    def nats_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def clickhouse_dir(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def nats_url_file(self) -> Path:
        """Where a running ``opmas up`` writes its embedded NATS URL (its port may differ)."""
        return self.data_dir / "nats.url"

    def client_nats_url(self) -> str:
        """The NATS URL command-line tools use: the configured one, else the running embedded
        server's, else the default port."""
        if self.nats_url:
            return self.nats_url
        if self.nats_url_file.exists():
            return self.nats_url_file.read_text().strip()
        return f"nats://127.0.0.1:{self.nats_port}"

    def with_overrides(self, **values: Any) -> "Config":
        """A copy with the given fields (None values ignored), type-checked."""
        return _build(self, {k: v for k, v in values.items() if v is not None}, "overrides")


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the YAML file (``path`` or ``$OPMAS_CONFIG``), then the environment."""
    env = os.environ if env is None else env
    config = Config()
    path = path or (Path(env["OPMAS_CONFIG"]) if env.get("OPMAS_CONFIG") else None)
    if path is not None:
        try:  # YAML aliases refused (engine/sigma/yamldoc.py: they can expand to gigabytes)
            loaded = load_yaml(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except YamlError as exc:
            raise ConfigError(f"{path}:{exc.line}: {exc}" if exc.line else f"{path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        config = _build(config, loaded, str(path))
    from_env = {name: env[var] for var, name in ENV_VARS.items() if env.get(var) not in (None, "")}
    return _build(config, from_env, "environment")


_FIELDS = {f.name: f for f in fields(Config)}


def _build(base: Config, values: Mapping[str, Any], origin: str) -> Config:
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _FIELDS:
            raise ConfigError(f"{origin}: unknown setting {name!r} (known: {', '.join(sorted(_FIELDS))})")
        changes[name] = _coerce(name, value, origin)
    config = replace(base, **changes)
    if config.partitions < 1:
        raise ConfigError(f"{origin}: partitions must be >= 1")
    if config.workers < 0:
        raise ConfigError(f"{origin}: workers must be >= 0")
    if config.batch_size < 1:
        raise ConfigError(f"{origin}: batch_size must be >= 1")
    if config.lateness < 0:
        raise ConfigError(f"{origin}: lateness must be >= 0")
    if config.max_future < 0:
        raise ConfigError(f"{origin}: max_future must be >= 0")
    if config.partition_idle <= 0:
        raise ConfigError(f"{origin}: partition_idle must be > 0")
    if config.shutdown_timeout < 0:
        raise ConfigError(f"{origin}: shutdown_timeout must be >= 0")
    return config


def _coerce(name: str, value: Any, origin: str) -> Any:
    kind = _FIELDS[name].type
    try:
        if name == "data_dir":
            return Path(value).expanduser().resolve()
        if name in ("rules", "mappings"):
            items = value.split(os.pathsep) if isinstance(value, str) else list(value)
            return tuple(Path(p).expanduser() for p in items if str(p))
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {name}: {exc}") from exc


def describe(config: Config) -> dict[str, Any]:
    """The configuration as plain data (for logs and ``--print-config``)."""
    out: dict[str, Any] = {}
    for f in fields(Config):
        value = getattr(config, f.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [str(v) for v in value]
        out[f.name] = value
    return out


