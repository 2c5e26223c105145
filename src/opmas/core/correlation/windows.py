"""Per-group window machines: how one group's hits make results.

Two kinds of condition, two timings (``T`` = timespan):

* A condition that can only grow true (lower bounds ``gt``/``gte``) fires on
  crossing: its machine takes each hit as it arrives and fires on the hit that
  makes the condition true, as Elastic threshold rules and Splunk do. A hit that
  arrives behind the group's latest one takes its place in time (if still within
  ``T`` of the latest), so nothing is lost to arrival order; which hit completes
  a window does follow the order hits arrive in, which for a log in time order is
  time order, in every runtime.

  - Sliding (``event_count``, ``value_count``, ``temporal``): the machine holds the
    hits within ``T`` of the group's latest hit; as soon as their count (events,
    distinct values, distinct rules) satisfies the condition it fires with them,
    anchored at the oldest, ``a``. The fired window's whole span ``[a, a+T)`` is
    then consumed: hits before ``a+T`` are absorbed. So a burst fires once per
    group per timespan, at the hit that completes it.
  - Ordered (``temporal_ordered``): the first ``k`` referenced rules must hit in
    that order (a different event for each step, none earlier than the step
    before) within ``T`` of the first; ``k`` is the smallest count the condition
    accepts. Fires at the hit completing the sequence, then consumes ``[a, a+T)``.

* Tumbling (any condition with an upper bound ``lt``/``lte``/``eq``): the count is
  only known when the window is over. The machine sees the group's hits in
  ``(time, event id)`` order once they are behind the watermark (so arrival order
  never matters); windows are ``[a, a+T)`` anchored at the first hit not in an
  earlier window, each evaluated once when the watermark reaches ``a+T``.

Group state is a small list (JSON-friendly via ``dump``/``load``); a ref is an
event id, or a tuple of event ids for a hit that is itself a correlation result.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Union

from opmas.core.correlation.spec import Condition

Ref = Union[str, tuple]
NO_CONSUMPTION = float("-inf")
MAX_REFS = 1000  # event references kept per tumbling window (the count stays exact)


@dataclass(slots=True)
class Fire:
    """One correlation result of one group."""

    start: float  # window anchor
    end: float  # start + timespan
    last: float  # time of the last event taken
    count: int  # the aggregate the condition was applied to
    refs: list[Ref]
    values: list[Any] | None  # distinct values (value_count) or input indexes (temporal kinds)
    decision: float  # event time at which the result was decided (chained correlations use it)


def _holds_pair(st: list, ts: float, ref: Ref) -> bool:
    """Whether a Sliding state's window (in time order) already holds the hit (ts, ref)."""
    i = len(st) - 2
    while i >= 2 and st[i] >= ts:
        if st[i] == ts and st[i + 1] == ref:
            return True
        i -= 2
    return False


def _unique(refs: list[Ref]) -> list[Ref]:
    return list(dict.fromkeys(refs))


def _consumed(value: Any) -> float:
    return NO_CONSUMPTION if value is None else float(value)


def _ref_in(value: Any) -> Ref:
    return tuple(value) if isinstance(value, list) else value


def _ref_out(ref: Ref) -> Any:
    return list(ref) if isinstance(ref, tuple) else ref


def _consumed_out(value: float) -> float | None:
    return None if value == NO_CONSUMPTION else value


class Sliding:
    """event_count with lower bounds. State: [last_ts, consumed_until, t0, ref0, t1, ref1, ...]
    (one flat list per group: few objects for the cyclic GC to walk)."""

    def __init__(self, timespan: float, condition: Condition):
        self.timespan = timespan
        self.holds = condition.holds

    def hit(self, st: list | None, ts: float, ref: Ref, val: Any) -> tuple[list, Fire | None, bool]:
        """Take one hit; returns (state, result or None, whether the group's expiry moved)."""
        if st is None:
            st = [ts, NO_CONSUMPTION]
        elif ts < st[1]:
            return st, None, False
        last = st[0]
        if ts >= last:
            if ts == last and _holds_pair(st, ts, ref):
                return st, None, False  # the same event again
            st[0] = ts
            low = ts - self.timespan
            end, size = 2, len(st)
            while end < size and st[end] <= low:
                end += 2
            if end > 2:
                del st[2:end]
            st.append(ts)
            st.append(ref)
        else:  # behind the group's latest hit: into its place in time, if still in the window
            if ts <= last - self.timespan or _holds_pair(st, ts, ref):
                return st, None, False
            at = 2 + 2 * bisect.bisect_right(st[2::2], ts)
            st[at:at] = [ts, ref]
        count = (len(st) - 2) >> 1
        if self.holds(count):
            start = st[2]
            fire = Fire(start, start + self.timespan, st[0], count, _unique(st[3::2]), None, st[0])
            st[1] = start + self.timespan
            del st[2:]
            return st, fire, True
        return st, None, ts >= last

    def expiry(self, st: list) -> float:
        """From this watermark on, the group holds nothing that can matter."""
        return st[0] + self.timespan

    def close(self, st: list) -> Fire | None:
        return None

    def dump(self, st: list) -> list:
        return [st[0], _consumed_out(st[1]), st[2::2], [_ref_out(r) for r in st[3::2]]]

    def load(self, data: list) -> list:
        st = [float(data[0]), _consumed(data[1])]
        for t, r in zip(data[2], data[3]):
            st.append(float(t))
            st.append(_ref_in(r))
        return st


