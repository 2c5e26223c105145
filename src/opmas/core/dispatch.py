"""Route an event to the rules that can apply to it, and find the ones that match.

For each event: the first mapping that recognises it flattens it into Sigma field
names; its discriminator (e.g. Windows ``(Channel, EventID)``, generic
``event.dataset``...) selects a cached :class:`Group`: the rules whose logsource the
event belongs to, split into lenses (:class:`Lens`) by the field renames they see, each
with the fields to lower-case and a prefilter. A rename applies to the rules whose
logsource its mapping entry covers: a Security 4688 event shows ``Image`` =
``NewProcessName`` to process_creation rules and its own fields to ``service: security``
rules. Only the prefilter's candidates are evaluated.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opmas.core.logsource import LogsourceEntry, Mapping
from opmas.core.render import field_value
from opmas.core.ruleset import DetectionRule, RuleSet
from opmas.core.sigma.compile import KEYWORDS, KEYWORDS_RAW
from opmas.core.sigma.prefilter import Prefilter, keyword_haystack, lowered

MAX_GROUPS = 8192  # cache bound: raw discriminator values of one mapping seen so far (groups are shared)


@dataclass(slots=True)
class Lens:
    """The rules of a group that see an event through the same renames."""

    renames: dict[str, str]  # Sigma field -> event field
    fields: tuple[str, ...]  # fields read by the rules: lower-cased once per event that has candidates
    keywords: bool
    members: tuple[int, ...]  # the rules, as indices into the group's rules
    prefilter: Prefilter  # over the members (its indices index ``members``)


@dataclass(slots=True)
class Group:
    """The rules for events of one (mapping, discriminator), ready to evaluate."""

    rules: tuple[DetectionRule, ...]
    lenses: tuple[Lens, ...]  # one per distinct rename set of the rules (at least one; usually one)
    scan: Callable[[Any], dict[str, Any]] | None  # where the mapping selects: reads the fields the
    # prefilters search and the first time field from the event's parts
    read: Callable[[Any], dict[str, Any]] | None  # likewise: every field the rules read, rename targets
    # and the first time field (for events with candidates)


def _apply_renames(flat: dict[str, Any], renames: dict[str, str]) -> None:
    originals = list(map(flat.get, renames.values()))  # all read first: renames may swap fields
    for name, value in zip(renames, originals):
        if value is not None:
            flat[name] = value


class EventView:
    """An event as rules see it: mapping, group of rules, and event time, with its fields read
    lazily. :meth:`RuleIndex.matches` first runs the prefilters on the few fields they search
    (``scanned``); only an event with candidate rules is read further: ``flat`` (the fields the
    rules read, or every field where ``partial`` is False) through the renames of ``lens``, and
    ``low``, the fields of the rules being evaluated, lower-cased. :meth:`RuleIndex.matches`
    turns ``lens``, ``flat`` and ``low`` to the lens of each rule it yields."""

    __slots__ = ("mapping", "data", "raw", "group", "lens", "partial", "scanned", "_parts", "_time", "_flat", "_low",
                 "_base", "_haystack", "_full")

    def __init__(self, mapping: Mapping, data: dict[str, Any], raw: bytes | None, group: Group, parts: Any,
                 scanned: dict[str, Any], time: float | None) -> None:
        self.mapping = mapping
        self.data = data
        self.raw = raw  # the JSON text data came as, if any (Event.raw)
        self.group = group
        self.lens = group.lenses[0]
        self.partial = group.read is not None  # until completed with every field
        self.scanned = scanned  # as the event names its fields (before renames)
        self._parts = parts
        self._time = time
        self._flat: dict[str, Any] | None = None
        self._low: dict[str, Any] | None = None
        self._base: dict[str, Any] | None = None  # fields read for the rules, before renames
        self._haystack: Any = _UNSET
        self._full: tuple[Lens, dict[str, Any]] | None = None

    def time(self) -> float | None:
        """Event time from the mapping's time fields (as the event names them, before renames)."""
        return self._time

    @property
    def flat(self) -> dict[str, Any]:
        """The fields the rules of :attr:`lens` read, through its renames."""
        if self._flat is None:
            self._see(self.lens)
        return self._flat  # type: ignore[return-value]

    @flat.setter
    def flat(self, value: dict[str, Any]) -> None:
        self._flat = value

    @property
    def low(self) -> dict[str, Any]:
        """The fields of the rules evaluated last (by default every rule of :attr:`lens`), lower-cased (lists
        element-wise), plus the keyword texts where those rules search keywords."""
        if self._low is None:
            self._see(self.lens)
        return self._low  # type: ignore[return-value]

    @low.setter
    def low(self, value: dict[str, Any]) -> None:
        self._low = value

    def haystack(self) -> bytes | None:
        """The text keyword literals are searched in (computed once)."""
        if self._haystack is _UNSET:
            self._haystack = keyword_haystack(self.data, self.raw)
        return self._haystack

    def _see(self, lens: Lens, rules: list[DetectionRule] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read the fields of ``lens``'s rules (every field where ``rules``, default all of the lens's, search
        keywords), rename them, lower those of ``rules``; they become the view's ``flat`` and ``low``."""
        if rules is None:
            fields: Iterable[str] = lens.fields
            keywords = lens.keywords
        else:
            fields = frozenset().union(*(rule.fields for rule in rules))
            keywords = any(rule.keywords for rule in rules)
        group, mapping = self.group, self.mapping
        if group.read is None:  # the mapping flattened the whole event to scan it
            base = self.scanned
        elif keywords:  # keyword rules search every field
            if self._base is None or self.partial:
                self._base = mapping.flatten(self.data)
                self.partial = False
            base = self._base
        else:
            if self._base is None:
                self._base = group.read(self._parts)
            base = self._base
        flat = dict(base) if lens.renames else base
        if lens.renames:
            _apply_renames(flat, lens.renames)
        low = {name: value.lower() if value.__class__ is str else lowered(value)
               for name in fields if (value := flat.get(name)) is not None}
        if keywords:
            texts = mapping.keyword_texts(flat)
            low[KEYWORDS_RAW] = texts
            low[KEYWORDS] = [t.lower() for t in texts]
        self.lens, self._flat, self._low = lens, flat, low
        return flat, low

    def full_flat(self) -> dict[str, Any]:
        """Every field of the event through the lens's renames (for finding templates)."""
        flat = self.flat
        if not self.partial:
            return flat
        if self._full is None or self._full[0] is not self.lens:
            full = self.mapping.flatten(self.data)
            _apply_renames(full, self.lens.renames)
            self._full = (self.lens, full)
        return self._full[1]

    def field(self, name: str) -> Any:
        """A field's value by Sigma name (as the mapping names it) or dotted path; None if absent."""
        return field_value(name, self.full_flat(), self.data)


