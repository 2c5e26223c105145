"""The per-partition step of correlation: event time, lateness, and the hits of each match.

Every event a partition processor maps is shown to its ``Observer`` (``see``): its time
moves the partition's ``max_time`` (the watermark is ``max_time - lateness``). An event
older than the watermark when it arrives is *late*: counted in ``late_events``, never fed
to a window (its detection findings are still reported).

Clock skew: a streaming runtime passes ``see`` a *horizon* (its wall clock plus an
allowed skew); an event dated after it is counted in ``future_events`` and, like a
late event, neither moves event time nor enters windows (else one event from a
skewed clock would make every later event late). Offline input has no horizon.
Events without a time are counted in ``untimed_events`` and kept out too.

Each detection match of an accepted event that a correlation takes becomes a hit
keyed by that correlation's group-by fields (``observe``); each finding of a rule with
``suppress`` becomes an offer (``hold``). ``take`` hands both, with the watermark, to
the Correlator that holds the groups (core/correlation/correlator.py).
"""
from __future__ import annotations

from typing import Any

from opmas.core.correlation.correlator import SNAPSHOT_VERSION, Handoff, InputKey, check_version, input_keys
from opmas.core.correlation.link import LinkedCorrelation
from opmas.core.correlation.spec import Suppression
from opmas.core.correlation.suppression import suppression_key
from opmas.core.event import Event
from opmas.core.finding import Finding


class Observer:
    """Event time and hits of one partition. Driven per event by ``see`` then ``observe`` for each
    detection match and ``hold`` for its findings; ``take`` after each batch."""

    def __init__(self, correlations: list[LinkedCorrelation], suppressions: dict[str, Suppression],
                 lateness: float, state: dict[str, Any] | None = None):
        self.lateness = lateness
        self.suppressions = suppressions
        # detection rule id -> (correlation index, how that input keys its hits)
        self.routes: dict[str, list[tuple[int, InputKey]]] = {}
        for number, corr in enumerate(correlations):
            for rule_id, keyer in zip(corr.inputs, input_keys(corr)):
                self.routes.setdefault(rule_id, []).append((number, keyer))
        self.max_time: float | None = None
        self.frontier = float("-inf")  # watermark at the last take
        self.late_events = 0
        self.untimed_events = 0
        self.future_events = 0
        self.handoff = Handoff()
        self._accepted = False
        self._future = False
        if state:
            self._restore(state)

    @property
    def watermark(self) -> float | None:
        """Latest event time minus the lateness (None before the first timed event)."""
        return None if self.max_time is None else self.max_time - self.lateness

    def see(self, event: Event, horizon: float | None = None) -> None:
        """Move event time with ``event`` unless it is dated after ``horizon``; decide whether its
        matches may enter windows."""
        ts = event.timestamp
        self._future = False
        if ts is None:
            self.untimed_events += 1
            self._accepted = False
            return
        if horizon is not None and ts > horizon:
            self.future_events += 1
            self._future = True
            self._accepted = False
            return
        if self.max_time is None or ts > self.max_time:
            self.max_time = ts
        elif ts < self.max_time - self.lateness or ts < self.frontier:
            self.late_events += 1
            self._accepted = False
            return
        self._accepted = True

    def observe(self, rule: Any, event: Event, view: Any) -> None:
        """A detection rule matched the event last passed to ``see``. ``view.flat`` holds its Sigma
        fields, including the ones correlations group by (compile_correlations makes the rule read them)."""
        if not self._accepted:
            return
        routes = self.routes.get(rule.id)
        if routes:
            hits, ts, eid, flat = self.handoff.hits, event.timestamp, event.id, view.flat
            for number, keyer in routes:
                keyed = keyer.of(flat)
                if keyed is not None:
                    hits.append((number, ts, eid, keyed[0], keyed[1]))

    def hold(self, rule: Any, finding: Finding, view: Any) -> bool:
        """Take a detection finding of a rule with ``suppress`` (True: the Correlator reports it).
        Findings of untimed or future events are not suppressed (the watermark may never pass them)."""
        config = self.suppressions.get(rule.id)
        if config is None or finding.timestamp is None or self._future:
            return False
        self.handoff.offers.append((rule.id, finding, finding.timestamp, suppression_key(config, view.flat)))
        return True

    def take(self) -> Handoff:
        """The hits and offers since the last take, with the current watermark."""
        out = self.handoff
        out.watermark = self.watermark
        if out.watermark is not None:
            self.frontier = max(self.frontier, out.watermark)
        self.handoff = Handoff()
        return out

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state (taken between batches: nothing is waiting in the handoff)."""
        return {
            "version": SNAPSHOT_VERSION,
            "max_time": self.max_time,
            "frontier": None if self.frontier == float("-inf") else self.frontier,
            "late_events": self.late_events,
            "untimed_events": self.untimed_events,
            "future_events": self.future_events,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        check_version(state)
        self.max_time = state.get("max_time")
        frontier = state.get("frontier")
        self.frontier = float("-inf") if frontier is None else float(frontier)
        self.late_events = int(state.get("late_events", 0))
        self.untimed_events = int(state.get("untimed_events", 0))
        self.future_events = int(state.get("future_events", 0))
