"""The processor every runtime drives: events in, findings out, state as plain data.

``Processor(ruleset, state)`` is one partition's step: it evaluates detection rules per
event (core/dispatch.py) and turns each match a correlation takes into a hit with its
partition's Observer (``ruleset.correlations``, core/correlation/observer.py). ``process``
returns a value, ``Processed``: the detection findings, the ``Handoff`` (hits, suppression
offers, watermark) for a ``CorrelationStage`` (core/correlation/stage.py), where the groups
of every partition meet, and the events of the batch a correlation finding may later cite.
Correlation has one path: a runtime with many partitions feeds one stage from all of them;
one that correlates alone is the one-partition case (core/detector.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from opmas.core.correlation import DEFAULT_MAX_FUTURE, Handoff, Observer
from opmas.core.dispatch import EventView, RuleIndex
from opmas.core.event import Event
from opmas.core.finding import Finding, finding_id
from opmas.core.render import render_template
from opmas.core.ruleset import DetectionRule, RuleSet

SNAPSHOT_VERSION = 1


@dataclass(slots=True)
class Processed:
    """What one ``process`` call gives."""

    findings: list[Finding]  # detection findings (those held for suppression go with the handoff)
    handoff: Handoff  # for the correlation stage (empty without correlations)
    correlated: list[Event]  # events with a match handed to correlation: a later finding may cite them


@dataclass(slots=True)
class ProcessorStats:
    """Counters of one processor."""

    events: int = 0
    findings: int = 0
    late_events: int = 0  # behind the watermark: kept out of correlation windows
    future_events: int = 0  # dated more than max_future after the runtime's clock: kept out too
    untimed_events: int = 0  # without an event time: kept out too
    evicted_keys: int = 0  # correlation groups dropped unfinished (max_keys)
    active_keys: int = 0
    state_bytes: int = 0
    unmapped_events: int = 0


def detection_finding(rule: DetectionRule, event: Event, view: EventView) -> Finding:
    """The finding of one detection rule on one event (same input -> same id)."""
    template = rule.finding
    flat = view.full_flat() if template else view.flat
    title = render_template(template["title"], flat, event.data) if "title" in template else rule.meta.title
    description = render_template(template["description"], flat, event.data) if "description" in template \
        else rule.meta.description
    return Finding(
        id=finding_id(rule.id, [event.id]),
        rule_id=rule.id,
        rule_title=rule.meta.title,
        severity=rule.severity,
        tags=list(rule.meta.tags),
        event_ids=[event.id],
        timestamp=event.timestamp,
        title=title,
        description=description,
        agent_id=event.agent_id,
        details={
            "event": event.data,
            "logsource": rule.meta.logsource,
            "rule_source": rule.meta.source,
            "attack": rule.meta.attack,
        },
    )


class Processor:
    """Evaluate a RuleSet over batches of events; deterministic for the same input."""

    def __init__(self, ruleset: RuleSet, state: dict[str, Any] | None = None,
                 max_future: float = DEFAULT_MAX_FUTURE):
        self.stats = ProcessorStats()
        self.max_future = max_future
        self.ruleset = ruleset
        self.index = RuleIndex(ruleset)
        self.observer = self._observer(ruleset, (state or {}).get("correlation"))
        self._observed()

    @staticmethod
    def _observer(ruleset: RuleSet, state: dict[str, Any] | None) -> Observer | None:
        correlations = ruleset.correlations
        return None if correlations is None else correlations.observer(state)

    def process(self, events: Sequence[Event], now: float | None = None) -> Processed:
        """Detection findings and correlation handoff of a batch. ``Event.timestamp`` becomes the mapping's event time (EVTX
        ``System.TimeCreated``, ``@timestamp``...) where it has one; the envelope's is the fallback.
        ``now`` (epoch seconds; streaming runtimes pass their clock, offline input none): events
        dated more than ``max_future`` after it still give their detection findings but do not
        move correlation event time (``stats.future_events``)."""
        findings: list[Finding] = []
        correlated: list[Event] = []
        index, observer = self.index, self.observer
        horizon = None if now is None else now + self.max_future
        for event in events:
            view = index.view(event.data, event.raw)
            if view is None:
                self.stats.unmapped_events += 1
                continue
            ts = view.time()
            if ts is not None:
                event.timestamp = ts
            if observer is not None:
                observer.see(event, horizon)
            for rule in index.matches(view):
                if rule.generate:
                    finding = detection_finding(rule, event, view)
                    if observer is None or not observer.hold(rule, finding, view):
                        findings.append(finding)
                if observer is not None:
                    observer.observe(rule, event, view)
                    if not correlated or correlated[-1] is not event:
                        correlated.append(event)
        self.stats.events += len(events)
        self.stats.findings += len(findings)
        if observer is None:
            return Processed(findings, Handoff(), correlated)
        self._observed()
        return Processed(findings, observer.take(), correlated)

    def _observed(self) -> None:
        """The observer's counters into ``stats``."""
        observer, stats = self.observer, self.stats
        if observer is not None:
            stats.late_events = observer.late_events
            stats.future_events = observer.future_events
            stats.untimed_events = observer.untimed_events

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; pass it as ``state`` to resume."""
        state = {
            "version": SNAPSHOT_VERSION,
            "correlation": self.observer.snapshot() if self.observer is not None else None,
        }
        self.stats.state_bytes = len(orjson.dumps(state))
        return state

    def replace_rules(self, ruleset: RuleSet) -> None:
        """Hot reload: new rules from the next event on; correlation state carried over."""
        carried = self.observer.snapshot() if self.observer is not None else None
        self.ruleset = ruleset
        self.index = RuleIndex(ruleset)
        self.observer = self._observer(ruleset, carried)
        self._observed()