class SlidingDistinct(Sliding):
    """value_count / temporal with lower bounds. State: [last_ts, consumed_until, {value: (ts, ref)}].

    The dict is kept in order of last occurrence, so expired values leave from its front."""

    def hit(self, st: list | None, ts: float, ref: Ref, val: Any) -> tuple[list, Fire | None, bool]:
        if st is None:
            st = [ts, NO_CONSUMPTION, {}]
        elif ts < st[1]:
            return st, None, False
        last, seen = st[0], st[2]
        if ts >= last:
            st[0] = ts
            low = ts - self.timespan
            while seen:
                first = next(iter(seen))
                if seen[first][0] > low:
                    break
                del seen[first]
            seen.pop(val, None)
            seen[val] = (ts, ref)
        else:  # behind the group's latest hit: into its place in time, unless the value is there later
            held = seen.get(val)
            if ts <= last - self.timespan or (held is not None and held[0] >= ts):
                return st, None, False
            seen[val] = (ts, ref)
            st[2] = seen = dict(sorted(seen.items(), key=lambda item: item[1][0]))
        if self.holds(len(seen)):
            entries = list(seen.values())
            start = entries[0][0]
            fire = Fire(start, start + self.timespan, st[0], len(seen), _unique([e[1] for e in entries]),
                        list(seen), st[0])
            st[1] = start + self.timespan
            st[2] = {}
            return st, fire, True
        return st, None, ts >= last

    def dump(self, st: list) -> list:
        items = [[v, t, _ref_out(r)] for v, (t, r) in st[2].items()]
        return [st[0], _consumed_out(st[1]), items]

    def load(self, data: list) -> list:
        return [float(data[0]), _consumed(data[1]), {v: (float(t), _ref_in(r)) for v, t, r in data[2]}]


class Tumbling:
    """Any condition with an upper bound. State: [anchor, last_ts, n_events, {value: ref | None} | None, ref0, ...]
    (the refs of distinct values past the first ``MAX_REFS`` are None)."""

    def __init__(self, timespan: float, condition: Condition, distinct: bool):
        self.timespan = timespan
        self.holds = condition.holds
        self.distinct = distinct
        upper = min(limit for op, limit in condition.bounds if op in ("lt", "lte", "eq"))
        # Past the upper bound a window can no longer fire: count no more distinct values than that,
        # keep no more references than that (nor than MAX_REFS).
        self.cap = int(upper) + 1
        self.max_refs = min(self.cap, MAX_REFS)

    def hit(self, st: list | None, ts: float, ref: Ref, val: Any) -> tuple[list, Fire | None, bool]:
        fire = None
        if st is not None and ts >= st[0] + self.timespan:
            fire = self.close(st)
            st = None
        moved = st is None
        if st is None:
            st = [ts, ts, 0, {} if self.distinct else None]
        st[1] = ts
        st[2] += 1
        if self.distinct:
            seen = st[3]
            if val not in seen and len(seen) < self.cap:
                seen[val] = ref if len(seen) < MAX_REFS else None
        elif len(st) - 4 < self.max_refs:
            st.append(ref)
        return st, fire, moved

    def expiry(self, st: list) -> float:
        return st[0] + self.timespan

    def close(self, st: list) -> Fire | None:
        """Evaluate a complete window."""
        if self.distinct:
            count, refs, values = len(st[3]), _unique([r for r in st[3].values() if r is not None]), list(st[3])
        else:
            count, refs, values = st[2], st[4:], None
        if not self.holds(count):
            return None
        end = st[0] + self.timespan
        return Fire(st[0], end, st[1], count, refs, values, end)

    def dump(self, st: list) -> list:
        seen = [[v, _ref_out(r)] for v, r in st[3].items()] if self.distinct else None
        return [st[0], st[1], st[2], [_ref_out(r) for r in st[4:]], seen]

    def load(self, data: list) -> list:
        seen = {v: _ref_in(r) for v, r in data[4]} if self.distinct else None
        return [float(data[0]), float(data[1]), int(data[2]), seen, *(_ref_in(r) for r in data[3])]


