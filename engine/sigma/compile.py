"""Compile a pySigma condition tree into one closure ``match(flat, low) -> bool``.

``flat`` maps field names to the event's values (see engine/logsource.py); ``low``
holds the same values with strings lower-cased once per event (lists element-wise),
plus the keyword texts under :data:`KEYWORDS` / :data:`KEYWORDS_RAW`. Case folding of
rule values, wildcard translation and regex compilation (``|re``: engine/sigma/regex.py) all happen
here, once.

Alongside the matcher, :func:`compile_condition` derives the rule's *requirement*
for the prefilter (see engine/sigma/prefilter.py), in conjunctive form: clauses,
each a set of ``(field, literal)`` pairs, such that the rule can only match an event
where every clause has a literal occurring in the lower-cased value of its field.
AND concatenates its children's clauses (keeping the most selective few), OR unions
each child's best clause into one, NOT and untestable values give no clause;
``None`` means no requirement (always a candidate).
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import ahocorasick
from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from engine.event import parse_time
from engine.sigma.literals import regex_literals
from engine.sigma.regex import compile_search

Matcher = Callable[[dict[str, Any], dict[str, Any]], bool]
Clause = frozenset[tuple[str, str]]
Requirement = tuple[Clause, ...] | None
MAX_CLAUSES = 3

KEYWORDS = "\x00keywords"  # key in ``low``: lower-cased keyword texts of the event
KEYWORDS_RAW = "\x00keywords_raw"  # key in ``low``: keyword texts as they are

_MISSING = object()


class CompileError(ValueError):
    """A rule value that cannot be evaluated (e.g. an unresolved placeholder)."""


@dataclass(slots=True)
class Compiled:
    """A compiled condition: the matcher, its prefilter requirement, the fields it reads."""

    match: Matcher
    requirement: Requirement
    fields: set[str] = field(default_factory=set)
    keywords: bool = False


# --- string patterns -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Pattern:
    """A Sigma string reduced to a kind and a (lower-cased unless cased) literal or regex."""

    kind: str  # "eq" | "contains" | "startswith" | "endswith" | "any" | "regex"
    text: str  # the literal, or the regex source for kind "regex"
    literal: str  # longest plain part: a necessary substring


def _pattern(value: SigmaString, cased: bool) -> _Pattern:
    parts: list[Any] = []
    for part in value.s:
        if isinstance(part, str):
            parts.append(part if cased else part.lower())
        elif isinstance(part, SpecialChars):
            parts.append(part)
        else:
            raise CompileError(f"placeholder %{part.name}% has no configured value (use |expand "
                               "with a placeholders: entry in a mapping file)")
    plain = [p for p in parts if isinstance(p, str)]
    literal = max(plain, key=len) if plain else ""
    multi = SpecialChars.WILDCARD_MULTI
    if not parts:
        return _Pattern("eq", "", "")
    if all(isinstance(p, str) for p in parts):
        return _Pattern("eq", "".join(parts), literal)
    if all(p is multi for p in parts):
        return _Pattern("any", "", "")
    if len(parts) == 3 and parts[0] is multi and parts[2] is multi and isinstance(parts[1], str):
        return _Pattern("contains", parts[1], literal)
    if len(parts) == 2 and isinstance(parts[0], str) and parts[1] is multi:
        return _Pattern("startswith", parts[0], literal)
    if len(parts) == 2 and parts[0] is multi and isinstance(parts[1], str):
        return _Pattern("endswith", parts[1], literal)
    source = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is multi else ".") for p in parts
    )
    return _Pattern("regex", source, literal)


def _string_test(patterns: list[_Pattern]) -> Callable[[str], bool]:
    """One test for OR-linked patterns, grouped by kind so each kind is one operation."""
    by_kind: dict[str, list[str]] = {}
    for p in patterns:
        by_kind.setdefault(p.kind, []).append(p.text)
    tests: list[Callable[[str], bool]] = []
    for kind, texts in by_kind.items():
        if kind == "eq":
            if len(texts) == 1:
                tests.append(texts[0].__eq__)
            else:
                tests.append(frozenset(texts).__contains__)
        elif kind == "any":
            tests.append(lambda v: True)
        elif kind == "startswith":
            prefixes = tuple(texts)
            tests.append(lambda v, t=prefixes: v.startswith(t))
        elif kind == "endswith":
            suffixes = tuple(texts)
            tests.append(lambda v, t=suffixes: v.endswith(t))
        elif kind == "contains":
            tests.append(_contains_any(texts))
        else:
            rx = re.compile("|".join(f"(?:{t})" for t in texts), re.DOTALL)
            tests.append(lambda v, m=rx.fullmatch: m(v) is not None)
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(t(v) for t in tests)


def _contains_any(texts: list[str]) -> Callable[[str], bool]:
    if len(texts) == 1:
        needle = texts[0]
        return lambda v: needle in v
    if len(texts) <= 6:
        needles = tuple(texts)
        return lambda v: any(n in v for n in needles)
    automaton = ahocorasick.Automaton()
    for text in texts:
        automaton.add_word(text, text)
    automaton.make_automaton()
    first = automaton.iter
    return lambda v: next(first(v), None) is not None


# --- value access ----------------------------------------------------------------

def _text_of(value: Any, cased: bool) -> str | None:
    """A non-string scalar as the text Sigma compares it with (numbers as written)."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if cased else text.lower()


