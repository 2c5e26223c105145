"""Helpers for engine tests: build rules from YAML snippets and evaluate events."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset


def rule_text(detection: str, logsource: str = "{}", rule_id: str = "test-rule", extra: str = "") -> str:
    """A rule document around an indented ``detection:`` body."""
    return f"title: Test rule\nid: {rule_id}\nlogsource: {logsource}\nlevel: high\n{extra}detection:\n{detection}"


def load_ok(text: str, name: str = "rule.yml", mappings: Sequence[str | Path] = ()) -> RuleSet:
    """Load rule text that must have no errors."""
    ruleset, errors = load_ruleset([RuleSource(name, text)], mappings)
    hard = [e for e in errors if e.severity == "error"]
    assert not hard, [str(e) for e in hard]
    return ruleset


def matched_ids(ruleset: RuleSet, events: list[dict[str, Any]]) -> list[str]:
    """Rule ids of the findings the events produce, in order."""
    return [f.rule_id for f in Detector(ruleset).process([event_from_obj(e) for e in events])]


@pytest.fixture
def matcher() -> Callable[..., Callable[[dict[str, Any]], bool]]:
    """``matcher(detection_yaml)`` -> function(event) -> bool, for a logsource-free rule."""

    def build(detection: str, mappings: Sequence[str | Path] = ()) -> Callable[[dict[str, Any]], bool]:
        ruleset = load_ok(rule_text(detection), mappings=mappings)
        return lambda event: matched_ids(ruleset, [event]) == ["test-rule"]
    return build
