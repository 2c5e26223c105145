"""Lower a pySigma condition tree into plain data: the IR core/sigma/compile.py builds matchers from.

The IR is nested lists of str, int, float, bool and None only (JSON as it is), so the
work of parsing a rule can be cached on disk. One node per matcher the compiler builds:

    ["and", [node, ...]]                       every child (nested ANDs flattened)
    ["or", [node, ...]]                        any child (nested ORs flattened, string tests of
                                               one field grouped into one "str" node, first)
    ["expand", field | None, [node, ...]]      an |expand value (None: a keyword): any child
    ["not", node]
    ["str", field, cased, [pattern, ...]]      any of the patterns, a pattern being
                                               [kind, text, literal] (see :func:`pattern`)
    ["null", field]   ["exists", field, wanted]   ["bool", field, wanted]
    ["num", field, number]   ["cmp", field, op, number]   ["tpart", field, part, number]
    ["re", field, source, flags]   ["cidr", field, network]
    ["fieldref", field, other, starts, ends]
    ["kw", cased, pattern]   ["kwre", source, flags]   (keywords)

``op`` is a :class:`sigma.types.CompareOperators` name, ``part`` a
:class:`sigma.types.TimestampPart` name, ``flags`` Python ``re`` flags. Every error a
rule value can cause is raised here (:class:`CompileError`), so a rule that lowers
compiles.
"""
from __future__ import annotations

import re
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.types import (
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
)

from opmas.core.errors import Code, code_of
from opmas.core.sigma.regex import compile_regex

Node = list[Any]


class CompileError(ValueError):
    """A rule value that cannot be evaluated (e.g. an unresolved placeholder), with its diagnostic code."""

    def __init__(self, message: str, code: Code = Code.DETECTION_UNSUPPORTED):
        self.code = code
        super().__init__(message)


def pattern(value: SigmaString, cased: bool) -> list[str]:
    """A Sigma string as ``[kind, text, literal]``.

    ``kind`` is "eq", "contains", "startswith", "endswith", "any" or "regex"; ``text`` the
    literal (lower-cased unless ``cased``) or, for "regex", the regex source; ``literal``
    the longest plain part, a substring every match contains."""
    parts: list[Any] = []
    for part in value.s:
        if isinstance(part, str):
            parts.append(part if cased else part.lower())
        elif isinstance(part, SpecialChars):
            parts.append(part)
        else:
            raise CompileError(f"placeholder %{part.name}% has no configured value (use |expand "
                               "with a placeholders: entry in a mapping file)", Code.PLACEHOLDER_UNDEFINED)
    plain = [p for p in parts if isinstance(p, str)]
    literal = max(plain, key=len) if plain else ""
    multi = SpecialChars.WILDCARD_MULTI
    if not parts:
        return ["eq", "", ""]
    if all(isinstance(p, str) for p in parts):
        return ["eq", "".join(parts), literal]
    if all(p is multi for p in parts):
        return ["any", "", ""]
    if len(parts) == 3 and parts[0] is multi and parts[2] is multi and isinstance(parts[1], str):
        return ["contains", parts[1], literal]
    if len(parts) == 2 and isinstance(parts[0], str) and parts[1] is multi:
        return ["startswith", parts[0], literal]
    if len(parts) == 2 and parts[0] is multi and isinstance(parts[1], str):
        return ["endswith", parts[1], literal]
    source = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is multi else ".") for p in parts
    )
    return ["regex", source, literal]


def _flat_args(node: Any, kind: type) -> list[Any]:
    """The arguments of ``node``, with those of nested nodes of the same ``kind`` in their place."""
    out: list[Any] = []
    for arg in node.args:
        out.extend(_flat_args(arg, kind) if isinstance(arg, kind) else [arg])
    return out


