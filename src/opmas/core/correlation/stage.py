"""Correlation of a whole stream, whose events are detected in one partition or many.

A partitioned runtime spreads events over partition processors by a key (the
publishing agent by default), but a correlation groups by its own fields: a
password spray from one ``source.ip`` over many agents lands in many partitions.
So each partition processor keeps only its Observer (event time, lateness, the
hits of its matches, see core/correlation/observer.py) and hands its hits over
after each batch; the ``CorrelationStage`` holds the one Correlator, whose groups
are keyed by group key, and every hit of a group meets there whatever partition
it came from. A runtime that correlates alone (``opmas detect``, a hunt) is the
case of one partition (core/detector.py).

Offline input has no clock (``now`` None): the watermark is the partitions' lowest,
and nothing is idle or live.

The stage's watermark is the lowest of the partitions' watermarks, so a partition
that lags in event time (an agent shipping late) holds windows open rather than
having its hits counted late. A partition whose watermark has not risen for
``idle_timeout`` seconds of the runtime's clock (an agent gone quiet) stops holding
it back; when all are idle the highest counts, so windows still close. A partition
that comes back with older events then has those hits counted in ``late_hits``.
Partitions that never saw a timed event do not count at all, unless the stage is told how many
partitions feed it (``partitions``, where they progress independently, as the scale-out workers'
do): then it holds its watermark until each has reported or ``idle_timeout`` has passed since its
first batch, so a partition that starts late does not find its hits late.

A live stream (its newest event time within LIVE seconds of the runtime's clock) whose
partitions are all idle goes on in event time while nothing arrives: the clock moves the
watermark to ``now - lateness``. So on a quiet live stream a window-closing condition (``lt``...)
is decided ``lateness`` seconds after its window's end (plus the runtime's idle poll), without
waiting for a later event; thresholds fire on crossing anyway. A replayed old log is not live:
its watermark moves only with its events.
"""
from __future__ import annotations

from typing import Any

from opmas.core.correlation.compiled import CorrelationSet
from opmas.core.correlation.correlator import Correlator, Handoff
from opmas.core.finding import Finding

DEFAULT_IDLE_TIMEOUT = 30.0  # seconds (runtime clock) after which a partition stops holding the watermark
LIVE = 3600.0  # seconds: a stream whose newest event time is this close to the clock is live


class CorrelationStage:
    """The Correlator of a partitioned stream, fed each partition's Handoff (``take``) and
    advanced to the partitions' common watermark (``advance``); state as plain data."""

    def __init__(self, cset: CorrelationSet, state: dict[str, Any] | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, partitions: int | None = None):
        state = state or {}
        self.idle_timeout = idle_timeout
        self.partitions = partitions
        self._started: float | None = None  # runtime clock at the first take
        self.lateness = cset.lateness
        self.correlator: Correlator = cset.correlator(state.get("correlator"))
        self.watermarks: dict[int, float] = {int(p): float(w) for p, w in (state.get("watermarks") or {}).items()}
        self._risen: dict[int, float] = {}  # partition -> runtime clock when its watermark last rose

    def take(self, partition: int, handoff: Handoff, now: float | None) -> None:
        """A partition's hits, offers and watermark after a batch (``now``: the runtime's clock)."""
        self.correlator.take(handoff)
        if self._started is None:
            self._started = now
        watermark = handoff.watermark
        if watermark is not None and watermark > self.watermarks.get(partition, float("-inf")):
            self.watermarks[partition] = watermark
            if now is not None:
                self._risen[partition] = now

    def watermark(self, now: float | None) -> float | None:
        """The lowest watermark of the partitions not idle at ``now``; all idle: the highest, or on a live
        stream ``now - lateness`` where that is later. Offline (``now`` None): the lowest."""
        if not self.watermarks:
            return None
        if now is None:
            return min(self.watermarks.values())
        if self.partitions is not None and len(self.watermarks) < self.partitions and \
                now - (self._started if self._started is not None else now) < self.idle_timeout:
            return None  # a partition has yet to report
        risen = self._risen
        active = [w for p, w in self.watermarks.items() if now - risen.setdefault(p, now) < self.idle_timeout]
        if active:
            return min(active)
        highest = max(self.watermarks.values())
        if highest + self.lateness >= now - LIVE:  # the newest event time is near the clock
            return max(highest, now - self.lateness)
        return highest

    def advance(self, now: float | None) -> list[Finding]:
        """Findings the common watermark makes final (call after each batch's takes)."""
        watermark = self.watermark(now)  # None: the hits that fire on crossing only
        return self.correlator.advance(float("-inf") if watermark is None else watermark)

    def flush(self) -> list[Finding]:
        """End of offline input: every window closes, every held finding is decided."""
        return self.correlator.flush()

    def stats(self) -> dict[str, int]:
        """The stage's counters under ProcessorStats names (``late_events``: hits behind the watermark)."""
        correlator = self.correlator
        return {"late_events": correlator.late_hits, "future_events": 0, "untimed_events": 0,
                "evicted_keys": correlator.evicted_keys, "active_keys": correlator.active_keys,
                "state_bytes": correlator.state_bytes}

    def replace(self, cset: CorrelationSet) -> None:
        """Hot reload: the new correlations, with the groups of those that did not change."""
        self.lateness = cset.lateness
        self.correlator = cset.correlator(self.correlator.snapshot())

    @classmethod
    def reloaded(cls, stage: "CorrelationStage | None", cset: CorrelationSet | None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, partitions: int | None = None
                 ) -> "CorrelationStage | None":
        """The stage for a rule set's correlations ``cset`` after a reload: ``stage`` kept (with the
        groups of unchanged correlations) while there are correlations, a new one when there were none."""
        if cset is None:
            return None
        if stage is None:
            return cls(cset, None, idle_timeout, partitions)
        stage.replace(cset)
        return stage

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; pass it as ``state`` to resume."""
        return {"watermarks": {str(p): w for p, w in self.watermarks.items()},
                "correlator": self.correlator.snapshot()}