_UNSET = object()


class RuleIndex:
    """Rules of a RuleSet indexed by logsource, with a per-discriminator cache of groups."""

    def __init__(self, ruleset: RuleSet):
        self.ruleset = ruleset
        self.mappings = ruleset.mappings
        self._groups: list[dict[tuple[Any, ...], Group]] = [{} for _ in self.mappings]  # raw discriminator -> group
        self._by_entries: dict[tuple[int, tuple[LogsourceEntry, ...]], Group] = {}
        # per mapping that selects: how to get an event's parts, and readers of its discriminator
        # fields and of all its time fields
        self._reads = [(m.selector.parts, m.selector.plan(m.discriminator_fields), m.selector.plan(m.time_fields))
                       if m.selector is not None else None for m in self.mappings]
        by_logsource: dict[tuple[tuple[str, str], ...], list[int]] = {}  # few distinct logsources
        for i, rule in enumerate(ruleset.detections):
            by_logsource.setdefault(tuple(sorted(rule.meta.logsource.items())), []).append(i)
        # Per mapping, per logsource entry: the rules whose logsource that entry covers.
        self._rules_by_entry = [
            {entry: [i for logsource, indices in by_logsource.items() if entry.covers(dict(logsource))
                     for i in indices]
             for entry in (*m.entries, *m.entries_for(()))}
            for m in self.mappings
        ]
        self._everywhere = by_logsource.get((), [])
        self.rule_seconds: dict[str, float] | None = None  # {} to time each rule's evaluation: rule id -> seconds

    def mapping_index(self, data: dict[str, Any]) -> int:
        """Index of the first mapping that recognises the raw event (-1: none)."""
        for index, mapping in enumerate(self.mappings):
            if mapping.recognizes(data):
                return index
        return -1

    def _group(self, index: int, key: tuple[str | None, ...]) -> Group:
        """The group for a discriminator, shared by every discriminator with the same logsource entries."""
        entries = tuple(self.mappings[index].entries_for(key))
        group = self._by_entries.get((index, entries))
        if group is None:
            group = self._by_entries[(index, entries)] = self._build(index, entries)
        return group

    def _build(self, index: int, entries: tuple[LogsourceEntry, ...]) -> Group:
        mapping = self.mappings[index]
        detections = self.ruleset.detections
        covered = [set(self._rules_by_entry[index][entry]) for entry in entries]
        chosen = [i for i in sorted(set(self._everywhere).union(*covered)) if detections[i].meta.enabled]
        rules = tuple(detections[i] for i in chosen)
        # a rule sees the renames of the entries that cover its logsource
        by_renames: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for position, i in enumerate(chosen):
            renames: dict[str, str] = {}
            for entry, rules_of_entry in zip(entries, covered):
                if i in rules_of_entry:
                    renames.update(entry.fields)
            by_renames.setdefault(tuple(renames.items()), []).append(position)
        lenses = tuple(_lens(dict(renames), rules, members) for renames, members in by_renames.items()) \
            or (_lens({}, rules, []),)
        if mapping.selector is None:
            return Group(rules=rules, lenses=lenses, scan=None, read=None)
        first_time = set(mapping.time_fields[:1])
        scanned = {name for lens in lenses for name in lens.prefilter.sources}
        read = {name for lens in lenses for name in (*lens.fields, *lens.renames.values())}
        return Group(rules=rules, lenses=lenses, scan=mapping.selector.plan(tuple(sorted(scanned | first_time))),
                     read=mapping.selector.plan(tuple(sorted(read | first_time))))

    def view(self, data: dict[str, Any], raw: bytes | None = None) -> EventView | None:
        """The event as the rules see it, or None if no mapping recognises it (``raw``: see ``Event.raw``)."""
        index = self.mapping_index(data)
        if index < 0:
            return None
        mapping = self.mappings[index]
        reads = self._reads[index]
        parts: Any = None
        if reads is None:
            flat = mapping.flatten(data)
        else:
            parts = reads[0](data)
            flat = reads[1](parts)
        groups = self._groups[index]
        raw_key = tuple(map(flat.get, mapping.discriminator_fields))
        try:
            group = groups.get(raw_key)
        except TypeError:  # unhashable discriminator value (list, object)
            raw_key = mapping.discriminator(flat)
            group = groups.get(raw_key)
        if group is None:
            if len(groups) >= MAX_GROUPS:
                groups.clear()
            group = groups[raw_key] = self._group(index, mapping.discriminator(flat))
        if group.scan is None:  # the whole event is flattened: nothing cheaper to read
            return EventView(mapping, data, raw, group, parts, flat, mapping.time_of(flat))
        scanned = group.scan(parts)
        time = mapping.time_of(scanned)
        if time is None and reads is not None:  # only the first time field was read: look for the others
            time = mapping.time_of(reads[2](parts))
        return EventView(mapping, data, raw, group, parts, scanned, time)

    def matches(self, view: EventView) -> Iterable[DetectionRule]:
        """The rules of the event's group that match it, in rule-set order. Where the group has
        several lenses, ``view`` shows each yielded rule's lens until the next one is yielded."""
        group = view.group
        if len(group.lenses) > 1:
            return _matches_per_lens(view, _match if self.rule_seconds is None else self._timed)
        lens = group.lenses[0]
        candidates = lens.prefilter.candidates(view.scanned, view.haystack)
        if not candidates:
            return ()
        rules = [group.rules[i] for i in candidates]
        flat, low = view._see(lens, rules)
        if self.rule_seconds is not None:
            return [rule for rule in rules if self._timed(rule, flat, low)]
        return [rule for rule in rules if rule.match(flat, low)]

    def _timed(self, rule: DetectionRule, flat: dict[str, Any], low: dict[str, Any]) -> bool:
        """``rule.match``, its time added to :attr:`rule_seconds`."""
        started = time.perf_counter()
        try:
            return rule.match(flat, low)
        finally:
            seconds = self.rule_seconds  # type: ignore[union-attr]
            seconds[rule.meta.id] = seconds.get(rule.meta.id, 0.0) + time.perf_counter() - started


