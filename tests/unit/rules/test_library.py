"""The shipped rule library (rules/): loads cleanly, is well-formed, and every rule passes its own tests.

Each rule file carries ``tests: {match: [...], no_match: [...]}``; the per-file test runs those
cases through the engine's rule test runner, so a failure names the file and the rule.
"""
from __future__ import annotations

import re
import uuid
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from sigma.collection import SigmaCollection

from opmas.core.envelope import event_from_obj
from opmas.core.logsource import builtin_mappings
from opmas.core.detector import Detector
from opmas.core.rule_tests import run_rule_tests
from opmas.core.ruleset import RuleMeta, RuleSet, RuleSource, load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR

SOURCES = sources_from_paths([RULES_DIR])
SOURCE_IDS = [str(Path(s.name).relative_to(RULES_DIR)) for s in SOURCES]
SIGMA_METADATA = ("title", "id", "status", "description", "references", "author", "date", "tags",
                  "logsource", "detection", "falsepositives", "level")
LEVELS = {"informational", "low", "medium", "high", "critical"}


@lru_cache(maxsize=1)
def library() -> RuleSet:
    """The whole library loaded at once; the load must report no problem at all."""
    ruleset, errors = load_ruleset(SOURCES)
    assert not errors, "\n".join(str(e) for e in errors)
    return ruleset


@lru_cache(maxsize=1)
def helper_keys() -> frozenset[tuple[str, str]]:
    """(file, rule name or id) of rules referenced by a correlation of the same file.

    Such helpers are exercised through the tests of the correlation that uses them.
    """
    keys = set()
    for source in SOURCES:
        for doc in yaml.safe_load_all(source.text):
            if isinstance(doc, dict) and isinstance(doc.get("correlation"), dict):
                keys.update((source.name, str(ref)) for ref in doc["correlation"].get("rules") or [])
    return frozenset(keys)


def standalone(rule: RuleMeta) -> bool:
    """A rule shipped for its own findings, not only as the input of a correlation in its file."""
    return not ({(rule.source, rule.id), (rule.source, rule.name or "")} & helper_keys())


def detection_docs(source: RuleSource) -> list[dict]:
    """The detection-rule documents (not correlations) of a rule file."""
    return [d for d in yaml.safe_load_all(source.text) if isinstance(d, dict) and "detection" in d]


def test_library_is_a_real_library() -> None:
    areas = Counter(name.split("/")[0] for name in SOURCE_IDS)
    assert len(SOURCES) >= 60
    for area in ("linux", "web", "cloud", "windows"):
        assert areas[area] >= 5, areas


def test_whole_library_loads_without_errors() -> None:
    ruleset = library()
    assert len(ruleset.detections) >= len([s for s in SOURCES if detection_docs(s)])
    assert all(rule.enabled for rule in ruleset.rules)


def test_rule_ids_are_unique_uuids() -> None:
    ids = [rule.id for rule in library().rules]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, duplicates
    for source in SOURCES:
        for doc in detection_docs(source):
            assert str(uuid.UUID(str(doc["id"]))) == str(doc["id"]).lower(), source.name


def _has_both_cases(tests: dict) -> bool:
    return len(tests.get("match") or []) >= 1 and len(tests.get("no_match") or []) >= 1


def test_every_rule_has_match_and_no_match_cases() -> None:
    rules = library().rules
    missing = [f"{rule.source} [{rule.id}]" for rule in rules if standalone(rule) and not _has_both_cases(rule.tests)]
    assert not missing, missing
    untested_files = [s.name for s in SOURCES if not any(_has_both_cases(r.tests) for r in rules if r.source == s.name)]
    assert not untested_files, untested_files


def _leaves(value: object) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 1


def test_no_match_cases_are_realistic_events_not_empty_ones() -> None:
    for rule in library().rules:
        for case in rule.tests.get("no_match") or []:
            events = case["events"] if isinstance(case, dict) and "events" in case else [case]
            assert all(isinstance(e, dict) and _leaves(e) >= 5 for e in events), f"{rule.source} [{rule.id}]"


def test_every_detection_logsource_is_covered_by_a_builtin_mapping() -> None:
    mappings = builtin_mappings()
    uncovered = [f"{rule.source}: {rule.logsource}" for rule in library().rules
                 if rule.kind == "detection" and not any(m.covers(rule.logsource) for m in mappings)]
    assert not uncovered, uncovered


def test_every_detection_rule_carries_sigmahq_metadata_and_attack_tags() -> None:
    for rule in library().rules:
        assert rule.level in LEVELS, f"{rule.source}: level {rule.level!r}"
        if not standalone(rule):
            continue
        assert rule.attack.get("tactics") or rule.attack.get("techniques"), f"{rule.source}: no ATT&CK tag"
    helpers = {name for _, name in helper_keys()}
    for source in SOURCES:
        for doc in detection_docs(source):
            if {str(doc.get("id")), str(doc.get("name"))} & helpers:
                continue
            missing = [key for key in SIGMA_METADATA if not doc.get(key)]
            assert not missing, f"{source.name}: missing {missing}"


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_rule_file_is_valid_sigma_for_pysigma(source: RuleSource) -> None:
    collection = SigmaCollection.from_yaml(source.text, collect_errors=True)
    errors = list(collection.errors) + [e for rule in collection.rules for e in rule.errors]
    assert not errors, [str(e) for e in errors]


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_rule_passes_its_own_tests(source: RuleSource) -> None:
    results, errors = run_rule_tests([source])
    assert not errors, [str(e) for e in errors]
    assert results, f"{source.name}: no test case ran"
    failures = [str(r) for r in results if not r.passed]
    assert not failures, "\n".join(failures)


def _placeholder_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{[^{}]+\}", template)
    return re.compile("(.+?)".join(re.escape(p) for p in parts), re.S)


@pytest.mark.parametrize("source", SOURCES, ids=SOURCE_IDS)
def test_finding_title_placeholders_resolve_on_match_cases(source: RuleSource) -> None:
    """A typo in a ``finding.title`` field name renders as ``-``: every title field must exist."""
    ruleset, errors = load_ruleset([source])
    assert not errors
    for rule in ruleset.detections:
        template = rule.finding.get("title")
        if not rule.generate or not template or "{" not in template:
            continue
        pattern = _placeholder_pattern(template)
        for case in rule.meta.tests.get("match") or []:
            findings = [f for f in Detector(ruleset).process([event_from_obj(case)]) if f.rule_id == rule.id]
            assert findings, f"{source.name}: match case yields no finding"
            match = pattern.fullmatch(findings[0].title)
            assert match, f"{source.name}: title {findings[0].title!r} does not follow {template!r}"
            assert "-" not in match.groups(), f"{source.name}: unresolved field in {findings[0].title!r}"
