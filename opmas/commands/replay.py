"""``opmas replay FILE``: publish a recorded event log to NATS, order per agent preserved."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from connectors.files import BadRecord, iter_objects, open_source
from connectors.nats.client import connect
from connectors.nats.subjects import ensure_streams, events_subject, subject_token
from opmas.config import ConfigError, load_config

log = logging.getLogger("opmas.replay")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replay", help="publish a recorded event log (JSON lines, EVTX-JSON) to NATS")
    parser.add_argument("file", help="event file (.json, .jsonl, .gz) or - for stdin")
    parser.add_argument("--rate", default="max", help="events per second, or 'max' (default)")
    parser.add_argument("--nats", help="NATS URL (default: NATS_URL, else the running `opmas up` of the data dir)")
    parser.add_argument("--agent", help="agent id for raw events (default: the event's host, else 'replay')")
    parser.add_argument("--batch", type=int, default=100,
                        help="events per message, as JSON lines (default 100; 1 = one event per message)")
    parser.add_argument("--config", type=Path, help="YAML configuration file")
    parser.set_defaults(func=replay_command)


@dataclass
class ReplayResult:
    events: int = 0
    messages: int = 0
    bad_records: int = 0
    oversized: int = 0  # events larger than the server's max_payload, skipped
    seconds: float = 0.0


def agent_of(obj: dict[str, Any], default: str | None) -> str:
    """The agent a recorded object is published as: the envelope's, ``--agent``, its host, 'replay'."""
    if isinstance(obj.get("agent_id"), str) and isinstance(obj.get("data"), dict):
        return subject_token(obj["agent_id"])
    if default:
        return subject_token(default)
    host = obj.get("host")
    name = host.get("name") if isinstance(host, dict) else obj.get("host.name")
    if name is None:
        system = (obj.get("Event") or {}).get("System") if isinstance(obj.get("Event"), dict) else None
        name = system.get("Computer") if isinstance(system, dict) else None
    return subject_token(str(name)) if name else "replay"


async def replay(path: str, nats_url: str, rate: float | None = None, agent: str | None = None,
                 batch: int = 100, progress: Progress | None = None) -> ReplayResult:
    """Publish every object of ``path`` through JetStream; bad records are sent as they are (the
    engine dead-letters them). A message never exceeds the server's max_payload; an event that
    alone would is skipped with a warning (``oversized``). Returns once JetStream has stored
    everything."""
    result = ReplayResult()
    nc = await connect(nats_url, "opmas-replay")
    js = nc.jetstream()
    await ensure_streams(js, update=False)  # replaying before the engine first ran stores the events too
    limit = nc.max_payload
    buffers: dict[str, list[bytes]] = {}
    sizes: dict[str, int] = {}  # per buffer: its lines' bytes plus one separator each
    records = 0  # objects and unreadable lines read so far
    pending: list[asyncio.Future] = []
    task = progress.add_task("replaying", total=None) if progress else None
    start = time.monotonic()

    async def send(subject: str, lines: list[bytes]) -> None:
        pending.append(await js.publish_async(subject, b"\n".join(lines)))
        result.messages += 1
        if len(pending) >= 2000:
            await _settle(pending)

    bad: list[BadRecord] = []
    fallback = events_subject(subject_token(agent or "replay"))

    def fits(line: bytes) -> bool:
        nonlocal records
        records += 1
        if len(line) <= limit:
            return True
        result.oversized += 1
        log.warning(f"record {records} of the input has {len(line):,} bytes, more than the NATS server's "
                    f"max_payload of {limit:,}: skipped", extra={"record": records})
        return False

    async def take(obj: dict[str, Any]) -> None:
        nonlocal buffers, sizes
        line = orjson.dumps(obj)
        if not fits(line):
            return
        key = agent_of(obj, agent)
        lines = buffers.setdefault(key, [])
        if lines and sizes[key] + len(line) > limit:  # joined with this line the message would be too large
            await send(events_subject(key), lines)
            buffers[key] = lines = []
        sizes[key] = (sizes[key] if lines else 0) + len(line) + 1
        lines.append(line)
        result.events += 1
        if len(lines) >= batch:
            await send(events_subject(key), lines)
            buffers[key] = []
        if rate:
            ahead = result.events / rate - (time.monotonic() - start)
            if ahead > 0.05:
                for key, lines in buffers.items():  # nothing waits in a buffer while we sleep
                    if lines:
                        await send(events_subject(key), lines)
                buffers, sizes = {}, {}
                await asyncio.sleep(ahead)
        if progress and result.events % 1000 == 0:
            progress.update(task, completed=result.events, description=f"replaying {result.events:,} events")

    async def salvage() -> None:
        """A bad record may span good lines (a broken line read as the start of a multi-line
        object): take those, forward the rest unchanged for the engine to dead-letter."""
        while bad:
            for line in bad.pop(0).raw.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict):
                    await take(obj)
                elif fits(line):
                    result.bad_records += 1
                    await send(fallback, [line])

    try:
        with open_source(path) as stream:
            for obj in iter_objects(stream, on_error=bad.append):
                await salvage()
                await take(obj)
            await salvage()
        for key, lines in buffers.items():
            if lines:
                await send(events_subject(key), lines)
        await _settle(pending)
    finally:
        await nc.close()
    result.seconds = time.monotonic() - start
    if progress:
        progress.update(task, completed=result.events, description=f"replayed {result.events:,} events")
    return result


async def _settle(pending: list[asyncio.Future]) -> None:
    """Wait for JetStream to confirm every pending publish (raises if one failed)."""
    futures = pending[:]
    pending.clear()
    for future in futures:
        await future


def replay_command(args: argparse.Namespace) -> int:
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
    if args.file != "-" and not Path(args.file).exists():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    url = args.nats or config.client_nats_url()
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            result = asyncio.run(replay(args.file, url, rate, args.agent, max(1, args.batch), progress))
    except (OSError, nats.errors.NoServersError) as exc:
        print(f"error: cannot reach NATS at {url}: {exc} (is `opmas up` running?)", file=sys.stderr)
        return 1
    except nats.errors.Error as exc:
        print(f"error: JetStream did not store the events: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    speed = result.events / result.seconds if result.seconds else 0.0
    console.print(f"replayed {result.events:,} events in {result.messages:,} messages to {url} "
                  f"in {result.seconds:.2f}s ({speed:,.0f} events/s)"
                  + (f"; {result.bad_records} unreadable records forwarded for dead-lettering"
                     if result.bad_records else "")
                  + (f"; {result.oversized} events larger than the server's max_payload skipped"
                     if result.oversized else ""))
    return 0
