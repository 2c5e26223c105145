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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.logsource import LogsourceEntry, Mapping
from engine.render import field_value
from engine.ruleset import DetectionRule, RuleSet
from engine.sigma.compile import KEYWORDS, KEYWORDS_RAW
from engine.sigma.prefilter import Prefilter

MAX_GROUPS = 8192  # cache bound: raw discriminator values of one mapping seen so far (groups are shared)


@dataclass(slots=True)
class Lens:
    """The rules of a group that see an event through the same renames."""

    renames: dict[str, str]  # Sigma field -> event field
    fields: tuple[str, ...]  # fields read by the rules: lower-cased once per event
    keywords: bool
    members: tuple[int, ...]  # the rules, as indices into the group's rules
    prefilter: Prefilter  # over the members (its indices index ``members``)


@dataclass(slots=True)
class Group:
    """The rules for events of one (mapping, discriminator), ready to evaluate."""

    rules: tuple[DetectionRule, ...]
    lenses: tuple[Lens, ...]  # one per distinct rename set of the rules (at least one; usually one)
    read: Callable[[Any], dict[str, Any]] | None  # where the mapping selects: reads the rule fields,
    # rename targets and first time field from the event's parts
    keywords: bool  # some rule searches keywords: every field is read


def _lower(value: Any) -> Any:
    if value.__class__ is str:
        return value.lower()
    if value.__class__ is list:
        return [v.lower() if v.__class__ is str else v for v in value]
    return value


def _apply_renames(flat: dict[str, Any], renames: dict[str, str]) -> None:
    originals = list(map(flat.get, renames.values()))  # all read first: renames may swap fields
    for name, value in zip(renames, originals):
        if value is not None:
            flat[name] = value


@dataclass(slots=True)
class EventView:
    """An event as rules see it: mapping, fields (only those the rules read where the
    mapping can select them cheaply) and lowered fields through the renames of ``lens``,
    the group of rules. :meth:`RuleIndex.matches` turns ``lens``, ``flat`` and ``low`` to
    the lens of each rule it yields."""

    mapping: Mapping
    data: dict[str, Any]
    flat: dict[str, Any]
    low: dict[str, Any]
    group: Group
    partial: bool
    lens: Lens
    _time: float | None
    _per_lens: tuple[tuple[dict[str, Any], dict[str, Any]], ...] | None = None  # several lenses: flat, low of each
    _full: tuple[Lens, dict[str, Any]] | None = None

    def time(self) -> float | None:
        """Event time from the mapping's time fields (as the event names them, before renames)."""
        return self._time

    def full_flat(self) -> dict[str, Any]:
        """Every field of the event through the lens's renames (for finding templates)."""
        if not self.partial:
            return self.flat
        if self._full is None or self._full[0] is not self.lens:
            full = self.mapping.flatten(self.data)
            _apply_renames(full, self.lens.renames)
            self._full = (self.lens, full)
        return self._full[1]

    def field(self, name: str) -> Any:
        """A field's value by Sigma name (as the mapping names it) or dotted path; None if absent."""
        return field_value(name, self.full_flat(), self.data)


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
        sources = {name for lens in lenses for name in (*lens.fields, *lens.renames.values())}
        return Group(
            rules=rules,
            lenses=lenses,
            read=mapping.selector.plan(tuple(sorted(sources | set(mapping.time_fields[:1]))))
            if mapping.selector is not None else None,
            keywords=any(lens.keywords for lens in lenses),
        )

    def view(self, data: dict[str, Any]) -> EventView | None:
        """The event as the rules see it, or None if no mapping recognises it."""
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
        read = group.read
        partial = read is not None and not group.keywords
        if read is not None and partial:
            flat = read(parts)
            time = mapping.time_of(flat)
            if time is None and reads is not None:  # only the first time field was read: look for the others
                time = mapping.time_of(reads[2](parts))
        else:  # no cheaper way, or keyword rules that search every field
            if reads is not None:
                flat = mapping.flatten(data)
            time = mapping.time_of(flat)
        lenses = group.lenses
        if len(lenses) == 1:
            lens = lenses[0]
            return EventView(mapping, data, flat, _see(mapping, lens, flat), group, partial, lens, time)
        per_lens = []
        for lens in lenses:  # only one lens has no renames: it may keep ``flat`` itself
            lens_flat = dict(flat) if lens.renames else flat
            per_lens.append((lens_flat, _see(mapping, lens, lens_flat)))
        first_flat, first_low = per_lens[0]
        return EventView(mapping, data, first_flat, first_low, group, partial, lenses[0], time, tuple(per_lens))

    def matches(self, view: EventView) -> Iterable[DetectionRule]:
        """The rules of the event's group that match it, in rule-set order. Where the group has
        several lenses, ``view`` shows each yielded rule's lens until the next one is yielded."""
        if view._per_lens is not None:
            return _matches_per_lens(view, view._per_lens)
        rules = view.group.rules
        flat, low = view.flat, view.low
        return [rules[i] for i in view.lens.prefilter.candidates(low) if rules[i].match(flat, low)]


def _lens(renames: dict[str, str], rules: tuple[DetectionRule, ...], members: list[int]) -> Lens:
    """The lens of ``rules[i]`` for i in ``members``."""
    fields: set[str] = set()
    for i in members:
        fields |= rules[i].fields
    return Lens(renames=renames, fields=tuple(sorted(fields)), keywords=any(rules[i].keywords for i in members),
                members=tuple(members), prefilter=Prefilter([rules[i].requirement for i in members]))


def _see(mapping: Mapping, lens: Lens, flat: dict[str, Any]) -> dict[str, Any]:
    """Apply the lens's renames to ``flat`` (in place); its lowered fields."""
    if lens.renames:
        _apply_renames(flat, lens.renames)
    low = {name: value.lower() if value.__class__ is str else _lower(value)
           for name in lens.fields if (value := flat.get(name)) is not None}
    if lens.keywords:
        texts = mapping.keyword_texts(flat)
        low[KEYWORDS_RAW] = texts
        low[KEYWORDS] = [t.lower() for t in texts]
    return low


def _matches_per_lens(view: EventView, per_lens: tuple[tuple[dict[str, Any], dict[str, Any]], ...]
                      ) -> Iterator[DetectionRule]:
    group = view.group
    candidates = sorted((lens.members[i], k) for k, (lens, (_, low)) in enumerate(zip(group.lenses, per_lens))
                        for i in lens.prefilter.candidates(low))
    for i, k in candidates:
        flat, low = per_lens[k]
        rule = group.rules[i]
        if rule.match(flat, low):
            view.flat, view.low, view.lens = flat, low, group.lenses[k]
            yield rule
