"""Publishing findings (``opmas.findings.<severity>``) and dead letters (``opmas.deadletter``).

Both go through JetStream with ``Nats-Msg-Id`` set, so a batch re-published after a
crash is deduplicated by the server within the stream's duplicate window.

A batch is published in one go (``publish_batch``): plain NATS publishes whose replies (JetStream's
acknowledgements) come to one wildcard inbox of the batch, counted there; no future, semaphore or
parsed acknowledgement per message, as ``JetStreamContext.publish_async`` has (a third of the cost).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError

from opmas.connectors.nats.client import NATS_ERRORS
from opmas.connectors.nats.subjects import DEADLETTER_SUBJECT, PAYLOAD_BUCKET, findings_subject, payload_store
from opmas.core.event import content_id

if TYPE_CHECKING:
    from opmas.connectors.records import FindingRecord


INLINE_BYTES = 64 << 10  # a dead letter carries at most this much of its payload; beyond, a prefix
MAX_REASON = 1000  # characters of a dead letter's reason kept
MAX_HEADERS = 4096  # characters of the original's headers kept (names and values)
HEADER_ROOM = 1024  # bytes of the server's max payload left for the Nats-Msg-Id header (counted there too)


@dataclass(slots=True)
class DeadLetter:
    """A message (or one line of a JSON-lines message) the pipeline could not take."""

    reason: str
    subject: str
    payload: bytes
    headers: dict[str, str] | None = None
    seq: int | None = None  # stream sequence of the original message
    line: int | None = None  # 1-based line within a JSON-lines message

    def to_json(self, limit: int) -> tuple[bytes, bool]:
        """The dead letter as JSON of at most ``limit`` bytes (``limit`` of some hundred bytes or more),
        and whether its payload is cut short. It carries the payload's size and SHA-256, and the
        payload itself whole where that is at most INLINE_BYTES and fits, else its first bytes
        (``payload_truncated``; ``payload_object`` names where it is kept whole)."""
        digest = hashlib.sha256(self.payload).hexdigest()
        headers = _bounded(self.headers or {})
        n = min(len(self.payload), INLINE_BYTES)
        while True:
            truncated = n < len(self.payload)
            text, encoding = _excerpt(self.payload, n)
            data = orjson.dumps({
                "reason": self.reason[:MAX_REASON], "subject": self.subject, "payload": text,
                "payload_encoding": encoding, "payload_size": len(self.payload), "payload_sha256": digest,
                "payload_truncated": truncated,
                "payload_object": {"bucket": PAYLOAD_BUCKET, "name": digest} if truncated else None,
                "headers": headers, "seq": self.seq, "line": self.line,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
            if len(data) <= limit or (n == 0 and not headers):
                return data, truncated
            if n:
                n = n // 2 if n > 64 else 0
            else:
                headers = {}

    @property
    def id(self) -> str:
        """Stable across redeliveries: the original's position (or content) and the reason."""
        where = f"{self.seq}:{self.line}" if self.seq is not None else content_id(self.payload.hex())
        return f"{where}:{self.reason[:64]}"


def _excerpt(payload: bytes, n: int) -> tuple[str, str]:
    """The first ``n`` bytes of ``payload`` as UTF-8 text (a character cut in two left out), else as base64."""
    cut = n
    for _ in range(3):  # a UTF-8 character is at most 4 bytes: back off to where one starts
        if 0 < cut < len(payload) and payload[cut] & 0xC0 == 0x80:
            cut -= 1
    try:
        return payload[:cut].decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload[:n]).decode(), "base64"


def _bounded(headers: dict[str, str]) -> dict[str, str]:
    """The first headers, up to MAX_HEADERS characters in all (a value cut short at the limit)."""
    out: dict[str, str] = {}
    room = MAX_HEADERS
    for name, value in headers.items():
        if room <= len(name):
            break
        out[name] = value[:room - len(name)]
        room -= len(name) + len(out[name])
    return out


ACK_WAIT = 10.0  # seconds JetStream has to acknowledge a whole batch


