"""The processor every runtime drives: events in, findings out, state as plain data.

``Processor(ruleset, state)`` evaluates detection rules per event (core/dispatch.py)
and feeds each detection match to the correlation part of the rule set, if any
(``ruleset.correlations``, an ``opmas.core.correlation.CorrelationSet``): by default to
its own ``LocalCorrelator``, which also reports the correlation findings after each
batch. With ``split=True`` (a partition of a stream whose correlations run in one
``opmas.core.correlation.CorrelationStage``) it keeps only the per-partition Observer,
and ``handoff()`` after each ``process`` call gives what the stage takes.
After each ``process`` call, ``correlated`` lists the events of that call with a match handed
to correlation (a later correlation finding may cite them; runtimes store them on arrival).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from opmas.core.correlation import DEFAULT_MAX_FUTURE, Handoff
from opmas.core.dispatch import EventView, RuleIndex
from opmas.core.event import Event
from opmas.core.finding import Finding, finding_id
from opmas.core.render import render_template
from opmas.core.ruleset import DetectionRule, RuleSet

SNAPSHOT_VERSION = 1


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
                 max_future: float = DEFAULT_MAX_FUTURE, split: bool = False):
        self.stats = ProcessorStats()
        self.max_future = max_future
        self.split = split
        self.ruleset = ruleset
        self.index = RuleIndex(ruleset)
        self.correlator = self._correlator(ruleset, (state or {}).get("correlation"))
        self.correlated: list[Event] = []

    def _correlator(self, ruleset: RuleSet, state: dict[str, Any] | None) -> Any:
        correlations = ruleset.correlations
        if correlations is None:
            return None
        return correlations.observer(state) if self.split else correlations.start(state)

    def process(self, events: Sequence[Event], now: float | None = None) -> list[Finding]:
        """Findings of a batch. ``Event.timestamp`` becomes the mapping's event time (EVTX
        ``System.TimeCreated``, ``@timestamp``...) where it has one; the envelope's is the fallback.
        ``now`` (epoch seconds; streaming runtimes pass their clock, offline input none): events
        dated more than ``max_future`` after it still give their detection findings but do not
        move correlation event time (``stats.future_events``)."""
        findings: list[Finding] = []
        correlated: list[Event] = []
        index, correlator = self.index, self.correlator
        horizon = None if now is None else now + self.max_future
        for event in events:
            view = index.view(event.data, event.raw)
            if view is None:
                self.stats.unmapped_events += 1
                continue
            ts = view.time()
            if ts is not None:
                event.timestamp = ts
            if correlator is not None:
                correlator.see(event, horizon)
            for rule in index.matches(view):
                if rule.generate:
                    finding = detection_finding(rule, event, view)
                    if correlator is None or not correlator.hold(rule, finding, view):
                        findings.append(finding)
                if correlator is not None:
                    correlator.observe(rule, event, view)
                    if not correlated or correlated[-1] is not event:
                        correlated.append(event)
        if correlator is not None and not self.split:
            findings.extend(correlator.advance())
        self.correlated = correlated
        self.stats.events += len(events)
        self.stats.findings += len(findings)
        self._correlation_stats()
        return findings

    def handoff(self) -> Handoff:
        """With ``split``: the hits, offers and watermark of the calls since the last handoff."""
        return self.correlator.take() if self.correlator is not None else Handoff()

    def flush(self) -> list[Finding]:
        """End of input (offline, not ``split``): close open correlation windows."""
        if self.correlator is None:
            return []
        findings = self.correlator.flush()
        self.stats.findings += len(findings)
        self._correlation_stats()
        return findings

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; pass it as ``state`` to resume."""
        state = {
            "version": SNAPSHOT_VERSION,
            "correlation": self.correlator.snapshot() if self.correlator is not None else None,
        }
        self.stats.state_bytes = len(orjson.dumps(state))
        return state

    def replace_rules(self, ruleset: RuleSet) -> None:
        """Hot reload: new rules from the next event on; correlation state carried over."""
        carried = self.correlator.snapshot() if self.correlator is not None else None
        self.ruleset = ruleset
        self.index = RuleIndex(ruleset)
        self.correlator = self._correlator(ruleset, carried)
        self._correlation_stats()

    def _correlation_stats(self) -> None:
        correlator = self.correlator
        if correlator is not None:
            self.stats.late_events = correlator.late_events
            self.stats.future_events = correlator.future_events
            self.stats.untimed_events = correlator.untimed_events
            if not self.split:  # else the groups are the stage's
                self.stats.evicted_keys = correlator.evicted_keys
                self.stats.active_keys = correlator.active_keys
                self.stats.state_bytes = correlator.state_bytes
