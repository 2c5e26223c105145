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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from connectors.nats.subjects import DEADLETTER_SUBJECT, findings_subject
from engine.event import content_id

if TYPE_CHECKING:
    from connectors.records import FindingRecord


@dataclass(slots=True)
class DeadLetter:
    """A message (or one line of a JSON-lines message) the pipeline could not take."""

    reason: str
    subject: str
    payload: bytes
    headers: dict[str, str] | None = None
    seq: int | None = None  # stream sequence of the original message
    line: int | None = None  # 1-based line within a JSON-lines message

    def to_json(self) -> bytes:
        try:
            text, encoding = self.payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(self.payload).decode(), "base64"
        return orjson.dumps({
            "reason": self.reason, "subject": self.subject, "payload": text,
            "payload_encoding": encoding, "headers": self.headers or {}, "seq": self.seq,
            "line": self.line, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })

    @property
    def id(self) -> str:
        """Stable across redeliveries: the original's position (or content) and the reason."""
        where = f"{self.seq}:{self.line}" if self.seq is not None else content_id(self.payload.hex())
        return f"{where}:{self.reason[:64]}"


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
    once stored."""
    await publish_batch(js, [(findings_subject(f.severity), f.json, f.id) for f in findings])


async def publish_dead_letters(js: JetStreamContext, letters: Sequence[DeadLetter]) -> None:
    """Publish dead letters on ``opmas.deadletter``; returns once stored."""
    await publish_batch(js, [(DEADLETTER_SUBJECT, letter.to_json(), letter.id) for letter in letters])
