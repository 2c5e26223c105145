"""The events API's view of the ClickHouse archive, which holds every event the engine took in
(PostgreSQL holds only those findings refer to).

The API reads the engine's own archive object when it runs inside ``opmas up`` on embedded chdb
(one process owns a chdb directory), else a client of its own on a ClickHouse server URL.
Queries run in a thread, one at a time (a clickhouse-connect client runs one query at a time).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from opmas.connectors.clickhouse.archive import TABLE, Archive

if TYPE_CHECKING:
    from opmas.api.deps import Paging  # management.deps imports the state, which holds this

_SELECT = f"SELECT id, agent_id, timestamp, type, data FROM {TABLE} FINAL"
_FILTERS = {  # code constants; every value is a bound parameter
    "agent_id": "agent_id = {agent_id:String}",
    "type": "type = {type:String}",
    "since": "timestamp >= fromUnixTimestamp64Micro({since:Int64})",
    "until": "timestamp < fromUnixTimestamp64Micro({until:Int64})",
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
                   since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
        """One page of events, newest first, plus the total; filters that are None are left out."""
        values = {"agent_id": agent_id, "type": type_, "since": None if since is None else _micros(since),
                  "until": None if until is None else _micros(until)}
        params = {name: value for name, value in values.items() if value is not None}
        where = " AND ".join(_FILTERS[name] for name in params)
        async with self._lock:
            total = await asyncio.to_thread(self.archive.count, where, params)
        items = await self._query(
            f"{_SELECT}{' WHERE ' + where if where else ''} ORDER BY timestamp DESC, id"
            " LIMIT {limit:UInt64} OFFSET {offset:UInt64}",
            {**params, "limit": paging.limit, "offset": paging.offset})
        return {"items": items, "total": total, "limit": paging.limit, "offset": paging.offset}

    async def _query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self._lock:
            result = await asyncio.to_thread(self.archive.client.query, sql, parameters=params)
        return [_event(row) for row in result.named_results()]

    def close(self) -> None:
        if self.owned:
            self.archive.close()
