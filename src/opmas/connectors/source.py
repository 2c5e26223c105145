"""Where events come from: the ``Source`` protocol every pipeline reads through, and its messages.

A source hands out messages in order, each with a position (``seq``); ``ack(message)`` commits
every message up to it. The pipeline commits only after every sink holds the batch, so a
restart re-reads what was not committed (at-least-once). ``connectors.nats.source`` is the
JetStream source; ``connectors.testing`` has an in-memory one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class SourceMessage:
    """One message: subject (``opmas.events.<agent>``), payload, position and arrival time."""

    subject: str
    data: bytes
    seq: int  # position in the source, increasing
    time: float  # epoch seconds the message entered the source
    headers: dict[str, str] | None
    token: Any = None  # what the source needs to acknowledge it (a NATS message); None once sent elsewhere


class Source(Protocol):
    """Batches of messages from a position on, committed cumulatively."""

    name: str  # in logs and retries
    errors: tuple[type[BaseException], ...]  # what a retry may mend
    last_seq: int  # the highest position handed out in this run

    async def start(self, after_seq: int | None) -> int:
        """Read from just after ``after_seq`` (a checkpoint), or after the last commit; returns that position."""

    async def fetch(self, max_messages: int, wait: float) -> list[SourceMessage]:
        """Up to ``max_messages`` new messages, waiting at most ``wait`` seconds for the first."""

    async def ack(self, message: SourceMessage) -> None:
        """Commit ``message`` and every message before it."""

    async def end(self) -> int:
        """The position of the last message the source holds (0: none)."""

    async def pending(self) -> int:
        """Messages not yet handed out (the lag)."""

    async def stop(self) -> None:
        """Stop reading; uncommitted messages are read again by the next start."""
