"""Prefilter: which rules of a group can possibly match an event.

Each rule carries a requirement (engine/sigma/compile.py): ``(field, literal)`` pairs
one of which must occur in the event's lower-cased field for the rule to match, or
None. The prefilter builds one Aho-Corasick automaton per field over all literals of
the group, runs it once per field per event, and returns the rules whose literal was
seen plus the rules without a requirement. Only those are fully evaluated.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ahocorasick

from engine.sigma.compile import KEYWORDS, Requirement


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


class Prefilter:
    """Candidate rules (indices into the group's rule list) for an event's lowered fields."""

    def __init__(self, requirements: Sequence[Requirement]):
        self.always: frozenset[int] = frozenset(i for i, req in enumerate(requirements) if req is None)
        by_field: dict[str, dict[str, set[int]]] = {}
        for index, requirement in enumerate(requirements):
            for name, literal in requirement or ():
                by_field.setdefault(name, {}).setdefault(literal, set()).add(index)
        self.automata: list[tuple[str, Any]] = []
        for name, literals in by_field.items():
            automaton = ahocorasick.Automaton()
            for literal, rules in literals.items():
                automaton.add_word(literal, tuple(sorted(rules)))
            automaton.make_automaton()
            self.automata.append((name, automaton.iter))
        self.size = len(requirements)

    def candidates(self, low: dict[str, Any]) -> list[int]:
        """Sorted indices of the rules that may match the event (``low``: lowered fields)."""
        hits = set(self.always)
        for name, search in self.automata:
            value = low.get(name)
            if value is None:
                continue
            if name == KEYWORDS:
                text = "\n".join(value)
            elif value.__class__ is str:
                text = value
            else:
                text = field_text(value)
                if not text:
                    continue
            for _, rules in search(text):
                hits.update(rules)
        return sorted(hits)
