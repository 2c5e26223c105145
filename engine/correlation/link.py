"""Resolving correlation references across a rule set.

``rules`` entries and alias keys name other rules by id or by ``name``; they may
live in the same multi-document file or in any other file of the rule set, and
may be correlations themselves (chains). ``link_correlations`` resolves them,
refuses unknown references and cycles, and orders correlations so that every
correlation comes after the correlations it consumes.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.correlation.spec import CorrelationSpec
from engine.errors import RuleError


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
    specs: list[CorrelationSpec], detection_refs: dict[str, str]
) -> tuple[list[LinkedCorrelation], list[RuleError]]:
    """Resolve references. ``detection_refs`` maps each detection rule's id and name to its id.

    Returns the correlations that link, in dependency order, and the errors of the others."""
    refs: dict[str, str] = dict(detection_refs)
    for spec in specs:
        refs[spec.rule_id] = spec.rule_id
        if spec.name:
            refs.setdefault(spec.name, spec.rule_id)
    by_id = {spec.rule_id: spec for spec in specs}
    errors: list[RuleError] = []
    linked: dict[str, LinkedCorrelation] = {}
    for spec in specs:
        problems: list[tuple[str, int | None]] = []
        inputs = []
        for ref in spec.rules:
            target = refs.get(ref)
            where = spec.ref_lines.get(ref, spec.line)
            if target is None:
                problems.append((f"references unknown rule {ref!r} (no rule in the rule set has this id or name)",
                                 where))
            elif target == spec.rule_id:
                problems.append((f"references itself ({ref!r})", where))
            else:
                inputs.append(target)
        if len(set(inputs)) != len(inputs):
            problems.append(("references the same rule more than once", spec.line))
        alias_maps: dict[str, dict[str, str]] = {}
        for alias, mapping in spec.aliases.items():
            resolved = {}
            for ref, fieldname in mapping.items():
                target = refs.get(ref)
                if target is None or target not in inputs:
                    problems.append((f"alias {alias!r} names {ref!r}, which is not one of the correlation's rules",
                                     spec.line))
                else:
                    resolved[target] = fieldname
            alias_maps[alias] = resolved
        for alias, resolved in alias_maps.items():
            if alias in spec.group_by or alias == spec.condition.field:
                missing = [spec.rules[i] for i, rid in enumerate(inputs) if rid not in resolved]
                if missing:
                    problems.append((f"alias {alias!r} gives no field for rule(s) {', '.join(missing)}", spec.line))
        if problems:
            errors.extend(RuleError(spec.source, where, spec.rule_id, message) for message, where in problems)
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
                                    f"correlation cycle: {' -> '.join(cycle)}"))
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
                                            f"references correlation {target!r}, which was refused"))
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
