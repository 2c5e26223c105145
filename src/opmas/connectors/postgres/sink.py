"""PostgreSQL sink: findings, the events they refer to, and the engine checkpoint, in one transaction.

Writes are idempotent: findings and events are keyed by id (``ON CONFLICT (id) DO
NOTHING``), the checkpoint row is replaced. A batch written twice changes nothing.
Announcing once: a finding stored for the first time also gets a row in ``finding_outbox``
in the same transaction, and ``write`` returns its id; the caller publishes those findings
and names them to a later ``write`` (``announced``), which removes their rows. What a crash
left in the outbox is read back with ``unannounced``.
PostgreSQL text and JSONB cannot hold the NUL character: it is dropped; a time
beyond PostgreSQL's range is NULL. A row PostgreSQL still refuses for its content
would be refused on every retry: the batch is then written row by row, without the
checkpoint, and the refused rows are returned; the caller records them (dead letters)
and then saves the checkpoint alone, so no refused row is lost to a crash in between.

In bulk: a batch's rows are encoded here in COPY's text format and streamed with ``COPY`` into
temporary staging tables (one per connection, emptied at each commit), then moved with one
``INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING`` per table, all in the batch's transaction.
PostgreSQL parses each JSON value once, in the COPY; there is no statement per row.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from opmas.connectors.postgres.migrations import migrate
from opmas.connectors.store import Checkpoint, Rejected, Written
from opmas.core.event import Event
from opmas.core.finding import Finding

PG_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)  # what a retry may mend: the server away

if TYPE_CHECKING:
    from opmas.connectors.records import EventRecord, FindingRecord


@dataclass(frozen=True, slots=True)
class HuntRow:
    """A hunt as the ``hunts`` table records it (times in epoch seconds)."""

    id: str
    rule_ids: tuple[str, ...]
    since: float
    until: float
    agent_id: str | None
    store: bool
    principal_id: str | None = None

_FINDING_COLUMNS = ("id, rule_id, rule_title, severity, title, description, tags, event_ids, agent_id, group_key,"
                    " event_time, details")
_EVENT_COLUMNS = "id, agent_id, timestamp, type, data"
_STAGING = (  # temporary tables live as long as the connection; ON COMMIT DELETE ROWS empties them
    "CREATE TEMP TABLE IF NOT EXISTS opmas_findings_in (LIKE findings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS opmas_events_in (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
)
_COPY_FINDINGS = f"COPY opmas_findings_in ({_FINDING_COLUMNS}) FROM STDIN"
_COPY_EVENTS = f"COPY opmas_events_in ({_EVENT_COLUMNS}) FROM STDIN"
_MOVE_FINDINGS = (f"WITH stored AS (INSERT INTO findings ({_FINDING_COLUMNS}) SELECT {_FINDING_COLUMNS}"
                  " FROM opmas_findings_in ON CONFLICT (id) DO NOTHING RETURNING id)"
                  " INSERT INTO finding_outbox (id) SELECT id FROM stored RETURNING id")
_FORGET_ANNOUNCED = "DELETE FROM finding_outbox WHERE id = ANY(%s::uuid[])"
_UNANNOUNCED = (f"SELECT {_FINDING_COLUMNS} FROM finding_outbox JOIN findings USING (id)"
                " WHERE finding_outbox.created_at <= now() - make_interval(secs => %s)"
                " ORDER BY finding_outbox.created_at, id LIMIT %s")
_MOVE_EVENTS = (f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM opmas_events_in"
                " ON CONFLICT (id) DO NOTHING")
_EMPTY_STAGING = "TRUNCATE opmas_findings_in, opmas_events_in"
# a hunt's findings: stored where new (not announced: they are not live), linked to the hunt in any case
_STORE_HUNT_FINDINGS = (f"WITH stored AS (INSERT INTO findings ({_FINDING_COLUMNS}) SELECT {_FINDING_COLUMNS}"
                        " FROM opmas_findings_in ON CONFLICT (id) DO NOTHING RETURNING id)"
                        " SELECT count(*) FROM stored")
_LINK_HUNT_FINDINGS = ("INSERT INTO hunt_findings (hunt_id, finding_id) SELECT %s, id FROM opmas_findings_in"
                       " ON CONFLICT DO NOTHING")
_BEGIN_HUNT = ("INSERT INTO hunts (id, principal_id, rule_ids, since, until, agent_id, store, status)"
               " VALUES (%s, %s, %s, %s, %s, %s, %s, 'running')")
_END_HUNT = ("UPDATE hunts SET status = %s, in_range = %s, read = %s, findings = %s, error = %s, finished_at = now()"
             " WHERE id = %s")
_SAVE_CHECKPOINT = (
    "INSERT INTO engine_checkpoints (consumer, stream_seq, layout, state) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (consumer) DO UPDATE SET stream_seq = EXCLUDED.stream_seq, layout = EXCLUDED.layout,"
    " state = EXCLUDED.state, updated_at = now()"
)


# errors of a row's content: writing it again fails again
CONTENT_ERRORS = (psycopg.DataError, psycopg.IntegrityError, ValueError, TypeError)
_MIN_EPOCH = datetime(MINYEAR, 1, 2, tzinfo=timezone.utc).timestamp()
_MAX_EPOCH = datetime(MAXYEAR, 12, 30, tzinfo=timezone.utc).timestamp()
_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")  # an escaped NUL in JSON text, not an escaped backslash


def _time(epoch: float | None) -> datetime | None:
    """A timestamp, or None for no time or one beyond what datetime (and PostgreSQL) can hold."""
    if epoch is None or not _MIN_EPOCH <= epoch <= _MAX_EPOCH:  # NaN too
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _dumps(value: Any) -> bytes:
    return without_nul(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


def without_nul(text: bytes) -> bytes:
    """JSON text without its escaped NUL characters (JSONB cannot hold them)."""
    return _NUL.sub(rb"\1", text) if b"\\u0000" in text else text


# -- COPY text format: tab-separated columns, \\N for NULL, backslash escapes, one line per row --

_NULL = b"\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\x00": None})
_ARRAY_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\x00": None})


def _copy_text(value: str | None) -> bytes:
    """A text column: NUL dropped, COPY's special characters escaped."""
    if value is None:
        return _NULL
    if value.isalnum() or not any(c in value for c in "\\\n\r\t\x00"):  # the usual case: nothing to escape
        return value.encode()
    return value.translate(_COPY_ESCAPES).encode()


