"""In-memory source, state store, archive and sinks: a whole pipeline run in a test with plain
Python lists and no server. Every component writes what it does, in order, to a shared
``journal``, so a test can check the order of writes and commits as well as the results.
``failures`` makes a component raise its retryable error that many times first."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opmas.connectors.nats.publishers import DeadLetter
from opmas.connectors.records import EventRecord, FindingRecord
from opmas.connectors.source import SourceMessage
from opmas.connectors.store import Checkpoint, Written


class Unavailable(ConnectionError):
    """A memory component that is 'away' (its ``failures`` are not used up)."""


@dataclass
class Journal:
    """What the components did, in order: (component, what, detail)."""

    entries: list[tuple[str, str, Any]] = field(default_factory=list)

    def add(self, component: str, what: str, detail: Any = None) -> None:
        self.entries.append((component, what, detail))


class _Component:
    errors = (Unavailable,)

    def __init__(self, journal: Journal, failures: int = 0):
        self.journal = journal
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise Unavailable(f"{self.name} is away")


class MemorySource(_Component):
    """Messages given as (subject, payload), at positions 1, 2, ...; the commit survives a stop."""

    name = "memory-source"

    def __init__(self, messages: Sequence[tuple[str, bytes]], journal: Journal, time: float = 1764043200.0):
        super().__init__(journal)
        self.time = time
        self.messages: list[SourceMessage] = []
        self.add(messages)
        self.committed = 0
        self.last_seq = 0

    async def start(self, after_seq: int | None) -> int:
        self.last_seq = self.committed if after_seq is None else after_seq
        return self.last_seq

    def add(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """More messages, after the ones there are (as new events arriving)."""
        start = len(self.messages) + 1
        self.messages += [SourceMessage(subject, data, seq, self.time, None, seq)
                          for seq, (subject, data) in enumerate(messages, start)]

    async def fetch(self, max_messages: int, wait: float) -> list[SourceMessage]:
        out = self.messages[self.last_seq:self.last_seq + max_messages]
        if not out:
            await asyncio.sleep(wait)  # as a broker's fetch waits for messages
        self.last_seq += len(out)
        return out

    async def ack(self, message: SourceMessage) -> None:
        self.committed = max(self.committed, message.token)
        self.journal.add(self.name, "ack", message.token)

    async def end(self) -> int:
        return len(self.messages)

    async def pending(self) -> int:
        return len(self.messages) - self.last_seq

    async def stop(self) -> None:
        self.journal.add(self.name, "stop", self.last_seq)


class MemoryStore(_Component):
    """Findings and events keyed by id, the outbox, and the checkpoints, like PostgreSQL's."""

    name = "memory-store"

    def __init__(self, journal: Journal, failures: int = 0):
        super().__init__(journal, failures)
        self.findings: dict[str, FindingRecord] = {}
        self.events: dict[str, EventRecord] = {}
        self.outbox: dict[str, FindingRecord] = {}
        self.checkpoints: dict[str, Checkpoint] = {}

    async def migrate(self) -> list[int]:
        return []

    async def write(self, findings: Sequence[FindingRecord], events: Sequence[EventRecord],
                    checkpoint: Checkpoint | None, announced: Sequence[str] = ()) -> Written:
        self._maybe_fail()
        stored = [f.id for f in findings if f.id not in self.findings]
        for f in findings:
            if f.id not in self.findings:
                self.findings[f.id] = self.outbox[f.id] = f
        self.events.update((e.id, e) for e in events)
        for finding_id in announced:
            self.outbox.pop(finding_id, None)
        if checkpoint is not None:
            self.checkpoints[checkpoint.consumer] = checkpoint
        self.journal.add(self.name, "write", {"findings": len(findings), "new": len(stored), "announced": len(announced),
                                              "checkpoint": checkpoint.seq if checkpoint else None})
        return Written([], stored)

    async def unannounced(self, older_than: float = 0.0, limit: int = 1000) -> list[FindingRecord]:
        return list(self.outbox.values())[:limit]

    async def load_checkpoint(self, consumer: str) -> Checkpoint | None:
        return self.checkpoints.get(consumer)

    async def close(self) -> None:
        pass


class MemoryArchive(_Component):
    """Raw event blocks as the ClickHouse archive would insert them."""

    name = "memory-archive"

    def __init__(self, journal: Journal, failures: int = 0):
        super().__init__(journal, failures)
        self.blocks: list[bytes] = []

    def ensure_table(self) -> None:
        pass

    def insert_block(self, block: bytes) -> None:
        self._maybe_fail()
        self.blocks.append(block)
        self.journal.add(self.name, "insert", len(block))


class MemoryDeadLetters(_Component):
    """Dead letters in a list."""

    name = "memory-deadletters"

    def __init__(self, journal: Journal):
        super().__init__(journal)
        self.letters: list[DeadLetter] = []

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)
        self.journal.add(self.name, "write", len(letters))


class MemoryFindingSink(_Component):
    """Announced findings in a list (a finding sink, ``connectors.sinks.FindingSink``)."""

    name = "memory-findings"

    def __init__(self, journal: Journal, failures: int = 0):
        super().__init__(journal, failures)
        self.findings: list[FindingRecord] = []

    async def open(self) -> None:
        pass

    async def write(self, findings: Sequence[FindingRecord]) -> None:
        self._maybe_fail()
        self.findings.extend(findings)
        self.journal.add(self.name, "write", [f.id for f in findings])

    async def close(self) -> None:
        pass
