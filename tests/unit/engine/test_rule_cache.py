"""The rule cache (engine/rule_cache.py): a load from cache entries gives exactly what parsing gives.

Same rules, ids, requirements, matchers, and the same errors and warnings (file, line, rule id,
message, severity); an edited rule, other placeholders or a bad entry mean parsing again; a cache
directory that cannot be written only costs speed.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import opmas.core.ruleset
from benchmarks.generate import generate
from opmas.core.errors import RuleError
from opmas.core.logsource import Mapping
from opmas.core.rule_cache import ENV_VAR, RuleCache, default_cache_dir
from opmas.core.ruleset import DetectionRule, RuleSet, RuleSource, load_ruleset, sources_from_paths
from opmas.core.sigma.compile import KEYWORDS, KEYWORDS_RAW
from opmas.core.sigma.yamldoc import rule_documents
from tests.paths import PROJECT_ROOT, SAMPLES_DIR
from tests.unit.engine.conftest import matched_ids

SIGMA_WINDOWS = PROJECT_ROOT.parent / "shared" / "sigma" / "rules" / "windows"

HEAD = "logsource:\n  product: windows\n  category: process_creation\n"
GOOD = f"""title: Good
id: good-1
name: good
status: test
tags: [attack.execution, attack.t1059.001]
{HEAD}detection:
  sel:
    Image|endswith: ['\\\\cmd.exe', '\\\\pwsh.exe']
    CommandLine|re: '(?i)whoami\\s+/all'
  net:
    DestinationIp|cidr: 10.0.0.0/8
  num:
    ProcessId: 4
  kw:
    - evil*thing
  exp:
    User|expand: '%Admins%'
  condition: sel or net or num or kw or exp
level: high
finding:
  title: '{{Image}} ran'
suppress:
  by: [Image]
  for: 1h
tests:
  match:
    - {{Image: 'C:\\\\cmd.exe', CommandLine: 'whoami /all'}}
"""
CORPUS = {
    "good.yml": GOOD,
    "multi.yml": f"""action: global
title: Multi
{HEAD}level: low
---
id: multi-a
detection:
  sel:
    Image|contains: rar
  condition: sel
---
id: multi-b
id: multi-b2
detection:
  sel:
    Image|startswith: 'C:\\\\Temp'
  condition: not sel
""",
    "bad_yaml.yml": f"title: Ok\nid: before-bad\n{HEAD}detection:\n  s:\n    Image: x\n  condition: s\n---\n"
                    "title: [unclosed\n",
    "schema.yml": f"title: Schema\nid: schema-1\n{HEAD}level: urgent\ndetection:\n  s:\n    Image: x\n  condition: s\n",
    "parse.yml": f"title: Parse\nid: parse-1\n{HEAD}detection:\n  s:\n    Image|endswithh: x\n  condition: s\n",
    "python_re.yml": f"title: Re\nid: re-1\n{HEAD}detection:\n  s:\n    Image|re: 'a\\z'\n  condition: s\n",
    "zdup.yml": f"title: Dup\nid: good-1\n{HEAD}detection:\n  s:\n    Image: x\n  condition: s\n",
    "uncovered.yml": "title: Nowhere\nid: nowhere-1\nlogsource:\n  product: nosuchproduct\n"
                     "detection:\n  s:\n    a: b\n  condition: s\n",
    "not_mapping.yml": "- just\n- a list\n",
    "dated.yml": f"title: Dated\nid: dated-1\n{HEAD}detection:\n  s:\n    Image: x\n  condition: s\n"
                 "tests:\n  match:\n    - {Image: x, When: 2024-01-01}\n",
    "corr.yml": "title: Burst\nid: burst-1\ncorrelation:\n  type: event_count\n  rules: [good]\n"
                "  group-by: [Image]\n  timespan: 1m\n  condition: {gte: 3}\n  generate: true\nlevel: high\n",
    "filter.yml": "title: F\nid: filter-1\nlogsource: {product: windows}\nfilter:\n  rules: [good]\n"
                  "  sel:\n    User: adm_bob\n  condition: not sel\n",
}
NOT_CACHED = ["corr.yml", "dated.yml", "filter.yml"]
MAPPING = "name: admins\nplaceholders:\n  Admins: [root, 'adm_*']\n"


def _process(image: str, command_line: str = "", user: str = "alice") -> dict[str, Any]:
    return {"Event": {"System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"},
                      "EventData": {"Image": image, "CommandLine": command_line, "User": user,
                                    "ProcessId": 7}}}


EVENTS = [_process("C:\\cmd.exe", "whoami /all"), _process("C:\\a.exe", "WHOAMI  /all"), _process("C:\\b.exe", user="adm_joe"),
          _process("C:\\rar.exe"), _process("C:\\Temp\\a.exe"), _process("C:\\c.exe", "an evil thing"),
          _process("C:\\d\\cmd.exe", user="adm_bob")]  # other images: the good rule suppresses by Image


def _write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[list[RuleSource], list[Path]]:
    rules = _write(tmp_path / "rules", CORPUS)
    mapping = tmp_path / "admins.yml"
    mapping.write_text(MAPPING)
    return sources_from_paths([rules]), [mapping]


def _parsed_sources(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the sources the next loads parse (rather than read from the cache)."""
    parsed: list[str] = []
    original = opmas.core.ruleset._source_record

    def record(source: RuleSource, placeholders: dict[str, list[str]]) -> Any:
        parsed.append(Path(source.name).name)
        return original(source, placeholders)
    monkeypatch.setattr(opmas.core.ruleset, "_source_record", record)
    return parsed