class PublishRefused(nats.js.errors.Error):
    """JetStream refused messages of a batch (or nothing listens on their subject); the batch may be sent again."""


async def publish_batch(js: JetStreamContext, messages: Sequence[tuple[str, bytes, str]],
                        timeout: float = ACK_WAIT) -> None:
    """Publish ``(subject, payload, Nats-Msg-Id)`` messages through JetStream; returns once every one is
    stored (a duplicate within the stream's window counts as stored). Raises PublishRefused, or
    asyncio.TimeoutError when acknowledgements are missing after ``timeout``: sending the batch
    again is safe, the ids deduplicate it."""
    if not messages:
        return
    nc = js._nc
    prefix = nc.new_inbox() + "."
    done = asyncio.get_running_loop().create_future()
    remaining = len(messages)
    refused: list[bytes] = []

    async def acknowledged(msg: Msg) -> None:
        nonlocal remaining
        if not msg.data or b'"error"' in msg.data:  # an APIError, or a status (503: no stream for the subject)
            refused.append(msg.data or str(msg.headers).encode())
        remaining -= 1
        if not remaining and not done.done():
            done.set_result(None)

    sub = await nc.subscribe(prefix + "*", cb=acknowledged)
    try:
        publish = nc.publish
        for i, (subject, payload, msg_id) in enumerate(messages):
            await publish(subject, payload, reply=prefix + str(i), headers={"Nats-Msg-Id": msg_id})
        await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()
    if refused:
        raise PublishRefused(f"JetStream refused {len(refused)} of {len(messages)} messages: "
                             f"{refused[0][:200].decode(errors='replace')}")


async def publish_findings(js: JetStreamContext, findings: Sequence[FindingRecord]) -> None:
    """Publish each finding (its JSON, encoded where it was made) on ``opmas.findings.<severity>``; returns
    once stored. A finding too big for one message goes without its details (``FindingRecord.bounded``)."""
    limit = js._nc.max_payload - HEADER_ROOM
    await publish_batch(js, [(findings_subject(f.severity), f.bounded(limit), f.id) for f in findings])


class NatsFindingSink:
    """The finding sink every runtime has: ``opmas.findings.<severity>`` on JetStream (the finding id
    as ``Nats-Msg-Id``, so JetStream drops a repeat within its duplicate window)."""

    name = "nats-findings"
    errors = NATS_ERRORS

    def __init__(self, js: JetStreamContext):
        self.js = js

    async def open(self) -> None:
        """Nothing to open: the runtime's NATS connection is the sink's."""

    async def write(self, findings: Sequence[FindingRecord]) -> None:
        await publish_findings(self.js, findings)

    async def close(self) -> None:
        """Nothing to close: the runtime closes its connection."""


class NatsDeadLetterSink:
    """Dead letters on ``opmas.deadletter`` (see :func:`publish_dead_letters`)."""

    name = "nats-deadletter"
    errors = NATS_ERRORS

    def __init__(self, js: JetStreamContext):
        self.js = js

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        await publish_dead_letters(self.js, letters)


async def publish_dead_letters(js: JetStreamContext, letters: Sequence[DeadLetter]) -> None:
    """Publish dead letters on ``opmas.deadletter``, each within the server's max payload; the whole
    payload of one that carries only a prefix is first kept in the bucket OPMAS_DEADLETTER_PAYLOADS,
    named by its SHA-256. Returns once stored."""
    limit = js._nc.max_payload - HEADER_ROOM
    messages = []
    for letter in letters:
        data, truncated = letter.to_json(limit)
        if truncated:
            await keep_payload(js, letter.payload)
        messages.append((DEADLETTER_SUBJECT, data, letter.id))
    await publish_batch(js, messages)


async def keep_payload(js: JetStreamContext, payload: bytes) -> None:
    """Store ``payload`` in the dead-letter payload bucket under its SHA-256 (once: a redelivery finds it)."""
    store = await payload_store(js)
    name = hashlib.sha256(payload).hexdigest()
    try:
        await store.get_info(name)
    except ObjectNotFoundError:
        await store.put(name, payload)