def _copy_array(values: Sequence[str]) -> bytes:
    """A text[] column as an array literal, each element quoted."""
    literal = "{" + ",".join('"' + v.translate(_ARRAY_ESCAPES) + '"' for v in values) + "}"
    return _copy_text(literal)


def copy_json(text: bytes) -> bytes:
    """A JSONB column from orjson's text (no raw control characters): escaped NULs dropped, backslashes
    doubled."""
    return without_nul(text).replace(b"\\", b"\\\\")


def _copy_time(epoch: float | None) -> bytes:
    moment = _time(epoch)
    return _NULL if moment is None else moment.isoformat().encode()


def finding_head(f: Finding) -> bytes:
    """A findings row in COPY text format up to its last column, ``details`` (columns as ``_FINDING_COLUMNS``):
    ``finding_head(f) + copy_json(details JSON) + b"\\n"`` is the row."""
    return b"\t".join((_copy_text(f.id), _copy_text(f.rule_id), _copy_text(f.rule_title), _copy_text(f.severity),
                       _copy_text(f.title), _copy_text(f.description), _copy_array(f.tags),
                       _copy_array(f.event_ids), _copy_text(f.agent_id), _copy_text(f.group_key),
                       _copy_time(f.timestamp), b""))


def event_line(e: Event) -> bytes:
    """One events row in COPY text format (columns as ``_EVENT_COLUMNS``)."""
    return b"\t".join((_copy_text(e.id), _copy_text(e.agent_id), _copy_time(e.timestamp), _copy_text(e.type),
                       copy_json(orjson.dumps(e.data, option=orjson.OPT_NON_STR_KEYS)))) + b"\n"


_UNESCAPES = {b"\\\\": b"\\", b"\\n": b"\n", b"\\r": b"\r", b"\\t": b"\t"}
_ESCAPED = re.compile(rb"\\[\\nrt]")


def copy_fields(line: bytes) -> list[str | None]:
    """The columns of a row in COPY text format, unescaped (None for NULL)."""
    return [None if field == _NULL else _ESCAPED.sub(lambda m: _UNESCAPES[m.group()], field).decode()
            for field in line.rstrip(b"\n").split(b"\t")]