def _texts(value: Any) -> list[str]:
    """The texts of a lower-cased value (each element of a list) as string tests see them."""
    items = value if isinstance(value, list) else [value]
    texts = (item if isinstance(item, str) else _text_of(item, False) for item in items)
    return [text for text in texts if text is not None]


def _string_leaf(name: str, test: Callable[[str], bool], cased: bool) -> Matcher:
    """Apply a string test to a field (lists: any element; numbers: their text)."""

    def slow(value: Any) -> bool:
        if isinstance(value, list):
            return any(slow(item) for item in value)
        text = value if isinstance(value, str) else _text_of(value, cased)
        return text is not None and test(text)

    if cased:
        def match(flat: dict[str, Any], low: dict[str, Any]) -> bool:
            v = flat.get(name)
            if v.__class__ is str:
                return test(v)
            return v is not None and slow(v)
    else:
        def match(flat: dict[str, Any], low: dict[str, Any]) -> bool:
            v = low.get(name)
            if v.__class__ is str:
                return test(v)
            return v is not None and slow(v)
    return match


def _raw_leaf(name: str, test: Callable[[Any], bool]) -> Matcher:
    """Apply ``test`` to the raw value (each element of a list)."""

    def match(flat: dict[str, Any], low: dict[str, Any]) -> bool:
        v = flat.get(name)
        if v is None:
            return False
        if isinstance(v, list):
            return any(item is not None and test(item) for item in v)
        return test(v)
    return match


