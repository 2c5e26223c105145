"""Prefilter: which rules of a group can possibly match an event.

Each rule carries a requirement (engine/sigma/compile.py): clauses of
``(field, literal)`` pairs; the rule can only match an event where every clause has
a literal in the event's lower-cased field. The prefilter builds one Aho-Corasick
automaton per field over all literals of the group and runs it once per field per
event. A rule is indexed under the literals of its most selective clause (its
anchor); when one of those is seen, the rule's other clauses are checked against
the set of literals seen in the event. Rules without a requirement are always
candidates. Only candidates are fully evaluated.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ahocorasick

from engine.sigma.compile import KEYWORDS, Requirement, clause_cost


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
        self.automata: list[tuple[str, Any]] = []
        self.keyword_search: Any = None
        for name, literals in sorted(by_field.items()):
            automaton = ahocorasick.Automaton()
            for literal, payload in literals.items():
                automaton.add_word(literal, payload)
            automaton.make_automaton()
            if name == KEYWORDS:
                self.keyword_search = automaton.iter
            else:
                self.automata.append((name, automaton.iter))

    def candidates(self, low: dict[str, Any]) -> Sequence[int]:
        """Sorted indices of the rules that may match the event (``low``: lowered fields)."""
        found: set[int] = set()
        seen: set[int] = set()
        triggered: list[int] = []
        for name, search in self.automata:
            text = low.get(name)
            if text.__class__ is not str:
                if text is None:
                    continue
                text = field_text(text)
                if not text:
                    continue
            for _, (literal_id, direct, checked) in search(text):
                seen.add(literal_id)
                if direct:
                    found.update(direct)
                if checked:
                    triggered += checked
        if self.keyword_search is not None and low.get(KEYWORDS):
            for _, (literal_id, direct, checked) in self.keyword_search("\n".join(low[KEYWORDS])):
                seen.add(literal_id)
                found.update(direct)
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
