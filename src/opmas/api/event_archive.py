"""The events API's view of the ClickHouse archive, which holds every event the engine took in
(PostgreSQL holds only those findings refer to).

The API reads the engine's own archive object when it runs inside ``opmas up`` on embedded chdb
(one process owns a chdb directory), else a client of its own on a ClickHouse server URL.
Queries run in a thread, one at a time (a clickhouse-connect client runs one query at a time).
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from opmas.connectors.clickhouse.archive import TABLE, Archive
from opmas.core.event import HOST_PATHS

if TYPE_CHECKING:
    from opmas.api.deps import Paging  # management.deps imports the state, which holds this

def clickhouse_host(column: str = "data") -> str:
    """ClickHouse: the host of the event JSON (text) in ``column`` (a code constant; ``HOST_PATHS``, as
    ``core.event.event_host`` reads it), NULL for none."""
    paths = (", ".join(f"'{key}'" for key in path) for path in HOST_PATHS)
    return "coalesce(" + ", ".join(f"nullIf(JSONExtractString({column}, {keys}), '')" for keys in paths) + ")"


def postgres_host(column: str) -> str:
    """PostgreSQL: the host of the event JSON (jsonb) ``column`` (a code constant), NULL for none."""
    paths = ("'{" + ",".join(path) + "}'" for path in HOST_PATHS)
    column = f"({column})"
    return ("COALESCE(" + ", ".join(f"CASE jsonb_typeof({column} #> {p}) WHEN 'string' THEN {column} #>> {p} END"
                                    for p in paths) + ")")


# a host of these characters appears as such in the JSON text that names it, so ClickHouse may skip
# the events whose text does not hold it before parsing any
_PLAIN_HOST = re.compile(r"[A-Za-z0-9._:-]+\Z")
_SELECT = f"SELECT id, agent_id, timestamp, type, data FROM {TABLE} FINAL"
_FILTERS = {  # code constants; every value is a bound parameter
    "agent_id": "agent_id = {agent_id:String}",
    "type": "type = {type:String}",
    "since": "timestamp >= fromUnixTimestamp64Micro({since:Int64})",
    "until": "timestamp < fromUnixTimestamp64Micro({until:Int64})",
    "host": f"{clickhouse_host()} = {{host:String}}",
}


def _event(row: dict[str, Any]) -> dict[str, Any]:
    """An archive row shaped as the API's events (``timestamp`` in UTC, ``data`` parsed)."""
    return {**row, "timestamp": row["timestamp"].replace(tzinfo=timezone.utc), "data": orjson.loads(row["data"])}


# the archive's time range (DateTime64: 1900-01-01 to 2299-12-31 UTC, as opmas.connectors.clickhouse.archive
# clamps to it), in epoch microseconds: a filter beyond it is moved to its end
_FIRST_MICROS, _AFTER_LAST_MICROS = -2_208_988_800_000_000, 10_413_792_000_000_000


def _micros(value: datetime) -> int:
    return min(max(round(value.timestamp() * 1_000_000), _FIRST_MICROS), _AFTER_LAST_MICROS)


@dataclass
class EventArchive:
    archive: Archive
    owned: bool  # opened by the API (closed with it); else the engine's, which closes it
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, event_id: str) -> dict[str, Any] | None:
        rows = await self._query(f"{_SELECT} WHERE id = {{id:String}} LIMIT 1", {"id": event_id})
        return rows[0] if rows else None

    async def page(self, paging: Paging, agent_id: str | None = None, type_: str | None = None,
                   since: datetime | None = None, until: datetime | None = None,
                   host: str | None = None) -> dict[str, Any]:
        """One page of events, newest first, plus the total; filters that are None are left out."""
        values = {"agent_id": agent_id, "type": type_, "since": None if since is None else _micros(since),
                  "until": None if until is None else _micros(until), "host": host}
        params = {name: value for name, value in values.items() if value is not None}
        where = " AND ".join(_FILTERS[name] for name in params)
        if host is not None and _PLAIN_HOST.match(host):
            where = f"position(data, {{host:String}}) > 0 AND {where}"
        async with self._lock:
            total = await asyncio.to_thread(self.archive.count, where, params)
        items = await self._query(
            f"{_SELECT}{' WHERE ' + where if where else ''} ORDER BY timestamp DESC, id"
            " LIMIT {limit:UInt64} OFFSET {offset:UInt64}",
            {**params, "limit": paging.limit, "offset": paging.offset})
        return {"items": items, "total": total, "limit": paging.limit, "offset": paging.offset}

    async def counts_per_bucket(self, since: datetime, until: datetime, bucket: int) -> dict[int, int]:
        """Archived events of ``[since, until)`` counted per bucket of ``bucket`` seconds from ``since``
        (bucket number -> count; empty buckets left out)."""
        sql = (f"SELECT intDiv(toUnixTimestamp64Micro(timestamp) - {{since:Int64}}, {{width:Int64}}) AS bucket,"
               f" count() AS n FROM {TABLE} FINAL WHERE {_FILTERS['since']} AND {_FILTERS['until']}"
               " GROUP BY bucket ORDER BY bucket LIMIT 100000")
        params = {"since": _micros(since), "until": _micros(until), "width": bucket * 1_000_000}
        async with self._lock:
            result = await asyncio.to_thread(self.archive.client.query, sql, parameters=params)
        return {int(row[0]): int(row[1]) for row in result.result_rows}

    async def _query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self._lock:
            result = await asyncio.to_thread(self.archive.client.query, sql, parameters=params)
        return [_event(row) for row in result.named_results()]

    def close(self) -> None:
        if self.owned:
            self.archive.close()
