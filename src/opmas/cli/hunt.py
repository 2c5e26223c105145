"""``opmas hunt RULES_PATH... --since T [--until T] [--agent A] [--output FILE] [--store]``: a retro-hunt,
rules run over the events archived in ClickHouse (opmas.runtime.hunt). The embedded archive is read where no
``opmas up`` holds the data dir (one process owns a chdb directory); a configured ClickHouse server any time.
``--store`` records the hunt and writes its findings to PostgreSQL, linked to the hunt's id (the configured
server, else the embedded one of the data dir); without it nothing is written but the output."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from opmas.core.finding import SEVERITIES
from opmas.paths import RULES_DIR
from opmas.cli.findings_output import FORMATS, Writer

if TYPE_CHECKING:
    from opmas.connectors.clickhouse.archive import Archive
    from opmas.core.finding import Finding
    from opmas.core.ruleset import RuleSet
    from opmas.runtime.hunt import HuntStats

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``hunt`` sub-command."""
    parser = subparsers.add_parser("hunt", help="run rules over the archived events of a time range")
    parser.add_argument("rules", nargs="*", type=Path, metavar="RULES_PATH",
                        help="rule files or directories (default: the shipped rules)")
    parser.add_argument("--since", required=True, metavar="TIME",
                        help="start of the range: ISO 8601 (2026-12-01T00:00:00Z), epoch seconds, or ago (24h, 7d)")
    parser.add_argument("--until", metavar="TIME", help="end of the range, excluded (default: now)")
    parser.add_argument("--agent", help="only this agent's events")
    parser.add_argument("--output", metavar="FILE", help="findings file (default: stdout)")
    parser.add_argument("--format", choices=FORMATS, default="jsonl", help="as opmas detect: jsonl, csv or table")
    parser.add_argument("--min-level", choices=SEVERITIES, metavar="LEVEL", help="only findings at this level or above")
    parser.add_argument("--mapping", action="append", default=[], metavar="FILE",
                        help="extra logsource mapping file (repeatable)")
    parser.add_argument("--store", action="store_true",
                        help="record the hunt and store its findings in PostgreSQL, marked with the hunt's id")
    parser.add_argument("--config", type=Path, help="YAML configuration file (data dir, ClickHouse URL)")
    parser.set_defaults(func=hunt_command)


def when(text: str, now: float) -> float:
    """Epoch seconds of a --since/--until value; ValueError if it is none of the accepted forms."""
    from opmas.core.event import parse_time

    ago = _AGO.fullmatch(text.strip())
    if ago is not None:
        return now - float(ago[1]) * _UNIT[ago[2]]
    moment = parse_time(float(text) if re.fullmatch(r"\d+(\.\d+)?", text.strip()) else text)
    if moment is None:
        raise ValueError(f"{text!r} is not a time: use ISO 8601, epoch seconds or an age such as 24h")
    return moment


def hunt_command(args: argparse.Namespace) -> int:
    """Load the rules, open the archive, hunt, write the findings; 1 if no rule loaded, 2 on bad input."""
    from opmas.connectors.clickhouse.archive import Archive, connect
    from opmas.core.ruleset import load_ruleset, sources_from_paths
    from opmas.config import ConfigError, load_config
    from opmas.runtime.datadir import DataDirBusy, lock_data_dir
    from opmas.cli.db import database_url
    from opmas.runtime.hunt import HuntStats

    now = time.time()
    try:
        since, until = when(args.since, now), when(args.until, now) if args.until else now
        config = load_config(args.config)
        sources = sources_from_paths(args.rules or [RULES_DIR])
    except (ValueError, ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ruleset, errors = load_ruleset(sources, args.mapping)
    for error in errors:
        print(error, file=sys.stderr)
    if not ruleset.rules:
        print("error: no rule loaded", file=sys.stderr)
        return 1
    with contextlib.ExitStack() as stack:
        if not config.clickhouse.url:  # the embedded archive: only while no opmas up holds it
            if not config.clickhouse_dir.is_dir():
                print(f"error: no archive in {config.clickhouse_dir} (OPMAS_DATA_DIR, --config)", file=sys.stderr)
                return 2
            try:
                stack.callback(lock_data_dir(config.data_dir).close)
            except DataDirBusy:
                print(f"error: a running `opmas up` holds {config.data_dir}, and with it the embedded archive: "
                      "hunt through its API (POST /api/v1/hunts, or the console's rule editor), stop it, or "
                      "configure a ClickHouse server (OPMAS_CLICKHOUSE_URL)", file=sys.stderr)
                return 2
        archive = Archive(connect(config.clickhouse.url, config.clickhouse_dir))
        stack.callback(archive.close)
        out = stack.enter_context(open(args.output, "wb") if args.output else contextlib.nullcontext(sys.stdout.buffer))
        writer = Writer(out, args.format, False, args.min_level)
        try:
            db_url = stack.enter_context(database_url(config)) if args.store else None
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        stats = HuntStats()
        started = time.perf_counter()
        hunt_id = asyncio.run(_hunt(archive, ruleset, since, until, args.agent, stats, writer, db_url,
                                    _progress(stack, since, until)))
        writer.close()
        out.flush()
    elapsed = max(time.perf_counter() - started, 1e-9)
    print(f"{stats.in_range} events in range, {stats.read} read after the archive's prefilter, {stats.findings} "
          f"findings, {len(ruleset.rules)} rules, {stats.in_range / elapsed:,.0f} events/s over the range",
          file=sys.stderr)
    if hunt_id is not None:
        print(f"stored as hunt {hunt_id}", file=sys.stderr)
    return 0


async def _hunt(archive: "Archive", ruleset: "RuleSet", since: float, until: float, agent: str | None,
                stats: "HuntStats", writer: Writer, db_url: str | None,
                progress: Callable[["HuntStats"], None] | None) -> str | None:
    """Hunt, writing each batch's findings; with ``db_url``, record the hunt and store them too (its id)."""
    from opmas.connectors.postgres.sink import HuntRow, PostgresSink
    from opmas.connectors.records import FindingRecord
    from opmas.runtime.hunt import run_hunt

    sink = PostgresSink(db_url) if db_url else None
    row = HuntRow(str(uuid.uuid4()), tuple(sorted(rule.id for rule in ruleset.rules)), since, until, agent, True)

    async def on_batch(findings: list["Finding"]) -> None:
        writer.write(findings)
        if sink is not None:
            await sink.write_hunt(row.id, [FindingRecord.of(f) for f in findings])

    if sink is None:
        await run_hunt(archive, ruleset, since, until, agent, stats, on_batch, progress=progress)
        return None
    try:
        await sink.migrate()
        await sink.begin_hunt(row)
        outcome, error = "failed", "interrupted"
        try:
            await run_hunt(archive, ruleset, since, until, agent, stats, on_batch, progress=progress)
            outcome, error = "done", None
        finally:
            await sink.end_hunt(row.id, outcome, stats.in_range, stats.read, stats.findings, error)
    finally:
        await sink.close()
    return row.id


def _progress(stack: contextlib.ExitStack, since: float, until: float) -> Callable[[HuntStats], None] | None:
    """A progress display on a terminal (how far through the time range the hunt is), else None."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    display = stack.enter_context(Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                           TimeRemainingColumn(), console=Console(stderr=True), transient=True))
    task = display.add_task("hunting", total=until - since)

    def update(stats: HuntStats) -> None:
        display.update(task, completed=(stats.reached or since) - since,
                       description=f"{stats.read:,} of {stats.in_range:,} events read, {stats.findings:,} findings")
    return update
