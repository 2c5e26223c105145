"""Correlation state keyed by group key: windows, chains, suppression, findings.

Correlation runs in two steps (core/correlation/observer.py is the first):

* an ``Observer`` per partition processor sees every event: it keeps that
  partition's event time (``max_time``; its watermark is ``max_time - lateness``),
  decides which events are late, and turns each detection match a correlation
  takes into a *hit* ``(correlation, time, event id, group key, value)``, and
  each finding of a rule with ``suppress`` into an *offer*;
* a ``Correlator`` (this module) holds every correlation's groups, keyed by group
  key, fed the hits of one or of many partitions (through a ``CorrelationStage``,
  core/correlation/stage.py), so a group's events meet whatever partition they were
  detected in. Two timings (see ``opmas.core.correlation.windows``):

  - a correlation whose condition can only grow true fires on crossing: the hits a
    batch brought are applied at the next ``advance``, in ``(time, event id)`` order,
    before anything else, so its findings leave with that batch;
  - the others wait per correlation until the watermark passes their hits, which are
    then applied in ``(time, event id)`` order: their findings depend only on the set
    of events, not on arrival order within the lateness.

  A log in time order gives the same findings and ids however it is cut into batches
  or partitions; ``flush`` (end of offline input) moves the watermark past
  everything. A hit behind the watermark already applied is late (``late_hits``).

A correlation result feeds the correlations that reference it (chains) as a hit
at its decision time; it is reported unless a referencing correlation says
``generate: false``. Expired groups are dropped, and the whole state is plain
data (``snapshot``). ``max_keys`` bounds the groups of one correlation even under
a flood of new keys (the stalest group is dropped and counted in ``evicted_keys``).
"""
from __future__ import annotations

import bisect
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson

from opmas.core.correlation.link import LinkedCorrelation
from opmas.core.correlation.spec import Suppression
from opmas.core.correlation.suppression import Suppressor
from opmas.core.correlation.windows import Fire, Machine, machine_for, ordered_value
from opmas.core.event import format_time
from opmas.core.finding import Finding, finding_id
from opmas.core.render import render_template

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


@dataclass(frozen=True, slots=True)
class InputKey:
    """How a hit of one input of a correlation gets its group key and value from the event's fields."""

    single: str | None  # the one group-by field, if there is exactly one
    names: tuple[str, ...]  # all group-by fields
    value_field: str | None  # value_count: the field whose distinct values count
    fixed: Any  # the value of every hit otherwise (temporal: which input it is)

    def of(self, fields: dict[str, Any]) -> tuple[str, Any] | None:
        """(group key, value), or None where a group-by (or value_count) field is missing."""
        if self.single is not None:
            value = fields.get(self.single)
            if value is None:
                return None
            key = value if value.__class__ is str else _text(value)
        elif self.names:
            parts = []
            for name in self.names:
                value = fields.get(name)
                if value is None:
                    return None
                parts.append(_text(value))
            key = SEP.join(parts)
        else:
            key = ""
        if self.value_field is None:
            return key, self.fixed
        value = fields.get(self.value_field)
        return None if value is None else (key, _text(value))


