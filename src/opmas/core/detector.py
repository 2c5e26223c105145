"""Detection and correlation of one stream that is not partitioned: ``opmas detect``, hunts,
rule tests, each Faust worker's partition.

A ``Detector`` is a ``Processor`` feeding a ``CorrelationStage`` of one partition: the same
path the partitioned runtime takes with many, so the findings and their ids are the same.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from opmas.core.correlation import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FUTURE, CorrelationStage
from opmas.core.event import Event
from opmas.core.finding import Finding
from opmas.core.processor import Processor, ProcessorStats
from opmas.core.ruleset import RuleSet

PARTITION = 0
SNAPSHOT_VERSION = 1


class Detector:
    """Events in, every finding out (detection and correlation); state as plain data.

    ``correlated`` lists the events of the last ``process`` call a later correlation finding may
    cite (streaming runtimes store them on arrival)."""

    def __init__(self, ruleset: RuleSet, state: dict[str, Any] | None = None,
                 max_future: float = DEFAULT_MAX_FUTURE, idle_timeout: float = DEFAULT_IDLE_TIMEOUT):
        state = state or {}
        if state and state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"detector snapshot version {state.get('version')!r} is not {SNAPSHOT_VERSION}")
        self.processor = Processor(ruleset, state.get("processor"), max_future)
        cset = ruleset.correlations
        self.idle_timeout = idle_timeout
        self.stage = None if cset is None else CorrelationStage(cset, state.get("stage"), idle_timeout)
        self.correlated: list[Event] = []
        self.findings = 0  # correlation findings (the processor counts the detection ones)

    def process(self, events: Sequence[Event], now: float | None = None) -> list[Finding]:
        """The findings of a batch (``now``: the runtime's clock; offline input none, see Processor)."""
        out = self.processor.process(events, now)
        self.correlated = out.correlated
        stage = self.stage
        if stage is None:
            return out.findings
        stage.take(PARTITION, out.handoff, now)
        correlated = stage.advance(now)
        self.findings += len(correlated)
        return out.findings + correlated

    def advance(self, now: float) -> list[Finding]:
        """No new events: the findings the clock alone makes final on a live stream gone quiet."""
        if self.stage is None:
            return []
        found = self.stage.advance(now)
        self.findings += len(found)
        return found

    def flush(self) -> list[Finding]:
        """End of offline input: close every correlation window."""
        if self.stage is None:
            return []
        found = self.stage.flush()
        self.findings += len(found)
        return found

    @property
    def stats(self) -> ProcessorStats:
        """The processor's counters with the correlation stage's."""
        stats = self.processor.stats
        if self.stage is None:
            return stats
        staged = self.stage.stats()
        return replace(stats, findings=stats.findings + self.findings,
                       late_events=stats.late_events + staged["late_events"],
                       evicted_keys=staged["evicted_keys"], active_keys=staged["active_keys"],
                       state_bytes=staged["state_bytes"])

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; pass it as ``state`` to resume."""
        return {"version": SNAPSHOT_VERSION, "processor": self.processor.snapshot(),
                "stage": self.stage.snapshot() if self.stage is not None else None}

    def replace_rules(self, ruleset: RuleSet) -> None:
        """Hot reload: new rules from the next event on; correlation state carried over."""
        self.processor.replace_rules(ruleset)
        self.stage = CorrelationStage.reloaded(self.stage, ruleset.correlations, self.idle_timeout)
