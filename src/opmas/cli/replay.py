"""``opmas replay PATH...``: publish recorded event logs (files, folders, globs; JSON, binary EVTX, gzip)
to NATS, order per agent preserved (opmas.connectors.nats.replay, imported when the command runs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PATIENCE = 60.0  # default --patience: opmas.connectors.nats.replay.PATIENCE, not imported here (it loads nats)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replay", help="publish recorded event logs (JSON, binary EVTX, gzip) to NATS")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="event files, folders (searched recursively) or globs: JSON lines, concatenated JSON "
                             "or arrays, binary .evtx, any of them .gz; '-' = stdin")
    parser.add_argument("--rate", default="max", help="events per second, or 'max' (default)")
    parser.add_argument("--nats", help="NATS URL (default: NATS_URL, else the running `opmas up` of the data dir)")
    parser.add_argument("--agent", help="agent id for raw events (default: the event's host, else 'replay')")
    parser.add_argument("--batch", type=int, default=100,
                        help="events per message, as JSON lines (default 100; 1 = one event per message)")
    parser.add_argument("--patience", type=float, default=PATIENCE, metavar="SECONDS",
                        help="how long to retry a message a full events stream refuses before giving up (default 60)")
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.set_defaults(func=replay_command)


def replay_command(args: argparse.Namespace) -> int:
    import asyncio

    import nats.errors
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from opmas.connectors.inputs import UnknownInput, check
    from opmas.connectors.nats.replay import ReplayStalled, replay
    from opmas.config import ConfigError, load_config
    from opmas.runtime.nats_access import nats_options

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.rate == "max":
        rate = None
    else:
        try:
            rate = float(args.rate)
            assert rate > 0
        except (ValueError, AssertionError):
            print(f"error: --rate must be a positive number or 'max', not {args.rate!r}", file=sys.stderr)
            return 2
    try:
        inputs = check(args.paths)
    except UnknownInput as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    url = args.nats or config.client_nats_url()
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            result = asyncio.run(replay(inputs, url, rate, args.agent, max(1, args.batch), progress,
                                        args.patience, config.nats.max_message_bytes,
                                        nats_options(config)))
    except (OSError, nats.errors.NoServersError) as exc:
        print(f"error: cannot reach NATS at {url}: {exc} (is `opmas up` running?)", file=sys.stderr)
        return 1
    except ReplayStalled as exc:
        print(f"error: {exc}; is the engine running and the events stream big enough"
              " (stream_max_bytes)? Events before it were stored.", file=sys.stderr)
        return 1
    except nats.errors.Error as exc:
        print(f"error: JetStream did not store the events: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    speed = result.events / result.seconds if result.seconds else 0.0
    console.print(f"replayed {result.events:,} events in {result.messages:,} messages to {url} "
                  f"in {result.seconds:.2f}s ({speed:,.0f} events/s)"
                  + (f"; {result.bad_records} unreadable records forwarded for dead-lettering"
                     if result.bad_records else "")
                  + (f"; {result.oversized} events larger than a message may be skipped"
                     if result.oversized else "")
                  + (f"; {result.unreadable} unreadable records (logged) skipped" if result.unreadable else ""))
    return 0
