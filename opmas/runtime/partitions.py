"""The partition processors of one engine: events routed by a stable hash of their key."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.event import Event
from engine.finding import Finding
from engine.partition import key_of, partition_of
from engine.processor import Processor
from engine.ruleset import RuleSet
from opmas import metrics


class Partitions:
    """``count`` processors sharing one rule set; partition = hash(key) mod count."""

    def __init__(self, ruleset: RuleSet, count: int, key: str,
                 state: dict[str, Any] | None = None):
        self.count = count
        self.key = key
        state = state or {}
        self.processors = [Processor(ruleset, state.get(str(p))) for p in range(count)]
        self._late_seen = [p.stats.late_events for p in self.processors]
        self._cache: dict[str, int] = {}

    @property
    def layout(self) -> dict[str, Any]:
        """What a snapshot depends on: restoring into another layout would misplace keys."""
        return {"partitions": self.count, "key": self.key}

    def partition(self, event: Event) -> int:
        key = key_of(event, self.key)
        p = self._cache.get(key)
        if p is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            p = self._cache[key] = partition_of(key, self.count)
        return p

    def process(self, events: Sequence[Event]) -> list[Finding]:
        """Route ``events`` (keeping their order within each partition) and evaluate them."""
        routed: list[list[Event]] = [[] for _ in range(self.count)]
        if self.count == 1:
            routed[0] = list(events)
        else:
            for event in events:
                routed[self.partition(event)].append(event)
        findings: list[Finding] = []
        for p, batch in enumerate(routed):
            if batch:
                findings.extend(self.processors[p].process(batch))
                metrics.EVENTS_PROCESSED.labels(str(p)).inc(len(batch))
        for finding in findings:
            metrics.FINDINGS.labels(finding.severity, finding.rule_id).inc()
        return findings

    def update_gauges(self) -> None:
        """Copy the processors' stats into the state and lateness metrics."""
        for p, processor in enumerate(self.processors):
            stats = processor.stats
            label = str(p)
            metrics.STATE_BYTES.labels(label).set(stats.state_bytes)
            metrics.ACTIVE_KEYS.labels(label).set(stats.active_keys)
            if stats.late_events > self._late_seen[p]:
                metrics.LATE_EVENTS.labels(label).inc(stats.late_events - self._late_seen[p])
                self._late_seen[p] = stats.late_events

    def snapshot(self) -> dict[str, Any]:
        return {str(p): processor.snapshot() for p, processor in enumerate(self.processors)}

    def replace_rules(self, ruleset: RuleSet) -> None:
        for processor in self.processors:
            processor.replace_rules(ruleset)
