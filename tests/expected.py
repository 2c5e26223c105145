"""What the engine finds offline in a list of objects, partitioned as a streaming runtime
partitions them: the expected findings of the pipeline tests, unit and integration."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from opmas.core.correlation import CorrelationStage
from opmas.core.envelope import EnvelopeError, event_from_obj
from opmas.core.partition import key_of, partition_of
from opmas.core.processor import Processor
from opmas.core.ruleset import load_ruleset, sources_from_paths
from tests.paths import SAMPLES_DIR

SAMPLE = SAMPLES_DIR / "security_events.jsonl"


def sample_objects(path: Path = SAMPLE) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def expected_findings(objects: list[dict], rules: Path, agent_of: Callable[[dict], str],
                      partitions: int = 1, key: str = "agent") -> dict[str, str]:
    """What the engine finds in ``objects`` offline, partitioned as the pipeline partitions them
    (raw events wrapped with the agent they are published as; partition processors feeding one
    correlation stage; no end-of-input flush): id -> rule id."""
    ruleset, _ = load_ruleset(sources_from_paths([rules]))
    processors = [Processor(ruleset) for _ in range(partitions)]
    stage = CorrelationStage(ruleset.correlations) if ruleset.correlations else None
    found: dict[str, str] = {}
    for obj in objects:
        try:
            event = event_from_obj(obj)
        except EnvelopeError:  # dead-lettered by the pipeline, a bad record offline
            continue
        event.agent_id = event.agent_id or agent_of(obj)
        routing = agent_of(obj) if key == "agent" else key_of(event, key)
        p = partition_of(routing, partitions)
        processed = processors[p].process([event])
        findings = processed.findings
        if stage is not None:
            stage.take(p, processed.handoff, 0.0)
            findings += stage.advance(0.0)
        found.update((f.id, f.rule_id) for f in findings)
    return found
