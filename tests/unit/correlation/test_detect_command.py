"""`opmas detect` with the shipped correlation rules: same findings whatever the order within lateness,
and the same as streaming the events one at a time through a Processor."""
from __future__ import annotations

import random
from pathlib import Path

import orjson
import yaml

from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.cli import main
from opmas.paths import RULES_DIR

CORRELATION_RULES = RULES_DIR / "correlation"


def _time(event: dict) -> str:
    return event.get("@timestamp") or event["Event"]["System"]["TimeCreated"]["@SystemTime"]


def _case_events() -> list[dict]:
    """The match cases of every shipped correlation rule, as one time-ordered log, with ids."""
    events = []
    for path in sorted(CORRELATION_RULES.glob("*.yml")):
        first = next(yaml.safe_load_all(path.read_text()))
        for n, case in enumerate(first["tests"]["match"]):
            for i, event in enumerate(case["events"]):
                events.append({**event, "id": f"{path.stem}-{n}-{i}"})
    return sorted(events, key=_time)


def _detect(tmp_path: Path, events: list[dict], name: str) -> list[dict]:
    log, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.out"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    assert main(["detect", str(CORRELATION_RULES), "--events", str(log), "--output", str(out)]) == 0
    return sorted((orjson.loads(line) for line in out.read_bytes().splitlines()), key=lambda f: f["id"])


def test_detect_reports_each_correlation_and_is_order_independent(tmp_path: Path) -> None:
    events = _case_events()
    offline = _detect(tmp_path, events, "in-order")
    assert {f["rule_title"] for f in offline} == {
        "SSH Brute Force Followed by a Successful Login",
        "One Host Connecting to Many Ports of Another",
        "Download Followed by Execution From a Temporary Directory",
    }
    reordered = events[:]
    random.Random(5).shuffle(reordered)
    reordered.sort(key=lambda e: _time(e)[:16])  # shuffled within each minute: less than the 60 s lateness
    assert reordered != events
    assert _detect(tmp_path, reordered, "reordered") == offline

    ruleset, _ = load_ruleset(sources_from_paths([CORRELATION_RULES]))
    detector = Detector(ruleset)
    streamed = []
    for event in events:
        streamed.extend(detector.process([event_from_obj(event)]))
    streamed.extend(detector.flush())
    assert sorted((f.to_dict() for f in streamed), key=lambda f: f["id"]) == offline


def test_detect_lateness_option(tmp_path: Path) -> None:
    events = _case_events()
    ssh = [e for e in events if str(e["id"]).startswith("ssh_brute")]
    late_first = ssh[1:] + ssh[:1]  # the first failure arrives last: 62 s behind the newest event
    assert not any("SSH Brute Force" in f["rule_title"] for f in _detect(tmp_path, late_first, "late"))
    log, out = tmp_path / "late.jsonl", tmp_path / "late-120.out"
    assert main(["detect", str(CORRELATION_RULES), "--events", str(log), "--output", str(out),
                 "--lateness", "120"]) == 0
    assert b"SSH Brute Force" in out.read_bytes()