class PostgresSink:
    """One connection to PostgreSQL, reopened after a failure (callers retry)."""

    name = "postgres"
    errors = PG_ERRORS

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

    async def write(self, findings: Sequence[FindingRecord], events: Sequence[EventRecord],
                    checkpoint: Checkpoint | None = None, announced: Sequence[str] = ()) -> Written:
        """Findings, their events and (optionally) the checkpoint, committed together; the outbox rows of
        the ``announced`` finding ids are removed in the same transaction. Where rows are refused for
        their content, the others are written but not the checkpoint. Findings and events come as
        records (connectors/records.py: ``FindingRecord.of(finding)``)."""
        if not findings and not events and checkpoint is None and not announced:
            return Written([], [])
        conn = await self._connection()
        try:
            try:
                stored: list[str] = []
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        if findings or events:
                            await self._stage(cur)
                        if findings:
                            await self._copy(cur, _COPY_FINDINGS, b"".join([f.line for f in findings]))
                            await cur.execute(_MOVE_FINDINGS)
                            stored = [str(row[0]) for row in await cur.fetchall()]
                        if events:
                            await self._copy(cur, _COPY_EVENTS, b"".join([e.line for e in events]))
                            await cur.execute(_MOVE_EVENTS)
                        if announced:
                            await cur.execute(_FORGET_ANNOUNCED, (list(announced),))
                        await self._save(cur, checkpoint)
                return Written([], stored)
            except CONTENT_ERRORS:
                return await self._write_rows(conn, findings, events, announced)
        except psycopg.Error:
            await self.close()
            raise

    async def unannounced(self, older_than: float = 0.0, limit: int = 1000) -> list[FindingRecord]:
        """Findings stored at least ``older_than`` seconds ago but not announced (a crash came between):
        the oldest ``limit``."""
        from opmas.connectors.records import FindingRecord

        conn = await self._connection()
        cur = await conn.execute(_UNANNOUNCED, (older_than, limit))
        rows = await cur.fetchall()
        await conn.commit()
        return [FindingRecord.of(Finding(id=str(r[0]), rule_id=r[1], rule_title=r[2], severity=r[3], title=r[4],
                                         description=r[5], tags=list(r[6]), event_ids=list(r[7]), agent_id=r[8],
                                         group_key=r[9], timestamp=r[10].timestamp() if r[10] else None,
                                         details=r[11]))
                for r in rows]

    async def begin_hunt(self, hunt: HuntRow) -> None:
        """Record a hunt as running."""
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute(_BEGIN_HUNT, (hunt.id, hunt.principal_id, list(hunt.rule_ids), _time(hunt.since),
                                             _time(hunt.until), hunt.agent_id, hunt.store))

    async def write_hunt(self, hunt_id: str, findings: Sequence[FindingRecord]) -> int:
        """A hunt's findings, linked to it in one transaction; returns how many were new (a finding
        stored before, live or by another hunt, is linked, not written again)."""
        if not findings:
            return 0
        conn = await self._connection()
        async with conn.transaction():
            async with conn.cursor() as cur:
                await self._stage(cur)
                await self._copy(cur, _COPY_FINDINGS, b"".join([f.line for f in findings]))
                await cur.execute(_STORE_HUNT_FINDINGS)
                new = (await cur.fetchone())[0]
                await cur.execute(_LINK_HUNT_FINDINGS, (hunt_id,))
        return int(new)

    async def end_hunt(self, hunt_id: str, status: str, in_range: int, read: int, findings: int,
                       error: str | None = None) -> None:
        """Record how a hunt ended (done, failed, cancelled) and what it read and found."""
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute(_END_HUNT, (status, in_range, read, findings, error, hunt_id))

    @staticmethod
    async def _stage(cur: psycopg.AsyncCursor) -> None:
        """The staging tables, created if this connection has none yet (a reconnected one, a rolled-back
        creation): checked in every writing transaction, which costs two catalog look-ups."""
        for sql in _STAGING:
            await cur.execute(sql)

    @staticmethod
    async def _copy(cur: psycopg.AsyncCursor, sql: str, data: bytes) -> None:
        async with cur.copy(sql) as copy:
            await copy.write(data)

    async def _write_rows(self, conn: psycopg.AsyncConnection, findings: Sequence[FindingRecord],
                          events: Sequence[EventRecord], announced: Sequence[str]) -> Written:
        """The slow way, after a content error: each row on its own savepoint."""
        written = Written([], [])
        rows = [(_COPY_FINDINGS, _MOVE_FINDINGS, f) for f in findings] + \
            [(_COPY_EVENTS, _MOVE_EVENTS, e) for e in events]
        async with conn.transaction():
            async with conn.cursor() as cur:
                await self._stage(cur)
                for copy, move, item in rows:
                    try:
                        async with conn.transaction():
                            await self._copy(cur, copy, item.line)
                            await cur.execute(move)
                            if move is _MOVE_FINDINGS:
                                written.stored += [str(row[0]) for row in await cur.fetchall()]
                            await cur.execute(_EMPTY_STAGING)
                    except CONTENT_ERRORS as exc:
                        written.rejected.append(Rejected(item, f"{type(exc).__name__}: {exc}".strip()))
                if announced:
                    await cur.execute(_FORGET_ANNOUNCED, (list(announced),))
        return written

    @staticmethod
    async def _save(cur: psycopg.AsyncCursor, checkpoint: Checkpoint | None) -> None:
        if checkpoint is not None:
            await cur.execute(_SAVE_CHECKPOINT, (checkpoint.consumer, checkpoint.seq, Jsonb(checkpoint.layout),
                                                 orjson.dumps(checkpoint.state)))

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
