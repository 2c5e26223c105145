"""Built-in mappings: vendor-shaped events (tests/unit/engine/mapping_events/<source>.json) fire real SigmaHQ
rules from the snapshot in ../shared/sigma, and their benign look-alikes do not."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opmas.core.logsource import MappingError, mapping_from_dict
from tests.unit.engine.conftest import load_ok, matched_ids
from tests.paths import SIGMA_DIR

SIGMA = SIGMA_DIR
EVENTS = Path(__file__).parent / "mapping_events"


def _cases() -> list[Any]:
    return [pytest.param(case, id=f"{path.stem}:{Path(case['rule']).stem}")
            for path in sorted(EVENTS.glob("*.json")) for case in json.loads(path.read_text())]


@pytest.mark.parametrize("case", _cases())
def test_sigmahq_rule_fires_on_vendor_events(case: dict[str, Any]) -> None:
    rule = SIGMA / case["rule"]
    if not rule.exists():
        pytest.skip(f"SigmaHQ snapshot absent: {rule}")
    ruleset = load_ok(rule.read_text(), name=str(rule))
    rule_id = ruleset.detections[0].id
    for event in case["match"]:
        assert matched_ids(ruleset, [event]) == [rule_id], event
    for event in case["no_match"]:
        assert matched_ids(ruleset, [event]) == [], event


def test_every_fixture_names_a_match_and_a_no_match() -> None:
    for path in EVENTS.glob("*.json"):
        for case in json.loads(path.read_text()):
            assert case["match"] and case["no_match"], path


def test_reshaping_is_for_dotted_mappings_and_shared_logsources_name_a_builtin_file() -> None:
    with pytest.raises(MappingError, match="flatten: dotted"):
        mapping_from_dict({"name": "x", "recognize": {"exists": ["Event.System"]}, "flatten": "evtx",
                           "join": ["CommandLine"]}, "x.yml")
    with pytest.raises(MappingError, match="no other built-in mapping"):
        mapping_from_dict({"name": "x", "logsources": "nosuch.yml"}, "x.yml")
    shared = mapping_from_dict({"name": "x", "logsources": "windows.yml"}, "x.yml")
    assert shared.covers({"product": "windows", "category": "process_creation"})
