"""opmas detect end to end, the rule tests runner, and the Processor contract."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest

from benchmarks.bench_rules import bench_rules
from benchmarks.generate import PROGRAMS, generate
from opmas.core.dispatch import RuleIndex
from opmas.core.event import format_time, parse_time
from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.rule_tests import run_rule_tests
from opmas.core.ruleset import RuleSource, load_ruleset
from opmas.cli import main
from opmas.paths import SCHEMAS_DIR
from tests.unit.engine.conftest import load_ok, rule_text

WHOAMI_RULE = rule_text(
    "  selection:\n    Image|endswith: '\\whoami.exe'\n  condition: selection\n",
    "{category: process_creation, product: windows}", "whoami",
    extra="tags: [attack.discovery, attack.t1033]\nfinding:\n  title: 'whoami on {Computer} by {User}'\n"
          "  description: 'parent {ParentImage}'\n",
)


def _write_events(path: Path, count: int = 3000) -> list[dict]:
    events = list(generate("windows", count, seed=5))
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return events


def test_detect_writes_findings_deterministically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "whoami.yml").write_text(WHOAMI_RULE)
    (rules / "broken.yml").write_text("title: broken\nid: b\nlogsource: {}\ndetection:\n  s: {a|x: 1}\n  condition: s\n")
    events = _write_events(tmp_path / "events.jsonl")
    out1, out2 = tmp_path / "f1.jsonl", tmp_path / "f2.jsonl"
    assert main(["detect", str(rules), "--events", str(tmp_path / "events.jsonl"), "--output", str(out1)]) == 0
    err = capsys.readouterr().err
    assert "broken.yml:5: [b] error: detection 's': Unknown modifier 'x'" in err
    assert "3000 events" in err and "events/s" in err
    # same input as pretty-printed JSON through stdin: same findings, same ids
    pretty = b"\n".join(orjson.dumps(e, option=orjson.OPT_INDENT_2) for e in events)
    proc = subprocess.run([sys.executable, "-m", "opmas.cli", "detect", str(rules), "--events", "-", "--output", str(out2)],
                          input=pretty, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = out1.read_bytes().splitlines(), out2.read_bytes().splitlines()
    expected = [e for e in events if e["Event"]["EventData"].get("Image", e["Event"]["EventData"].get("NewProcessName", ""))
                .lower().endswith("\\whoami.exe")]
    assert len(first) == len(expected) > 0 and first == second
    schema = json.loads((SCHEMAS_DIR / "finding.schema.json").read_text())
    finding = orjson.loads(first[0])
    jsonschema.validate(finding, schema)
    assert finding["rule_id"] == "whoami" and finding["severity"] == "high"
    assert finding["details"]["attack"] == {"tactics": ["discovery"], "techniques": ["T1033"]}
    assert finding["title"].startswith("whoami on ") and "{" not in finding["title"]
    assert finding["details"]["event"] in events and finding["timestamp"].endswith("Z")


def test_detect_survives_timestamps_datetime_cannot_hold(tmp_path: Path) -> None:
    rules = tmp_path / "any.yml"
    rules.write_text(rule_text("  sel:\n    msg: x\n  condition: sel\n"))
    stamps = ["nan", "inf", 1e20, "-1e20", "1e400", "0001-01-01T00:00:00+01:00", "2024-05-01T03:15:00Z"]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"@timestamp": s, "msg": "x"}) + "\n" for s in stamps))
    out = tmp_path / "findings.jsonl"
    assert main(["detect", str(rules), "--events", str(events), "--output", str(out)]) == 0
    findings = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [f["timestamp"] for f in findings][-1] == "2024-05-01T03:15:00.000000Z"
    assert len(findings) == len(stamps)


def test_parse_time_and_format_time_reject_what_datetime_cannot_hold() -> None:
    for value in ["nan", float("nan"), "inf", float("-inf"), 1e20, "1e20", -1e15, 10**400,
                  "0001-01-01T00:00:00+01:00"]:
        assert parse_time(value) is None, value
    assert parse_time("0001-01-01T00:00:00Z") == -62135596800 and parse_time(253402300799) == 253402300.799
    for epoch in [float("nan"), float("inf"), 1e20, -1e15]:
        assert format_time(epoch) is None, epoch
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"


def test_event_ids_are_kept_or_content_hashes(tmp_path: Path) -> None:
    ruleset = load_ok(rule_text("  s:\n    a: 1\n  condition: s\n"))
    envelope = {"id": "evt-1", "agent_id": "ag", "timestamp": "2024-01-01T00:00:00Z", "type": "x", "data": {"a": 1}}
    findings = Detector(ruleset).process([event_from_obj(envelope), event_from_obj({"a": 1})])
    assert findings[0].event_ids == ["evt-1"] and findings[0].agent_id == "ag"
    assert findings[1].event_ids == [event_from_obj({"a": 1}).id] and findings[0].id != findings[1].id


def _frequent_rules() -> list[RuleSource]:
    """Rules over the generator's everyday programs (so they match often), in every prefilter shape."""
    sources = []
    for i, (image, args) in enumerate(PROGRAMS):
        name = image.rsplit("\\", 1)[-1].lower()
        arg = (args[0].split() or ["x"])[0].lower().replace("'", "")
        bodies = [
            f"  s:\n    Image|endswith: '\\{name}'\n    CommandLine|contains: '{arg}'\n  condition: s\n",
            f"  a:\n    Image|endswith: '\\{name}'\n  b:\n    ParentImage|contains: 'explorer'\n  condition: a and not b\n",
            f"  a:\n    OriginalFileName: '{name}'\n  b:\n    CommandLine|contains|all: ['{arg}', '{name[:3]}']\n"
            f"  condition: 1 of them\n",
            f"  s:\n    CommandLine|re: '(?i){name[:4]}.*{name[-3:]}'\n    User|contains: 'a'\n  condition: s\n",
            f"  s:\n    CommandLine|windash|contains: '-{arg.lstrip('-/')}'\n    ParentImage|endswith: ['.exe', 'x']\n"
            f"  condition: s\n",
        ]
        for j, body in enumerate(bodies):
            sources.append(RuleSource(f"f{i}_{j}.yml", rule_text(body, "{category: process_creation, product: windows}",
                                                                 f"f{i}-{j}")))
    return sources


