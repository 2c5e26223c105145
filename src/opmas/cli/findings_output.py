"""How ``opmas detect`` writes findings for an analyst: JSON lines, CSV or a summary table, filtered
by level, optionally as a timeline (sorted by event time, in bounded memory)."""
from __future__ import annotations

import csv
import heapq
import io
import math
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from opmas.core.event import event_host, format_time
from opmas.core.finding import SEVERITIES, Finding

FORMATS = ("jsonl", "csv", "table")
CSV_COLUMNS = ("timestamp", "severity", "rule_title", "rule_id", "host", "agent_id", "id", "event_ids")
RUN_SIZE = 50_000  # findings sorted in memory at a time for --timeline; longer runs go to temporary files
TOP = 10


def host_of(finding: Finding) -> str:
    """The host of a finding's event (``core.event.HOST_PATHS``), else the agent."""
    return event_host(finding.details.get("event")) or finding.agent_id or "-"


def at_least(level: str) -> frozenset[str]:
    """The severities at ``level`` or above."""
    return frozenset(SEVERITIES[SEVERITIES.index(level):])


class Writer:
    """Findings to ``out`` in a format; :meth:`close` writes what needs the whole run (JSON lines and CSV
    stream as they come; a timeline is sorted first; a table is a summary of everything seen)."""

    def __init__(self, out: IO[bytes], fmt: str = "jsonl", timeline: bool = False, min_level: str | None = None):
        self.out = out
        self.format = fmt
        self.levels = at_least(min_level) if min_level else None
        self.summary = Summary()
        self._sorter = _Sorter() if timeline and fmt != "table" else None
        if fmt == "csv":
            out.write(_csv_lines([CSV_COLUMNS]))

    def write(self, findings: Iterable[Finding]) -> None:
        """Take a batch of findings (those below the minimum level are dropped)."""
        kept = [f for f in findings if self.levels is None or f.severity in self.levels]
        if not kept:
            return
        self.summary.add(kept)
        if self.format == "table":
            return
        if self.format == "csv":
            lines = [_csv_lines([(format_time(f.timestamp) or "", f.severity, f.rule_title, f.rule_id, host_of(f),
                                  f.agent_id or "", f.id, " ".join(f.event_ids))]) for f in kept]
        else:
            lines = [f.to_json() + b"\n" for f in kept]
        if self._sorter is not None:
            self._sorter.add(kept, lines)
        else:
            self.out.write(b"".join(lines))

    def close(self, rule_seconds: dict[str, tuple[str, float]] | None = None) -> None:
        """Write what waited for the end of input: a sorted timeline, or the summary table."""
        if self._sorter is not None:
            for line in self._sorter.sorted_lines():
                self.out.write(line)
        if self.format == "table":
            self.out.write(self.summary.render(rule_seconds or {}).encode())


def _csv_lines(rows: Iterable[Iterable[Any]]) -> bytes:
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    return text.getvalue().encode()


@dataclass
class Summary:
    """Counts for the summary table: per level, per rule, per host; first and last event time."""

    levels: Counter[str] = field(default_factory=Counter)
    rules: Counter[tuple[str, str]] = field(default_factory=Counter)  # (title, level)
    hosts: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None

    def add(self, findings: list[Finding]) -> None:
        for f in findings:
            self.levels[f.severity] += 1
            self.rules[(f.rule_title, f.severity)] += 1
            self.hosts[host_of(f)] += 1
            if f.timestamp is not None:
                self.first = f.timestamp if self.first is None else min(self.first, f.timestamp)
                self.last = f.timestamp if self.last is None else max(self.last, f.timestamp)

    def render(self, rule_seconds: dict[str, tuple[str, float]]) -> str:
        """The table as text (rich, no colours: it may go to a file)."""
        from rich.console import Console
        from rich.table import Table

        console = Console(file=io.StringIO(), width=120, color_system=None)
        levels = Table(title="Findings by level")
        levels.add_column("level")
        levels.add_column("findings", justify="right")
        for level in reversed(SEVERITIES):
            levels.add_row(level, f"{self.levels[level]:,}")
        levels.add_row("total", f"{sum(self.levels.values()):,}")
        console.print(levels)
        console.print(f"first event: {format_time(self.first) or '-'}   last event: {format_time(self.last) or '-'}")
        rules = Table(title=f"Top {TOP} rules")
        for name, justify in (("rule", "left"), ("level", "left"), ("findings", "right")):
            rules.add_column(name, justify=justify)  # type: ignore[arg-type]
        for (title, level), count in self.rules.most_common(TOP):
            rules.add_row(title, level, f"{count:,}")
        console.print(rules)
        hosts = Table(title=f"Top {TOP} hosts")
        hosts.add_column("host")
        hosts.add_column("findings", justify="right")
        for host, count in self.hosts.most_common(TOP):
            hosts.add_row(host, f"{count:,}")
        console.print(hosts)
        slow = Table(title=f"Slowest {TOP} rules (time spent evaluating them)")
        slow.add_column("rule")
        slow.add_column("seconds", justify="right")
        for title, seconds in sorted(rule_seconds.values(), key=lambda item: -item[1])[:TOP]:
            slow.add_row(title, f"{seconds:.3f}")
        console.print(slow)
        return console.file.getvalue()  # type: ignore[attr-defined]


class _Sorter:
    """An external sort of output lines by their finding's event time (then id): runs of RUN_SIZE
    sorted in memory and spilled to temporary files, merged at the end. Untimed findings come first."""

    def __init__(self) -> None:
        self._run: list[tuple[float, str, bytes]] = []
        self._files: list[IO[bytes]] = []

    def add(self, findings: list[Finding], lines: list[bytes]) -> None:
        self._run.extend((-math.inf if f.timestamp is None else f.timestamp, f.id, line)
                         for f, line in zip(findings, lines))
        if len(self._run) >= RUN_SIZE:
            self._spill()

    def _spill(self) -> None:
        spill = tempfile.TemporaryFile()
        self._run.sort()
        for ts, fid, line in self._run:
            body = orjson.dumps([None if ts == -math.inf else ts, fid, line.decode()])
            spill.write(body + b"\n")
        spill.seek(0)
        self._files.append(spill)
        self._run = []

    def sorted_lines(self) -> Iterator[bytes]:
        self._run.sort()
        runs: list[Iterable[tuple[float, str, bytes]]] = [iter(self._run)]
        runs += [_read_run(spill) for spill in self._files]
        try:
            for _, _, line in heapq.merge(*runs):
                yield line
        finally:
            for spill in self._files:
                spill.close()


def _read_run(spill: IO[bytes]) -> Iterator[tuple[float, str, bytes]]:
    for record in spill:
        ts, fid, line = orjson.loads(record)
        yield (-math.inf if ts is None else ts), fid, line.encode()
