"""PostgreSQL sink: findings, the events they refer to, and the engine checkpoint, in one transaction.

Writes are idempotent: findings and events are keyed by id (``ON CONFLICT (id) DO
NOTHING``), the checkpoint row is replaced. A batch written twice changes nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from connectors.postgres.migrations import migrate
from engine.event import Event
from engine.finding import Finding

_INSERT_FINDING = (
    "INSERT INTO findings (id, rule_id, rule_title, severity, title, description, tags, event_ids,"
    " agent_id, group_key, details, event_time) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING"
)
_INSERT_EVENT = (
    "INSERT INTO events (id, agent_id, timestamp, type, data) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING"
)
_SAVE_CHECKPOINT = (
    "INSERT INTO engine_checkpoints (consumer, stream_seq, layout, state) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (consumer) DO UPDATE SET stream_seq = EXCLUDED.stream_seq, layout = EXCLUDED.layout,"
    " state = EXCLUDED.state, updated_at = now()"
)


@dataclass(slots=True)
class Checkpoint:
    """The processors' state after every message up to ``seq`` of the events stream."""

    consumer: str
    seq: int
    layout: dict[str, Any]
    state: dict[str, Any]


def _time(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)


class PostgresSink:
    """One connection to PostgreSQL, reopened after a failure (callers retry)."""

    def __init__(self, url: str):
        self.url = url
        self._conn: psycopg.AsyncConnection | None = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=5)
        return self._conn

    async def migrate(self) -> list[int]:
        """Apply pending schema migrations; returns the versions applied."""
        async with await psycopg.AsyncConnection.connect(self.url, connect_timeout=5) as conn:
            return await migrate(conn)

    async def write(self, findings: Sequence[Finding], events: Sequence[Event],
                    checkpoint: Checkpoint | None = None) -> None:
        """Findings, their events and (optionally) the checkpoint, committed together."""
        if not findings and not events and checkpoint is None:
            return
        conn = await self._connection()
        try:
            async with conn.transaction():
                async with conn.cursor() as cur:
                    if findings:
                        await cur.executemany(_INSERT_FINDING, [
                            (f.id, f.rule_id, f.rule_title, f.severity, f.title, f.description,
                             list(f.tags), list(f.event_ids), f.agent_id, f.group_key,
                             Jsonb(f.details), _time(f.timestamp))
                            for f in findings])
                    if events:
                        await cur.executemany(_INSERT_EVENT, [
                            (e.id, e.agent_id, _time(e.timestamp), e.type, Jsonb(e.data)) for e in events])
                    if checkpoint is not None:
                        await cur.execute(_SAVE_CHECKPOINT, (
                            checkpoint.consumer, checkpoint.seq, Jsonb(checkpoint.layout),
                            orjson.dumps(checkpoint.state)))
        except psycopg.Error:
            await self.close()
            raise

    async def load_checkpoint(self, consumer: str) -> Checkpoint | None:
        """The last checkpoint of ``consumer``, if any."""
        conn = await self._connection()
        cur = await conn.execute(
            "SELECT stream_seq, layout, state FROM engine_checkpoints WHERE consumer = %s", (consumer,))
        row = await cur.fetchone()
        await conn.commit()
        if row is None:
            return None
        return Checkpoint(consumer, int(row[0]), row[1], orjson.loads(bytes(row[2])))

    async def close(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.close()
            finally:
                self._conn = None
