"""Evaluating batches: decode messages, run the owned partition processors, encode archive rows.

An ``Evaluator`` owns the partitions ``p`` with ``p % workers == index`` and runs either
in the engine process (``workers == 0``) or in a worker process (see workers.py); its
inputs and outputs are plain picklable data: findings and the events they cite leave
encoded for the sinks (connectors/records.py), not as objects holding the events' data.

Partitioning: with the default key ``agent`` a message's partition is the hash of the
agent id in its subject (the publishing agent), so the engine routes whole messages
without reading them. With a data key (e.g. ``host.name``) every evaluator reads every
message and keeps the events of its partitions; dead letters of such messages are
reported by the evaluator ``seq % workers``, an evaluation failure by the evaluator it
happened in.

Correlation hits leave the partition processors (core/processor.py) with the batch
(``Evaluated.handoffs``) for the engine process's CorrelationStage, where the groups of
every partition meet.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from opmas.connectors.clickhouse.archive import encode_row
from opmas.connectors.nats.publishers import DeadLetter
from opmas.connectors.source import SourceMessage
from opmas.connectors.nats.subjects import agent_of_subject
from opmas.connectors.records import EventRecord, FindingRecord
from opmas.core.correlation import DEFAULT_MAX_FUTURE, Handoff
from opmas.core.event import Event
from opmas.core.partition import AGENT_KEY, key_of, partition_of
from opmas.core.processor import Processor
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset
from opmas.runtime.intake import Intake


@dataclass(slots=True)
class Evaluated:
    """What a batch produced, ready for the sinks."""

    events: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)
    archive: list[bytes] = field(default_factory=list)  # RowBinary blocks (archive.encode_row)
    findings: list[FindingRecord] = field(default_factory=list)  # encoded here, for every sink
    referenced: list[EventRecord] = field(default_factory=list)  # events findings refer to or may refer to
    dead: list[DeadLetter] = field(default_factory=list)
    handoffs: list[tuple[int, Handoff]] = field(default_factory=list)  # (partition, its correlation hits)

    def merge(self, other: "Evaluated") -> None:
        self.events += other.events
        for p, n in other.per_partition.items():
            self.per_partition[p] = self.per_partition.get(p, 0) + n
        self.archive.extend(other.archive)
        self.findings.extend(other.findings)
        self.referenced.extend(other.referenced)
        self.dead.extend(other.dead)
        self.handoffs.extend(other.handoffs)


@dataclass(frozen=True, slots=True)
class Layout:
    """How events map to partitions and partitions to evaluators."""

    partitions: int
    key: str
    workers: int  # evaluator count (1 when evaluating in the engine process)

    def partition_of_message(self, subject: str) -> int | None:
        """The partition of a whole message, where the key allows knowing it unread."""
        return partition_of(agent_of_subject(subject), self.partitions) if self.key == AGENT_KEY else None

    def owner(self, partition: int) -> int:
        return partition % self.workers


def load_rules(sources: Sequence[RuleSource], mappings: Sequence[str], lateness: float | None) -> RuleSet:
    """The good rules of ``sources`` (the engine process has already reported the errors)."""
    return load_ruleset(list(sources), list(mappings), lateness)[0]


class Evaluator:
    """Runs the processors of the partitions it owns."""

    def __init__(self, layout: Layout, index: int, ruleset: RuleSet, state: dict[str, Any] | None,
                 max_message_bytes: int, max_future: float = DEFAULT_MAX_FUTURE):
        self.layout = layout
        self.index = index
        self.intake = Intake(max_message_bytes)
        state = state or {}
        self.processors = {p: Processor(ruleset, state.get(str(p)), max_future)
                           for p in range(layout.partitions) if layout.owner(p) == index}

    def evaluate(self, messages: Sequence[SourceMessage]) -> Evaluated:
        out = Evaluated()
        for message in messages:
            try:
                out.merge(self._evaluate_message(message))
            except Exception as exc:  # one bad message never stops the batch
                out.dead.append(DeadLetter(reason=f"evaluation failed: {type(exc).__name__}: {exc}",
                                           subject=message.subject, payload=message.data,
                                           headers=message.headers, seq=message.seq))
        return out

    def _evaluate_message(self, message: SourceMessage) -> Evaluated:
        """One message's share of the work, each owned partition's events in one ``process`` call.

        If evaluation fails the whole message becomes a dead letter (the caller's job) and none
        of its output is kept; what its events before the failing one fed into correlation windows
        stays, as rolling back would need a copy of the state per message. Evaluation is
        deterministic, so a replay after a restart rebuilds the same state.
        """
        out = Evaluated()
        layout = self.layout
        decoded = self.intake.decode([message])
        fixed = layout.partition_of_message(message.subject)
        if fixed is not None or message.seq % layout.workers == self.index:
            out.dead.extend(decoded.dead)
        routed: dict[int, list[tuple[Event, bytes]]] = {}
        for event, text in zip(decoded.events, decoded.texts):
            p = fixed if fixed is not None else partition_of(key_of(event, layout.key), layout.partitions)
            if p in self.processors:
                routed.setdefault(p, []).append((event, text))
        rows = []
        for p, items in routed.items():
            events = [item[0] for item in items]
            out.per_partition[p] = len(events)
            out.events += len(events)
            processor = self.processors[p]
            processed = processor.process(events, time.time())  # the clock bounds event time
            findings = processed.findings
            out.findings.extend(map(FindingRecord.of, findings))
            if processor.observer is not None:
                out.handoffs.append((p, processed.handoff))
            for event, text in items:
                archived_at = message.time if event.timestamp is None else event.timestamp  # untimed: arrival
                rows.append(encode_row(event.id, archived_at, event.agent_id or "", event.type or "", text,
                                       message.seq))
            referenced = {e.id: e for e in processed.correlated}  # later findings may cite them
            if findings:
                wanted = {event_id for f in findings for event_id in f.event_ids}
                referenced.update((e.id, e) for e in events if e.id in wanted)
            out.referenced.extend(map(EventRecord.of, referenced.values()))
        if rows:
            out.archive.append(b"".join(rows))
        return out

    def snapshot(self) -> dict[str, Any]:
        return {str(p): processor.snapshot() for p, processor in self.processors.items()}

    def stats(self) -> dict[int, dict[str, int]]:
        """Each owned partition's ProcessorStats, as plain data."""
        return {p: asdict(pr.stats) for p, pr in self.processors.items()}

    def replace_rules(self, ruleset: RuleSet) -> None:
        for processor in self.processors.values():
            processor.replace_rules(ruleset)