def input_keys(corr: LinkedCorrelation) -> list[InputKey]:
    """The InputKey of each input of ``corr``."""
    kind = corr.spec.type
    return [
        InputKey(keys[0] if len(keys) == 1 else None, tuple(keys), value_field,
                 ordered_value(i) if kind == "temporal_ordered" else (i if kind == "temporal" else None))
        for i, (keys, value_field) in enumerate(zip(corr.key_fields, corr.value_fields))
    ]


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
        self.eager = spec.condition.monotone  # fires on crossing: hits are applied as they arrive
        # Hits waiting for the watermark, by second of event time: (time, event id, group key, value, refs)
        self.pending: dict[float, list[tuple]] = {}
        self.groups: OrderedDict[str, list] = OrderedDict()  # ordered by expiry
        self.fingerprint = orjson.dumps([spec.type, corr.inputs, corr.key_fields, corr.value_fields,
                                         spec.timespan, spec.condition.to_dict()]).decode()
        self.inputs = input_keys(corr)
        self.bytes_per_group = 0.0
        self.condition = spec.condition.to_dict()  # as reported in findings

    def queue(self, ts: float, eid: str, key: str, val: Any, refs: tuple | None) -> None:
        """Hold a hit until the watermark passes it."""
        bucket = ts // 1.0
        waiting = self.pending.get(bucket)
        if waiting is None:
            self.pending[bucket] = [(ts, eid, key, val, refs)]
        else:
            waiting.append((ts, eid, key, val, refs))

    def apply(self, ts: float, eid: str, key: str, val: Any, refs: tuple | None) -> Fire | None:
        """Take one hit into its group's window machine now; its result, if it makes one."""
        groups = self.groups
        old = groups.get(key)
        state, fire, moved = self.machine.hit(old, ts, refs if refs is not None else eid, val)
        if moved:
            if state is not old:
                groups[key] = state
            if old is not None:
                groups.move_to_end(key)
            elif len(groups) > self.max_keys:  # a flood of new keys: drop the stalest group
                groups.popitem(last=False)
                self.evicted_keys += 1
        return fire

    def advance(self, watermark: float) -> list[tuple[str, Fire]]:
        """Apply every held hit behind the watermark in order, close groups whose windows are over."""
        fired: list[tuple[str, Fire]] = []
        pending, groups, machine, apply = self.pending, self.groups, self.machine, self.apply
        last = None
        for bucket in sorted(b for b in pending if b < watermark):
            items = pending.pop(bucket)
            items.sort()
            if items[-1][0] >= watermark:  # the bucket the watermark is in: keep what is not behind it
                cut = bisect.bisect_left(items, (watermark,))
                pending[bucket] = items[cut:]
                items = items[:cut]
            for item in items:
                ts, eid, key, val, refs = item
                if last is not None and item[:4] == last[:4]:
                    continue  # the same event twice (replayed) or one event matching two inputs alike
                last = item
                fire = apply(ts, eid, key, val, refs)
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


Hit = tuple[int, float, str, str, Any]  # (correlation index, event time, event id, group key, value)
Offer = tuple[str, Finding, float, str]  # (rule id, finding, event time, suppression key)


@dataclass(slots=True)
class Handoff:
    """What an observer passes on after a batch: its hits and offers, and its watermark
    (its partition's latest event time minus the lateness; None before its first timed event)."""

    hits: list[Hit] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    watermark: float | None = None