def _summary(rule: DetectionRule) -> tuple[Any, ...]:
    return (rule.meta, rule.requirement, rule.fields, rule.keywords, rule.severity, rule.finding, rule.suppress,
            rule.generate)


def _assert_same(cold: tuple[RuleSet, list[RuleError]], warm: tuple[RuleSet, list[RuleError]]) -> None:
    (cold_set, cold_errors), (warm_set, warm_errors) = cold, warm
    assert warm_errors == cold_errors
    assert warm_set.rules == cold_set.rules
    assert [_summary(r) for r in warm_set.detections] == [_summary(r) for r in cold_set.detections]
    assert matched_ids(warm_set, EVENTS) == matched_ids(cold_set, EVENTS)


def test_a_load_from_the_cache_equals_the_load_that_filled_it(
        corpus: tuple[list[RuleSource], list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources, mappings = corpus
    cache = tmp_path / "cache"
    cold = load_ruleset(sources, mappings, cache_dir=cache)
    parsed = _parsed_sources(monkeypatch)
    warm = load_ruleset(sources, mappings, cache_dir=cache)
    _assert_same(cold, warm)
    # parsed again: the files with correlation or filter documents, and the one with a YAML date
    assert sorted(parsed) == NOT_CACHED
    _assert_same(load_ruleset(sources, mappings, cache_dir=None), warm)
    # every kind of outcome is in the corpus: the comparison above covers them all
    ruleset, errors = cold
    assert {r.id for r in ruleset.detections} == {"good-1", "multi-a", "multi-b2", "before-bad", "nowhere-1",
                                                  "dated-1"}
    assert [(Path(e.file).name, e.line, e.rule_id, e.severity) for e in errors] == [
        ("bad_yaml.yml", 12, None, "error"),
        ("multi.yml", 15, "multi-b2", "warning"),
        ("not_mapping.yml", 1, None, "error"),
        ("parse.yml", 8, "parse-1", "error"),
        ("python_re.yml", 6, "re-1", "error"),
        ("schema.yml", 6, "schema-1", "error"),
        ("uncovered.yml", 3, "nowhere-1", "warning"),
        ("zdup.yml", 2, "good-1", "error"),
    ]
    assert "not supported by Python's re" in errors[4].message
    assert "is not covered by any mapping" in errors[6].message
    assert "duplicate rule id (first defined at" in errors[7].message
    assert ruleset.correlations is not None
    assert matched_ids(ruleset, EVENTS) == ["good-1", "multi-b2", "multi-b2", "good-1", "multi-b2", "multi-a",
                                            "multi-b2", "good-1", "multi-b2", "multi-b2"]


def test_a_warning_that_depends_on_the_mappings_is_not_cached(tmp_path: Path) -> None:
    source = [RuleSource("nowhere.yml", CORPUS["uncovered.yml"])]
    mapping = tmp_path / "nosuch.yml"
    mapping.write_text("name: nosuch\nrecognize: {exists: [a]}\nflatten: dotted\nproduct: nosuchproduct\n")
    assert [e.rule_id for e in load_ruleset(source, cache_dir=tmp_path / "c")[1]] == ["nowhere-1"]
    assert load_ruleset(source, [mapping], cache_dir=tmp_path / "c")[1] == []
    assert [e.rule_id for e in load_ruleset(source, cache_dir=tmp_path / "c")[1]] == ["nowhere-1"]


def test_an_edited_rule_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rules = _write(tmp_path / "rules", {"good.yml": GOOD, "multi.yml": CORPUS["multi.yml"]})
    mappings = [_write(tmp_path, {"admins.yml": MAPPING}) / "admins.yml"]
    cache = tmp_path / "cache"
    load_ruleset(sources_from_paths([rules]), mappings, cache_dir=cache)
    (rules / "good.yml").write_text(GOOD.replace("evil*thing", "other*thing"))
    parsed = _parsed_sources(monkeypatch)
    ruleset, _ = load_ruleset(sources_from_paths([rules]), mappings, cache_dir=cache)
    assert parsed == ["good.yml"]
    assert "good-1" in matched_ids(ruleset, [_process("C:\\x.exe", "an other thing")])
    assert "good-1" not in matched_ids(ruleset, [_process("C:\\x.exe", "an evil thing")])
    assert len(list((cache / "rules").iterdir())) == 3


def test_other_placeholders_mean_parsing_again(tmp_path: Path) -> None:
    source = [RuleSource("good.yml", GOOD)]
    first, second = tmp_path / "first.yml", tmp_path / "second.yml"
    first.write_text(MAPPING)
    second.write_text(MAPPING.replace("root", "toor"))
    cache = tmp_path / "cache"
    for _ in range(2):
        by_first, _errors = load_ruleset(source, [first], cache_dir=cache)
        by_second, _errors = load_ruleset(source, [second], cache_dir=cache)
        assert matched_ids(by_first, [_process("C:\\x.exe", user="root")]) == ["good-1"]
        assert matched_ids(by_second, [_process("C:\\x.exe", user="root")]) == []
        assert matched_ids(by_second, [_process("C:\\x.exe", user="toor")]) == ["good-1"]


def _entry(cache: Path) -> Path:
    [entry] = (cache / "rules").iterdir()
    return entry


def _corrupt(kind: str, entry: Path, other: Path) -> None:
    data = entry.read_bytes()
    check, _, body = data.partition(b"\n")
    if kind == "garbage":
        entry.write_bytes(b"\x00\xffnot json at all")
    elif kind == "truncated":
        entry.write_bytes(data[:len(data) // 2])
    elif kind == "altered":
        entry.write_bytes(check + b"\n" + body.replace(b"good-1", b"evil-1"))
    elif kind == "foreign":  # another source's entry under this key
        entry.write_bytes(other.read_bytes())
    else:  # well formed, but not a value this code writes
        key = json.loads(body)["key"]
        for value in ({"docs": 5}, {"yaml_error": None, "docs": [{"kind": "detection"}]}, [1, 2], None):
            forged = orjson.dumps({"key": key, "value": value})
            entry.write_bytes(hashlib.sha256(forged).hexdigest().encode() + b"\n" + forged)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "altered", "foreign", "forged"])
def test_a_bad_cache_entry_is_ignored_and_written_again(kind: str, tmp_path: Path) -> None:
    source = [RuleSource("good.yml", GOOD)]
    cache = tmp_path / "cache"
    cold = load_ruleset(source, cache_dir=cache)
    entry = _entry(cache)
    good = entry.read_bytes()
    load_ruleset([RuleSource("other.yml", CORPUS["multi.yml"])], cache_dir=tmp_path / "other")
    _corrupt(kind, entry, _entry(tmp_path / "other"))
    _assert_same(cold, load_ruleset(source, cache_dir=cache))
    assert entry.read_bytes() == good
    _assert_same(cold, load_ruleset(source, cache_dir=cache))


def test_a_cache_dir_that_cannot_be_written_only_costs_speed(
        corpus: tuple[list[RuleSource], list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources, mappings = corpus
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    cold = load_ruleset(sources, mappings, cache_dir=None)
    _assert_same(cold, load_ruleset(sources, mappings, cache_dir=not_a_dir))
    cache = tmp_path / "cache"
    load_ruleset(sources, mappings, cache_dir=cache)
    os.chmod(cache / "rules", 0o500)  # read-only (root may still write: writes fail below in any case)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("read-only")
    monkeypatch.setattr("opmas.core.rule_cache.tempfile.mkstemp", refuse)
    edited = [RuleSource(s.name, s.text.replace("evil*thing", "other*thing")) for s in sources]
    parsed = _parsed_sources(monkeypatch)
    try:
        _assert_same(cold, load_ruleset(sources, mappings, cache_dir=cache))  # entries are still read
        assert sorted(parsed) == NOT_CACHED
        _assert_same(load_ruleset(edited, mappings, cache_dir=None), load_ruleset(edited, mappings, cache_dir=cache))
    finally:
        os.chmod(cache / "rules", 0o700)


def test_no_cache_where_the_engine_code_cannot_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opmas.core.ruleset, "code_version", lambda: None)
    source = [RuleSource("good.yml", GOOD)]
    _assert_same(load_ruleset(source, cache_dir=None), load_ruleset(source, cache_dir=tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


def test_entries_are_private_and_written_whole(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_ruleset([RuleSource("good.yml", GOOD), RuleSource("multi.yml", CORPUS["multi.yml"])], cache_dir=cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache / "rules").stat().st_mode) == 0o700
    entries = list((cache / "rules").iterdir())
    assert len(entries) == 2 and all(e.suffix == ".json" for e in entries)  # no temp file left
    assert all(stat.S_IMODE(e.stat().st_mode) == 0o600 for e in entries)


def test_the_oldest_entries_go_when_the_cache_is_too_big(tmp_path: Path) -> None:
    cache = RuleCache(tmp_path, b"context", "code", max_bytes=10_000)
    keys = [cache.key(f"rule-{i}.yml", "text") for i in range(8)]
    for age, key in enumerate(keys):  # keys[0] is the newest
        cache.put(key, orjson.dumps("x" * 2000))
        os.utime(tmp_path / "rules" / f"{key}.json", (1e9 - age, 1e9 - age))
    cache.prune()
    assert [cache.get(key) is not None for key in keys] == [True] * 4 + [False] * 4


def test_the_default_cache_dir(tmp_path: Path) -> None:
    assert default_cache_dir({ENV_VAR: str(tmp_path)}) == tmp_path
    assert default_cache_dir({ENV_VAR: "", "XDG_CACHE_HOME": str(tmp_path)}) is None
    assert default_cache_dir({ENV_VAR: "off"}) is None
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "opmas"
    assert default_cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "opmas"
    assert default_cache_dir({}) == Path.home() / ".cache" / "opmas"


def test_load_ruleset_uses_the_default_cache_dir_unless_it_is_off(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    source = [RuleSource("good.yml", GOOD)]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    load_ruleset(source)
    assert len(list((tmp_path / "env" / "rules").iterdir())) == 1
    monkeypatch.setenv(ENV_VAR, "off")
    load_ruleset(source)
    monkeypatch.delenv(ENV_VAR)
    load_ruleset(source)
    assert len(list((tmp_path / "xdg" / "opmas" / "rules").iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env", "xdg"]


# --- differential: every SigmaHQ Windows rule, compiled fresh and from the cache ------------------------

def _lowered(flat: dict[str, Any], mapping: Mapping) -> dict[str, Any]:
    low = {k: v.lower() if isinstance(v, str) else [x.lower() if isinstance(x, str) else x for x in v]
           if isinstance(v, list) else v for k, v in flat.items()}
    texts = mapping.keyword_texts(flat)
    low[KEYWORDS_RAW], low[KEYWORDS] = texts, [t.lower() for t in texts]
    return low


def _views(data: dict[str, Any], mappings: tuple[Mapping, ...], by_logsource: dict[tuple[tuple[str, str], ...], list[int]]
           ) -> Iterator[tuple[list[int], dict[str, Any], dict[str, Any]]]:
    """(rule indices, flat, low): the event as the rules of each logsource that covers it see it."""
    mapping = next((m for m in mappings if m.recognizes(data)), None)
    if mapping is None:
        return
    flat = mapping.flatten(data)
    entries = mapping.entries_for(mapping.discriminator(flat))
    for logsource, indices in by_logsource.items():
        covering = [e for e in entries if e.covers(dict(logsource))]
        if logsource and not covering:
            continue
        renamed = dict(flat)
        renamed.update({name: flat[field] for entry in covering for name, field in entry.fields
                        if flat.get(field) is not None})
        yield indices, renamed, _lowered(renamed, mapping)


def _differential_events(sources: list[RuleSource]) -> list[dict[str, Any]]:
    """Generated Windows events, one event built from each rule (benchmarks/sigma_corpus.py), the samples."""
    from benchmarks.sigma_corpus import rule_events

    docs = [doc.data for source in sources for doc in rule_documents(source.text) if "detection" in doc.data]
    events = list(generate("windows", 500, seed=21)) + rule_events(docs, seed=22)
    for path in sorted(SAMPLES_DIR.glob("*.jsonl")):
        events += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return events


@pytest.mark.skipif(not SIGMA_WINDOWS.is_dir(), reason=f"no SigmaHQ snapshot at {SIGMA_WINDOWS}")
def test_every_sigma_windows_rule_matches_alike_fresh_and_from_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = sources_from_paths([SIGMA_WINDOWS])
    cold = load_ruleset(sources, cache_dir=tmp_path)
    parsed = _parsed_sources(monkeypatch)
    warm = load_ruleset(sources, cache_dir=tmp_path)
    assert parsed == [] and len(warm[0].detections) == len(sources)
    assert warm[1] == cold[1]
    fresh, cached = cold[0].detections, warm[0].detections
    assert [_summary(r) for r in cached] == [_summary(r) for r in fresh]
    by_logsource: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for index, rule in enumerate(fresh):
        by_logsource.setdefault(tuple(sorted(rule.meta.logsource.items())), []).append(index)
    matches = 0
    matching_rules = set()
    for data in _differential_events(sources):
        for indices, flat, low in _views(data, cold[0].mappings, by_logsource):
            for index in indices:
                found = fresh[index].match(flat, low)
                assert cached[index].match(flat, low) == found, (fresh[index].id, data)
                if found:
                    matches += 1
                    matching_rules.add(index)
    assert matches > 2000 and len(matching_rules) > 1000  # the events exercise most rules
