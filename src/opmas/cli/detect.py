"""``opmas detect RULES_PATH... --events PATH... [--output FILE]``: offline detection.

Runs the same opmas.core.detector.Detector (processor and correlation stage) as the streaming runtimes over event files, folders
and globs (JSON, binary EVTX, gzip; stdin) and writes the findings as JSON lines (stdout by
default). Rule load errors and unreadable records are reported on stderr; good rules still run.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from opmas.core.finding import SEVERITIES
from opmas.paths import RULES_DIR
from opmas.cli.findings_output import FORMATS, Writer



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``detect`` sub-command."""
    parser = subparsers.add_parser("detect", help="run rules over a file of JSON events, write findings as JSON lines")
    parser.add_argument("rules", nargs="*", type=Path, metavar="RULES_PATH",
                        help="rule files or directories (default: the shipped rules)")
    parser.add_argument("--events", required=True, nargs="+", action="extend", metavar="PATH",
                        help="event files, folders (searched recursively) or globs: JSON lines, concatenated "
                             "JSON or arrays, binary .evtx, any of them .gz; '-' = stdin (repeatable)")
    parser.add_argument("--output", metavar="FILE", help="findings file (default: stdout)")
    parser.add_argument("--format", choices=FORMATS, default="jsonl",
                        help="jsonl (default): a finding per line; csv; table: a summary (findings per level, "
                             "top rules and hosts, first and last event time, slowest rules)")
    parser.add_argument("--min-level", choices=SEVERITIES, metavar="LEVEL",
                        help="only findings at this level or above (informational, low, medium, high, critical)")
    parser.add_argument("--timeline", action="store_true",
                        help="write the findings sorted by event time (after the input is read)")
    parser.add_argument("--mapping", action="append", default=[], metavar="FILE",
                        help="extra logsource mapping file (repeatable)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per processor batch")
    parser.add_argument("--lateness", type=float, default=None, metavar="SECONDS",
                        help="how far behind the newest event time an event may arrive and still count "
                             "in correlation windows (default 60)")
    parser.set_defaults(func=detect_command)


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as stream:
            yield stream


def _progress() -> contextlib.AbstractContextManager:
    """A rich progress display on a terminal (bytes read of the inputs, ETA), nothing otherwise."""
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def detect_command(args: argparse.Namespace) -> int:
    """Load rules, stream events through a Processor, write findings; 1 if no rule loaded."""
    from opmas.connectors.files import BadRecord
    from opmas.connectors.inputs import Reading, UnknownInput, check
    from opmas.core.detector import Detector
    from opmas.core.ruleset import load_ruleset, sources_from_paths
    from opmas.runtime.gc_tuning import tune_gc_for_rules

    try:
        sources = sources_from_paths(args.rules or [RULES_DIR])
        inputs = check(args.events)
    except (FileNotFoundError, UnknownInput) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    ruleset, errors = load_ruleset(sources, args.mapping, args.lateness)
    for error in errors:
        print(error, file=sys.stderr)
    if not ruleset.rules:
        print("error: no rule loaded", file=sys.stderr)
        return 1
    bad_records: list[BadRecord] = []

    def on_bad(record: BadRecord) -> None:
        bad_records.append(record)
        print(f"{record.file}:{record.line}: skipped record: {record.reason}", file=sys.stderr)

    detector = Detector(ruleset)
    if args.format == "table":
        detector.processor.index.rule_seconds = {}
    tune_gc_for_rules()
    reading = Reading(inputs, on_bad)
    started = time.perf_counter()
    try:
        with _output(args.output) as out, _progress() as progress:
            writer = Writer(out, args.format, args.timeline, args.min_level)
            task = progress.add_task("detecting", total=reading.total) if progress else None
            for batch in reading.event_batches(args.batch_size):
                writer.write(detector.process(batch))
                if progress is not None:
                    stats = detector.stats
                    rate = stats.events / max(time.perf_counter() - started, 1e-9)
                    progress.update(task, completed=reading.position,
                                    description=f"{stats.events:,} events ({rate:,.0f}/s), {stats.findings:,} findings")
            writer.write(detector.flush())
            titles = {rule.meta.id: rule.meta.title for rule in ruleset.detections}
            writer.close({rid: (titles.get(rid, rid), s) for rid, s in (detector.processor.index.rule_seconds or {}).items()})
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = max(time.perf_counter() - started, 1e-9)
    stats = detector.stats
    print(f"{stats.events} events, {stats.findings} findings, {len(bad_records)} bad records, "
          f"{len(ruleset.rules)} rules, {stats.events / elapsed:,.0f} events/s", file=sys.stderr)
    return 0
