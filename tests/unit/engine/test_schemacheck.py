"""The quick schema check (engine/sigma/schemacheck.py) agrees with jsonschema wherever it answers."""
from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from opmas.core.ruleset import sources_from_paths
from opmas.core.sigma.parse import _jsonable, rule_validator
from opmas.core.sigma.schemacheck import check
from opmas.core.sigma.yamldoc import YamlError, rule_documents
from opmas.paths import RULES_DIR
from tests.paths import PROJECT_ROOT

SIGMA = PROJECT_ROOT.parent / "shared" / "sigma" / "rules"
VALUES = [None, True, 0, 1, 1.5, "", "x", "Bad Tag", "attack.t1059", "high", "stable", [], ["x"], [1], [{}], {},
          {"a": 1}, {"condition": "x"}, {"condition": []}, {"rules": "any", "condition": "x"}]


def _documents(paths: list[Any]) -> list[Any]:
    docs = []
    for source in sources_from_paths(paths):
        try:
            docs += [_jsonable(doc.data) for doc in rule_documents(source.text)]
        except YamlError:
            pass
    return docs


def _mutated(doc: Any, rng: random.Random) -> Any:
    """``doc`` with one value somewhere replaced, removed or added."""
    doc = copy.deepcopy(doc)
    node = doc
    while isinstance(node, (dict, list)) and node:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        if isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.5:
            node = node[key]
            continue
        choice = rng.random()
        if choice < 0.6:
            node[key] = rng.choice(VALUES)
        elif choice < 0.8 and isinstance(node, dict):
            del node[key]
        elif isinstance(node, dict):
            node[f"extra{rng.randrange(3)}"] = rng.choice(VALUES)
        break
    return doc


def _agree(docs: list[Any], mutations: int, seed: int) -> dict[Any, int]:
    validator = rule_validator()
    rng = random.Random(seed)
    answers: dict[Any, int] = {True: 0, False: 0, None: 0}
    for doc in docs:
        for instance in [doc, *(_mutated(doc, rng) for _ in range(mutations))]:
            answer = check(instance, validator.schema)
            answers[answer] += 1
            if answer is not None:
                assert answer == validator.is_valid(instance), instance
    return answers


def test_the_check_agrees_with_jsonschema_on_the_shipped_rules_and_their_mutations() -> None:
    answers = _agree(_documents([RULES_DIR]), mutations=20, seed=1)
    assert answers[True] > 100 and answers[False] > 100  # both answers are exercised


@pytest.mark.skipif(not SIGMA.is_dir(), reason=f"no SigmaHQ snapshot at {SIGMA}")
def test_the_check_agrees_with_jsonschema_on_sigma_rules() -> None:
    answers = _agree(_documents([SIGMA]), mutations=1, seed=2)
    assert answers[True] > 3000


@pytest.mark.parametrize("schema,instance,answer", [
    ({"type": "integer"}, 1.0, False),  # jsonschema: a float is no integer
    ({"type": "number"}, True, False),
    ({"enum": ["a", 1]}, 1, None),  # jsonschema's equality of non-strings is not repeated here
    ({"enum": ["a", 1]}, "1", False),
    ({"format": "date"}, "x", None),  # unknown keyword
    ({"oneOf": [{"type": "string"}, {"minLength": 1}]}, "x", False),  # both hold
    ({"if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": False}, {"a": 1, "b": 2}, True),
    ({"if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": False}, {}, False),
    ({"additionalProperties": False, "patternProperties": {"^x": {}}}, {"xa": 1}, None),
    ({"items": {"type": "string"}, "prefixItems": [{}]}, [1], None),
])
def test_the_check_answers_only_what_it_knows(schema: dict[str, Any], instance: Any, answer: Any) -> None:
    assert check(instance, schema) is answer
