"""Where a pipeline keeps what it must not lose: findings, the events they cite, the checkpoint,
and the outbox of findings not yet announced. ``StateStore`` is the protocol (PostgreSQL's is
``connectors.postgres.sink.PostgresSink``; ``connectors.testing`` has an in-memory one).

One ``write`` is one transaction: a checkpoint is stored with the findings of the batches it
covers, so a restart from it never loses a finding and never makes one twice.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from opmas.connectors.records import EventRecord, FindingRecord


@dataclass(slots=True)
class Checkpoint:
    """The processors' state after every message up to ``seq`` of the events stream."""

    consumer: str
    seq: int
    layout: dict[str, Any]
    state: dict[str, Any]


@dataclass(slots=True)
class Written:
    """What a write did: rows refused for their content, and the ids of the findings stored for the first
    time (to announce)."""

    rejected: list[Rejected]
    stored: list[str]


@dataclass(slots=True)
class Rejected:
    """A finding or event PostgreSQL refused for its content, and why."""

    item: FindingRecord | EventRecord
    reason: str


class StateStore(Protocol):
    """Findings, cited events, checkpoints and the announce outbox, written atomically."""

    name: str  # in logs and retries
    errors: tuple[type[BaseException], ...]  # what a retry may mend (the server away)

    async def migrate(self) -> list[int]:
        """Make the schema current."""

    async def write(self, findings: Sequence[FindingRecord], events: Sequence[EventRecord],
                    checkpoint: Checkpoint | None, announced: Sequence[str] = ()) -> Written:
        """In one transaction: store findings (new ones also into the outbox) and events, keyed
        by id (a repeat changes nothing), save ``checkpoint``, and take ``announced`` finding ids
        out of the outbox. Rows refused for their content are returned, not raised."""

    async def unannounced(self, older_than: float = 0.0, limit: int = 1000) -> list[FindingRecord]:
        """Findings in the outbox stored at least ``older_than`` seconds ago."""

    async def load_checkpoint(self, consumer: str) -> Checkpoint | None:
        """The last checkpoint saved for ``consumer``."""

    async def close(self) -> None:
        """Release the connection."""