def test_prefilter_never_drops_a_matching_rule() -> None:
    """Soundness: the candidates always include every rule that matches (checked against all rules)."""
    ruleset, errors = load_ruleset(_frequent_rules() + bench_rules(300, seed=11))
    assert not [e for e in errors if e.severity == "error"], errors[:3]
    index = RuleIndex(ruleset)
    total = 0
    for data in generate("windows", 3000, seed=9):
        view = index.view(data)
        everything = [r.id for r in view.group.rules if r.match(view.flat, view.low)]
        assert [r.id for r in index.matches(view)] == everything
        total += len(everything)
    assert total > 3000  # the check saw real matches


@pytest.mark.parametrize("text", ["mımıkatz.exe", "MİMİKATZ.EXE", "ſekurlſa::logonpaſſwords", "sekurlsa::logonpaſswords",
                                  "mimi\u212aatz", "sekurlsa::σ logonpasswords"])
def test_prefilter_keeps_case_insensitive_regexes_whose_case_folding_str_lower_does_not_share(text: str) -> None:
    rules = [RuleSource("r.yml", rule_text(f"  s:\n    CommandLine|re|i: '{pattern}'\n  condition: s\n", rule_id=rule_id))
             for rule_id, pattern in [("mimikatz", "mimikatz"), ("sekurlsa", "sekurlsa::logonpasswords"),
                                      ("sigma", "sekurlsa::ς")]]
    ruleset, errors = load_ruleset(rules)
    assert not errors, errors
    index = RuleIndex(ruleset)
    view = index.view({"CommandLine": text})
    everything = [r.id for r in view.group.rules if r.match(view.flat, view.low)]
    assert everything and [r.id for r in index.matches(view)] == everything


