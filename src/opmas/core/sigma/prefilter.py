"""Prefilter: which rules of a group can possibly match an event.

Each rule carries a requirement (core/sigma/compile.py): clauses of
``(field, literal)`` pairs; the rule can only match an event where every clause has
a literal in the event's lower-cased field. The prefilter builds one Aho-Corasick
automaton per field over all literals of the group and runs it once per field per
event, on the raw field values (it lower-cases them itself, so an event without
candidates is never lower-cased whole). A rule is indexed under the literals of its
most selective clause (its anchor); when one of those is seen, the rule's other
clauses are checked against the set of literals seen in the event. Rules without a
requirement are always candidates. Only candidates are fully evaluated.

Keyword literals (Sigma keywords search every string value of the event) are searched in
the event's JSON text, lower-cased, as JSON-escaped literals: every string value appears
there escaped, so a literal in a value appears escaped in the text (a necessary
condition, which is all a prefilter needs), and the event is never flattened whole for it.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import ahocorasick
import ahocorasick_rs
import orjson

from opmas.core.sigma.compile import KEYWORDS, Requirement, _number, clause_cost
from opmas.core.sigma.literals import NUMBER


def field_text(value: Any) -> str | None:
    """The lower-case text a field value is searched as (lists joined, numbers as text)."""
    if value is None:
        return None
    if value.__class__ is str:
        return value
    if value.__class__ is list:
        return "\n".join(t for t in (field_text(v) for v in value) if t is not None)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return None
    return str(value).lower()


def lowered(value: Any) -> Any:
    """A field value as rules compare it ignoring case: text lower-cased, lists element-wise."""
    if value.__class__ is str:
        return value.lower()
    if value.__class__ is list:
        return [v.lower() if v.__class__ is str else v for v in value]
    return value


_UNICODE_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u")  # a \u escape (not an escaped backslash before a u)


def keyword_haystack(data: Any, raw: bytes | None = None) -> bytes | None:
    """The text keyword literals are searched in: the event's JSON, lower-cased, as UTF-8 (None: not
    serialisable). ``raw``, the JSON text the event was parsed from, serves where it escapes string
    values as orjson does (short escapes only: no ``\\u``, no ``\\/``); else ``data`` is serialised."""
    text = raw
    if text is None or b"\\/" in text or (b"\\u" in text and _UNICODE_ESCAPE.search(text)):
        try:
            text = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return None
    if text.isascii():
        return text.lower()
    try:
        return text.decode().lower().encode()
    except UnicodeDecodeError:
        return None


def json_escaped(literal: str) -> bytes:
    """How a (lower-case) literal appears inside the lower-cased JSON text of a string holding it."""
    return orjson.dumps(literal).decode()[1:-1].lower().encode()


Payload = tuple[int, tuple[int, ...], tuple[int, ...]]  # (literal id, rules it triggers directly, rules to check)
Found = tuple[tuple[Any, Payload], ...]  # (where, payload) of each literal found in a value
# (Sigma field, the event field it is renamed from, search of its text literals, its number literals,
# what was found in the text values seen last)
Scan = tuple[str, str | None, Callable[[str], Any] | None, dict[float, Payload] | None, dict[Any, Found]]
MEMO_SIZE = 512  # text and integer values remembered per field (then all forgotten at once): field values recur in event logs
MEMO_LENGTH = 256  # longer values (command lines, scripts) rarely recur: searched each time


def _numbers(value: Any) -> list[Any]:
    """The numbers a field value equals as Sigma compares them (each element of a list)."""
    if value.__class__ is list:
        return [n for item in value if (n := _number(item)) is not None]
    number = _number(value)
    return [] if number is None else [number]


def _find(value: Any, search: Callable[[str], Any] | None, numbers: dict[float, Payload] | None) -> Found:
    """The literals of one field found in its value: text literals in its lower-cased text, numbers it equals."""
    text = value.lower() if value.__class__ is str else field_text(lowered(value))
    found = tuple(search(text)) if search is not None and text else ()
    if numbers is not None:
        found += tuple((None, numbers[n]) for n in _numbers(value) if n in numbers)
    return found


def _keyword_search(literals: dict[str, Payload]) -> Callable[[bytes], Found]:
    """A search of the keyword literals (JSON-escaped) in a :func:`keyword_haystack`: every occurrence,
    overlapping ones too (a Rust automaton: the haystack is a whole event, where pyahocorasick is slow)."""
    payloads = list(literals.values())
    automaton = ahocorasick_rs.BytesAhoCorasick([json_escaped(literal) for literal in literals],
                                                matchkind=ahocorasick_rs.MatchKind.Standard)
    find = automaton.find_matches_as_indexes

    def search(haystack: bytes) -> Found:
        return tuple((KEYWORDS, payloads[i]) for i, _, _ in find(haystack, overlapping=True))
    return search


class Prefilter:
    """Candidate rules (indices into the group's rule list) for an event's fields.

    ``renames`` (Sigma field -> event field) says where the fields the rules name are read from:
    the renamed event field where it is present, else the field itself."""

    def __init__(self, requirements: Sequence[Requirement], renames: dict[str, str] | None = None):
        self.always: tuple[int, ...] = tuple(i for i, req in enumerate(requirements) if not req)
        literal_ids: dict[tuple[str, str], int] = {}
        anchored: dict[tuple[str, str], list[int]] = {}
        # per rule: the clauses other than its anchor, as sets of literal ids
        self.others: dict[int, tuple[frozenset[int], ...]] = {}
        for index, requirement in enumerate(requirements):
            if not requirement:
                continue
            anchor = min(requirement, key=clause_cost)
            for pair in sorted(anchor):
                anchored.setdefault(pair, []).append(index)
            for clause in requirement:
                for pair in clause:
                    literal_ids.setdefault(pair, len(literal_ids))
            self.others[index] = tuple(
                frozenset(literal_ids[pair] for pair in clause) for clause in requirement if clause is not anchor
            )
        by_field: dict[str, dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]] = {}
        for (name, literal), literal_id in literal_ids.items():
            rules = sorted(set(anchored.get((name, literal), ())))
            direct = tuple(r for r in rules if not self.others[r])
            checked = tuple(r for r in rules if self.others[r])
            by_field.setdefault(name, {})[literal] = (literal_id, direct, checked)
        renames = renames or {}
        scans: list[Scan] = []
        self.keyword_search: Callable[[bytes], Found] | None = None
        self.keyword_rules: frozenset[int] = frozenset()  # anchored on keywords: candidates where the text is unknown
        for name, literals in sorted(by_field.items()):
            numbers = {float(literal[1:]): payload for literal, payload in literals.items() if literal[:1] == NUMBER}
            texts = {literal: payload for literal, payload in literals.items() if literal[:1] != NUMBER}
            if name == KEYWORDS:
                self.keyword_search = _keyword_search(texts)
                self.keyword_rules = frozenset(r for _, direct, checked in texts.values() for r in (*direct, *checked))
                continue
            search = None
            if texts:
                automaton = ahocorasick.Automaton()
                for literal, payload in texts.items():
                    automaton.add_word(literal, payload)
                automaton.make_automaton()
                search = automaton.iter
            scans.append((name, renames.get(name), search, numbers or None, {}))
        self.scans: tuple[Scan, ...] = tuple(scans)
        self.sources: frozenset[str] = frozenset(
            f for name, source, *_ in scans for f in ((name,) if source is None else (name, source)))

    def candidates(self, flat: dict[str, Any], haystack: Callable[[], bytes | None]) -> Sequence[int]:
        """Sorted indices of the rules that may match the event: ``flat`` holds (at least) the event's
        fields in :attr:`sources`, as the event names them (before renames); ``haystack()`` gives
        the keyword text (see :func:`keyword_haystack`), asked for only where keyword literals exist."""
        hits: list[tuple[Any, Payload]] = []  # (where, payload) of every literal found
        extend = hits.extend
        for name, source, search, numbers, memo in self.scans:
            value = flat.get(name) if source is None else flat.get(source)
            if value is None:
                if source is None:
                    continue
                value = flat.get(name)
                if value is None:
                    continue
            if value.__class__ is str and len(value) <= MEMO_LENGTH or value.__class__ is int:
                found = memo.get(value)
                if found is None:
                    if len(memo) >= MEMO_SIZE:
                        memo.clear()
                    found = memo[value] = _find(value, search, numbers)
            else:
                found = _find(value, search, numbers)
            if found:
                extend(found)
        if self.keyword_search is not None:
            text = haystack()
            if text is None:
                extend((KEYWORDS, (-1, (rule,), ())) for rule in self.keyword_rules)
            else:
                extend(self.keyword_search(text))
        if not hits:
            return self.always
        found: set[int] = set()
        seen: set[int] = set()
        triggered: list[int] = []
        for _, (literal_id, direct, checked) in hits:
            seen.add(literal_id)
            if direct:
                found.update(direct)
            if checked:
                triggered += checked
        others = self.others
        for rule in triggered:
            if rule not in found:
                for clause in others[rule]:
                    if seen.isdisjoint(clause):
                        break
                else:
                    found.add(rule)
        if not found:
            return self.always
        if self.always:
            found.update(self.always)
        return sorted(found)
