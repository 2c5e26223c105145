"""Prefilter: which rules of a group can possibly match an event.

Each rule carries a requirement (engine/sigma/compile.py): clauses of
``(field, literal)`` pairs; the rule can only match an event where every clause has
a literal in the event's lower-cased field. The prefilter builds one Aho-Corasick
automaton per field over all literals of the group and runs it once per field per
event; each literal hit marks the (rule, clause) pairs it satisfies, and a rule is a
candidate when all its clauses are marked. Rules without a requirement are always
candidates. Only candidates are fully evaluated.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ahocorasick

from engine.sigma.compile import KEYWORDS, MAX_CLAUSES, Requirement


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


_SHIFT = 3  # a (rule, clause) pair is encoded as rule << _SHIFT | clause


class Prefilter:
    """Candidate rules (indices into the group's rule list) for an event's lowered fields."""

    def __init__(self, requirements: Sequence[Requirement]):
        assert MAX_CLAUSES <= 1 << _SHIFT
        self.always: tuple[int, ...] = tuple(i for i, req in enumerate(requirements) if not req)
        self.needed: dict[int, int] = {i: len(req) for i, req in enumerate(requirements) if req}
        by_field: dict[str, dict[str, set[int]]] = {}
        for index, requirement in enumerate(requirements):
            for clause_no, clause in enumerate(requirement or ()):
                for name, literal in clause:
                    by_field.setdefault(name, {}).setdefault(literal, set()).add(index << _SHIFT | clause_no)
        self.automata: list[tuple[str, Any]] = []
        self.keyword_search: Any = None
        for name, literals in sorted(by_field.items()):
            automaton = ahocorasick.Automaton()
            for literal, pairs in literals.items():
                # rules with a single clause are candidates on any hit: no counting needed
                direct = tuple(sorted(p >> _SHIFT for p in pairs if self.needed[p >> _SHIFT] == 1))
                counted = tuple(sorted(p for p in pairs if self.needed[p >> _SHIFT] > 1))
                automaton.add_word(literal, (direct, counted))
            automaton.make_automaton()
            if name == KEYWORDS:
                self.keyword_search = automaton.iter
            else:
                self.automata.append((name, automaton.iter))
        self.size = len(requirements)

    def candidates(self, low: dict[str, Any]) -> list[int]:
        """Sorted indices of the rules that may match the event (``low``: lowered fields)."""
        found: set[int] = set(self.always)
        pairs: set[int] = set()
        for name, search in self.automata:
            text = low.get(name)
            if text.__class__ is not str:
                if text is None:
                    continue
                text = field_text(text)
                if not text:
                    continue
            for _, (direct, counted) in search(text):
                if direct:
                    found.update(direct)
                if counted:
                    pairs.update(counted)
        if self.keyword_search is not None and low.get(KEYWORDS):
            for _, (direct, counted) in self.keyword_search("\n".join(low[KEYWORDS])):
                found.update(direct)
                pairs.update(counted)
        if pairs:
            counts: dict[int, int] = {}
            for pair in pairs:
                rule = pair >> _SHIFT
                counts[rule] = counts.get(rule, 0) + 1
            needed = self.needed
            found.update(rule for rule, count in counts.items() if count == needed[rule])
        return sorted(found)
