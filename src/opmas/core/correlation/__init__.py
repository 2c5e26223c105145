"""Sigma correlation rules and suppression over event time.

``compile_correlations(docs, ruleset)`` is called by ``opmas.core.ruleset.load_ruleset``
with the rule set's correlation documents: it parses them (``spec``), resolves their
references across the whole rule set (``link``), marks the detection rules that
only feed correlations (Sigma ``generate: false``), makes the referenced rules read
the fields the correlations group by, and sets ``ruleset.correlations`` to a
``CorrelationSet`` (``compiled``). Per-partition event time, lateness and hits:
``observer``; groups, windows and determinism: ``correlator``; the one correlator
of a stream, fed by one partition or many: ``stage``; window semantics: ``windows``;
``suppress``: ``suppression``; re-keying hits by group for a partitioned
correlation (the scale-out workers): ``repartition``.
"""
from __future__ import annotations

from typing import Any

from opmas.core.correlation.compiled import CorrelationSet
from opmas.core.correlation.correlator import DEFAULT_LATENESS, DEFAULT_MAX_FUTURE, Correlator, Handoff
from opmas.core.correlation.observer import Observer
from opmas.core.correlation.link import LinkedCorrelation, RuleRef, link_correlations
from opmas.core.correlation.spec import CorrelationSpec, Suppression, parse_correlation, parse_suppression
from opmas.core.correlation.stage import DEFAULT_IDLE_TIMEOUT, CorrelationStage
from opmas.core.errors import Code, RuleError
from opmas.core.render import attack_from_tags
from opmas.core.ruleset import RuleMeta

__all__ = [
    "DEFAULT_IDLE_TIMEOUT", "DEFAULT_LATENESS", "DEFAULT_MAX_FUTURE", "CorrelationSet", "CorrelationSpec",
    "CorrelationStage", "Correlator", "Handoff", "LinkedCorrelation", "Observer", "Suppression",
    "compile_correlations",
]


def compile_correlations(docs: list[Any], ruleset: Any, lateness: float | None = None) -> list[RuleError]:
    """Compile correlation documents (``opmas.core.ruleset.RuleDoc``) into ``ruleset.correlations``.

    Also takes the ``suppress`` sections of detection rules. Returns the errors; bad
    correlation rules are left out, good ones added to ``ruleset.rules`` (kind "correlation")."""
    errors: list[RuleError] = []
    specs: list[CorrelationSpec] = []
    tests: dict[str, dict[str, list[Any]]] = {}
    for rule_doc in docs:
        doc = rule_doc.doc
        spec, problems = parse_correlation(doc.data, rule_doc.source, doc.line_of)
        errors.extend(problems)
        if spec is not None:
            specs.append(spec)
            raw_tests = doc.data.get("tests")
            tests[spec.rule_id] = {k: list(v) for k, v in raw_tests.items()} if isinstance(raw_tests, dict) else {}

    suppressions: dict[str, Suppression] = {}
    for rule in list(ruleset.detections):
        if getattr(rule, "suppress", None) is None:
            continue
        try:
            suppressions[rule.id] = parse_suppression(rule.suppress)
        except ValueError as exc:
            errors.append(RuleError(rule.meta.source, rule.meta.line, rule.id, f"suppress: {exc}",
                                    code=Code.SUPPRESS_INVALID))
            ruleset.detections.remove(rule)
            ruleset.rules.remove(rule.meta)
            continue
        rule.fields = rule.fields | set(suppressions[rule.id].by)

    referable = [RuleRef(r.id, r.meta.name, r.meta.source, r.meta.line) for r in ruleset.detections]
    linked, problems = link_correlations(specs, referable)
    errors.extend(problems)

    detections = {rule.id: rule for rule in ruleset.detections}
    visible: dict[str, bool] = {}
    for corr in linked:
        spec = corr.spec
        for index, rule_id in enumerate(corr.inputs):
            if not spec.generate:
                visible[rule_id] = False
            rule = detections.get(rule_id)
            if rule is not None:
                if not spec.generate:
                    rule.generate = False
                wanted = set(corr.key_fields[index])
                if corr.value_fields[index]:
                    wanted.add(corr.value_fields[index])
                rule.fields = rule.fields | wanted
        if spec.suppress is not None:
            suppressions[spec.rule_id] = spec.suppress
        ruleset.rules.append(RuleMeta(
            id=spec.rule_id, title=spec.title, level=spec.level, tags=list(spec.tags), source=spec.source,
            kind="correlation", line=spec.line, name=spec.name, description=spec.description,
            tests=tests.get(spec.rule_id, {}), attack=attack_from_tags(spec.tags),
        ))
    if linked or suppressions:
        ruleset.correlations = CorrelationSet(
            correlations=linked,
            suppressions=suppressions,
            visible={c.rule_id: visible.get(c.rule_id, True) for c in linked},
            lateness=DEFAULT_LATENESS if lateness is None else lateness,
        )
    return errors
