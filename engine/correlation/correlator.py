"""The running correlation state of one processor (partition): event time, windows, findings.

Event time and the watermark: every event's time (``Event.timestamp``) moves
``max_time``; the watermark is ``max_time - lateness``. An event older than the
watermark when it arrives is *late*: counted in ``late_events``, never fed to a
window (its detection findings are still reported). Detection matches become
*hits* held per correlation in a heap until the watermark passes them; then they
are applied to their group's window machine in ``(time, event id)`` order (see
``engine.correlation.windows``). So the findings and their ids depend only on
the set of events, not on their arrival order within the lateness, nor on how
the input was cut into batches; ``flush`` (end of offline input) moves the
watermark past everything.

A correlation result feeds the correlations that reference it (chains) as a hit
at its decision time; it is reported unless a referencing correlation says
``generate: false``. State is partitioned by group key, expired groups are
dropped, and the whole state is plain data (``snapshot``), restored by
``CorrelationSet.start(snapshot)``. ``max_keys`` bounds the groups of one
correlation even under a flood of new keys (the stalest group is dropped and
counted in ``evicted_keys``).

Clock skew: a streaming runtime passes ``see`` a *horizon* (its wall clock plus an
allowed skew); an event dated after it is counted in ``future_events`` and, like a
late event, neither moves event time nor enters windows (else one event from a
skewed clock would make every later event late). Offline input has no horizon.
"""
from __future__ import annotations

import bisect
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.correlation.link import LinkedCorrelation
from engine.correlation.spec import Suppression
from engine.correlation.suppression import Suppressor
from engine.correlation.windows import Fire, Machine, machine_for, ordered_value
from engine.event import Event, format_time
from engine.finding import Finding, finding_id
from engine.render import render_template

DEFAULT_LATENESS = 60.0  # seconds
DEFAULT_MAX_KEYS = 1_000_000
DEFAULT_MAX_FUTURE = 3600.0  # seconds an event may be dated ahead of a streaming runtime's clock
SNAPSHOT_VERSION = 1
SEP = "\x1f"
_SAMPLE = 32  # groups per correlation sampled for the state size estimate


