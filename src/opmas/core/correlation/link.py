"""Resolving correlation references across a rule set.

``rules`` entries and alias keys name other rules by id or by ``name``; they may
live in the same multi-document file or in any other file of the rule set, and
may be correlations themselves (chains). ``link_correlations`` resolves them,
refuses unknown or ambiguous references (a name several rules have), a correlation
named like an earlier rule, and cycles, and orders correlations so that every
correlation comes after the correlations it consumes.
"""
from __future__ import annotations

from dataclasses import dataclass

from opmas.core.correlation.spec import CorrelationSpec
from opmas.core.errors import Code, RuleError


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A rule correlations may reference: its id, its name and where it is defined."""

    rule_id: str
    name: str | None
    source: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.rule_id} ({self.source}:{self.line})" if self.line else f"{self.rule_id} ({self.source})"


@dataclass(slots=True)
class LinkedCorrelation:
    """A correlation with its inputs resolved to rule ids and its fields resolved per input."""

    spec: CorrelationSpec
    inputs: list[str]  # rule ids, in the order of ``rules`` (the order temporal_ordered requires)
    key_fields: list[tuple[str, ...]]  # per input: the event fields that make the group key
    value_fields: list[str | None]  # per input (value_count): the field whose distinct values count

    @property
    def rule_id(self) -> str:
        return self.spec.rule_id


def link_correlations(
    specs: list[CorrelationSpec], detections: list[RuleRef]
) -> tuple[list[LinkedCorrelation], list[RuleError]]:
    """Resolve references to the ``detections`` and to each other.

    Returns the correlations that link, in dependency order, and the errors of the others."""
    ids = {rule.rule_id for rule in detections} | {spec.rule_id for spec in specs}
    named: dict[str, list[RuleRef]] = {}  # name -> the rules that have it, detections first
    for rule in [*detections, *(RuleRef(s.rule_id, s.name, s.source, s.line) for s in specs)]:
        if rule.name:
            named.setdefault(rule.name, []).append(rule)

    def resolve(ref: str) -> str | None:
        """The rule id ``ref`` names; ValueError where several rules have that name."""
        if ref in ids:
            return ref
        rules = named.get(ref)
        if rules is not None and len(rules) > 1:
            raise ValueError(f"{ref!r} is ambiguous: it is the name of {', '.join(map(str, rules))}")
        return rules[0].rule_id if rules else None

    by_id = {spec.rule_id: spec for spec in specs}
    errors: list[RuleError] = []
    linked: dict[str, LinkedCorrelation] = {}
    for spec in specs:
        problems: list[tuple[Code, str, int | None]] = []
        if spec.name and named[spec.name][0].rule_id != spec.rule_id:
            problems.append((Code.CORRELATION_DUPLICATE_NAME,
                             f"duplicate name {spec.name!r}: {named[spec.name][0]} has it too", spec.line))
        inputs = []
        for ref in spec.rules:
            where = spec.ref_lines.get(ref, spec.line)
            try:
                target = resolve(ref)
            except ValueError as exc:
                problems.append((Code.CORRELATION_AMBIGUOUS_REFERENCE, f"references {exc}", where))
                continue
            if target is None:
                problems.append((Code.CORRELATION_UNKNOWN_RULE,
                                 f"references unknown rule {ref!r} (no rule in the rule set has this id or name)",
                                 where))
            elif target == spec.rule_id:
                problems.append((Code.CORRELATION_SELF_REFERENCE, f"references itself ({ref!r})", where))
            else:
                inputs.append(target)
        if len(set(inputs)) != len(inputs):
            problems.append((Code.CORRELATION_REPEATED_RULE, "references the same rule more than once", spec.line))
        alias_maps: dict[str, dict[str, str]] = {}
        for alias, mapping in spec.aliases.items():
            resolved = {}
            for ref, fieldname in mapping.items():
                try:
                    target = resolve(ref)
                except ValueError as exc:
                    problems.append((Code.CORRELATION_AMBIGUOUS_REFERENCE, f"alias {alias!r}: {exc}", spec.line))
                    continue
                if target is None or target not in inputs:
                    problems.append((Code.CORRELATION_ALIAS,
                                     f"alias {alias!r} names {ref!r}, which is not one of the correlation's rules",
                                     spec.line))
                else:
                    resolved[target] = fieldname
            alias_maps[alias] = resolved
        for alias, resolved in alias_maps.items():
            if alias in spec.group_by or alias == spec.condition.field:
                missing = [spec.rules[i] for i, rid in enumerate(inputs) if rid not in resolved]
                if missing:
                    problems.append((Code.CORRELATION_ALIAS,
                                     f"alias {alias!r} gives no field for rule(s) {', '.join(missing)}", spec.line))
        if problems:
            errors.extend(RuleError(spec.source, where, spec.rule_id, message, code=code)
                          for code, message, where in problems)
            continue
        key_fields = [
            tuple(alias_maps[g][rid] if g in alias_maps else g for g in spec.group_by) for rid in inputs
        ]
        value_field = spec.condition.field
        value_fields = [
            (alias_maps[value_field][rid] if value_field in alias_maps else value_field) if value_field else None
            for rid in inputs
        ]
        linked[spec.rule_id] = LinkedCorrelation(spec, inputs, key_fields, value_fields)
    return _in_dependency_order(linked, by_id, errors), errors


def _in_dependency_order(
    linked: dict[str, LinkedCorrelation], by_id: dict[str, CorrelationSpec], errors: list[RuleError]
) -> list[LinkedCorrelation]:
    """Topological order; correlations in or behind a cycle, or behind a refused correlation, are refused."""
    order: list[LinkedCorrelation] = []
    state: dict[str, str] = {}  # "visiting" | "done" | "bad"

    def visit(rule_id: str, path: list[str]) -> bool:
        mark = state.get(rule_id)
        if mark == "done":
            return True
        if mark == "bad":
            return False
        if mark == "visiting":
            cycle = path[path.index(rule_id):] + [rule_id]
            spec = by_id[rule_id]
            errors.append(RuleError(spec.source, spec.line, rule_id,
                                    f"correlation cycle: {' -> '.join(cycle)}", code=Code.CORRELATION_CYCLE))
            state[rule_id] = "bad"
            return False
        corr = linked.get(rule_id)
        if corr is None:  # refused earlier
            state[rule_id] = "bad"
            return False
        state[rule_id] = "visiting"
        ok = True
        for target in corr.inputs:
            if target in by_id and not visit(target, path + [rule_id]):
                if state.get(target) == "bad" and ok and state.get(rule_id) != "bad":
                    errors.append(RuleError(corr.spec.source, corr.spec.line, rule_id,
                                            f"references correlation {target!r}, which was refused",
                                            code=Code.CORRELATION_REFUSED_INPUT))
                ok = False
        if state.get(rule_id) == "bad":
            return False
        state[rule_id] = "done" if ok else "bad"
        if ok:
            order.append(corr)
        return ok

    for rule_id in linked:
        visit(rule_id, [])
    return order
