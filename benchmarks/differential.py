"""The differential corpus: SigmaHQ's Windows rules plus the shipped rules, over generated and sample events.

Used by tests/unit/engine/test_differential.py. ``digest()`` runs the engine over the corpus and
returns what must not change when the engine is made faster: per-rule finding counts and
a hash of every finding id. ``python -m benchmarks.differential`` prints it as JSON, which is
how tests/unit/engine/differential_digest.json was recorded (on the engine before issue 10's changes).
"""
from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from benchmarks.generate import generate
from benchmarks.sigma_corpus import quiet_events, rule_documents, rule_events
from opmas.core.event import Event
from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSet, load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR

ROOT = Path(__file__).resolve().parent.parent
SIGMA_WINDOWS = ROOT.parent / "shared" / "sigma" / "rules" / "windows"


def corpus_ruleset(**load: Any) -> RuleSet:
    """SigmaHQ's ``rules/windows`` and the shipped ``rules/``, loaded together."""
    ruleset, errors = load_ruleset(sources_from_paths([SIGMA_WINDOWS, RULES_DIR]), **load)
    hard = [e for e in errors if e.severity == "error"]
    if hard:
        raise ValueError(f"corpus rules did not load: {hard[:3]}")
    return ruleset


def corpus_objects() -> Iterator[dict[str, Any]]:
    """The events, in a fixed order: quiet Windows telemetry, one event built from each SigmaHQ rule,
    generated process creations, generated mixed Windows/Linux/web events, the shipped sample."""
    yield from quiet_events(4000, seed=11)
    yield from rule_events(rule_documents(SIGMA_WINDOWS), seed=12)
    yield from generate("windows", 3000, seed=13)
    yield from generate("mixed", 3000, seed=14)
    for path in sorted((ROOT / "samples").glob("*.jsonl")):
        yield from (orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())


def corpus_events() -> list[Event]:
    """The corpus as events (fresh objects: the processor sets their times)."""
    return [event_from_obj(obj) for obj in corpus_objects()]


def digest(ruleset: RuleSet) -> dict[str, Any]:
    """Per-rule finding counts and the SHA-256 of the sorted finding ids, detection and correlation."""
    detector = Detector(ruleset)
    events = corpus_events()
    findings = []
    for start in range(0, len(events), 1000):
        findings += detector.process(events[start:start + 1000])
    findings += detector.flush()
    ids = sorted(f.id for f in findings)
    return {"events": len(events), "findings": len(findings),
            "per_rule": dict(sorted(Counter(f.rule_id for f in findings).items())),
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


if __name__ == "__main__":
    sys.stdout.buffer.write(orjson.dumps(digest(corpus_ruleset()), option=orjson.OPT_INDENT_2) + b"\n")
