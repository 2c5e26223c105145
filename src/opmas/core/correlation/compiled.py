"""The compiled correlations of a rule set, and the correlator of a processor that correlates alone."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opmas.core.correlation.correlator import DEFAULT_LATENESS, DEFAULT_MAX_KEYS, Correlator
from opmas.core.correlation.link import LinkedCorrelation
from opmas.core.correlation.observer import Observer
from opmas.core.correlation.spec import Suppression
from opmas.core.finding import Finding


@dataclass
class CorrelationSet:
    """The compiled correlations (dependency order) and suppressions of a rule set;
    ``ruleset.correlations``. ``lateness`` (seconds) is the allowed out-of-orderness."""

    correlations: list[LinkedCorrelation]
    suppressions: dict[str, Suppression] = field(default_factory=dict)
    visible: dict[str, bool] = field(default_factory=dict)  # correlation id -> reported?
    lateness: float = DEFAULT_LATENESS
    max_keys: int = DEFAULT_MAX_KEYS  # per correlation: beyond it the stalest group is dropped

    def start(self, state: dict[str, Any] | None = None) -> "LocalCorrelator":
        """Observer and Correlator for a processor that correlates its own events (fresh, or
        resuming ``state``, a snapshot)."""
        return LocalCorrelator(self, state)

    def observer(self, state: dict[str, Any] | None = None) -> Observer:
        """The per-partition step alone (its Correlator is a CorrelationStage's)."""
        return Observer(self.correlations, self.suppressions, self.lateness, state)

    def correlator(self, state: dict[str, Any] | None = None) -> Correlator:
        """The groups of every correlation, fed by one observer or many."""
        return Correlator(self.correlations, self.suppressions, self.visible, self.max_keys, state)


class LocalCorrelator:
    """An Observer wired to its own Correlator: the watermark is the processor's own. Offers
    ``see``/``observe``/``hold`` per event, ``advance`` per batch, ``flush``, ``snapshot`` and the counters."""

    def __init__(self, cset: CorrelationSet, state: dict[str, Any] | None = None):
        self.observer = cset.observer(state)
        self.correlator = cset.correlator(state)
        self.see = self.observer.see
        self.observe = self.observer.observe
        self.hold = self.observer.hold

    def advance(self) -> list[Finding]:
        """Findings the processor's watermark makes final (call after each batch)."""
        handoff = self.observer.take()
        self.correlator.take(handoff)
        return [] if handoff.watermark is None else self.correlator.advance(handoff.watermark)

    def flush(self) -> list[Finding]:
        """End of input: every window closes, every held finding is decided."""
        self.correlator.take(self.observer.take())
        return self.correlator.flush()

    def snapshot(self) -> dict[str, Any]:
        """Both steps' state in one JSON-serialisable dict (``CorrelationSet.start`` resumes it)."""
        return {**self.correlator.snapshot(), **self.observer.snapshot()}

    @property
    def late_events(self) -> int:
        return self.observer.late_events + self.correlator.late_hits

    @property
    def untimed_events(self) -> int:
        return self.observer.untimed_events

    @property
    def future_events(self) -> int:
        return self.observer.future_events

    @property
    def evicted_keys(self) -> int:
        return self.correlator.evicted_keys

    @property
    def active_keys(self) -> int:
        return self.correlator.active_keys

    @property
    def state_bytes(self) -> int:
        return self.correlator.state_bytes
