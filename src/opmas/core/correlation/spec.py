"""Correlation rules as typed data: parsing and validating one YAML document.

A Sigma correlation rule (SigmaHQ correlation specification 2.0) is a document
with a ``correlation:`` section. ``parse_correlation`` turns it into a
``CorrelationSpec`` or into ``RuleError``s that say file, line, rule and what is
wrong; references to other rules are resolved later by ``opmas.core.correlation.link``.

OPMAS extension (detection and correlation rules alike):
``suppress: {by: [fields], for: DURATION}`` (see ``opmas.core.correlation.suppression``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from opmas.core.errors import Code, RuleError

TYPES = ("event_count", "value_count", "temporal", "temporal_ordered")
OPERATORS = ("gt", "gte", "lt", "lte", "eq")
LEVELS = ("informational", "low", "medium", "high", "critical")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2629746, "y": 31556952}
_TIMESPAN = re.compile(r"([0-9]+)([smhdwMy])")


def parse_duration(value: Any) -> float:
    """Seconds of a Sigma timespan (``30s``, ``5m``, ``2h``, ``1d``; also w, M, y as pySigma).

    Raises ValueError with the reason."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"timespan {value!r} must be a string like '5m'")
    text = str(value).strip()
    match = _TIMESPAN.fullmatch(text)
    if match is None:
        raise ValueError(f"timespan {value!r} is invalid: use a count and a unit (s, m, h, d), e.g. '90m'")
    count = int(match.group(1))
    if count <= 0:
        raise ValueError(f"timespan {value!r} must be greater than zero")
    return float(count * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True, slots=True)
class Condition:
    """The count condition: every bound must hold (several bounds make a range)."""

    bounds: tuple[tuple[str, float], ...]
    field: str | None = None  # value_count: the field whose distinct values are counted

    def holds(self, n: int) -> bool:
        """True where count ``n`` satisfies every bound."""
        for op, limit in self.bounds:
            if op == "gte":
                if n < limit:
                    return False
            elif op == "gt":
                if n <= limit:
                    return False
            elif op == "lte":
                if n > limit:
                    return False
            elif op == "lt":
                if n >= limit:
                    return False
            elif n != limit:  # eq
                return False
        return True

    @property
    def monotone(self) -> bool:
        """Only lower bounds: once true for a window, more events keep it true, so it may fire early."""
        return all(op in ("gt", "gte") for op, _ in self.bounds)

    def satisfiable(self, largest: float = float("inf")) -> bool:
        """Some integer count in 1..largest satisfies the condition."""
        low, high = 1.0, largest
        for op, limit in self.bounds:
            if op == "gte":
                low = max(low, limit)
            elif op == "gt":
                low = max(low, math.floor(limit) + 1.0)
            elif op == "lte":
                high = min(high, limit)
            elif op == "lt":
                high = min(high, math.ceil(limit) - 1.0)
            else:
                low, high = max(low, limit), min(high, limit)
        return math.ceil(low) <= high

    def to_dict(self) -> dict[str, Any]:
        """As written in a rule."""
        out: dict[str, Any] = {op: (int(v) if v == int(v) else v) for op, v in self.bounds}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(frozen=True, slots=True)
class Suppression:
    """``suppress``: findings of one rule with the same ``by`` values within ``seconds`` become one."""

    by: tuple[str, ...]
    seconds: float


@dataclass(slots=True)
class CorrelationSpec:
    """One correlation rule as written (references unresolved)."""

    rule_id: str
    name: str | None
    title: str
    type: str
    rules: list[str]
    group_by: list[str]
    timespan: float
    condition: Condition
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    generate: bool = False
    level: str = "medium"
    tags: list[str] = field(default_factory=list)
    description: str = ""
    finding: dict[str, str] = field(default_factory=dict)  # OPMAS title/description templates
    suppress: Suppression | None = None
    source: str = ""
    line: int | None = None
    ref_lines: dict[str, int] = field(default_factory=dict)  # line of each reference (errors)


