"""What the engine finds offline in a list of objects, partitioned as a streaming runtime
partitions them: the expected findings of the pipeline tests, unit and integration."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import orjson

from opmas.connectors.nats.subjects import events_subject
from opmas.connectors.source import SourceMessage
from opmas.core.correlation import CorrelationStage
from opmas.core.detector import Detector
from opmas.core.envelope import EnvelopeError, event_from_obj
from opmas.core.partition import key_of, partition_of
from opmas.core.processor import Processor
from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR
from opmas.runtime.intake import Intake
from opmas.runtime.rules import RuleFiles
from benchmarks.generate import START, generate
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


AGENTS = 8
BRUTE_FORCE_SUCCEEDED = "7b6f1e0a-3c2d-4e59-9a51-0c9d2f4e8a10"  # rules/correlation/ssh_brute_force_success.yml
PER_MESSAGE = 25  # events per NATS message (JSON lines)


def event_log(count: int, seed: int, attackers: int = 12) -> list[tuple[str, bytes]]:
    """(subject, payload) messages of a generated mixed log, spread over AGENTS agents, with SSH brute
    forces (5 failures then a success from one address, over ~4 minutes of event time) spread along
    it and over the agents: the library's correlation rules keep windows open across batches, and
    their groups span partitions and workers."""
    events = list(generate("mixed", count, seed))
    chunks = [events[start:start + PER_MESSAGE] for start in range(0, count, PER_MESSAGE)]
    for k in range(attackers):
        ip = f"198.51.100.{k + 1}"
        first = (count - 1200) * k // attackers
        for j in range(6):
            m = (first + 200 * j) // PER_MESSAGE  # message m comes from agent m % AGENTS
            verb = "Accepted" if j == 5 else "Failed"
            when = START + timedelta(milliseconds=m * PER_MESSAGE * 250)
            chunks[m].append({
                "@timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "event": {"dataset": "linux.auth", "outcome": "success" if j == 5 else "failure"},
                "host": {"name": "bastion"}, "process": {"name": "sshd", "pid": 4000 + j},
                "user": {"name": "deploy"}, "source": {"ip": ip, "port": 40000 + j},
                "message": f"{verb} password for deploy from {ip} port {40000 + j} ssh2"})
    return [(events_subject(f"agent-{m % AGENTS}"), b"\n".join(orjson.dumps(e) for e in chunk))
            for m, chunk in enumerate(chunks)]


def offline_findings(messages: list[tuple[str, bytes]]) -> dict[str, str]:
    """id -> rule id of the findings of one Detector over the whole log, as opmas detect reads it
    (without the end-of-input flush: the live runtimes leave the last windows open)."""
    _, ruleset, _ = RuleFiles((RULES_DIR,)).load()
    detector = Detector(ruleset)
    found: dict[str, str] = {}
    for seq, (subject, data) in enumerate(messages, 1):
        decoded = Intake(1 << 20).decode([SourceMessage(subject, data, seq, 0.0, None, None)])
        assert not decoded.dead
        found.update((f.id, f.rule_id) for f in detector.process(decoded.events))
    return found


# A window-closing correlation (lt): its finding comes only once its 3 s window is over.
TOO_FEW = """
title: Too Few Heartbeats
id: 9a1c3e5b-7d2f-4e6a-8b0c-2d4f6a8c0e11
correlation:
    type: event_count
    rules: [heartbeat]
    group-by: [host.name]
    timespan: 3s
    condition: {lt: 3}
level: medium
---
title: Heartbeat
id: 3c5e7a9b-1d2f-4a6c-8e0b-4d6f8a0c2e13
name: heartbeat
logsource: {product: linux, service: sshd}
detection:
    selection: {message|startswith: 'heartbeat'}
    condition: selection
level: informational
"""
TOO_FEW_ID = "9a1c3e5b-7d2f-4e6a-8b0c-2d4f6a8c0e11"
