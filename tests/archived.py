"""Events for retro-hunt tests: the sample log with a brute force after it, as a processor sees them,
and an embedded ClickHouse archive holding them."""
from __future__ import annotations

from pathlib import Path

import orjson

from opmas.connectors.clickhouse.archive import Archive, connect, encode_row
from opmas.connectors.nats.replay import agent_of
from opmas.core.detector import Detector
from opmas.core.envelope import event_from_obj
from opmas.core.event import Event
from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR
from tests.expected import sample_objects


def brute_force() -> list[dict]:
    """Five failed SSH logins from one address, then an accepted one, after the sample log ends: the shipped
    correlations fire."""
    return [{"@timestamp": f"2026-11-25T07:00:{10 * i:02d}Z", "event": {"dataset": "linux.auth",
             "outcome": "failure" if i < 5 else "success"}, "host": {"name": "web-09"},
             "process": {"name": "sshd", "pid": 900 + i}, "user": {"name": "deploy"},
             "source": {"ip": "203.0.113.99", "port": 40000 + i},
             "message": f"{'Failed' if i < 5 else 'Accepted'} password for deploy from 203.0.113.99 port {40000 + i} ssh2"}
            for i in range(6)]


def log() -> list[dict]:
    return sample_objects() + brute_force()


def processed(objects: list[dict], rules: tuple[Path, ...] = (RULES_DIR,)) -> tuple[list[Event], set[str]]:
    """The events as a processor sees them (their times resolved by the mappings) and its finding ids."""
    ruleset, _ = load_ruleset(sources_from_paths(rules))
    events = [event_from_obj(obj) for obj in objects]
    for event, obj in zip(events, objects):
        event.agent_id = agent_of(obj, None)
    detector = Detector(ruleset)
    return events, {f.id for f in detector.process(events) + detector.flush()}


def archived(directory: Path, events: list[Event]) -> Archive:
    archive = Archive(connect(None, directory))
    archive.ensure_table()
    archive.insert_block(b"".join(encode_row(e.id, e.timestamp, e.agent_id or "", e.type or "",
                                             orjson.dumps(e.data), seq) for seq, e in enumerate(events)))
    return archive