class Correlator:
    """Every correlation's groups and the suppression windows, fed hits and offers (``take``),
    made final by the watermark (``advance``)."""

    def __init__(self, correlations: list[LinkedCorrelation], suppressions: dict[str, Suppression],
                 visible: dict[str, bool], max_keys: int, state: dict[str, Any] | None = None):
        self.suppressions = suppressions
        self.visible = visible
        self.tracks = [Track(c, max_keys) for c in correlations]
        self._eager = [t.eager for t in self.tracks]
        self.routes: dict[str, list[tuple[Track, int]]] = {}  # chains: correlation id -> referencing inputs
        for track in self.tracks:
            for index, rule_id in enumerate(track.corr.inputs):
                self.routes.setdefault(rule_id, []).append((track, index))
        self.suppressor = Suppressor(suppressions)
        self.frontier = float("-inf")  # watermark of the last advance
        self.late_hits = 0
        self._advances = 0
        self._arrived: list[tuple] = []  # hits of correlations that fire on crossing, since the last advance
        if state:
            self._restore(state)

    def take(self, handoff: Handoff) -> None:
        """A batch's hits (those behind the last watermark are late) and offers. Hits of correlations
        that fire on crossing are applied at the next ``advance``, before anything else."""
        tracks, eager, frontier, arrived = self.tracks, self._eager, self.frontier, self._arrived
        for index, ts, eid, key, val in handoff.hits:
            if ts < frontier:
                self.late_hits += 1
            elif eager[index]:
                arrived.append((ts, eid, index, key, val))
            else:
                tracks[index].queue(ts, eid, key, val, None)
        for _rule_id, finding, ts, key in handoff.offers:
            self.suppressor.offer(finding, ts, key)

    def _apply_arrived(self, out: list[Finding]) -> None:
        """The hits of correlations that fire on crossing taken since the last advance, applied in
        ``(time, event id)`` order (so however partitions interleave in a batch; one event's later
        ordered steps first, so it never serves two steps of one sequence)."""
        arrived, self._arrived = self._arrived, []
        arrived.sort()
        tracks, last = self.tracks, None
        for hit in arrived:
            if hit == last:
                continue  # the same event twice (replayed) or one event matching two inputs alike
            last = hit
            ts, eid, index, key, val = hit
            track = tracks[index]
            fire = track.apply(ts, eid, key, val, None)
            if fire is not None:
                self._result(track, key, fire, out)

    def _hit(self, track: Track, ts: float, eid: str, key: str, val: Any, refs: tuple | None,
             out: list[Finding]) -> None:
        """A hit of ``track``: applied now where the track fires on crossing, else held for the watermark."""
        if not track.eager:
            track.queue(ts, eid, key, val, refs)
            return
        fire = track.apply(ts, eid, key, val, refs)
        if fire is not None:
            self._result(track, key, fire, out)

    def _result(self, track: Track, key: str, fire: Fire, out: list[Finding]) -> None:
        """A correlation result: a hit of each correlation that references it, then reported (``out``)
        unless hidden, or offered to its suppression."""
        spec = track.spec
        finding = self._finding(track, key, fire)
        group = finding.details["group"]
        for downstream, index in self.routes.get(spec.rule_id, ()):
            keyed = downstream.inputs[index].of(group)
            if keyed is not None:
                self._hit(downstream, fire.decision, finding.id, keyed[0], keyed[1], tuple(finding.event_ids), out)
        if not self.visible.get(spec.rule_id, True):
            return
        if spec.rule_id in self.suppressions:
            self.suppressor.offer(finding, fire.decision, self.suppressor.by_key(spec.rule_id, group))
        else:
            out.append(finding)

    def flush(self) -> list[Finding]:
        """End of input: every window closes, every held finding is decided."""
        return self.advance(float("inf"))

    def advance(self, watermark: float) -> list[Finding]:
        """Findings of the hits taken since the last call that fire on crossing, and those the watermark
        makes final."""
        watermark = max(watermark, self.frontier)
        out: list[Finding] = []
        self._apply_arrived(out)
        for track in self.tracks:
            for key, fire in track.advance(watermark):
                self._result(track, key, fire, out)
        if self.suppressions:
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
        """Estimated memory of the state (sampled group sizes, held hits and findings)."""
        total = sum(len(t.groups) * t.bytes_per_group + sum(map(len, t.pending.values())) * 200
                    for t in self.tracks)
        return int(total + self.suppressor.size * 600)

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable state; ``state`` of a new Correlator resumes from it."""
        return {
            "version": SNAPSHOT_VERSION,
            "frontier": None if self.frontier == float("-inf") else self.frontier,
            "late_hits": self.late_hits,
            "tracks": {t.spec.rule_id: t.dump() for t in self.tracks if t.pending or t.groups},
            "suppression": self.suppressor.snapshot(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        check_version(state)
        frontier = state.get("frontier")
        self.frontier = float("-inf") if frontier is None else float(frontier)
        self.late_hits = int(state.get("late_hits", 0))
        saved = state.get("tracks", {})
        for track in self.tracks:
            data = saved.get(track.spec.rule_id)
            # A correlation whose definition changed (hot reload) starts afresh: old windows would lie.
            if data is not None and data.get("fingerprint") == track.fingerprint:
                track.load(data)
                track.sample_size()
        self.suppressor = Suppressor(self.suppressions, state.get("suppression"))


def check_version(state: dict[str, Any]) -> None:
    """ValueError for a correlation snapshot of another format version."""
    if state.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"correlation snapshot version {state.get('version')!r} is not {SNAPSHOT_VERSION}")