def _lens(renames: dict[str, str], rules: tuple[DetectionRule, ...], members: list[int]) -> Lens:
    """The lens of ``rules[i]`` for i in ``members``."""
    fields: set[str] = set()
    for i in members:
        fields |= rules[i].fields
    return Lens(renames=renames, fields=tuple(sorted(fields)), keywords=any(rules[i].keywords for i in members),
                members=tuple(members), prefilter=Prefilter([rules[i].requirement for i in members], renames))


def _match(rule: DetectionRule, flat: dict[str, Any], low: dict[str, Any]) -> bool:
    return rule.match(flat, low)


def _matches_per_lens(view: EventView, match: Callable[[DetectionRule, dict[str, Any], dict[str, Any]], bool]
                      ) -> Iterator[DetectionRule]:
    group = view.group
    rules = group.rules
    per_lens = [[lens.members[i] for i in lens.prefilter.candidates(view.scanned, view.haystack)]
                for lens in group.lenses]
    seen: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}  # lens -> its flat and low
    for i, k in sorted((i, k) for k, candidates in enumerate(per_lens) for i in candidates):
        lens = group.lenses[k]
        if k not in seen:
            seen[k] = view._see(lens, [rules[j] for j in per_lens[k]])
        flat, low = seen[k]
        rule = rules[i]
        if match(rule, flat, low):
            view.flat, view.low, view.lens = flat, low, lens
            yield rule
