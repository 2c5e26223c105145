"""One configuration tree for every command: the pipeline, the API and the agents.

A ``Config`` is a tree of small frozen sections (``nats``, ``postgres``, ``clickhouse``,
``pipeline``, ``sinks``, ``kafka``, ``api``, ``agent``). Precedence, lowest first: the defaults
below, the YAML file given by ``--config`` (or ``OPMAS_CONFIG``; sections as nested mappings),
environment variables (each setting names its own), command-line flags
(``Config.with_overrides``). A server URL left empty means "start the embedded one under the
data dir". ``reference()`` renders every setting as the table in docs/configuration.md.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from opmas.core.correlation import DEFAULT_IDLE_TIMEOUT, DEFAULT_LATENESS, DEFAULT_MAX_FUTURE
from opmas.core.sigma.yamldoc import YamlError, load_yaml
from opmas.paths import DEFAULT_DATA_DIR, RULES_DIR


def is_loopback(address: str) -> bool:
    """Whether a listen address only takes connections from this machine."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def setting(default: Any, env: str | None, doc: str, *, secret: bool = False, factory: bool = False) -> Any:
    """A configuration field: its default, environment variable and one-line description."""
    meta = {"env": env, "doc": doc, "secret": secret}
    if factory:
        return field(default_factory=default, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class NatsConfig:
    """NATS with JetStream: where agents publish and findings go."""

    url: str | None = setting(None, "NATS_URL", "NATS server URL; empty: the embedded nats-server under the data dir")
    port: int = setting(4222, "OPMAS_NATS_PORT", "port of the embedded nats-server")
    user: str | None = setting(None, "NATS_USER", "OPMAS's user on an external NATS server (the embedded one's "
                                                  "identities are generated under the data dir)")
    password: str | None = setting(None, "NATS_PASSWORD", "that user's password", secret=True)
    callout_password: str | None = setting(None, "OPMAS_NATS_CALLOUT_PASSWORD", "the auth callout's password "
                                           "(user opmas-auth) on an external server (opmas api nats-callout)",
                                           secret=True)
    system_password: str | None = setting(None, "OPMAS_NATS_SYSTEM_PASSWORD", "the system account user's password "
                                          "(opmas-system) on an external server, to cut revoked agents off",
                                          secret=True)
    max_message_bytes: int = setting(1 << 20, "OPMAS_MAX_MESSAGE_BYTES", "larger messages are dead-lettered")
    stream_max_age: float = setting(7 * 24 * 3600.0, "OPMAS_STREAM_MAX_AGE", "seconds JetStream keeps events")
    stream_max_bytes: int = setting(10 << 30, "OPMAS_STREAM_MAX_BYTES", "bytes JetStream keeps of events")


@dataclass(frozen=True)
class PostgresConfig:
    """PostgreSQL: findings, checkpoints, agents, principals, stored rules."""

    url: str | None = setting(None, "OPMAS_DB_URL", "PostgreSQL URL (libpq; sslmode etc. pass through); "
                                                    "empty: the embedded server under the data dir", secret=True)


@dataclass(frozen=True)
class ClickHouseConfig:
    """ClickHouse: the raw event archive."""

    url: str | None = setting(None, "OPMAS_CLICKHOUSE_URL", "http(s)://user:password@host:port/db; "
                                                            "empty: embedded chdb under the data dir", secret=True)


@dataclass(frozen=True)
class PipelineConfig:
    """The partitioned processors of ``opmas up`` (and the scale-out workers)."""

    rules: tuple[Path, ...] = setting((RULES_DIR,), "OPMAS_RULES", "rule files or folders (separated by ':')")
    mappings: tuple[Path, ...] = setting((), "OPMAS_MAPPINGS", "extra logsource mapping files (separated by ':')")
    partitions: int = setting(4, "OPMAS_PARTITIONS", "number of partition processors")
    workers: int = setting(2, "OPMAS_WORKERS", "evaluator processes (0: evaluate in the engine process)")
    partition_key: str = setting("agent", "OPMAS_PARTITION_KEY",
                                 "'agent' (the publishing agent) or a dotted path into the event data")
    batch_size: int = setting(100, "OPMAS_BATCH_SIZE", "max messages fetched per batch")
    batch_wait: float = setting(0.05, "OPMAS_BATCH_WAIT", "seconds a fetch waits for a batch to fill")
    checkpoint_interval: float = setting(1.0, "OPMAS_CHECKPOINT_INTERVAL", "seconds between processor state snapshots")
    lateness: float = setting(DEFAULT_LATENESS, "OPMAS_LATENESS",
                              "seconds events may arrive out of order and still count in windows")
    max_future: float = setting(DEFAULT_MAX_FUTURE, "OPMAS_MAX_FUTURE",
                                "seconds an event may be dated ahead of the clock and move event time")
    partition_idle: float = setting(DEFAULT_IDLE_TIMEOUT, "OPMAS_PARTITION_IDLE",
                                    "seconds before a quiet partition stops holding correlation windows open")
    retry_max_delay: float = setting(10.0, "OPMAS_RETRY_MAX_DELAY", "backoff ceiling (seconds) while a database is away")
    consumer: str = setting("opmas-engine", "OPMAS_CONSUMER", "durable consumer and checkpoint name")
    watch_rules: bool = setting(True, "OPMAS_WATCH_RULES", "reload rules when their files change")


@dataclass(frozen=True)
class KafkaConfig:
    """The Kafka-protocol log of the scale-out runtime (opmas bridge / worker / archiver)."""

    url: str | None = setting(None, "OPMAS_KAFKA_URL", "host:port[,host:port]; required by the scale-out commands")
    topic: str = setting("opmas-events", "OPMAS_KAFKA_TOPIC", "the events topic (pipeline.partitions partitions)")
    session_timeout: float = setting(10.0, "OPMAS_KAFKA_SESSION_TIMEOUT", "seconds before a silent worker's partitions move")
    replication: int = setting(1, "OPMAS_KAFKA_REPLICATION", "replication factor of the topics OPMAS creates (3 in production)")
    security_protocol: str = setting("PLAINTEXT", "OPMAS_KAFKA_SECURITY_PROTOCOL",
                                     "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str | None = setting(None, "OPMAS_KAFKA_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    sasl_username: str | None = setting(None, "OPMAS_KAFKA_SASL_USERNAME", "SASL user")
    sasl_password: str | None = setting(None, "OPMAS_KAFKA_SASL_PASSWORD", "SASL password", secret=True)
    ssl_cafile: str | None = setting(None, "OPMAS_KAFKA_SSL_CAFILE", "CA bundle of the brokers (default: the system's)")


@dataclass(frozen=True)
class ApiConfig:
    """The management API (REST and WebSocket), served by ``opmas up`` and ``opmas api``."""

    host: str | None = setting(None, "OPMAS_API_HOST", "listen address; empty: `listen`")
    port: int = setting(8080, "OPMAS_API_PORT", "listen port")
    jwt_secret: str | None = setting(None, "OPMAS_JWT_SECRET", "JWT signing secret; else generated once under "
                                                                "the data dir", secret=True)
    admin_token: str | None = setting(None, "OPMAS_ADMIN_TOKEN", "the admin principal's secret; else generated "
                                                                 "on the first start", secret=True)
    token_ttl: float = setting(3600.0, "OPMAS_TOKEN_TTL", "seconds a JWT is valid")
    stale_after: float = setting(30.0, "OPMAS_AGENT_STALE_AFTER", "no heartbeat for this long: the agent is stale")
    offline_after: float = setting(120.0, "OPMAS_AGENT_OFFLINE_AFTER", "no heartbeat for this long: offline")
    liveness_interval: float = setting(1.0, "OPMAS_LIVENESS_INTERVAL", "seconds between liveness evaluations")
    reload_timeout: float = setting(5.0, "OPMAS_RELOAD_TIMEOUT", "seconds to wait for the engine's rule reload answer")
    ws_recheck_interval: float = setting(30.0, "OPMAS_WS_RECHECK_INTERVAL",
                                         "seconds between checks of an open WebSocket's token")
    max_body_bytes: int = setting(2 << 20, "OPMAS_API_MAX_BODY_BYTES", "a larger request body is refused (413)")
    auth_failures_per_principal: float = setting(10.0, "OPMAS_AUTH_FAILURES_PER_PRINCIPAL",
                                                 "failed token exchanges per minute and principal (429 past it)")
    auth_failures_per_address: float = setting(30.0, "OPMAS_AUTH_FAILURES_PER_ADDRESS",
                                               "failed token exchanges per minute and client address; 0: no limit")


@dataclass(frozen=True)
class TlsConfig:
    """TLS on the embedded NATS server's client port and on the API (HTTPS, WSS): docs/security.md."""

    mode: str = setting("auto", "OPMAS_TLS", "on, off, or auto: on when `listen` is not a loopback address")
    cert: str | None = setting(None, "OPMAS_TLS_CERT", "the servers' certificate chain (PEM); empty: issued by "
                                                       "the local CA under the data dir")
    key: str | None = setting(None, "OPMAS_TLS_KEY", "the private key of tls.cert (PEM)")
    ca: str | None = setting(None, "OPMAS_TLS_CA", "the CA that clients trust (PEM); empty: the local CA")
    names: tuple[str, ...] = setting((), "OPMAS_TLS_NAMES", "more host names and addresses the local CA's "
                                                            "server certificate covers (separated by ',')")


@dataclass(frozen=True)
class AgentConfig:
    """The shipped agents (``opmas agent tail|syslog``)."""

    api_url: str | None = setting(None, "OPMAS_API_URL", "management API URL; empty: the one api.host/api.port "
                                                         "give on this machine")
    enroll_token: str | None = setting(None, "OPMAS_ENROLL_TOKEN", "the enrollment string of opmas agent enroll "
                                                                   "(or a bare JWT with agents:register), needed "
                                                                   "on the first run only", secret=True)
    ca_fingerprint: str | None = setting(None, "OPMAS_CA_FINGERPRINT",
                                         "SHA-256 fingerprint of OPMAS's CA (printed by opmas up): the agent "
                                         "fetches that CA once and then trusts it alone")


@dataclass(frozen=True)
class Config:
    """Everything OPMAS's commands need, as one tree of sections."""

    data_dir: Path = setting(DEFAULT_DATA_DIR, "OPMAS_DATA_DIR", "where embedded servers and generated secrets live")
    listen: str = setting("127.0.0.1", "OPMAS_LISTEN", "address the embedded NATS server and the API listen on "
                                                       "(0.0.0.0: every interface); beyond loopback, TLS is on")
    log_level: str = setting("INFO", "OPMAS_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")
    shutdown_timeout: float = setting(10.0, "OPMAS_SHUTDOWN_TIMEOUT",
                                      "seconds `opmas up` waits for the engine after a stop signal")
    sinks: tuple[str, ...] = setting((), "OPMAS_SINKS", "extra finding sinks by name, e.g. file:/path/findings.jsonl "
                                                        "(separated by ',')")
    nats: NatsConfig = setting(NatsConfig, None, "", factory=True)
    postgres: PostgresConfig = setting(PostgresConfig, None, "", factory=True)
    clickhouse: ClickHouseConfig = setting(ClickHouseConfig, None, "", factory=True)
    pipeline: PipelineConfig = setting(PipelineConfig, None, "", factory=True)
    kafka: KafkaConfig = setting(KafkaConfig, None, "", factory=True)
    api: ApiConfig = setting(ApiConfig, None, "", factory=True)
    agent: AgentConfig = setting(AgentConfig, None, "", factory=True)
    tls: TlsConfig = setting(TlsConfig, None, "", factory=True)

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
    def tls_dir(self) -> Path:
        """The local CA and the server certificate it issued."""
        return self.data_dir / "tls"

    @property
    def trusted_ca(self) -> Path | None:
        """The CA OPMAS's clients trust: ``tls.ca``, else the data dir's local CA where there is one."""
        if self.tls.ca:
            return Path(self.tls.ca)
        local = self.tls_dir / "ca.pem"
        return local if local.exists() else None

    @property
    def tls_on(self) -> bool:
        """Whether the embedded NATS server and the API serve TLS only."""
        return self.tls.mode == "on" or (self.tls.mode == "auto" and not is_loopback(self.listen))

    @property
    def api_host(self) -> str:
        return self.api.host or self.listen

    @property
    def nats_url_file(self) -> Path:
        """Where a running ``opmas up`` writes its embedded NATS URL (its port may differ)."""
        return self.data_dir / "nats.url"

    def client_nats_url(self) -> str:
        """The NATS URL clients (tools, agents) use: the configured one, else the running embedded
        server's, else the configured embedded port."""
        if self.nats.url:
            return self.nats.url
        if self.nats_url_file.exists():
            return self.nats_url_file.read_text().strip()
        return f"{'tls' if self.tls_on else 'nats'}://127.0.0.1:{self.nats.port}"

    def client_api_url(self) -> str:
        """The management API URL clients (agents) use: the configured one, else this machine's API."""
        if self.agent.api_url:
            return self.agent.api_url
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        return f"{'https' if self.tls_on else 'http'}://{host}:{self.api.port}"

    def with_overrides(self, **values: Any) -> "Config":
        """A copy with command-line values: top-level settings by name, sections as mappings
        (``with_overrides(data_dir=d, pipeline={"partitions": 8})``); None values are ignored."""
        return _build(self, _drop_none(values), "command line")


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the YAML file (``path`` or ``$OPMAS_CONFIG``), then the environment."""
    env = os.environ if env is None else env
    config = Config()
    path = path or (Path(env["OPMAS_CONFIG"]) if env.get("OPMAS_CONFIG") else None)
    if path is not None:
        try:  # YAML aliases refused (core/sigma/yamldoc.py: they can expand to gigabytes)
            loaded = load_yaml(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except YamlError as exc:
            raise ConfigError(f"{path}:{exc.line}: {exc}" if exc.line else f"{path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        config = _build(config, loaded, str(path))
    from_env: dict[str, Any] = {}
    for section, f in settings():
        var = f.metadata["env"]
        if env.get(var) not in (None, ""):
            (from_env.setdefault(section, {}) if section else from_env)[f.name] = env[var]
    return _build(config, from_env, "environment")


def settings() -> Iterator[tuple[str, Field]]:
    """Every leaf setting as (section name, or "" for the top level; its field)."""
    for f in fields(Config):
        if f.metadata["env"] is None:
            yield from ((f.name, leaf) for leaf in fields(f.default_factory))
        else:
            yield "", f


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _drop_none(v) if isinstance(v, Mapping) else v for k, v in values.items() if v is not None}


def _build(base: Config, values: Mapping[str, Any], origin: str) -> Config:
    top = {f.name: f for f in fields(Config)}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        f = top.get(name)
        if f is None:
            raise ConfigError(f"{origin}: unknown setting {name!r} (known: {', '.join(sorted(top))})")
        if f.metadata["env"] is None:  # a section
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: {name}: expected a mapping of settings")
            changes[name] = _section(getattr(base, name), value, f"{origin}: {name}")
        else:
            changes[name] = _coerce(f, value, origin)
    config = replace(base, **changes)
    _check(config, origin)
    return config


def _section(base: Any, values: Mapping[str, Any], origin: str) -> Any:
    known = {f.name: f for f in fields(base)}
    changes = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{origin}: unknown setting {name!r} (known: {', '.join(sorted(known))})")
        changes[name] = _coerce(known[name], value, origin)
    return replace(base, **changes)


def _check(config: Config, origin: str) -> None:
    p = config.pipeline
    for ok, problem in ((p.partitions >= 1, "pipeline.partitions must be >= 1"),
                        (p.workers >= 0, "pipeline.workers must be >= 0"),
                        (p.batch_size >= 1, "pipeline.batch_size must be >= 1"),
                        (p.lateness >= 0, "pipeline.lateness must be >= 0"),
                        (p.max_future >= 0, "pipeline.max_future must be >= 0"),
                        (p.partition_idle > 0, "pipeline.partition_idle must be > 0"),
                        (config.shutdown_timeout >= 0, "shutdown_timeout must be >= 0"),
                        (0 < config.api.port < 65536, "api.port must be in 1..65535"),
                        (config.tls.mode in ("on", "off", "auto"), "tls.mode must be on, off or auto"),
                        (bool(config.tls.cert) == bool(config.tls.key), "tls.cert and tls.key go together")):
        if not ok:
            raise ConfigError(f"{origin}: {problem}")


def _coerce(f: Field, value: Any, origin: str) -> Any:
    kind = f.type
    try:
        if kind == "Path":
            return Path(value).expanduser().resolve()
        if kind == "tuple[Path, ...]":
            items = value.split(os.pathsep) if isinstance(value, str) else list(value)
            return tuple(Path(p).expanduser() for p in items if str(p))
        if kind == "tuple[str, ...]":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(s).strip() for s in items if str(s).strip())
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
        raise ConfigError(f"{origin}: {f.name}: {exc}") from exc


def describe(config: Config) -> dict[str, Any]:
    """The configuration as plain data, secrets left out (for logs and ``--print-config``)."""
    def plain(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if is_dataclass(value):
                out[f.name] = plain(value)
            elif f.metadata.get("secret"):
                out[f.name] = None if value is None else "(set)"
            elif isinstance(value, Path):
                out[f.name] = str(value)
            elif isinstance(value, tuple):
                out[f.name] = [str(v) for v in value]
            else:
                out[f.name] = value
        return out
    return plain(config)


def reference() -> str:
    """Every setting as a Markdown table: YAML key, environment variable, default, meaning."""
    lines = ["# Configuration", "",
             "Generated from `src/opmas/config.py` (`python -m opmas.config > docs/configuration.md`); "
             "a test keeps it equal.", "",
             "Every command reads the same tree: the defaults, then the YAML file of `--config` (or "
             "`OPMAS_CONFIG`; sections as nested mappings), then the environment, then command-line flags.", ""]
    section_docs = {f.name: (f.default_factory.__doc__ or "").strip() for f in fields(Config)
                    if f.metadata["env"] is None}
    current = None
    for section, f in settings():
        if section != current:
            current = section
            title = f"## `{section}`" if section else "## Top level"
            lines += ["", title, ""]
            if section:
                lines += [section_docs[section], ""]
            lines += ["| YAML key | environment | default | meaning |", "|---|---|---|---|"]
        default = f.default if f.default is not MISSING else f.default_factory()
        if isinstance(default, tuple):
            default = os.pathsep.join(_shown(v) for v in default) if default else ""
        shown = "" if default in (None, "") else f"`{_shown(default)}`"
        key = f"{section}.{f.name}" if section else f.name
        lines.append(f"| `{key}` | `{f.metadata['env']}` | {shown} | {f.metadata['doc']} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _shown(value: Any) -> str:
    """A default as documentation shows it: package and checkout paths without this machine's prefix."""
    from opmas.paths import PACKAGE_DIR

    text = str(value)
    if isinstance(value, Path):
        if value.is_relative_to(PACKAGE_DIR):
            return "<package>/" + str(value.relative_to(PACKAGE_DIR))
        if value == DEFAULT_DATA_DIR:
            return "./data"
    return text


if __name__ == "__main__":
    print(reference(), end="")