class Ordered(Sliding):
    """temporal_ordered. State: [last_ts, consumed_until, hits, p0, p1, ...]: ``hits`` the group's hits within
    T of its latest, as [time, value, ref] in (time, value) order; ``pk`` = (start, refs, time of step k) of
    the match of steps 0..k with the latest start (the one with most room left), or None. A hit that
    arrives behind the group's latest is put in its place and the matches are made again from ``hits``,
    so a step that arrived before the one it follows still completes the sequence."""

    def __init__(self, timespan: float, steps: int):
        self.timespan = timespan
        self.steps = steps

    def hit(self, st: list | None, ts: float, ref: Ref, val: Any) -> tuple[list, Fire | None, bool]:
        if st is None:
            st = [ts, NO_CONSUMPTION, [], *([None] * self.steps)]
        elif ts < st[1]:
            return st, None, False
        last, hits = st[0], st[2]
        if -1 - val >= self.steps:
            st[0] = max(last, ts)
            return st, None, ts >= last
        entry = [ts, val, ref]
        if ts >= last:
            if hits and hits[-1] == entry:
                return st, None, False  # the same event again
            st[0] = ts
            low = ts - self.timespan
            end = 0
            while end < len(hits) and hits[end][0] <= low:
                end += 1
            del hits[:end]
            hits.append(entry)
            fire = self._step(st, ts, ref, -1 - val)
        else:
            if ts <= last - self.timespan or entry in hits:
                return st, None, False
            at = bisect.bisect_right([(h[0], h[1]) for h in hits], (ts, val))
            hits.insert(at, entry)
            st[3:] = [None] * self.steps
            fire = None
            for h_ts, h_val, h_ref in hits:
                fire = self._step(st, h_ts, h_ref, -1 - h_val)
                if fire is not None:
                    break
        if fire is None:
            return st, None, ts >= last
        st[1] = fire.start + self.timespan
        st[2] = []
        st[3:] = [None] * self.steps
        return st, fire, True

    def _step(self, st: list, ts: float, ref: Ref, step: int) -> Fire | None:
        """Extend the matches with a hit of ``step`` (see ordered_value()); the result if it completes one."""
        if step == 0:
            candidate = (ts, (ref,), ts)
        else:
            before = st[2 + step]
            # the previous step must come first (in time, and by another event) and within T of the start
            if before is None or before[0] <= ts - self.timespan or ts < before[2] or ref in before[1]:
                return None
            candidate = (before[0], before[1] + (ref,), ts)
        current = st[3 + step]
        if current is None or candidate[0] >= current[0]:
            st[3 + step] = candidate
        if step < self.steps - 1:
            return None
        start, refs, end = st[3 + step]
        return Fire(start, start + self.timespan, end, self.steps, _unique(list(refs)), list(range(self.steps)), end)

    def dump(self, st: list) -> list:
        hits = [[t, v, _ref_out(r)] for t, v, r in st[2]]
        parts = [None if p is None else [p[0], [_ref_out(r) for r in p[1]], p[2]] for p in st[3:]]
        return [st[0], _consumed_out(st[1]), parts, hits]

    def load(self, data: list) -> list:
        parts = [None if p is None else (float(p[0]), tuple(_ref_in(r) for r in p[1]),
                                         float(p[2] if len(p) > 2 else p[0]))  # older: [start, refs]
                 for p in data[2]]
        hits = [[float(t), v, _ref_in(r)] for t, v, r in (data[3] if len(data) > 3 else [])]
        return [float(data[0]), _consumed(data[1]), hits, *parts]


def ordered_value(step: int) -> int:
    """The hit value for step ``step`` of an ordered correlation. Hits of one event sort by value, and
    later steps must be taken first so that one event never serves two steps of the same sequence."""
    return -1 - step


Machine = Union[Sliding, SlidingDistinct, Tumbling, Ordered]


def machine_for(ctype: str, timespan: float, condition: Condition, n_inputs: int) -> Machine:
    """The window machine for a correlation type and condition."""
    if ctype == "temporal_ordered":
        steps = next(k for k in range(1, n_inputs + 1) if condition.holds(k))
        return Ordered(timespan, steps)
    distinct = ctype != "event_count"
    if not condition.monotone:
        return Tumbling(timespan, condition, distinct)
    return SlidingDistinct(timespan, condition) if distinct else Sliding(timespan, condition)
