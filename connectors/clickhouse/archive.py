"""The raw-event archive: every event, batched into a ClickHouse MergeTree table.

One code path for both deployments: ``clickhouse_connect.get_client(dsn="chdb:///DIR")``
runs ClickHouse in-process (chdb; one process owns a DIR), an ``http(s)://`` URL
talks to a server. The client is synchronous: call it from a thread.

Deduplication: the table is a ``ReplacingMergeTree`` whose sorting key ends with the
event id, so rows re-sent after a crash (same id, agent, type and time) collapse into
one. Merges happen in the background; queries that must not see a re-sent batch twice
read with ``FINAL`` (``count()``/``events()`` below do).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson

TABLE = "events"
COLUMNS = ["id", "timestamp", "agent_id", "type", "data", "stream_seq"]

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id          String,
    timestamp   DateTime64(6, 'UTC'),
    agent_id    LowCardinality(String),
    type        LowCardinality(String),
    data        String CODEC(ZSTD(3)),
    stream_seq  UInt64,
    archived_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (agent_id, type, timestamp, id)
"""


@dataclass(slots=True)
class ArchiveRow:
    """One archived event; ``data`` is the event's JSON text."""

    id: str
    timestamp: float  # event time (or the message's stream time when the event has none)
    agent_id: str
    type: str
    data: str
    stream_seq: int


def connect(url: str | None, directory: Path | None = None):
    """A clickhouse-connect client: the server at ``url``, else chdb in ``directory``."""
    if url:
        return clickhouse_connect.get_client(dsn=url)
    if directory is None:
        raise ValueError("either a ClickHouse URL or a chdb directory is needed")
    directory.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=f"chdb://{directory.resolve()}")


class Archive:
    """Writes and reads the events table through a clickhouse-connect client."""

    def __init__(self, client):
        self.client = client

    def ensure_table(self) -> None:
        self.client.command(_DDL)

    @staticmethod
    def encode(rows: Sequence[ArchiveRow]) -> bytes:
        """Rows as a JSONEachRow block (the fast insert format)."""
        return b"\n".join(orjson.dumps(
            {"id": r.id, "timestamp": r.timestamp, "agent_id": r.agent_id, "type": r.type,
             "data": r.data, "stream_seq": r.stream_seq}) for r in rows)

    def insert_block(self, block: bytes) -> None:
        """Insert a JSONEachRow block of rows (see ``encode``)."""
        if block:
            self.client.raw_insert(TABLE, COLUMNS, insert_block=block, fmt="JSONEachRow")

    def insert(self, rows: Sequence[ArchiveRow]) -> None:
        self.insert_block(self.encode(rows))

    def count(self, where: str = "", parameters: dict[str, Any] | None = None) -> int:
        """Distinct archived events (``FINAL``: re-sent rows counted once)."""
        sql = f"SELECT count() FROM {TABLE} FINAL" + (f" WHERE {where}" if where else "")
        return int(self.client.query(sql, parameters=parameters).result_rows[0][0])

    def events(self, limit: int = 100, where: str = "",
               parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Archived events, newest first, as dicts with ``data`` parsed."""
        sql = (f"SELECT id, timestamp, agent_id, type, data, stream_seq FROM {TABLE} FINAL"
               + (f" WHERE {where}" if where else "") + f" ORDER BY timestamp DESC LIMIT {int(limit)}")
        rows = self.client.query(sql, parameters=parameters).result_rows
        return [{"id": r[0], "timestamp": r[1], "agent_id": r[2], "type": r[3],
                 "data": orjson.loads(r[4]), "stream_seq": r[5]} for r in rows]

    def close(self) -> None:
        self.client.close()
