"""Rule sets from YAML text and generic Linux auth events for correlation tests."""
from __future__ import annotations

import random
from typing import Any

from opmas.core.event import Event, format_time, parse_time
from opmas.core.envelope import event_from_obj
from opmas.core.finding import Finding
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset

BASE = 1_795_000_000.0  # an event-time origin (epoch seconds)

def _sshd_rule(rule_id: str, name: str, outcome: str) -> str:
    return f"""
title: SSH {outcome}
id: {rule_id}
name: {name}
logsource: {{product: linux, service: sshd}}
detection:
    selection: {{event.outcome: {outcome}}}
    condition: selection
level: low
"""


AUTH_RULES = _sshd_rule("ssh-fail", "ssh_fail", "failure") + "---" + _sshd_rule("ssh-ok", "ssh_ok", "success")


def ruleset(*texts: str, lateness: float | None = None) -> RuleSet:
    """A rule set of YAML texts (one source each); fails the test on any load error."""
    sources = [RuleSource(f"rules{i}.yml", text) for i, text in enumerate(texts)]
    rs, errors = load_ruleset(sources, lateness=lateness)
    assert not [e for e in errors if e.severity == "error"], errors
    return rs


def auth(offset: float, ip: str = "203.0.113.7", outcome: str = "failure", user: str = "root",
         host: str = "web-01", port: int | None = None, eid: str | None = None) -> Event:
    """A generic sshd event at BASE + offset seconds."""
    obj: dict[str, Any] = {
        "@timestamp": format_time(BASE + offset),
        "event": {"dataset": "linux.auth", "outcome": outcome},
        "process": {"name": "sshd"},
        "host": {"name": host},
        "user": {"name": user},
        "source": {"ip": ip},
        "message": f"{'Failed' if outcome == 'failure' else 'Accepted'} password for {user} from {ip}",
    }
    if port is not None:
        obj["destination"] = {"port": port}
    if eid is not None:
        obj["id"] = eid
    return event_from_obj(obj)


def run(rs: RuleSet, events: list[Event], batch: int | None = None, flush: bool = True) -> list[Finding]:
    """Findings of a fresh Processor over the events (in batches of ``batch``), flushed at the end."""
    detector = Detector(rs)
    size = batch or max(len(events), 1)
    findings: list[Finding] = []
    for start in range(0, len(events), size):
        findings.extend(detector.process(events[start:start + size]))
    if flush:
        findings.extend(detector.flush())
    return findings


def of_rule(findings: list[Finding], rule_id: str) -> list[Finding]:
    return [f for f in findings if f.rule_id == rule_id]


def shuffled_within(events: list[Event], lateness: float, seed: int) -> list[Event]:
    """The events in an arrival order where none is more than ``lateness`` behind the newest seen."""
    rng = random.Random(seed)
    keyed = [(parse_time(e.data["@timestamp"]) + rng.uniform(0, lateness * 0.99), i, e) for i, e in enumerate(events)]
    return [e for _, _, e in sorted(keyed, key=lambda k: (k[0], k[1]))]


def sshd_stream(seed: int, n: int = 400):
    """A half-hour of sshd traffic: background noise and brute-force bursts from a few addresses."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ip = f"10.0.0.{rng.randint(1, 6)}"
        outcome = "success" if rng.random() < 0.2 else "failure"
        events.append(auth(round(rng.uniform(0, 1800), 1), ip=ip, outcome=outcome,
                           user=rng.choice(["root", "admin", "oracle", "deploy", "git"]), eid=f"e{i}"))
    return sorted(events, key=lambda e: e.data["@timestamp"])
