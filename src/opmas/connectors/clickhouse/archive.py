"""The raw-event archive: every event, batched into a ClickHouse MergeTree table.

One code path for both deployments: ``clickhouse_connect.get_client(dsn="chdb:///DIR")``
runs ClickHouse in-process (chdb; one process owns a DIR), an ``http(s)://`` URL
talks to a server. The client is synchronous: call it from a thread.

Deduplication: the table is a ``ReplacingMergeTree`` whose sorting key ends with the
event id, so rows re-sent after a crash (same id, agent, type and time) collapse into
one. Merges happen in the background; queries that must not see a re-sent batch twice
read with ``FINAL`` (``count()``/``events()`` below do). An event without a time of its
own is archived at its message's JetStream time, which redeliveries keep, so it dedups too.
Partitioned by day; the sorting key serves the common queries (one agent, one type, a
time range).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import clickhouse_connect
import clickhouse_connect.driver.exceptions as ch_errors
import orjson

# what a retry may mend: the server away, a failing disk
CH_ERRORS = (ch_errors.OperationalError, ch_errors.DatabaseError, OSError)

TABLE = "events"
COLUMNS = ["id", "timestamp", "agent_id", "type", "data", "stream_seq"]

_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id          String,
    timestamp   DateTime64(6, 'UTC'),
    agent_id    LowCardinality(String),
    type        LowCardinality(String),
    data        String CODEC(ZSTD(1)),  -- as small as ZSTD(3) on event JSON, cheaper to write
    stream_seq  UInt64,
    archived_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (agent_id, type, timestamp, id)
"""


_INT64 = struct.Struct("<q").pack
_UINT64 = struct.Struct("<Q").pack
# DateTime64's range, 1900-01-01 to 2299-12-31 (UTC), in epoch microseconds
_MIN_MICROS, _MAX_MICROS = -2_208_988_800_000_000, 10_413_791_999_999_999


def _string(value: bytes) -> bytes:
    """A RowBinary String: LEB128 length, then the bytes."""
    n = len(value)
    if n < 0x80:
        return bytes((n,)) + value
    head = bytearray()
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + value


def encode_row(event_id: str, timestamp: float, agent_id: str, type_: str, data: bytes,
               stream_seq: int) -> bytes:
    """One archive row in ClickHouse's RowBinary format (columns as ``COLUMNS``).

    RowBinary needs no escaping of the event JSON and is the cheapest format for
    ClickHouse to read; rows are built where events are evaluated and joined into
    one block per insert. A time outside DateTime64's range (or not a number) is
    clamped to its ends, so an absurd event time never fails a batch.
    """
    micros = timestamp * 1_000_000
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        micros = _MAX_MICROS if micros > _MAX_MICROS else _MIN_MICROS
    return b"".join((_string(event_id.encode()), _INT64(round(micros)),
                     _string(agent_id.encode()), _string(type_.encode()), _string(data),
                     _UINT64(stream_seq)))


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

    name = "clickhouse"
    errors = CH_ERRORS

    def __init__(self, client):
        self.client = client

    def ensure_table(self) -> None:
        self.client.command(_DDL)

    def insert_block(self, block: bytes) -> None:
        """Insert rows encoded by ``encode_row`` (concatenated)."""
        if block:
            self.client.raw_insert(TABLE, COLUMNS, insert_block=block, fmt="RowBinary")

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
