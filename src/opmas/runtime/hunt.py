"""Retro-hunts: rules run over the raw events archived in ClickHouse, with the same engine.

The events of a time range (and optionally one agent) are streamed from the archive in event-time
order into one ``Processor`` and flushed at the end, as ``opmas detect`` runs a log: the findings
and their ids are those live processing gives for the same events, correlations included.

So that a day of archive is not streamed through Python, ClickHouse first drops the events no rule
can match (``needles``): every rule requires one of the literals of its most selective clause
(core/sigma/compile.py), so an event whose JSON text contains none of them, ignoring case, can
give no finding. Each literal is searched as its longest printable ASCII run without spaces, as
it appears in JSON text (a Sigma field joined from a list, a non-ASCII literal, a JSON escape all
keep that run whole); a number as its decimal and hex text. Where one rule requires nothing
(no literal), every event of the range is read. What ClickHouse selects is then confirmed by the
engine, so the semantics are OPMAS's.
"""
from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from opmas.connectors.clickhouse.archive import TABLE, Archive
from opmas.core.event import Event
from opmas.core.finding import Finding
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSet
from opmas.core.sigma.compile import clause_cost
from opmas.core.sigma.literals import NUMBER
from opmas.core.sigma.prefilter import json_escaped

NEEDLES_PER_SEARCH = 250  # ClickHouse's multiSearchAny takes at most 255 needles
SLICE_ROWS = 50_000  # archived events ClickHouse sorts at a time
_PRINTABLE_RUN = re.compile(r"[!-~]+")  # printable ASCII, no space
_FIRST, _LAST = -2208988800.0, 10413791999.0  # 1900-01-01 and the end of 2299, DateTime64's range


@dataclass(slots=True)
class HuntStats:
    """What a hunt read: the archived events of its range, those the SQL prefilter let through."""

    in_range: int = 0
    read: int = 0
    findings: int = 0
    reached: float | None = None  # event time of the last event read (they come in time order)


def needles(ruleset: RuleSet) -> list[str] | None:
    """Texts one of which the JSON of every event that can match a rule of ``ruleset`` contains
    (ignoring case); None where some rule can match without any (then nothing can be left out)."""
    found: set[str] = set()
    for rule in ruleset.detections:
        if not rule.meta.enabled:
            continue
        if not rule.requirement:
            return None
        for _, literal in min(rule.requirement, key=clause_cost):
            texts = _texts(literal)
            if not texts:
                return None
            found.update(texts)
    return sorted(found) or None


def _texts(literal: str) -> list[str]:
    """How a prefilter literal shows in the event's JSON text (lower case); [] where it cannot be said."""
    if literal.startswith(NUMBER):
        number = float(literal[len(NUMBER):])
        if not number.is_integer() or number < 0:
            return []
        return [str(int(number)), hex(int(number))]
    runs = _PRINTABLE_RUN.findall(literal)
    if not runs:
        return []
    return [json_escaped(max(runs, key=len)).decode()]


def _in_range(epoch: float) -> float:
    """``epoch`` within DateTime64's years 1900-2299 (as a float: ClickHouse parses 0 as no time)."""
    return float(min(max(epoch, _FIRST), _LAST))


def _where(since: float, until: float, agent: str | None, texts: list[str] | None) -> tuple[str, dict[str, Any]]:
    clauses = ["timestamp >= {since:DateTime64(6)}", "timestamp < {until:DateTime64(6)}"]
    parameters: dict[str, Any] = {"since": _in_range(since), "until": _in_range(until)}
    if agent is not None:
        clauses.append("agent_id = {agent:String}")
        parameters["agent"] = agent
    base = " AND ".join(clauses)
    if texts is None:
        return base, parameters
    searches = []
    for i in range(0, len(texts), NEEDLES_PER_SEARCH):
        parameters[f"n{i}"] = texts[i:i + NEEDLES_PER_SEARCH]
        searches.append(f"multiSearchAnyCaseInsensitive(data, {{n{i}:Array(String)}})")
    return f"{base} AND ({' OR '.join(searches)})", parameters


def hunt(archive: Archive, ruleset: RuleSet, since: float, until: float, agent: str | None = None,
         prefilter: bool = True, stats: HuntStats | None = None,
         progress: Callable[[HuntStats], None] | None = None) -> Iterator[list[Finding]]:
    """The findings of ``ruleset`` over the archived events with ``since <= time < until`` (epoch
    seconds), batch by batch; ``prefilter`` False reads every event of the range (to compare).

    The range is read in slices of about SLICE_ROWS events (whole minutes, from a count per minute),
    each sorted by ClickHouse on its own: memory stays bounded however long the range."""
    stats = stats if stats is not None else HuntStats()
    texts = needles(ruleset) if prefilter else None
    range_where, range_parameters = _where(since, until, agent, None)
    stats.in_range = archive.count(range_where, range_parameters)
    where, parameters = _where(since, until, agent, texts)
    detector = Detector(ruleset)
    sql = (f"SELECT id, timestamp, agent_id, type, data FROM {TABLE} FINAL WHERE {where}"
           " AND timestamp >= {slice_start:DateTime64(6)} AND timestamp < {slice_end:DateTime64(6)}"
           " ORDER BY timestamp, id")
    for start, end in _slices(archive, where, parameters, since, until):  # of the rows the prefilter keeps
        bounds = {**parameters, "slice_start": _in_range(start), "slice_end": _in_range(end)}
        with archive.client.query_row_block_stream(sql, parameters=bounds) as stream:
            for block in stream:
                events = [Event(row[0], orjson.loads(row[4]), row[1].timestamp(), row[2] or None, row[3] or None,
                                raw=row[4].encode()) for row in block]
                stats.read += len(events)
                stats.reached = block[-1][1].timestamp()
                findings = detector.process(events)
                stats.findings += len(findings)
                yield findings
                if progress is not None:
                    progress(stats)
    final = detector.flush()
    stats.findings += len(final)
    yield final


def _slices(archive: Archive, where: str, parameters: dict[str, Any], since: float,
            until: float) -> Iterator[tuple[float, float]]:
    """Consecutive [start, end) time slices covering the range, each of whole minutes holding about
    SLICE_ROWS archived rows (a minute holding more is a slice of its own)."""
    minutes = archive.client.query(
        f"SELECT toUnixTimestamp(toStartOfMinute(timestamp)) AS minute, count() FROM {TABLE} WHERE {where}"
        " GROUP BY minute ORDER BY minute", parameters=parameters).result_rows
    start, rows = since, 0
    for minute, count in minutes:
        if rows and rows + count > SLICE_ROWS:
            yield start, float(minute)
            start, rows = float(minute), 0
        rows += count
    if rows:
        yield start, until


async def run_hunt(archive: Archive, ruleset: RuleSet, since: float, until: float, agent: str | None,
                   stats: HuntStats, on_batch: Callable[[list[Finding]], Awaitable[None]],
                   stop: threading.Event | None = None,
                   progress: Callable[[HuntStats], None] | None = None) -> bool:
    """``hunt`` driven from an event loop: each batch is read and evaluated in a worker thread (the
    archive client and the engine are synchronous), then its findings are awaited in ``on_batch``
    (written, published, stored). Stops between batches once ``stop`` is set; returns whether the
    whole range was hunted."""
    batches = hunt(archive, ruleset, since, until, agent, stats=stats, progress=progress)
    try:
        while (findings := await asyncio.to_thread(next, batches, None)) is not None:
            await on_batch(findings)
            if stop is not None and stop.is_set():
                return False
        return True
    finally:
        await asyncio.to_thread(batches.close)
