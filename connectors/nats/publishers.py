"""Publishing findings (``opmas.findings.<severity>``) and dead letters (``opmas.deadletter``).

Both go through JetStream with ``Nats-Msg-Id`` set, so a batch re-published after a
crash is deduplicated by the server within the stream's duplicate window.
"""
from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from nats.js import JetStreamContext

from connectors.nats.subjects import DEADLETTER_SUBJECT, findings_subject
from engine.event import content_id
from engine.finding import Finding


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


async def publish_findings(js: JetStreamContext, findings: Sequence[Finding]) -> None:
    """Publish each finding as JSON on ``opmas.findings.<severity>``; returns once stored."""
    futures = [
        await js.publish_async(findings_subject(f.severity), f.to_json(),
                               headers={"Nats-Msg-Id": f.id})
        for f in findings
    ]
    for future in futures:
        await future


async def publish_dead_letters(js: JetStreamContext, letters: Sequence[DeadLetter]) -> None:
    """Publish dead letters on ``opmas.deadletter``; returns once stored."""
    futures = [
        await js.publish_async(DEADLETTER_SUBJECT, letter.to_json(), headers={"Nats-Msg-Id": letter.id})
        for letter in letters
    ]
    for future in futures:
        await future