def parse_suppression(value: Any) -> Suppression:
    """The ``suppress`` section; raises ValueError with the reason."""
    if not isinstance(value, dict):
        raise ValueError("suppress must be a mapping with 'for' (a duration) and optional 'by' (fields)")
    unknown = set(value) - {"by", "for"}
    if unknown:
        raise ValueError(f"suppress has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    if "for" not in value:
        raise ValueError("suppress needs 'for', a duration such as '10m'")
    seconds = parse_duration(value["for"])
    by = value.get("by", [])
    if isinstance(by, str):
        by = [by]
    if not isinstance(by, list) or not all(isinstance(f, str) and f for f in by):
        raise ValueError("suppress 'by' must be a field name or a list of field names")
    return Suppression(by=tuple(by), seconds=seconds)


def _parse_condition(value: Any, ctype: str, n_rules: int) -> Condition:
    if value is None:
        if ctype in ("temporal", "temporal_ordered"):
            return Condition(bounds=(("gte", float(n_rules)),))
        raise ValueError(f"{ctype} correlation needs a condition (gt, gte, lt, lte, eq)")
    if isinstance(value, str):
        raise ValueError(f"condition {value!r}: extended (boolean) correlation conditions are not supported; "
                         "use a map of gt, gte, lt, lte, eq")
    if not isinstance(value, dict):
        raise ValueError("condition must be a map of gt, gte, lt, lte, eq (and 'field' for value_count)")
    unknown = set(value) - set(OPERATORS) - {"field"}
    if unknown:
        raise ValueError(f"condition has unknown operator(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"use {', '.join(OPERATORS)}")
    bounds = []
    for op in OPERATORS:
        if op in value:
            limit = value[op]
            if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
                raise ValueError(f"condition {op}: {limit!r} is not a non-negative number")
            bounds.append((op, float(limit)))
    if not bounds:
        raise ValueError("condition needs at least one of gt, gte, lt, lte, eq")
    fieldref = value.get("field")
    if ctype == "value_count":
        if not isinstance(fieldref, str) or not fieldref:
            raise ValueError("value_count condition needs 'field': the field whose distinct values are counted")
    elif fieldref is not None:
        raise ValueError(f"condition 'field' is only meaningful for value_count, not {ctype}")
    condition = Condition(bounds=tuple(bounds), field=fieldref)
    largest = float(n_rules) if ctype in ("temporal", "temporal_ordered") else float("inf")
    if not condition.satisfiable(largest):
        raise ValueError(f"condition {condition.to_dict()} can never hold"
                         + (f" with {n_rules} referenced rule(s)" if largest != float("inf") else ""))
    if ctype == "temporal_ordered" and not condition.monotone:
        raise ValueError("temporal_ordered supports only lower bounds (gt, gte): an ordered sequence is "
                         "reported as soon as it is complete")
    return condition


def parse_correlation(doc: dict[str, Any], source: str, line_of: Callable[[tuple], int]
                      ) -> tuple[CorrelationSpec | None, list[RuleError]]:
    """Parse one correlation document; ``line_of(path)`` gives the line of a key path.
    Returns the spec, or None and the errors found (each at the line of the offending key)."""
    rule_id = doc.get("id") or doc.get("name")
    rule_id = str(rule_id) if rule_id is not None else None
    errors: list[RuleError] = []
    line = line_of(())

    def fail(code: Code, message: str, *path: str) -> None:
        errors.append(RuleError(source, line_of(path), rule_id, message, code=code))

    title = doc.get("title")
    if not isinstance(title, str) or not title.strip():
        fail(Code.CORRELATION_MISSING_FIELD, "correlation rule needs a title")
    if rule_id is None:
        fail(Code.CORRELATION_MISSING_FIELD, "correlation rule needs an id (or a name)")
    body = doc.get("correlation")
    if not isinstance(body, dict):
        fail(Code.CORRELATION_VALUE,
             "'correlation' must be a mapping with type, rules, group-by, timespan and condition", "correlation")
        return None, errors
    unknown = set(body) - {"type", "rules", "group-by", "timespan", "condition", "aliases", "generate"}
    if unknown:
        fail(Code.CORRELATION_UNKNOWN_KEY,
             f"correlation has unknown keys: {', '.join(sorted(map(str, unknown)))}", "correlation")
    ctype = body.get("type")
    if ctype not in TYPES:
        fail(Code.CORRELATION_TYPE,
             f"correlation type {ctype!r} is not one of {', '.join(TYPES)}", "correlation", "type")
    rules = body.get("rules")
    if isinstance(rules, str):
        rules = [rules]
    if not isinstance(rules, list) or not rules or not all(isinstance(r, str) and r for r in rules):
        fail(Code.CORRELATION_VALUE,
             "correlation 'rules' must list the referenced rules by id or name", "correlation", "rules")
        rules = []
    group_by = body.get("group-by", [])
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
        fail(Code.CORRELATION_VALUE,
             "correlation 'group-by' must be a field name or a list of field names", "correlation", "group-by")
        group_by = []
    timespan = 0.0
    if "timespan" not in body:
        fail(Code.CORRELATION_MISSING_FIELD, "correlation needs a timespan, e.g. '5m'", "correlation")
    else:
        try:
            timespan = parse_duration(body["timespan"])
        except ValueError as exc:
            fail(Code.CORRELATION_TIMESPAN, str(exc), "correlation", "timespan")
    condition = None
    if ctype in TYPES:
        try:
            condition = _parse_condition(body.get("condition"), ctype, len(rules))
        except ValueError as exc:
            fail(Code.CORRELATION_CONDITION, str(exc), "correlation", "condition")
    aliases = body.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(
        isinstance(m, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
        for m in aliases.values()
    ):
        fail(Code.CORRELATION_VALUE,
             "correlation 'aliases' must map alias -> {rule name: field}", "correlation", "aliases")
        aliases = {}
    generate = body.get("generate", False)
    if not isinstance(generate, bool):
        fail(Code.CORRELATION_VALUE, "correlation 'generate' must be true or false", "correlation", "generate")
    level = doc.get("level", "medium")
    if level not in LEVELS:
        fail(Code.CORRELATION_VALUE, f"level {level!r} is not one of {', '.join(LEVELS)}", "level")
    suppress = None
    if "suppress" in doc:
        try:
            suppress = parse_suppression(doc["suppress"])
        except ValueError as exc:
            fail(Code.SUPPRESS_INVALID, str(exc), "suppress")
    finding = doc.get("finding") or {}
    if not isinstance(finding, dict):
        fail(Code.CORRELATION_VALUE, "'finding' must be a mapping with title and/or description templates", "finding")
        finding = {}
    tags = doc.get("tags") or []
    if errors or condition is None:
        return None, errors
    spec = CorrelationSpec(
        rule_id=rule_id or "",
        name=str(doc["name"]) if doc.get("name") is not None else None,
        title=str(title),
        type=str(ctype),
        rules=[str(r) for r in rules],
        group_by=list(group_by),
        timespan=timespan,
        condition=condition,
        aliases={str(a): dict(m) for a, m in aliases.items()},
        generate=bool(generate),
        level=str(level),
        tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        description=str(doc.get("description") or ""),
        finding={str(k): str(v) for k, v in finding.items()},
        suppress=suppress,
        source=source,
        line=line,
        ref_lines={str(r): line_of(("correlation", "rules", i) if isinstance(body["rules"], list)
                                   else ("correlation", "rules")) for i, r in enumerate(rules)},
    )
    return spec, []
