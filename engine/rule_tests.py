"""Run the ``tests:`` blocks of rule files: match cases must yield a finding, no_match cases none.

Each file is loaded on its own (correlations see the rules they reference); each case
runs through a fresh Processor and is flushed, so windows close as at end of input.
A detection rule counts as matching where it matched the event, even if it only
feeds correlations (``generate: false``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import RuleError
from engine.event import event_from_obj
from engine.processor import Processor
from engine.ruleset import RuleSet, RuleSource, load_ruleset


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one test case of one rule."""

    file: str
    rule_id: str
    expectation: str  # "match" | "no_match"
    index: int  # position in the rule's list, from 1
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        status = "ok" if self.passed else "FAIL"
        return f"{status} {self.file} [{self.rule_id}] {self.expectation} case #{self.index}{': ' + self.detail if self.detail else ''}"


def _events(case: Any) -> list[dict[str, Any]]:
    if isinstance(case, dict) and isinstance(case.get("events"), list) and len(case) == 1:
        return [e for e in case["events"] if isinstance(e, dict)]
    return [case]


def run_case(ruleset: RuleSet, rule_id: str, case: Any) -> bool:
    """True where ``rule_id`` yields a finding (or, for a detection rule, matches) on the case."""
    processor = Processor(ruleset)
    events = [event_from_obj(obj) for obj in _events(case)]
    matched = False
    for event in events:
        view = processor.index.view(event.data)
        if view is not None and any(rule.id == rule_id for rule in processor.index.matches(view)):
            matched = True
    findings = processor.process(events) + processor.flush()
    return matched or any(f.rule_id == rule_id for f in findings)


def run_rule_tests(sources: Sequence[RuleSource], mappings: Sequence[str | Path] = ()
                   ) -> tuple[list[CaseResult], list[RuleError]]:
    """Every test case of every rule in ``sources``, plus the load errors of each file."""
    results: list[CaseResult] = []
    errors: list[RuleError] = []
    for source in sources:
        ruleset, problems = load_ruleset([source], mappings)
        errors.extend(problems)
        for meta in ruleset.rules:
            for expectation in ("match", "no_match"):
                for index, case in enumerate(meta.tests.get(expectation) or [], start=1):
                    hit = run_case(ruleset, meta.id, case)
                    passed = hit if expectation == "match" else not hit
                    detail = "" if passed else ("expected a finding, got none" if expectation == "match"
                                                else "expected no finding, got one")
                    results.append(CaseResult(source.name, meta.id, expectation, index, passed, detail))
    return results, errors
