"""The differential corpus (benchmarks/differential.py): SigmaHQ's Windows rules plus the shipped rules
over generated and sample events.

* The findings (per-rule counts and every finding id) are the ones recorded in
  differential_digest.json on the engine before it was made faster (issue 10); a change that
  alters them fails here. Record again (``python -m benchmarks.differential >
  tests/unit/engine/differential_digest.json``) only for a deliberate change of semantics or corpus.
* The fast path (dispatch, prefilter, partial reads, keywords searched in the event's JSON text)
  finds exactly what evaluating every rule whose logsource covers the event, on the whole
  flattened event, finds.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.differential import SIGMA_WINDOWS, corpus_objects, corpus_ruleset, digest
from opmas.core.dispatch import RuleIndex
from opmas.core.logsource import Mapping
from opmas.core.ruleset import DetectionRule, RuleSet
from opmas.core.sigma.compile import KEYWORDS, KEYWORDS_RAW

pytestmark = pytest.mark.skipif(not SIGMA_WINDOWS.is_dir(), reason=f"no SigmaHQ snapshot at {SIGMA_WINDOWS}")


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return corpus_ruleset()


def test_findings_are_the_recorded_ones(ruleset: RuleSet) -> None:
    expected = json.loads((Path(__file__).parent / "differential_digest.json").read_text())
    found = digest(ruleset)
    assert found["events"] == expected["events"] and found["findings"] == expected["findings"]
    assert found["per_rule"] == expected["per_rule"]
    assert found["ids_sha256"] == expected["ids_sha256"]


def _lowered(value: Any) -> Any:
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, list):
        return [v.lower() if isinstance(v, str) else v for v in value]
    return value


Applicable = list[tuple[DetectionRule, tuple[tuple[str, str], ...]]]


def _applicable(ruleset: RuleSet, mapping: Mapping, key: tuple[str | None, ...]) -> Applicable:
    """Every enabled rule whose logsource an entry satisfied by ``key`` covers, with those entries' renames."""
    entries = mapping.entries_for(key)
    out = []
    for rule in ruleset.detections:
        covering = [e for e in entries if e.covers(rule.meta.logsource)]
        if rule.meta.enabled and (covering or not rule.meta.logsource):
            out.append((rule, tuple((name, source) for entry in covering for name, source in entry.fields)))
    return out


def _brute_force(mapping: Mapping, applicable: Applicable, whole: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each applicable rule evaluated on the whole flattened event through its renames: rule id -> the
    fields it saw."""
    seen: dict[tuple[tuple[str, str], ...], tuple[dict[str, Any], dict[str, Any]]] = {}
    matched = {}
    for rule, renames in applicable:
        if renames not in seen:
            flat = dict(whole)
            originals = {name: whole.get(source) for name, source in renames}
            flat.update({name: value for name, value in originals.items() if value is not None})
            low = {name: _lowered(value) for name, value in flat.items()}
            texts = mapping.keyword_texts(flat)
            low[KEYWORDS_RAW], low[KEYWORDS] = texts, [t.lower() for t in texts]
            seen[renames] = flat, low
        flat, low = seen[renames]
        if rule.match(flat, low):
            matched[rule.id] = flat
    return matched


def _fields(rule: DetectionRule, flat: dict[str, Any]) -> dict[str, Any]:
    return {name: flat.get(name) for name in rule.fields}


def test_fast_path_finds_what_evaluating_every_rule_finds(ruleset: RuleSet) -> None:
    index = RuleIndex(ruleset)
    by_id = {rule.id: rule for rule in ruleset.detections}
    applicable: dict[tuple[int, tuple[str | None, ...]], Applicable] = {}
    compared = matched = 0
    for data in corpus_objects():
        mapping_index = index.mapping_index(data)
        raw = json.dumps(data, ensure_ascii=False).encode()  # JSON text as another encoder writes it
        view = index.view(data, raw)
        if view is None:
            assert mapping_index < 0
            continue
        fast = {rule.id: _fields(rule, view.flat) for rule in index.matches(view)}
        mapping = index.mappings[mapping_index]
        whole = mapping.flatten(data)
        key = (mapping_index, mapping.discriminator(whole))
        if key not in applicable:
            applicable[key] = _applicable(ruleset, mapping, key[1])
        expected = {rule_id: _fields(by_id[rule_id], flat)
                    for rule_id, flat in _brute_force(mapping, applicable[key], whole).items()}
        assert fast == expected, data
        compared += 1
        matched += len(fast)
    assert compared > 12000 and matched > 3000  # the corpus was read and real matches were compared
