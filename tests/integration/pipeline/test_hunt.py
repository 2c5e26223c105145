"""Retro-hunts over the ClickHouse archive (issue 14): the findings and ids live processing gives for
the same events, correlations included; the SQL prefilter leaves out only events no rule can match."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from opmas.connectors.clickhouse.archive import Archive, connect, encode_row
from opmas.connectors.nats.replay import agent_of
from opmas.core.event import Event
from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSource, load_ruleset, sources_from_paths
from opmas.cli import main
from opmas.runtime.hunt import HuntStats, hunt, needles
from opmas.paths import RULES_DIR
from tests.expected import sample_objects


def _brute_force() -> list[dict]:
    """Five failed SSH logins from one address, then an accepted one, after the sample log ends: the shipped
    correlations fire."""
    return [{"@timestamp": f"2026-11-25T07:00:{10 * i:02d}Z", "event": {"dataset": "linux.auth",
             "outcome": "failure" if i < 5 else "success"}, "host": {"name": "web-09"},
             "process": {"name": "sshd", "pid": 900 + i}, "user": {"name": "deploy"},
             "source": {"ip": "203.0.113.99", "port": 40000 + i},
             "message": f"{'Failed' if i < 5 else 'Accepted'} password for deploy from 203.0.113.99 port {40000 + i} ssh2"}
            for i in range(6)]


def _log() -> list[dict]:
    return sample_objects() + _brute_force()


def _live(objects: list[dict], rules: tuple[Path, ...] = (RULES_DIR,)) -> tuple[list[Event], set[str]]:
    """The events as a processor sees them (their times resolved by the mappings) and its finding ids."""
    ruleset, _ = load_ruleset(sources_from_paths(rules))
    events = [event_from_obj(obj) for obj in objects]
    for event, obj in zip(events, objects):
        event.agent_id = agent_of(obj, None)
    detector = Detector(ruleset)
    return events, {f.id for f in detector.process(events) + detector.flush()}


def _archived(directory: Path, events: list[Event]) -> Archive:
    archive = Archive(connect(None, directory))
    archive.ensure_table()
    archive.insert_block(b"".join(encode_row(e.id, e.timestamp, e.agent_id or "", e.type or "",
                                             orjson.dumps(e.data), seq) for seq, e in enumerate(events)))
    return archive


def _hunted(archive: Archive, since: float, until: float, rules: tuple[Path, ...] = (RULES_DIR,),
            **options) -> tuple[set[str], HuntStats]:
    ruleset, _ = load_ruleset(sources_from_paths(rules))
    stats = HuntStats()
    ids = {f.id for batch in hunt(archive, ruleset, since, until, stats=stats, **options) for f in batch}
    return ids, stats


def test_a_hunt_gives_the_findings_and_ids_of_live_processing(chdb_dir):
    events, live = _live(_log())
    assert _rule_ids(live, events) & _correlations()  # correlations included
    archive = _archived(chdb_dir, events)
    found, stats = _hunted(archive, 0, 2e9)
    assert found == live
    assert stats.in_range == stats.read == len({e.id for e in events})  # a shipped rule requires no literal
    # the SSH rules and their correlations each require a literal: the archive leaves out what none can match
    rules = (RULES_DIR / "linux" / "auth", RULES_DIR / "correlation")
    _, live = _live(_log(), rules)
    assert _rule_ids(live, events) & _correlations()
    found, stats = _hunted(archive, 0, 2e9, rules)
    everything, _ = _hunted(archive, 0, 2e9, rules, prefilter=False)
    archive.close()
    assert found == everything == live
    assert 0 < stats.read < stats.in_range


def _correlations() -> set[str]:
    ruleset, _ = load_ruleset(sources_from_paths([RULES_DIR]))
    return {r.id for r in ruleset.rules if r.kind == "correlation"}


def _rule_ids(finding_ids: set[str], events: list[Event]) -> set[str]:
    ruleset, _ = load_ruleset(sources_from_paths([RULES_DIR]))
    detector = Detector(ruleset)
    return {f.rule_id for f in detector.process(events) + detector.flush() if f.id in finding_ids}


def test_a_hunt_reads_only_its_time_range_and_agent(chdb_dir):
    events, _ = _live(sample_objects())
    middle = sorted(e.timestamp for e in events)[len(events) // 2]
    agent = events[0].agent_id
    chosen = [e for e in events if e.timestamp >= middle and e.agent_id == agent]
    _, expected = _live([obj for obj, e in zip(sample_objects(), events) if e in chosen])
    archive = _archived(chdb_dir, events)
    found, stats = _hunted(archive, middle, 2e9, agent=agent)
    archive.close()
    assert stats.in_range == len({e.id for e in chosen})
    assert found == expected


def test_needles_keep_every_event_a_rule_can_match(chdb_dir):
    rule = ("title: Logon\nid: 0d8b2a64-0000-4000-8000-00000000a001\nlogsource: {product: windows, service: security}\n"
            "detection:\n  s: {EventID: 4624, TargetUserName|contains: 'adm in'}\n  condition: s\n")
    ruleset, _ = load_ruleset([RuleSource("r.yml", rule)], cache_dir=None)
    assert set(needles(ruleset)) & {"4624", "0x1210", "adm"}  # its anchor clause, as JSON text shows it
    hex_id = Event("h1", {"Event": {"System": {"EventID": "0x1210", "Channel": "Security"},
                                   "EventData": {"TargetUserName": "ADM IN"}}}, 1.0e9, "a", "t")
    archive = _archived(chdb_dir, [hex_id])
    stats = HuntStats()
    found = [f for batch in hunt(archive, ruleset, 0, 2e9, stats=stats) for f in batch]
    archive.close()
    assert stats.read == 1 and [f.event_ids for f in found] == [["h1"]]  # "0x1210" equals 4624, as Sigma compares
    always = rule.replace("{EventID: 4624, TargetUserName|contains: 'adm in'}", "{TargetUserName|exists: true}")
    assert needles(load_ruleset([RuleSource("r.yml", always)], cache_dir=None)[0]) is None  # nothing to search


def test_opmas_hunt_reads_the_embedded_archive_unless_opmas_up_holds_it(tmp_path, monkeypatch, capsys):
    events, live = _live(sample_objects())
    data = tmp_path / "data"
    _archived(data / "clickhouse", events).close()
    monkeypatch.setenv("OPMAS_DATA_DIR", str(data))
    monkeypatch.delenv("OPMAS_CLICKHOUSE_URL", raising=False)
    out = tmp_path / "found.jsonl"
    assert main(["hunt", str(RULES_DIR), "--since", "2020-01-01T00:00:00Z", "--output", str(out)]) == 0
    assert {orjson.loads(line)["id"] for line in out.read_bytes().splitlines()} == live
    assert f"{len({e.id for e in events})} events in range" in capsys.readouterr().err
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from opmas.runtime.datadir import lock_data_dir; "
                               f"lock = lock_data_dir(__import__('pathlib').Path({str(data)!r})); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, env=os.environ)
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert main(["hunt", str(RULES_DIR), "--since", "30d"]) == 2
        assert "a running `opmas up` holds" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(SystemExit):
        main(["hunt", str(RULES_DIR)])  # --since is required
    assert main(["hunt", str(RULES_DIR), "--since", "yesterday"]) == 2