def _regex(value: SigmaRegularExpression) -> tuple[str, int]:
    """Source and Python flags of a ``|re`` value, checked to compile (RE2, or re where its
    backtracking is bounded: core/sigma/regex.py)."""
    flags = 0
    for flag in value.flags:
        flags |= SigmaRegularExpression.sigma_to_python_flags[flag]
    source = str(value.regexp)
    try:
        compile_regex(source, flags)
    except ValueError as exc:
        raise CompileError(str(exc), code_of(exc, Code.REGEX_INVALID)) from None
    return source, int(flags)


def lower(node: Any) -> Node:
    """The IR of a pySigma condition tree (``SigmaCondition.parse()``)."""
    if isinstance(node, ConditionAND):
        return ["and", [lower(arg) for arg in _flat_args(node, ConditionAND)]]
    if isinstance(node, ConditionOR):
        return ["or", _disjunction(_flat_args(node, ConditionOR))]
    if isinstance(node, ConditionNOT):
        return ["not", lower(node.args[0])]
    if isinstance(node, ConditionFieldEqualsValueExpression):
        return _field_value(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        return _keyword(node.value)
    raise CompileError(f"unsupported condition element {type(node).__name__}")


def lower_conditions(trees: list[Any]) -> Node:
    """The IR of a rule's conditions: several are OR-linked (Sigma: a list of conditions)."""
    if len(trees) == 1:
        return lower(trees[0])
    return lower(ConditionOR(list(trees)))


def _disjunction(args: list[Any]) -> list[Node]:
    """Children of an OR: plain string tests on one field combined into one "str" node per field."""
    grouped: dict[tuple[str, bool], list[list[str]]] = {}
    rest: list[Any] = []
    for arg in args:
        if isinstance(arg, ConditionFieldEqualsValueExpression) and isinstance(arg.value, SigmaString):
            cased = isinstance(arg.value, SigmaCasedString)
            grouped.setdefault((arg.field, cased), []).append(pattern(arg.value, cased))
        else:
            rest.append(arg)
    children: list[Node] = [["str", name, cased, patterns] for (name, cased), patterns in grouped.items()]
    return children + [lower(arg) for arg in rest]


def _field_value(name: str, value: Any) -> Node:
    if isinstance(value, SigmaString):
        cased = isinstance(value, SigmaCasedString)
        return ["str", name, cased, [pattern(value, cased)]]
    if isinstance(value, SigmaExpansion):
        return ["expand", name, _disjunction([ConditionFieldEqualsValueExpression(name, v) for v in value.values])]
    if isinstance(value, SigmaNull):
        return ["null", name]
    if isinstance(value, SigmaExists):
        return ["exists", name, value.exists]
    if isinstance(value, SigmaBool):
        return ["bool", name, value.boolean]
    if isinstance(value, SigmaTimestampPart):
        return ["tpart", name, value.timestamp_part.name, value.number]
    if isinstance(value, SigmaNumber):
        return ["num", name, value.number]
    if isinstance(value, SigmaRegularExpression):
        return ["re", name, *_regex(value)]
    if isinstance(value, SigmaCIDRExpression):
        return ["cidr", name, str(value.network)]
    if isinstance(value, SigmaCompareExpression):
        return ["cmp", name, value.op.name, value.number.number]
    if isinstance(value, SigmaFieldReference):
        return ["fieldref", name, value.field, value.starts_with, value.ends_with]
    raise CompileError(f"unsupported value type {type(value).__name__} for field {name}")


def _keyword(value: Any) -> Node:
    """A keyword searches the event's keyword texts (substring, Sigma wildcards allowed)."""
    if isinstance(value, SigmaExpansion):
        return ["expand", None, _disjunction([ConditionValueExpression(v) for v in value.values])]
    if isinstance(value, SigmaRegularExpression):
        return ["kwre", *_regex(value)]
    if isinstance(value, SigmaNumber):
        value = SigmaString(str(value.number))
    if not isinstance(value, SigmaString):
        raise CompileError(f"unsupported keyword value type {type(value).__name__}")
    cased = isinstance(value, SigmaCasedString)
    return ["kw", cased, pattern(value, cased)]
