"""``opmas up``: the whole pipeline, on embedded servers unless URLs are configured."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from opmas.config import Config
    from opmas.runtime.stack import Stack

log = logging.getLogger("opmas.up")

Service = Callable[["Config", "Stack", "asyncio.Event"], Awaitable[None]]


def services() -> list[Service]:
    """Services started next to the engine: ``hook(config, stack, stop) -> awaitable``, run as tasks
    until ``stop`` is set. The management API is one (see api/). Imported here, when ``up``
    runs, so that every other ``opmas`` command starts without loading them. The NATS auth callout
    is another (runtime/nats_access.py)."""
    from opmas.api.service import up_service
    from opmas.runtime.nats_access import callout_service

    return [callout_service, up_service]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("up", help="run the pipeline (embedded NATS, PostgreSQL, ClickHouse by default)")
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.add_argument("--data-dir", type=Path, help="where embedded servers keep their data (default: data_dir of the configuration)")
    parser.add_argument("--rules", action="append", type=Path, metavar="PATH",
                        help="rule files or directories (repeatable; default: the shipped rules)")
    parser.add_argument("--partitions", type=int, help="number of partition processors")
    parser.add_argument("--sink", action="append", metavar="NAME:TARGET",
                        help="repeatable: also announce findings here, e.g. file:findings.jsonl (default: sinks of "
                             "the configuration)")
    parser.set_defaults(func=up_command)


def up_command(args: argparse.Namespace) -> int:
    import asyncio

    from opmas.config import ConfigError, load_config
    from opmas.connectors.sinks import SinkError, build_sinks
    from opmas.logs import setup_logging

    try:
        config = load_config(args.config).with_overrides(
            data_dir=args.data_dir, sinks=args.sink, pipeline={"rules": args.rules, "partitions": args.partitions})
        for sink in build_sinks(config.sinks):  # a sink that cannot open is an error now, not a crash loop
            asyncio.run(sink.open())
            asyncio.run(sink.close())
    except (ConfigError, SinkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    return asyncio.run(run_up(config))


async def run_up(config: Config) -> int:
    """Start the servers and the engine, restarting whichever crashes (runtime/supervise.py);
    on SIGINT/SIGTERM stop the engine (by its deadline, see runtime/shutdown.py), then the servers."""
    import asyncio

    from opmas.runtime.datadir import DataDirBusy
    from opmas.runtime.embedded import PortTaken
    from opmas.runtime.pipeline import Pipeline
    from opmas.runtime.shutdown import Shutdown
    from opmas.runtime.stack import start_stack
    from opmas.runtime.supervise import supervise_engine, supervise_servers

    stop = asyncio.Event()
    os.umask(0o077)  # what this process and its servers write in the data dir is the user's alone
    try:
        stack = await asyncio.to_thread(start_stack, config)
    except (DataDirBusy, PortTaken) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    abort = asyncio.Event()  # shared by every run of the engine
    shutdown = Shutdown(stop, abort, config.shutdown_timeout)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, shutdown.on_signal)
    service_tasks = [asyncio.create_task(service(config, stack, stop)) for service in services()]
    service_tasks.append(asyncio.create_task(supervise_servers(stack.servers, stop)))
    first_ready = asyncio.Event()

    async def run_engine() -> None:
        pipeline = Pipeline.over_nats(config, stack.nats_url, stack.db_url, stack.archive, abort)
        ready = asyncio.create_task(pipeline.ready.wait())
        ready.add_done_callback(lambda task: task.cancelled() or first_ready.set())
        try:
            await pipeline.run(stop)
        finally:
            ready.cancel()

    engine = asyncio.create_task(supervise_engine(run_engine, stop))
    shutdown.watch(engine, stack.stop)
    try:
        waiting = asyncio.create_task(first_ready.wait())
        await asyncio.wait([engine, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if first_ready.is_set():
            _print_where(config, stack)
        await engine
        return 0
    except asyncio.CancelledError:
        if not shutdown.forced:
            raise
        return 1
    except Exception:
        log.exception("engine failed")
        return 1
    finally:
        stop.set()
        _, late = await asyncio.wait(service_tasks, timeout=config.shutdown_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*service_tasks, return_exceptions=True)
        await asyncio.to_thread(stack.stop)
        print("opmas stopped", file=sys.stderr, flush=True)


def _print_where(config: Config, stack: "Stack") -> None:
    from opmas.config import is_loopback
    from opmas.logs import redact

    kind = {True: "embedded", False: "external"}
    lines = [
        f"OPMAS is up (data dir {config.data_dir})",
        f"  NATS        {stack.nats_url}  ({kind['nats' in stack.embedded]}; events on opmas.events.<agent_id>)",
        f"  PostgreSQL  {stack.db_url}  ({kind['postgres' in stack.embedded]})",
        f"  ClickHouse  {stack.archive_location}  ({kind['clickhouse' in stack.embedded]})",
        f"  rules       {', '.join(map(str, config.pipeline.rules))}",
        "  findings on opmas.findings.<severity>, dead letters on opmas.deadletter; Ctrl-C stops",
    ]
    if stack.tls is not None:
        lines.insert(1, f"  TLS         CA {stack.tls.ca}  fingerprint {stack.tls.fingerprint}")
    elif not is_loopback(config.listen):
        lines.insert(1, "  TLS         off (tls.mode off): plaintext beyond this machine")
    print(redact("\n".join(lines)), file=sys.stderr, flush=True)  # an external URL's password stays out
