"""The event generator is deterministic and realistic in shape; the rule benchmark runs end to end."""
from __future__ import annotations

import orjson
import pytest

from benchmarks import bench_rules
from benchmarks.generate import generate, main
from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.ruleset import load_ruleset


def test_same_seed_same_events_and_kinds(tmp_path) -> None:
    first = list(generate("mixed", 300, seed=4))
    assert first == list(generate("mixed", 300, seed=4)) and first != list(generate("mixed", 300, seed=5))
    windows = [e for e in first if "Event" in e]
    assert {e["Event"]["System"]["EventID"] for e in windows} == {1, 4688}
    assert {e["event"]["dataset"] for e in first if "event" in e} == {"linux.auth", "web.access"}
    out = tmp_path / "e.jsonl"
    assert main(["--kind", "linux", "-n", "50", "--seed", "2", "-o", str(out)]) == 0
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == list(generate("linux", 50, seed=2))


def test_bench_rules_load_and_some_match() -> None:
    ruleset, errors = load_ruleset(bench_rules.bench_rules(200))
    assert len(ruleset.detections) == 200 and not [e for e in errors if e.severity == "error"]
    findings = Detector(ruleset).process([event_from_obj(e) for e in generate("windows", 3000, seed=1)])
    assert findings and {f.rule_id for f in findings} <= {r.id for r in ruleset.detections}


def test_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_rules.main(["--events", "400", "--rules", "20", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "== 20 rules" in out and "events/s" in out and "us/eval" in out and "max RSS" in out
