"""Scale-out commands: ``opmas bridge`` (NATS -> Kafka), ``opmas worker`` (a Faust worker running the
partition processors, N of them on one or many machines) and ``opmas archiver`` (Kafka -> ClickHouse).

They talk to servers that already run: NATS_URL, OPMAS_DB_URL, OPMAS_KAFKA_URL (and
OPMAS_CLICKHOUSE_URL for a shared archive) from the environment or the YAML config.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from opmas.connectors.kafka.security import KafkaSecurity
    from opmas.config import Config

log = logging.getLogger("opmas.scaleout")


def register(subparsers: argparse._SubParsersAction) -> None:
    commands = (
        ("worker", worker_command, "run a Faust worker: the partition processors of the events topic"),
        ("bridge", bridge_command, "forward the NATS events stream to the Kafka events topic"),
        ("archiver", archiver_command, "archive the Kafka events topic into ClickHouse"),
    )
    for name, func, help_text in commands:
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument("--config", type=Path, help="YAML configuration file")
        parser.add_argument("--kafka-url", help="Kafka bootstrap servers host:port[,...] (OPMAS_KAFKA_URL)")
        parser.add_argument("--partitions", type=int, help="partitions of the events topic")
        parser.add_argument("--metrics-port", type=int, metavar="PORT",
                            help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics")
        if name == "worker":
            parser.add_argument("--rules", action="append", type=Path, metavar="PATH",
                                help="rule files or directories (repeatable; default: the shipped rules)")
        parser.set_defaults(func=func)


def _config(args: argparse.Namespace, needs: tuple[str, ...]) -> tuple[Config, KafkaSecurity] | None:
    """The configuration with the command's flags and its Kafka security, logging set up, metrics
    served on ``--metrics-port``; None (error printed) where it is invalid or lacks a server URL whose
    environment variable is in ``needs``."""
    from opmas.connectors.kafka.security import KafkaSecurity
    from opmas import metrics
    from opmas.config import ConfigError, load_config
    from opmas.logs import setup_logging

    try:
        config = load_config(args.config).with_overrides(
            kafka={"url": args.kafka_url},
            pipeline={"partitions": args.partitions, "rules": getattr(args, "rules", None)})
        missing = [env for env, url in (("OPMAS_KAFKA_URL", config.kafka.url), ("NATS_URL", config.nats.url),
                                        ("OPMAS_DB_URL", config.postgres.url)) if env in needs and not url]
        if missing:
            raise ConfigError(f"{args.command} needs {', '.join(missing)} (environment or config file)")
        security = KafkaSecurity.of(config.kafka)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    setup_logging(config.log_level)
    metrics.serve(args.metrics_port)
    return config, security


def worker_command(args: argparse.Namespace) -> int:
    import asyncio

    import faust

    from opmas.connectors.kafka.topics import TopicLayoutError, ensure_topic
    from opmas.runtime.faust_worker import WorkerRuntime, WorkerSettings
    from opmas.runtime.nats_access import nats_options
    from opmas.runtime.rules import RuleFiles

    loaded = _config(args, ("OPMAS_KAFKA_URL", "NATS_URL", "OPMAS_DB_URL"))
    if loaded is None:
        return 2
    config, security = loaded
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(ensure_topic(config.kafka.url, config.kafka.topic, config.pipeline.partitions,
                                             config.kafka.replication, security))
    except TopicLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = WorkerSettings(
        kafka_url=config.kafka.url, topic=config.kafka.topic, partitions=config.pipeline.partitions,
        partition_key=config.pipeline.partition_key, nats_url=config.nats.url, nats_options=nats_options(config),
        db_url=config.postgres.url,
        batch_size=config.pipeline.batch_size, batch_wait=config.pipeline.batch_wait, max_future=config.pipeline.max_future,
        partition_idle=config.pipeline.partition_idle, session_timeout=config.kafka.session_timeout, replication=config.kafka.replication,
        retry_max_delay=config.pipeline.retry_max_delay, security=security, sinks=config.sinks)
    runtime = WorkerRuntime(settings, RuleFiles(tuple(config.pipeline.rules), tuple(config.pipeline.mappings), config.postgres.url, config.pipeline.lateness))
    worker = faust.Worker(runtime.app, loop=loop, loglevel=config.log_level, quiet=True,
                          redirect_stdouts=False, logging_config=_json_logging(config.log_level))
    worker.execute_from_commandline()  # runs until SIGINT/SIGTERM, then exits the process
    return 0


def _json_logging(level: str) -> dict:
    """Faust's logging set-up, made to write OPMAS's JSON lines like the other commands."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "opmas.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def bridge_command(args: argparse.Namespace) -> int:
    import asyncio

    loaded = _config(args, ("OPMAS_KAFKA_URL", "NATS_URL"))
    return 2 if loaded is None else asyncio.run(_run_bridge(*loaded))


async def _run_bridge(config: Config, security: KafkaSecurity) -> int:
    from opmas.connectors.nats.client import connect
    from opmas.runtime.bridge import Bridge
    from opmas.runtime.nats_access import nats_options
    from opmas.connectors.kafka.topics import TopicLayoutError, ensure_topic
    from opmas.connectors.nats.subjects import ensure_streams

    try:
        await ensure_topic(config.kafka.url, config.kafka.topic, config.pipeline.partitions, config.kafka.replication,
                           security)
    except TopicLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    nc = await connect(config.nats.url, "opmas-bridge", persistent=True, **nats_options(config))
    try:
        js = nc.jetstream()
        await ensure_streams(js, config.nats.stream_max_age, config.nats.stream_max_bytes)
        bridge = Bridge.over_nats(js, config.kafka.url, config.kafka.topic, config.pipeline.partitions,
                                  config.pipeline.partition_key, config.nats.max_message_bytes, config.pipeline.batch_size,
                                  config.pipeline.batch_wait, config.pipeline.retry_max_delay, security=security)
        return await _until_signal(bridge.run, bridge.abort)
    finally:
        await nc.drain() if nc.is_connected else await nc.close()


def archiver_command(args: argparse.Namespace) -> int:
    import asyncio

    loaded = _config(args, ("OPMAS_KAFKA_URL",))
    return 2 if loaded is None else asyncio.run(_run_archiver(*loaded))


async def _run_archiver(config: Config, security: KafkaSecurity) -> int:
    import asyncio

    from opmas.connectors.clickhouse.archive import Archive, connect
    from opmas.runtime.archiver import Archiver
    from opmas.core.ruleset import load_ruleset
    from opmas.runtime.rules import log_errors

    no_rules, errors = load_ruleset([], list(config.pipeline.mappings))  # the mappings: event times as workers read them
    log_errors(errors, "startup")
    archive = Archive(await asyncio.to_thread(connect, config.clickhouse.url, config.clickhouse_dir))
    try:
        archiver = Archiver.over_kafka(archive, config.kafka.url, config.kafka.topic, no_rules.mappings,
                                       max(config.pipeline.batch_size, 5000), config.kafka.session_timeout,
                                       config.pipeline.retry_max_delay, security=security)
        return await _until_signal(archiver.run, archiver.abort)
    finally:
        archive.close()


async def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]], abort: asyncio.Event) -> int:
    """Run until SIGINT/SIGTERM; a second signal stops retrying unavailable servers."""
    import asyncio

    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            abort.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await run(stop)
        return 0
    except Exception:
        log.exception("stopped by an error")
        return 1
