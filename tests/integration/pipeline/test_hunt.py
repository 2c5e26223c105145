"""Retro-hunts over the ClickHouse archive (issue 14): the findings and ids live processing gives for
the same events, correlations included; the SQL prefilter leaves out only events no rule can match."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import psycopg
import pytest

from opmas.connectors.clickhouse.archive import Archive
from opmas.core.event import Event
from opmas.core.detector import Detector
from opmas.core.ruleset import RuleSource, load_ruleset, sources_from_paths
from opmas.cli import main
from opmas.runtime.hunt import HuntStats, hunt, needles
from opmas.paths import RULES_DIR
from tests.archived import archived, log, processed
from tests.expected import sample_objects


def _hunted(archive: Archive, since: float, until: float, rules: tuple[Path, ...] = (RULES_DIR,),
            **options) -> tuple[set[str], HuntStats]:
    ruleset, _ = load_ruleset(sources_from_paths(rules))
    stats = HuntStats()
    ids = {f.id for batch in hunt(archive, ruleset, since, until, stats=stats, **options) for f in batch}
    return ids, stats


def test_a_hunt_gives_the_findings_and_ids_of_live_processing(chdb_dir):
    events, live = processed(log())
    assert _rule_ids(live, events) & _correlations()  # correlations included
    archive = archived(chdb_dir, events)
    found, stats = _hunted(archive, 0, 2e9)
    assert found == live
    assert stats.in_range == stats.read == len({e.id for e in events})  # a shipped rule requires no literal
    # the SSH rules and their correlations each require a literal: the archive leaves out what none can match
    rules = (RULES_DIR / "linux" / "auth", RULES_DIR / "correlation")
    _, live = processed(log(), rules)
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
    events, _ = processed(sample_objects())
    middle = sorted(e.timestamp for e in events)[len(events) // 2]
    agent = events[0].agent_id
    chosen = [e for e in events if e.timestamp >= middle and e.agent_id == agent]
    _, expected = processed([obj for obj, e in zip(sample_objects(), events) if e in chosen])
    archive = archived(chdb_dir, events)
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
    archive = archived(chdb_dir, [hex_id])
    stats = HuntStats()
    found = [f for batch in hunt(archive, ruleset, 0, 2e9, stats=stats) for f in batch]
    archive.close()
    assert stats.read == 1 and [f.event_ids for f in found] == [["h1"]]  # "0x1210" equals 4624, as Sigma compares
    always = rule.replace("{EventID: 4624, TargetUserName|contains: 'adm in'}", "{TargetUserName|exists: true}")
    assert needles(load_ruleset([RuleSource("r.yml", always)], cache_dir=None)[0]) is None  # nothing to search


def test_opmas_hunt_reads_the_embedded_archive_unless_opmas_up_holds_it(tmp_path, monkeypatch, capsys):
    events, live = processed(sample_objects())
    data = tmp_path / "data"
    archived(data / "clickhouse", events).close()
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


def test_opmas_hunt_store_records_the_hunt_and_links_its_findings(tmp_path, monkeypatch, capsys, postgres):
    events, live = processed(log())
    data = tmp_path / "data"
    archived(data / "clickhouse", events).close()
    monkeypatch.setenv("OPMAS_DATA_DIR", str(data))
    monkeypatch.setenv("OPMAS_DB_URL", postgres.url)
    monkeypatch.delenv("OPMAS_CLICKHOUSE_URL", raising=False)
    out = tmp_path / "found.jsonl"
    assert main(["hunt", str(RULES_DIR), "--since", "2020-01-01T00:00:00Z", "--output", str(out)]) == 0
    with psycopg.connect(postgres.url) as conn:  # without --store nothing is written, not even the schema
        assert conn.execute("SELECT to_regclass('hunts')").fetchone()[0] is None
    assert main(["hunt", str(RULES_DIR), "--since", "2020-01-01T00:00:00Z", "--output", str(out), "--store"]) == 0
    hunt_id = re.search(r"stored as hunt (\S+)", capsys.readouterr().err).group(1)
    assert main(["hunt", str(RULES_DIR), "--since", "2020-01-01T00:00:00Z", "--output", str(out), "--store"]) == 0
    with psycopg.connect(postgres.url) as conn:
        hunts = conn.execute("SELECT id::text, status, findings, principal_id FROM hunts ORDER BY started_at").fetchall()
        linked = {r[0] for r in conn.execute("SELECT finding_id::text FROM hunt_findings WHERE hunt_id = %s",
                                             (hunt_id,))}
        stored = conn.execute("SELECT count(*) FROM findings").fetchone()[0]
    assert [h[:3] for h in hunts][0] == (hunt_id, "done", len(live)) and len(hunts) == 2
    assert linked == live
    assert stored == len(live)  # the second hunt linked the same findings, it did not store them again