def test_detect_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, broken = tmp_path / "whoami.yml", tmp_path / "broken.yml"
    rules.write_text(WHOAMI_RULE)
    broken.write_text("title: broken\nid: b\nlogsource: {}\ndetection:\n  s: {a|x: 1}\n  condition: s\n")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"a": 1}\nnot json\n{"b": 2}\n')

    assert main(["detect", str(broken), "--events", str(events)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "error: no rule loaded"
    assert main(["detect", str(tmp_path / "nope.yml"), "--events", str(events)]) == 2
    assert f"error: no such rule file or directory: {tmp_path / 'nope.yml'}" in capsys.readouterr().err
    assert main(["detect", str(rules), "--events", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.jsonl" in err
    assert main(["detect", str(rules), "--events", str(events), "--output", str(tmp_path / "f.jsonl")]) == 0
    err = capsys.readouterr().err
    assert f"{events}:2: skipped record: " in err and "2 events, 0 findings, 1 bad records, 1 rules" in err


def test_rules_test_command_counts_rule_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ok.yml").write_text(rule_text("  s:\n    a: b\n  condition: s\n", rule_id="ok",
                                               extra="tests:\n  match: [{a: b}]\n  no_match: [{a: c}]\n"))
    (tmp_path / "bad.yml").write_text(rule_text("  s:\n    a|x: b\n  condition: s\n", rule_id="bad"))
    (tmp_path / "worse.yml").write_text(rule_text("  s: []\n  condition: s\n", rule_id="worse"))
    assert main(["rules", "test", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "[bad] error: detection 's': Unknown modifier 'x'" in out and "[worse] error: " in out
    assert out.splitlines()[-1] == "2 cases, 2 passed, 0 failed, 2 rule errors"
    assert main(["rules", "test", str(tmp_path / "ok.yml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 cases, 2 passed, 0 failed, 0 rule errors"


def test_rule_tests_runner_reports_each_failing_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = rule_text("  s:\n    process.name: sshd\n  condition: s\n", "{product: linux, service: auth}", "ok", extra=(
        "tests:\n  match:\n    - {event: {dataset: linux.auth}, process: {name: sshd}}\n"
        "    - events: [{event: {dataset: linux.auth}, process: {name: cron}}, "
        "{event: {dataset: linux.auth}, process: {name: sshd}}]\n"
        "  no_match:\n    - {event: {dataset: linux.auth}, process: {name: cron}}\n"
        "    - {event: {dataset: web.access}, process: {name: sshd}}\n"))
    wrong = ok.replace("id: ok", "id: wrong").replace("name: cron}}\n    - {event", "name: sshd}}\n    - {event")
    path = tmp_path / "r.yml"
    path.write_text(ok + "---\n" + wrong)
    results, errors = run_rule_tests([RuleSource(str(path), path.read_text())])
    assert not errors and len(results) == 8
    assert [(r.rule_id, r.expectation, r.index) for r in results if not r.passed] == [("wrong", "no_match", 1)]
    assert main(["rules", "test", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {path} [wrong] no_match case #1: expected no finding, got one" in out
    assert "8 cases, 7 passed, 1 failed" in out
    (tmp_path / "only_ok.yml").write_text(ok)
    assert main(["rules", "test", str(tmp_path / "only_ok.yml")]) == 0


def test_processor_contract_snapshot_replace_and_stats() -> None:
    ruleset = load_ok(WHOAMI_RULE.replace("whoami.exe", "svchost.exe"))
    events = [event_from_obj(e) for e in generate("windows", 300, seed=2)]
    detector = Detector(ruleset)
    findings = detector.process(events)
    assert detector.stats.events == 300 and detector.stats.findings == len(findings) > 0
    assert all(e.timestamp is not None for e in events)  # filled from the EVTX System time
    state = detector.snapshot()
    assert json.loads(json.dumps(state)) == state and detector.stats.state_bytes > 0
    resumed = Detector(ruleset, state)
    assert [f.id for f in resumed.process(events)] == [f.id for f in findings]
    assert detector.flush() == []
    detector.replace_rules(load_ok(WHOAMI_RULE.replace("whoami.exe", "nothing.exe")))
    assert detector.processor.ruleset.detections[0].requirement is not None
    assert detector.process(events) == []


def test_disabled_rules_do_not_run() -> None:
    ruleset = load_ok(WHOAMI_RULE)
    ruleset.detections[0].meta.enabled = False
    detector = Detector(ruleset)
    assert detector.process([event_from_obj(e) for e in generate("windows", 50, seed=2)]) == []


def test_only_finding_templates_are_rendered() -> None:
    ruleset = load_ok(rule_text("  s:\n    a: 1\n  condition: s\n",
                                extra="description: 'Matches {default} literally'\n"))
    finding = Detector(ruleset).process([event_from_obj({"a": 1})])[0]
    assert finding.description == "Matches {default} literally" and finding.title == "Test rule"


@pytest.mark.parametrize("value", [4624, 4624.0, "4624", " 4624 ", "4624.0", "0x1210", "0X1210", [1, "4624"], "4.624e3"])
def test_number_literals_find_every_spelling_of_the_number(value: object) -> None:
    """A number literal indexes the rule under the number, not its text: 4624, "0x1210" and "4624.0" are alike."""
    ruleset = load_ok(rule_text("  s:\n    EventID: 4624\n    Other: 1\n  condition: s\n", rule_id="logon"))
    index = RuleIndex(ruleset)
    (lens,) = index.view({"EventID": value, "Other": True}).group.lenses
    assert lens.prefilter.scans and not lens.prefilter.always  # indexed, not always a candidate
    for other, matches in ((1, True), ("1", True), (2, False), (True, False)):
        view = index.view({"EventID": value, "Other": other})
        assert [r.id for r in index.matches(view)] == (["logon"] if matches else [])


@pytest.mark.parametrize("number", [2**60 + 1, 2**53 + 1, 10**30, -7, 0.1])
def test_number_literals_never_drop_a_match(number: int | float) -> None:
    """Whatever the rule's number became (pySigma may make it a float), the prefilter keeps what the matcher takes."""
    ruleset = load_ok(rule_text(f"  s:\n    Id: {number}\n  condition: s\n", rule_id="n"))
    index = RuleIndex(ruleset)
    for value in (number, float(number), str(number), number + 1, 2**60, [0, number]):
        view = index.view({"Id": value})
        everything = [r.id for r in view.group.rules if r.match(view.flat, view.low)]
        assert [r.id for r in index.matches(view)] == everything


@pytest.mark.parametrize("line", [
    b'{"message": "run mimikatz now"}',
    b'{"message": "run \\u006dimikatz now"}',  # a \u escape: the text is not searched as it is
    b'{"message": "run MIMI\\u004bATZ now", "Path": "C:\\\\users\\\\x"}',
    b'{"message": "see mimi/katz.exe or mimi\\/katz"}',  # an escaped slash
    b'{"message": "tab\\tmimikatz"}',
])
def test_keyword_prefilter_finds_keywords_however_the_json_text_escapes_them(line: bytes) -> None:
    ruleset = load_ok(rule_text("  keywords: [mimikatz, 'mimi/katz']\n  condition: keywords\n", rule_id="kw"))
    index = RuleIndex(ruleset)
    event = event_from_obj(orjson.loads(line), line)
    assert event.raw == line
    view = index.view(event.data, event.raw)
    assert [r.id for r in index.matches(view)] == ["kw"]