def _text(value: Any) -> str:
    """A field value as a group-key component or a distinct value."""
    cls = value.__class__
    if cls is str:
        return value if SEP not in value else value.replace(SEP, " ")
    if cls is int or cls is float:
        return str(value)
    if cls is list or cls is dict:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _deep_size(obj: Any) -> int:
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k) + _deep_size(v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        size += sum(_deep_size(v) for v in obj)
    return size


class Track:
    """One correlation's state: hits waiting for the watermark and the groups' window states."""

    def __init__(self, corr: LinkedCorrelation, max_keys: int):
        spec = corr.spec
        self.max_keys = max_keys
        self.evicted_keys = 0  # groups dropped unfinished to respect max_keys
        self.corr = corr
        self.spec = spec
        self.machine: Machine = machine_for(spec.type, spec.timespan, spec.condition, len(corr.inputs))
        # Hits waiting for the watermark, by second of event time: (time, event id, group key, value, refs)
        self.pending: dict[float, list[tuple]] = {}
        self.groups: OrderedDict[str, list] = OrderedDict()  # ordered by expiry
        self.fingerprint = orjson.dumps([spec.type, corr.inputs, corr.key_fields, corr.value_fields,
                                         spec.timespan, spec.condition.to_dict()]).decode()
        kind = spec.type
        # Per input: (the one group-by field or None, all group-by fields, value_count field, fixed value)
        self._inputs = [
            (keys[0] if len(keys) == 1 else None, keys, value_field,
             ordered_value(i) if kind == "temporal_ordered" else (i if kind == "temporal" else None))
            for i, (keys, value_field) in enumerate(zip(corr.key_fields, corr.value_fields))
        ]
        self.bytes_per_group = 0.0
        self.condition = spec.condition.to_dict()  # as reported in findings

    def hit(self, index: int, ts: float, eid: str, fields: dict[str, Any], refs: tuple | None = None) -> None:
        """Queue a hit of input ``index``; events lacking a group-by (or value_count) field are skipped."""
        single, names, value_field, val = self._inputs[index]
        if single is not None:
            value = fields.get(single)
            if value is None:
                return
            key = value if value.__class__ is str else _text(value)
        elif names:
            parts = []
            for name in names:
                value = fields.get(name)
                if value is None:
                    return
                parts.append(_text(value))
            key = SEP.join(parts)
        else:
            key = ""
        if value_field is not None:
            value = fields.get(value_field)
            if value is None:
                return
            val = _text(value)
        item = (ts, eid, key, val, refs)
        waiting = self.pending.get(ts // 1.0)
        if waiting is None:
            self.pending[ts // 1.0] = [item]
        else:
            waiting.append(item)

    def queue(self, ts: float, eid: str, key: str, val: Any, refs: tuple | None) -> None:
        """Hold a hit until the watermark passes it."""
        bucket = ts // 1.0
        waiting = self.pending.get(bucket)
        if waiting is None:
            self.pending[bucket] = [(ts, eid, key, val, refs)]
        else:
            waiting.append((ts, eid, key, val, refs))

    def advance(self, watermark: float) -> list[tuple[str, Fire]]:
        """Apply every hit behind the watermark in order, close groups whose windows are over."""
        fired: list[tuple[str, Fire]] = []
        pending, groups, machine = self.pending, self.groups, self.machine
        hit = machine.hit
        last_ts = last_eid = last_key = last_val = None
        for bucket in sorted(b for b in pending if b < watermark):
            items = pending.pop(bucket)
            items.sort()
            if items[-1][0] >= watermark:  # the bucket the watermark is in: keep what is not behind it
                cut = bisect.bisect_left(items, (watermark,))
                pending[bucket] = items[cut:]
                items = items[:cut]
            for ts, eid, key, val, refs in items:
                if eid == last_eid and ts == last_ts and key == last_key and val == last_val:
                    continue  # the same event twice (replayed) or one event matching two inputs alike
                last_ts, last_eid, last_key, last_val = ts, eid, key, val
                old = groups.get(key)
                state, fire, moved = hit(old, ts, refs if refs is not None else eid, val)
                if moved:
                    if state is not old:
                        groups[key] = state
                    if old is not None:
                        groups.move_to_end(key)
                    elif len(groups) > self.max_keys:  # a flood of new keys: drop the stalest group
                        groups.popitem(last=False)
                        self.evicted_keys += 1
                if fire is not None:
                    fired.append((key, fire))
        expiry = machine.expiry
        while groups:
            key = next(iter(groups))
            state = groups[key]
            if expiry(state) > watermark:
                break
            del groups[key]
            fire = machine.close(state)
            if fire is not None:
                fired.append((key, fire))
        return fired

    def group_values(self, key: str) -> dict[str, str]:
        """The group-by fields (aliases as named in the rule) and their values of a group key."""
        names = self.spec.group_by
        if not names:
            return {}
        return dict(zip(names, key.split(SEP) if len(names) > 1 else [key]))

    def sample_size(self) -> None:
        """Re-estimate the bytes of one group from a sample of the current groups."""
        if not self.groups:
            return
        sample = []
        for key in self.groups:
            sample.append(_deep_size(key) + _deep_size(self.groups[key]) + 100)  # + dict slot and links
            if len(sample) >= _SAMPLE:
                break
        self.bytes_per_group = sum(sample) / len(sample)

    def dump(self) -> dict[str, Any]:
        dump = self.machine.dump
        return {
            "fingerprint": self.fingerprint,
            "pending": [[ts, eid, key, val, list(refs) if refs is not None else None]
                        for items in self.pending.values() for ts, eid, key, val, refs in items],
            "groups": [[key, dump(state)] for key, state in self.groups.items()],
        }

    def load(self, data: dict[str, Any]) -> None:
        load = self.machine.load
        for ts, eid, key, val, refs in data.get("pending", []):
            self.queue(float(ts), eid, key, val, tuple(refs) if refs is not None else None)
        self.groups = OrderedDict((key, load(state)) for key, state in data.get("groups", []))


@dataclass
class CorrelationSet:
    """The compiled correlations (dependency order) and suppressions of a rule set;
    ``ruleset.correlations``. ``lateness`` (seconds) is the allowed out-of-orderness."""

    correlations: list[LinkedCorrelation]
    suppressions: dict[str, Suppression] = field(default_factory=dict)
    visible: dict[str, bool] = field(default_factory=dict)  # correlation id -> reported?
    lateness: float = DEFAULT_LATENESS
    max_keys: int = DEFAULT_MAX_KEYS  # per correlation: beyond it the stalest group is dropped

    def start(self, state: dict[str, Any] | None = None) -> "Correlator":
        """A correlator with fresh state, or resuming ``state`` (a snapshot)."""
        return Correlator(self, state)


class Correlator:
    """Correlation and suppression state of one processor. Driven per event by ``see`` then
    ``observe`` for each detection match, ``hold`` for detection findings, and ``advance`` per batch."""

    def __init__(self, cset: CorrelationSet, state: dict[str, Any] | None = None):
        self.cset = cset
        self.lateness = cset.lateness
        self.tracks = [Track(c, cset.max_keys) for c in cset.correlations]
        self.routes: dict[str, list[tuple[Track, int]]] = {}
        for track in self.tracks:
            for index, rule_id in enumerate(track.corr.inputs):
                self.routes.setdefault(rule_id, []).append((track, index))
        self.suppressor = Suppressor(cset.suppressions)
        self.max_time: float | None = None
        self.frontier = float("-inf")  # watermark of the last advance
        self.late_events = 0
        self.untimed_events = 0
        self.future_events = 0
        self._accepted = False
        self._future = False
        self._advances = 0
        if state:
            self._restore(state)

    # --- per event -------------------------------------------------------------
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
            ts, eid, flat = event.timestamp, event.id, view.flat
            for track, index in routes:
                track.hit(index, ts, eid, flat)

    def hold(self, rule: Any, finding: Finding, view: Any) -> bool:
        """Take a detection finding of a rule with ``suppress`` (True: it is reported by ``advance``).
        Findings of untimed or future events are not suppressed (the watermark may never pass them)."""
        if rule.id not in self.cset.suppressions or finding.timestamp is None or self._future:
            return False
        self.suppressor.offer(finding, finding.timestamp, self.suppressor.by_key(rule.id, view.flat))
        return True

    # --- per batch -------------------------------------------------------------
    def advance(self) -> list[Finding]:
        """Findings the watermark makes final (call after each batch)."""
        if self.max_time is None:
            return []
        return self._advance(self.max_time - self.lateness)

    def flush(self) -> list[Finding]:
        """End of input: every window closes, every held finding is decided."""
        return self._advance(float("inf"))

    def _advance(self, watermark: float) -> list[Finding]:
        watermark = max(watermark, self.frontier)
        out: list[Finding] = []
        suppressions = self.cset.suppressions
        for track in self.tracks:
            fired = track.advance(watermark)
            if not fired:
                continue
            spec = track.spec
            visible = self.cset.visible.get(spec.rule_id, True)
            for key, fire in fired:
                finding = self._finding(track, key, fire)
                group = finding.details["group"]
                for downstream, index in self.routes.get(spec.rule_id, ()):
                    downstream.hit(index, fire.decision, finding.id, group, tuple(finding.event_ids))
                if not visible:
                    continue
                if spec.rule_id in suppressions:
                    self.suppressor.offer(finding, fire.decision, self.suppressor.by_key(spec.rule_id, group))
                else:
                    out.append(finding)
        if suppressions:
            out.extend(self.suppressor.advance(watermark))
        if watermark != float("inf"):
            self.frontier = watermark
        self._advances += 1
        if self._advances % 64 == 1:
            for track in self.tracks:
                track.sample_size()
        out.sort(key=lambda f: (f.timestamp if f.timestamp is not None else 0.0, f.rule_id, f.id))
        return out

    def _finding(self, track: Track, key: str, fire: Fire) -> Finding:
        spec, corr = track.spec, track.corr
        event_ids: list[str] = []
        for ref in fire.refs:
            if ref.__class__ is tuple:
                event_ids.extend(ref)
            else:
                event_ids.append(ref)
        event_ids = list(dict.fromkeys(event_ids))
        group = track.group_values(key)
        details: dict[str, Any] = {
            "correlation": spec.type,
            "group": group,
            "window": {"start": format_time(fire.start), "end": format_time(fire.end)},
            "count": fire.count,
            "timespan": spec.timespan,
            "condition": track.condition,
            "rule_source": spec.source,
        }
        if spec.type == "value_count":
            details["field"] = spec.condition.field
            details["values"] = sorted(fire.values or [])
        elif spec.type in ("temporal", "temporal_ordered"):
            details["rules"] = [corr.inputs[i] for i in sorted(fire.values or [])]
        context = {**group, "count": fire.count}
        title = render_template(spec.finding["title"], context, {}) if "title" in spec.finding else spec.title
        description = spec.finding.get("description", spec.description)
        return Finding(
            id=finding_id(spec.rule_id, event_ids, f"{key}{SEP}{fire.start!r}"),
            rule_id=spec.rule_id,
            rule_title=spec.title,
            severity=spec.level,
            tags=list(spec.tags),
            event_ids=event_ids,
            timestamp=fire.last,
            title=title,
            description=render_template(description, context, {}) if description else "",
            group_key=", ".join(f"{k}={v}" for k, v in group.items()) or None,
            details=details,
        )

    # --- state -----------------------------------------------------------------
    @property
    def active_keys(self) -> int:
        """Groups with an open window, over all correlations."""
        return sum(len(t.groups) for t in self.tracks)

    @property
    def evicted_keys(self) -> int:
        """Groups dropped unfinished because a correlation held ``max_keys`` groups."""
        return sum(t.evicted_keys for t in self.tracks)

    @property
    def state_bytes(self) -> int:
        """Estimated memory of the correlation state (sampled group sizes, held hits and findings)."""
        total = sum(len(t.groups) * t.bytes_per_group + sum(map(len, t.pending.values())) * 200
                    for t in self.tracks)
        return int(total + self.suppressor.size * 600)

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; ``CorrelationSet.start(snapshot)`` resumes from it."""
        return {
            "version": SNAPSHOT_VERSION,
            "max_time": self.max_time,
            "frontier": None if self.frontier == float("-inf") else self.frontier,
            "late_events": self.late_events,
            "untimed_events": self.untimed_events,
            "future_events": self.future_events,
            "tracks": {t.spec.rule_id: t.dump() for t in self.tracks if t.pending or t.groups},
            "suppression": self.suppressor.snapshot(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"correlation snapshot version {state.get('version')!r} is not {SNAPSHOT_VERSION}")
        self.max_time = state.get("max_time")
        frontier = state.get("frontier")
        self.frontier = float("-inf") if frontier is None else float(frontier)
        self.late_events = int(state.get("late_events", 0))
        self.untimed_events = int(state.get("untimed_events", 0))
        self.future_events = int(state.get("future_events", 0))
        saved = state.get("tracks", {})
        for track in self.tracks:
            data = saved.get(track.spec.rule_id)
            # A correlation whose definition changed (hot reload) starts afresh: old windows would lie.
            if data is not None and data.get("fingerprint") == track.fingerprint:
                track.load(data)
                track.sample_size()
        self.suppressor = Suppressor(self.cset.suppressions, state.get("suppression"))
