"""Compile a condition into one closure ``match(flat, low) -> bool``.

A pySigma condition tree is first lowered to plain data (core/sigma/ir.py: every rule
error is found there, and the IR can be cached), then :func:`compile_ir` builds the closure.
``flat`` maps field names to the event's values (see core/logsource.py); ``low``
holds the same values with strings lower-cased once per event (lists element-wise),
plus the keyword texts under :data:`KEYWORDS` / :data:`KEYWORDS_RAW`. Case folding of
rule values and wildcard translation happen in the lowering, regex compilation (``|re`` values and
wildcard patterns, both run by RE2 in linear time: core/sigma/regex.py) here, once.

Alongside the matcher, :func:`compile_ir` derives the rule's *requirement*
for the prefilter (see core/sigma/prefilter.py), in conjunctive form: clauses,
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

from opmas.core.errors import Code, code_of
from opmas.core.event import parse_time
from opmas.core.sigma.ir import CompileError, Node, lower, lower_conditions
from opmas.core.sigma.literals import number_literal, regex_literals
from opmas.core.sigma.regex import compile_regex

__all__ = ["KEYWORDS", "KEYWORDS_RAW", "CompileError", "Compiled", "Matcher", "Requirement", "clause_cost",
           "compile_condition", "compile_conditions", "compile_ir", "literal_cost"]

Matcher = Callable[[dict[str, Any], dict[str, Any]], bool]
Clause = frozenset[tuple[str, str]]
Requirement = tuple[Clause, ...] | None
Pattern = list[str]  # [kind, text, literal]: see opmas.core.sigma.ir.pattern
MAX_CLAUSES = 3

KEYWORDS = "\x00keywords"  # key in ``low``: lower-cased keyword texts of the event
KEYWORDS_RAW = "\x00keywords_raw"  # key in ``low``: keyword texts as they are

_MISSING = object()


@dataclass(slots=True)
class Compiled:
    """A compiled condition: the matcher, its prefilter requirement, the fields it reads."""

    match: Matcher
    requirement: Requirement
    fields: set[str] = field(default_factory=set)
    keywords: bool = False


# --- string patterns -------------------------------------------------------------

def _string_test(patterns: list[Pattern]) -> Callable[[str], bool]:
    """One test for OR-linked patterns, grouped by kind so each kind is one operation."""
    by_kind: dict[str, list[str]] = {}
    for kind, text, _ in patterns:
        by_kind.setdefault(kind, []).append(text)
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
        elif kind == "regex":
            # wildcards: linear time whatever their number (".*a.*a.*a.*b" backtracks polynomially in re)
            tests.append(compile_regex("|".join(f"(?:{t})" for t in texts), re.DOTALL, full=True).test)
        else:
            raise CompileError(f"unknown string pattern kind {kind!r}")
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


_COMPARE: dict[str, Callable[[float, float], bool]] = {  # by CompareOperators name
    "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b,
    "GT": lambda a, b: a > b,
    "GTE": lambda a, b: a >= b,
    "NEQ": lambda a, b: a != b,
}

_TIME_PART: dict[str, Callable[[datetime], int]] = {  # by TimestampPart name
    "MINUTE": lambda d: d.minute,
    "HOUR": lambda d: d.hour,
    "DAY": lambda d: d.day,
    "WEEK": lambda d: d.isocalendar()[1],
    "MONTH": lambda d: d.month,
    "YEAR": lambda d: d.year,
}


# --- compiler --------------------------------------------------------------------

class _Compiler:
    """Builds the matcher and requirement of each IR node, collecting the fields and keywords read."""

    def __init__(self) -> None:
        self.fields: set[str] = set()
        self.keywords = False

    def node(self, node: Node) -> tuple[Matcher, Requirement]:
        build = _BUILDERS.get(node[0])
        if build is None:
            raise CompileError(f"unsupported condition element {node[0]!r}")
        return build(self, *node[1:])

    def conjunction(self, children: list[Node]) -> tuple[Matcher, Requirement]:
        parts = [self.node(child) for child in children]
        matchers = tuple(m for m, _ in parts)
        clauses = sorted({c for _, r in parts if r for c in r}, key=clause_cost)[:MAX_CLAUSES]
        requirement = tuple(clauses) or None
        if len(matchers) == 1:
            return matchers[0], requirement
        if len(matchers) == 2:
            first, second = matchers
            return (lambda flat, low: first(flat, low) and second(flat, low)), requirement
        return _all_of(matchers), requirement

    def disjunction(self, children: list[Node]) -> tuple[Matcher, Requirement]:
        parts = [self.node(child) for child in children]
        matchers = tuple(m for m, _ in parts)
        requirements = [r for _, r in parts]
        requirement = None if any(r is None for r in requirements) else \
            (frozenset().union(*(min(r, key=clause_cost) for r in requirements if r)),)
        if len(matchers) == 1:
            return matchers[0], requirement
        return _any_of(matchers), requirement

    def expansion(self, name: str | None, children: list[Node]) -> tuple[Matcher, Requirement]:
        if name is None:
            self.keywords = True
        else:
            self.fields.add(name)
        return self.disjunction(children)

    def negation(self, child: Node) -> tuple[Matcher, Requirement]:
        inner, _ = self.node(child)
        return (lambda flat, low: not inner(flat, low)), None

    def string_field(self, name: str, cased: bool, patterns: list[Pattern]) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        literals = [literal.lower() for _, _, literal in patterns]
        requirement = None if any(not lit for lit in literals) else (frozenset((name, lit) for lit in literals),)
        return _string_leaf(name, _string_test(patterns), cased), requirement

    def null(self, name: str) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        return (lambda flat, low: flat.get(name) is None), None

    def exists(self, name: str, wanted: bool) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        return (lambda flat, low: (name in flat) is wanted), None

    def boolean(self, name: str, wanted: bool) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        wanted_text = "true" if wanted else "false"
        return _string_leaf(name, wanted_text.__eq__, False), (frozenset({(name, wanted_text)}),)

    def time_part(self, name: str, part_name: str, number: int) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        part = _TIME_PART[part_name]

        def time_part(v: Any) -> bool:
            epoch = parse_time(v)
            return epoch is not None and part(datetime.fromtimestamp(epoch, tz=timezone.utc)) == number
        return _raw_leaf(name, time_part), None

    def number(self, name: str, number: float) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        # a number literal, not text: 1.0, "1" and "0x1" are all the number 1 (core/sigma/prefilter.py)
        exact = float(number) == number  # a float key finds the number (ints beyond 2**53 would not)
        requirement = (frozenset({(name, number_literal(number))}),) if exact else None
        return _raw_leaf(name, lambda v: _number(v) == number), requirement

    def regex(self, name: str, source: str, flags: int) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        return _regex_leaf(name, source, flags, lambda key, test: _string_leaf(key, test, True))

    def cidr(self, name: str, network_text: str) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        network = ipaddress.ip_network(network_text)

        def in_network(v: Any) -> bool:
            address = _ip(v) if isinstance(v, str) else None
            return address is not None and address in network
        return _raw_leaf(name, in_network), None

    def compare(self, name: str, op_name: str, limit: float) -> tuple[Matcher, Requirement]:
        self.fields.add(name)
        op = _COMPARE[op_name]

        def compare(v: Any) -> bool:
            number = _number(v)
            return number is not None and op(number, limit)
        return _raw_leaf(name, compare), None

    def field_reference(self, name: str, other: str, starts_with: bool, ends_with: bool
                        ) -> tuple[Matcher, Requirement]:
        self.fields.update((name, other))
        if starts_with and ends_with:
            def relation(a: str, b: str) -> bool:
                return b in a
        elif starts_with:
            relation = str.startswith
        elif ends_with:
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
        return match, None

    def keyword(self, cased: bool, pattern: Pattern) -> tuple[Matcher, Requirement]:
        """A keyword searches the event's keyword texts (substring, Sigma wildcards allowed)."""
        self.keywords = True
        kind, text, literal = pattern
        key = KEYWORDS_RAW if cased else KEYWORDS
        if kind == "regex" or kind in ("startswith", "endswith"):
            source = text if kind == "regex" else re.escape(text)
            test = compile_regex(source, re.DOTALL).test
        elif kind == "any":
            def test(text: str) -> bool:
                return True
        else:
            needle = text

            def test(text: str) -> bool:
                return needle in text
        requirement = (frozenset({(KEYWORDS, literal.lower())}),) if literal else None
        return _any_text_leaf(key, test), requirement

    def keyword_regex(self, source: str, flags: int) -> tuple[Matcher, Requirement]:
        self.keywords = True
        return _regex_leaf(KEYWORDS_RAW, source, flags, _any_text_leaf, KEYWORDS)