# numeric text: plain decimal or float notation, or hex (no "inf", "nan", "1_000")
_NUMERIC = re.compile(r"(?P<hex>0[xX][0-9a-fA-F]+)|[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        found = _NUMERIC.fullmatch(value.strip())
        if found is None:
            return None
        return int(found["hex"], 16) if found["hex"] else float(found[0])
    return None


@lru_cache(maxsize=65536)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


_COMPARE: dict[CompareOperators, Callable[[float, float], bool]] = {
    CompareOperators.LT: lambda a, b: a < b,
    CompareOperators.LTE: lambda a, b: a <= b,
    CompareOperators.GT: lambda a, b: a > b,
    CompareOperators.GTE: lambda a, b: a >= b,
    CompareOperators.NEQ: lambda a, b: a != b,
}

_TIME_PART: dict[TimestampPart, Callable[[datetime], int]] = {
    TimestampPart.MINUTE: lambda d: d.minute,
    TimestampPart.HOUR: lambda d: d.hour,
    TimestampPart.DAY: lambda d: d.day,
    TimestampPart.WEEK: lambda d: d.isocalendar()[1],
    TimestampPart.MONTH: lambda d: d.month,
    TimestampPart.YEAR: lambda d: d.year,
}


# --- compiler --------------------------------------------------------------------

class _Compiler:
    def __init__(self) -> None:
        self.fields: set[str] = set()
        self.keywords = False

    def node(self, node: Any) -> tuple[Matcher, Requirement]:
        if isinstance(node, ConditionAND):
            return self.conjunction(node)
        if isinstance(node, ConditionOR):
            return self.disjunction(node)
        if isinstance(node, ConditionNOT):
            inner, _ = self.node(node.args[0])
            return (lambda flat, low: not inner(flat, low)), None
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.field_value(node.field, node.value)
        if isinstance(node, ConditionValueExpression):
            return self.keyword(node.value)
        raise CompileError(f"unsupported condition element {type(node).__name__}")

    @staticmethod
    def _flat_args(node: Any, kind: type) -> list[Any]:
        out: list[Any] = []
        for arg in node.args:
            out.extend(_Compiler._flat_args(arg, kind) if isinstance(arg, kind) else [arg])
        return out

    def conjunction(self, node: ConditionAND) -> tuple[Matcher, Requirement]:
        parts = [self.node(arg) for arg in self._flat_args(node, ConditionAND)]
        matchers = tuple(m for m, _ in parts)
        clauses = sorted({c for _, r in parts if r for c in r}, key=clause_cost)[:MAX_CLAUSES]
        requirement = tuple(clauses) or None
        if len(matchers) == 1:
            return matchers[0], requirement
        if len(matchers) == 2:
            first, second = matchers
            return (lambda flat, low: first(flat, low) and second(flat, low)), requirement
        return _all_of(matchers), requirement

    def disjunction(self, node: ConditionOR) -> tuple[Matcher, Requirement]:
        args = self._flat_args(node, ConditionOR)
        # Combine plain string tests on the same field into one test per field.
        grouped: dict[tuple[str, bool], list[_Pattern]] = {}
        rest: list[Any] = []
        for arg in args:
            if isinstance(arg, ConditionFieldEqualsValueExpression) and isinstance(arg.value, SigmaString):
                cased = isinstance(arg.value, SigmaCasedString)
                grouped.setdefault((arg.field, cased), []).append(_pattern(arg.value, cased))
            else:
                rest.append(arg)
        parts = [self.string_field(name, pats, cased) for (name, cased), pats in grouped.items()]
        parts += [self.node(arg) for arg in rest]
        matchers = tuple(m for m, _ in parts)
        requirements = [r for _, r in parts]
        requirement = None if any(r is None for r in requirements) else \
            (frozenset().union(*(min(r, key=clause_cost) for r in requirements if r)),)
        if len(matchers) == 1:
            return matchers[0], requirement
        return _any_of(matchers), requirement

    def string_field(self, name: str, patterns: list[_Pattern], cased: bool) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        literals = [p.literal.lower() for p in patterns]
        requirement = None if any(not lit for lit in literals) else (frozenset((name, lit) for lit in literals),)
        return _string_leaf(name, _string_test(patterns), cased), requirement

    def field_value(self, name: str, value: Any) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        if isinstance(value, SigmaString):
            cased = isinstance(value, SigmaCasedString)
            return self.string_field(name, [_pattern(value, cased)], cased)
        if isinstance(value, SigmaExpansion):
            return self.disjunction(ConditionOR([ConditionFieldEqualsValueExpression(name, v) for v in value.values]))
        if isinstance(value, SigmaNull):
            return (lambda flat, low: flat.get(name) is None), None
        if isinstance(value, SigmaExists):
            wanted = value.exists
            return (lambda flat, low: (name in flat) is wanted), None
        if isinstance(value, SigmaBool):
            wanted_text = "true" if value.boolean else "false"
            return _string_leaf(name, wanted_text.__eq__, False), (frozenset({(name, wanted_text)}),)
        if isinstance(value, SigmaTimestampPart):
            part, number = _TIME_PART[value.timestamp_part], value.number

            def time_part(v: Any) -> bool:
                epoch = parse_time(v)
                return epoch is not None and part(datetime.fromtimestamp(epoch, tz=timezone.utc)) == number
            return _raw_leaf(name, time_part), None
        if isinstance(value, SigmaNumber):
            number = value.number
            # no prefilter literal: 1.0, "1" and "0x1" are all the number 1
            return _raw_leaf(name, lambda v: _number(v) == number), None
        if isinstance(value, SigmaRegularExpression):
            return self.regex(name, value, lambda key, test: _string_leaf(key, test, True))
        if isinstance(value, SigmaCIDRExpression):
            network = value.network

            def in_network(v: Any) -> bool:
                address = _ip(v) if isinstance(v, str) else None
                return address is not None and address in network
            return _raw_leaf(name, in_network), None
        if isinstance(value, SigmaCompareExpression):
            op, limit = _COMPARE[value.op], value.number.number

            def compare(v: Any) -> bool:
                number = _number(v)
                return number is not None and op(number, limit)
            return _raw_leaf(name, compare), None
        if isinstance(value, SigmaFieldReference):
            return self.field_reference(name, value), None
        raise CompileError(f"unsupported value type {type(value).__name__} for field {name}")

    def regex(self, name: str, value: SigmaRegularExpression,
              leaf: Callable[[str, Callable[[str], bool]], Matcher],
              prefilter_name: str | None = None) -> tuple[Matcher, Requirement]:
        flags = 0
        for flag in value.flags:
            flags |= SigmaRegularExpression.sigma_to_python_flags[flag]
        source = str(value.regexp)
        try:
            search = compile_search(source, flags)
        except ValueError as exc:
            raise CompileError(str(exc)) from None

        def test(text: str) -> bool:
            return search(text) is not None
        literals = regex_literals(source, flags)
        key = prefilter_name or name
        requirement = (frozenset((key, lit) for lit in literals),) if literals else None
        return leaf(name, test), requirement

    def field_reference(self, name: str, value: SigmaFieldReference) -> Matcher:
        other = value.field
        self.fields.add(other)
        if value.starts_with and value.ends_with:
            def relation(a: str, b: str) -> bool:
                return b in a
        elif value.starts_with:
            relation = str.startswith
        elif value.ends_with:
            relation = str.endswith
        else:
            relation = str.__eq__

        def match(flat: dict[str, Any], low: dict[str, Any]) -> bool:
            a, b = low.get(name, _MISSING), low.get(other, _MISSING)
            if a is _MISSING or b is _MISSING:
                return False
            if a.__class__ is str and b.__class__ is str:
                return relation(a, b)
            return a == b or any(relation(x, y) for x in _texts(a) for y in _texts(b))
        return match

    def keyword(self, value: Any) -> tuple[Matcher, Requirement]:
        """A keyword searches the event's keyword texts (substring, Sigma wildcards allowed)."""
        self.keywords = True
        if isinstance(value, SigmaExpansion):
            return self.disjunction(ConditionOR([ConditionValueExpression(v) for v in value.values]))
        if isinstance(value, SigmaRegularExpression):
            return self.regex(KEYWORDS_RAW, value, _any_text_leaf, KEYWORDS)
        if isinstance(value, SigmaNumber):
            value = SigmaString(str(value.number))
        if not isinstance(value, SigmaString):
            raise CompileError(f"unsupported keyword value type {type(value).__name__}")
        cased = isinstance(value, SigmaCasedString)
        pattern = _pattern(value, cased)
        key = KEYWORDS_RAW if cased else KEYWORDS
        if pattern.kind == "regex" or pattern.kind in ("startswith", "endswith"):
            source = pattern.text if pattern.kind == "regex" else re.escape(pattern.text)
            search = re.compile(source, re.DOTALL).search

            def test(text: str) -> bool:
                return search(text) is not None
        elif pattern.kind == "any":
            def test(text: str) -> bool:
                return True
        else:
            needle = pattern.text

            def test(text: str) -> bool:
                return needle in text
        requirement = (frozenset({(KEYWORDS, pattern.literal.lower())}),) if pattern.literal else None
        return _any_text_leaf(key, test), requirement


def _all_of(matchers: tuple[Matcher, ...]) -> Matcher:
    def match(flat: dict[str, Any], low: dict[str, Any]) -> bool:
        for matcher in matchers:
            if not matcher(flat, low):
                return False
        return True
    return match


def _any_of(matchers: tuple[Matcher, ...]) -> Matcher:
    def match(flat: dict[str, Any], low: dict[str, Any]) -> bool:
        for matcher in matchers:
            if matcher(flat, low):
                return True
        return False
    return match


def _any_text_leaf(key: str, test: Callable[[Any], bool]) -> Matcher:
    def match(flat: dict[str, Any], low: dict[str, Any]) -> bool:
        return any(test(text) for text in low.get(key, ()))
    return match


_COMMON = "c:\\windows\\system32\\syswow64\\program files (x86)\\.exe .dll -- / http:// https://"


def literal_cost(literal: str) -> float:
    """Estimated chance a literal occurs in a value: short or very common literals cost more."""
    cost = 1.0 / (1 + len(literal)) ** 2
    if literal in _COMMON:
        cost *= 50
    return cost


def clause_cost(clause: Clause) -> tuple[float, int]:
    """Estimated chance a clause is satisfied (lower = more selective)."""
    return (sum(literal_cost(lit) for _, lit in clause), len(clause))


def compile_condition(tree: Any) -> Compiled:
    """Compile a pySigma condition tree (``SigmaCondition.parse()``) into a :class:`Compiled`."""
    compiler = _Compiler()
    match, requirement = compiler.node(tree)
    return Compiled(match, requirement, compiler.fields, compiler.keywords)


def compile_conditions(trees: list[Any]) -> Compiled:
    """Several conditions of one rule are OR-linked (Sigma: a list of conditions)."""
    if len(trees) == 1:
        return compile_condition(trees[0])
    return compile_condition(ConditionOR(list(trees)))