_BUILDERS: dict[str, Callable[..., tuple[Matcher, Requirement]]] = {  # IR node tag -> _Compiler method
    "and": _Compiler.conjunction, "or": _Compiler.disjunction, "expand": _Compiler.expansion,
    "not": _Compiler.negation, "str": _Compiler.string_field, "null": _Compiler.null, "exists": _Compiler.exists,
    "bool": _Compiler.boolean, "tpart": _Compiler.time_part, "num": _Compiler.number, "re": _Compiler.regex,
    "cidr": _Compiler.cidr, "cmp": _Compiler.compare, "fieldref": _Compiler.field_reference,
    "kw": _Compiler.keyword, "kwre": _Compiler.keyword_regex,
}


def _regex_leaf(name: str, source: str, flags: int, leaf: Callable[[str, Callable[[str], bool]], Matcher],
                prefilter_name: str | None = None) -> tuple[Matcher, Requirement]:
    """A ``|re`` test of ``name`` and its requirement (under ``prefilter_name`` if given)."""
    try:
        test = compile_regex(source, flags).test
    except ValueError as exc:
        raise CompileError(str(exc), code_of(exc, Code.REGEX_INVALID)) from None
    literals = regex_literals(source, flags)
    key = prefilter_name or name
    requirement = (frozenset((key, lit) for lit in literals),) if literals else None
    return leaf(name, test), requirement


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


@lru_cache(maxsize=65536)  # requirements compare the same clauses many times
def clause_cost(clause: Clause) -> tuple[float, int]:
    """Estimated chance a clause is satisfied (lower = more selective)."""
    return (sum(literal_cost(lit) for _, lit in clause), len(clause))


def compile_ir(ir: Node) -> Compiled:
    """Compile the IR of a condition (core/sigma/ir.py) into a :class:`Compiled`."""
    compiler = _Compiler()
    match, requirement = compiler.node(ir)
    return Compiled(match, requirement, compiler.fields, compiler.keywords)


def compile_condition(tree: Any) -> Compiled:
    """Compile a pySigma condition tree (``SigmaCondition.parse()``) into a :class:`Compiled`."""
    return compile_ir(lower(tree))


def compile_conditions(trees: list[Any]) -> Compiled:
    """Several conditions of one rule are OR-linked (Sigma: a list of conditions)."""
    return compile_ir(lower_conditions(trees))
