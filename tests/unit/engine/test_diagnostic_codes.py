"""Every rule diagnostic carries a stable code (opmas.core.errors.Code): broken rules of each group get
theirs through the normal loader, codes survive the rule cache, show in str(), in `opmas rules validate
--format json` and in rule checks, and docs/diagnostics.md is the registry rendered."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import opmas.core.ruleset
from opmas.cli import main
from opmas.core.errors import CODE_DOCS, Code, RuleError, code_in, codes_markdown
from opmas.core.rule_tests import CheckFailed, CheckTimeout, check_rule, run_rule_tests
from opmas.core.ruleset import RuleSource, load_ruleset
from tests.unit.correlation.helpers import AUTH_RULES
from tests.paths import PROJECT_ROOT


def _rule(detection: str, rule_id: str = "r-1", head: str = "",
          logsource: str = "{product: windows, category: process_creation}") -> str:
    return f"title: T\nid: {rule_id}\n{head}logsource: {logsource}\ndetection:\n{detection}"


def _correlation(body: str, rule_id: str = "bad", head: str = "title: Bad one\n") -> str:
    return f"{head}id: {rule_id}\ncorrelation:\n{body}"


COUNT = "    type: event_count\n    rules: [ssh_fail]\n    timespan: 1m\n    condition: {gte: 2}\n"
GOOD_CORRELATION = _correlation(COUNT, "good", "title: Good\n")
FILTER = ("title: F\nid: f-1\nlogsource: {{product: windows, category: process_creation}}\nfilter:\n"
          "    rules: [{ref}]\n    sel: {{ComputerName|startswith: 'DC-'}}\n    condition: not sel\n")

# (case, rule sources, code, line): each loads with exactly one diagnostic, of that code, at that line
CASES: list[tuple[str, list[tuple[str, str]], Code, int | None]] = [
    # YAML
    ("bad yaml", [("x.yml", "title: [unclosed\n")], Code.YAML_PARSE, 2),
    ("alias", [("x.yml", _rule("  sel: &s {Image: x}\n  other: *s\n  condition: sel\n"))], Code.YAML_ALIAS, 6),
    ("duplicate key", [("x.yml", _rule("  sel: {Image: a}\n  sel: {Image: b}\n  condition: sel\n"))],
     Code.YAML_DUPLICATE_KEY, 6),
    # schema
    ("not a mapping", [("x.yml", "- title: T\n- id: x\n")], Code.SCHEMA_NOT_MAPPING, 1),
    ("no title", [("x.yml", "id: r-1\nlogsource: {}\ndetection:\n  sel: {a: b}\n  condition: sel\n")],
     Code.SCHEMA_REQUIRED, 1),
    ("no condition", [("x.yml", _rule("  sel: {Image: x}\n"))], Code.SCHEMA_REQUIRED, 4),
    ("title a list", [("x.yml", _rule("  sel: {Image: x}\n  condition: sel\n").replace("title: T", "title: [1]"))],
     Code.SCHEMA_TYPE, 1),
    ("level", [("x.yml", _rule("  sel: {Image: x}\n  condition: sel\n", head="level: urgent\n"))],
     Code.SCHEMA_ENUM, 3),
    ("finding key", [("x.yml", _rule("  sel: {Image: x}\n  condition: sel\n") + "finding:\n  titel: x\n")],
     Code.SCHEMA_UNKNOWN_KEY, 7),
    ("empty condition", [("x.yml", _rule("  sel: {Image: x}\n  condition: ''\n"))], Code.SCHEMA_VALUE, 6),
    # rule ids
    ("id", [("x.yml", _rule("  sel: {Image: x}\n  condition: sel\n", "../../etc/x"))], Code.RULE_ID_INVALID, 2),
    ("duplicate id", [("a.yml", _rule("  sel: {Image: x}\n  condition: sel\n", "same")),
                      ("b.yml", _rule("  sel: {Image: y}\n  condition: sel\n", "same"))], Code.DUPLICATE_RULE_ID, 2),
    # detection
    ("no search", [("x.yml", _rule("  condition: sel\n"))], Code.DETECTION_NO_SEARCH, 4),
    ("empty search", [("x.yml", _rule("  sel: {}\n  condition: sel\n"))], Code.DETECTION_EMPTY_SEARCH, 5),
    ("field name", [("x.yml", _rule("  sel:\n    5: foo\n  condition: sel\n"))], Code.DETECTION_FIELD_NAME, 6),
    ("nested value", [("x.yml", _rule("  sel:\n    Image: {nested: map}\n  condition: sel\n"))],
     Code.DETECTION_VALUE_TYPE, 6),
    ("date value", [("x.yml", _rule("  sel:\n    Date: 2024-01-01\n  condition: sel\n"))],
     Code.DETECTION_VALUE_TYPE, 6),
    ("null keyword", [("x.yml", _rule("  kw:\n    - null\n  condition: kw\n"))], Code.DETECTION_VALUE_TYPE, 6),
    ("re after contains", [("x.yml", _rule("  sel:\n    Image|contains|re: x\n  condition: sel\n"))],
     Code.DETECTION_VALUE_INVALID, 6),
    ("unknown modifier", [("x.yml", _rule("  sel:\n    Image|endswithh: x\n  condition: sel\n"))],
     Code.UNKNOWN_MODIFIER, 6),
    ("gt of text", [("x.yml", _rule("  sel:\n    Count|gt: abc\n  condition: sel\n"))],
     Code.MODIFIER_VALUE_MISMATCH, 6),
    ("bad cidr", [("x.yml", _rule("  sel:\n    Ip|cidr: 10.0.0.0/33\n  condition: sel\n"))],
     Code.MODIFIER_VALUE_MISMATCH, 6),
    ("placeholder", [("x.yml", _rule("  sel:\n    Image|expand: '%Unknown%'\n  condition: sel\n"))],
     Code.PLACEHOLDER_UNDEFINED, 6),
    # condition
    ("condition syntax", [("x.yml", _rule("  sel: {Image: x}\n  condition: (sel\n"))], Code.CONDITION_SYNTAX, 6),
    ("pipe", [("x.yml", _rule("  sel: {Image: x}\n  condition: sel | count() > 5\n"))], Code.CONDITION_SYNTAX, 6),
    ("undefined", [("x.yml", _rule("  sel: {Image: x}\n  condition: sel and filter\n"))], Code.UNDEFINED_SEARCH, 6),
    ("1 of none", [("x.yml", _rule("  sel: {Image: x}\n  condition: 1 of filter_*\n"))], Code.UNDEFINED_SEARCH, 6),
    # regular expressions
    ("re2 invalid", [("x.yml", _rule("  sel:\n    Image|re: '(unclosed'\n  condition: sel\n"))],
     Code.REGEX_INVALID, 6),
    ("re invalid", [("x.yml", _rule("  sel:\n    Image|re: '\\pL'\n  condition: sel\n"))], Code.REGEX_INVALID, 4),
    ("re unsafe", [("x.yml", _rule("  sel:\n    Image|re: '(?:a+$|b)+c'\n  condition: sel\n"))],
     Code.REGEX_UNSAFE, 4),
    # filters
    ("filter unknown rule", [("r.yml", _rule("  sel: {Image: x}\n  condition: sel\n")),
                             ("f.yml", FILTER.format(ref="missing"))], Code.FILTER_UNKNOWN_RULE, 5),
    ("filter logsource", [("r.yml", _rule("  sel: {Image: x}\n  condition: sel\n", logsource="{product: linux}")),
                          ("f.yml", FILTER.format(ref="r-1"))], Code.FILTER_LOGSOURCE_MISMATCH, 5),
    # correlations and suppression
    ("correlation timespan", [("c.yml", _correlation(COUNT.replace("    timespan: 1m\n", "")))],
     Code.CORRELATION_MISSING_FIELD, 3),
    ("correlation key", [("c.yml", _correlation(COUNT + "    window: 5\n"))], Code.CORRELATION_UNKNOWN_KEY, 3),
    ("correlation type", [("c.yml", _correlation(COUNT.replace("event_count", "sometimes")))],
     Code.CORRELATION_TYPE, 4),
    ("correlation generate", [("c.yml", _correlation(COUNT + "    generate: sometimes\n"))],
     Code.CORRELATION_VALUE, 8),
    ("timespan", [("c.yml", _correlation(COUNT.replace("1m", "5 minutes")))], Code.CORRELATION_TIMESPAN, 6),
    ("count condition", [("c.yml", _correlation(COUNT.replace("{gte: 2}", "{gt: 5, lt: 6}")))],
     Code.CORRELATION_CONDITION, 7),
    ("unknown rule", [("c.yml", _correlation(COUNT.replace("[ssh_fail]", "[ssh_fail, nope]")))],
     Code.CORRELATION_UNKNOWN_RULE, 5),
    ("itself", [("c.yml", _correlation(COUNT.replace("[ssh_fail]", "[ssh_fail, bad]")))],
     Code.CORRELATION_SELF_REFERENCE, 5),
    ("twice", [("c.yml", _correlation(COUNT.replace("[ssh_fail]", "[ssh_fail, ssh-fail]")))],
     Code.CORRELATION_REPEATED_RULE, 1),
    ("ambiguous", [("twin.yml", AUTH_RULES.split("---")[0].replace("id: ssh-fail", "id: ssh-fail-twin")),
                   ("c.yml", _correlation(COUNT))], Code.CORRELATION_AMBIGUOUS_REFERENCE, 5),
    ("duplicate name", [("c.yml", _correlation(COUNT, head="title: Bad one\nname: ssh_ok\n"))],
     Code.CORRELATION_DUPLICATE_NAME, 1),
    ("alias", [("c.yml", _correlation(COUNT + "    aliases:\n        ip: {ssh_fail: source.ip, other: source.ip}\n"))],
     Code.CORRELATION_ALIAS, 1),
    ("suppress", [("c.yml", _correlation(COUNT) + "suppress: {by: [source.ip]}\n")], Code.SUPPRESS_INVALID, 8),
    ("detection suppress", [("s.yml", _rule("  sel: {Image: x}\n  condition: sel\n") + "suppress: {for: soon}\n")],
     Code.SUPPRESS_INVALID, 1),
    # mappings, logsources and fields
    ("uncovered", [("x.yml", _rule("  sel: {a: b}\n  condition: sel\n", logsource="{product: zos, service: smf}"))],
     Code.LOGSOURCE_NOT_COVERED, 3),
    ("field case", [("x.yml", _rule("  sel:\n    commandline: whoami\n  condition: sel\n"))],
     Code.FIELD_NAME_CASE, 6),
]


def _load(sources: list[tuple[str, str]], **kwargs) -> tuple:
    return load_ruleset([RuleSource("auth.yml", AUTH_RULES), *(RuleSource(n, t) for n, t in sources)],
                        cache_dir=None, **kwargs)


@pytest.mark.parametrize("case,sources,code,line", CASES, ids=[c[0] for c in CASES])
def test_each_group_of_broken_rule_has_its_code(case: str, sources: list, code: Code, line: int | None) -> None:
    _, errors = _load(sources)
    assert [(e.code, e.line) for e in errors] == [(code, line)], [str(e) for e in errors]
    error = errors[0]
    assert error.severity == CODE_DOCS[code].severity  # the registry says how it is reported
    assert error.file == sources[-1][0]
    assert str(error).endswith(f"{error.severity}: {error.message} [{code}]")
    assert error.to_dict() == {"file": error.file, "line": line, "rule_id": error.rule_id,
                               "severity": error.severity, "code": str(code), "message": error.message}


def test_a_correlation_cycle_and_what_references_it() -> None:
    cycle = ("title: A\nid: corr-a\ncorrelation: {type: event_count, rules: [corr-b], timespan: 1m, "
             "condition: {gte: 1}}\n---\ntitle: B\nid: corr-b\ncorrelation: {type: event_count, rules: [corr-a], "
             "timespan: 1m, condition: {gte: 1}}\n---\ntitle: C\nid: corr-c\ncorrelation: {type: event_count, "
             "rules: [corr-a], timespan: 1m, condition: {gte: 1}}\n")
    _, errors = _load([("cycle.yml", cycle)])
    codes = {(e.rule_id, e.code) for e in errors}
    assert (("corr-a", Code.CORRELATION_CYCLE) in codes or ("corr-b", Code.CORRELATION_CYCLE) in codes), errors
    assert ("corr-c", Code.CORRELATION_REFUSED_INPUT) in codes, errors


def test_correlations_without_their_module_are_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opmas.core.ruleset, "_compile_correlations", lambda: None)
    _, errors = _load([("c.yml", GOOD_CORRELATION)])
    assert [(e.rule_id, e.code) for e in errors] == [("good", Code.CORRELATION_UNSUPPORTED)]


def test_mapping_files_that_cannot_be_read_or_used(tmp_path: Path) -> None:
    invalid = tmp_path / "invalid.yml"
    invalid.write_text("name: x\nflatten: xml\n")
    aliased = tmp_path / "aliased.yml"
    aliased.write_text("name: &n x\nother: *n\n")
    _, errors = load_ruleset([], [tmp_path / "missing.yml", aliased, invalid], cache_dir=None)
    assert [(Path(e.file).name, e.code) for e in errors] == [
        ("missing.yml", Code.MAPPING_UNREADABLE), ("aliased.yml", Code.MAPPING_UNREADABLE),
        ("invalid.yml", Code.MAPPING_INVALID)]


def test_failed_rule_tests_and_checks_have_codes() -> None:
    rule = _rule("  sel:\n    Image|endswith: '\\whoami.exe'\n  condition: sel\n",
                 logsource="{product: windows, category: process_creation}")
    failing = rule + "tests:\n  match:\n    - {Image: 'C:\\notepad.exe'}\n"
    results, errors = run_rule_tests([RuleSource("t.yml", failing)])
    assert not errors and [r.code for r in results] == [Code.RULE_TEST_FAILED]
    assert str(results[0]).endswith(" [RULE_TEST_FAILED]")
    checked = check_rule([RuleSource("api:t", failing)], "api:t")
    assert [e["code"] for e in checked["errors"]] == ["RULE_TEST_FAILED"]
    broken = check_rule([RuleSource("api:b", rule.replace("endswith", "endswithh"))], "api:b")
    assert [(e["line"], e["code"]) for e in broken["errors"]] == [(6, "UNKNOWN_MODIFIER")]
    assert CheckTimeout(3.0, {}).code == Code.RULE_CHECK_TIMEOUT and CheckFailed("x").code == Code.RULE_CHECK_FAILED


# codes no broken rule text reaches through the loader (fallbacks for what pySigma or the compiler might raise)
UNREACHED = {Code.MODIFIER_INVALID, Code.DETECTION_UNSUPPORTED, Code.CONDITION_EMPTY}
EXERCISED = {code for _, _, code, _ in CASES} | {
    Code.CORRELATION_CYCLE, Code.CORRELATION_REFUSED_INPUT, Code.CORRELATION_UNSUPPORTED, Code.MAPPING_UNREADABLE,
    Code.MAPPING_INVALID, Code.RULE_TEST_FAILED, Code.RULE_CHECK_TIMEOUT, Code.RULE_CHECK_FAILED}


def test_every_code_is_exercised_by_a_test_above() -> None:
    assert set(Code) - EXERCISED == UNREACHED


def test_every_code_is_documented_and_stable() -> None:
    assert set(CODE_DOCS) == set(Code)
    for code, doc in CODE_DOCS.items():
        assert code.value == code.name and code.name.isupper() and " " not in code.name
        assert doc.severity in ("error", "warning") and doc.group and doc.description.strip(), code
        assert "\n" not in doc.description, code
    assert len({code.value for code in Code}) == len(Code)


def test_a_rule_error_needs_a_known_code() -> None:
    with pytest.raises(TypeError):
        RuleError("x.yml", 1, None, "no code")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        RuleError("x.yml", 1, None, "made up", code="NOT_A_CODE")
    error = RuleError("x.yml", 3, "r", "duplicate rule id", code="DUPLICATE_RULE_ID")
    assert error.code is Code.DUPLICATE_RULE_ID and str(error) == "x.yml:3: [r] error: duplicate rule id [DUPLICATE_RULE_ID]"
    assert code_in(str(error)) == "DUPLICATE_RULE_ID"
    assert code_in("rules:x:3: [x] error: duplicate rule id") is None
    assert code_in("x.yml:3: error: message [NOT_A_CODE]") is None


def test_codes_survive_the_rule_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sources = [RuleSource(name, text) for name, text in
               [("yaml.yml", "title: [unclosed\n"),
                ("mod.yml", _rule("  sel:\n    Image|nope: x\n  condition: sel\n", "m")),
                ("re.yml", _rule("  sel:\n    Image|re: '(?:a+$|b)+c'\n  condition: sel\n", "u")),
                ("dup.yml", _rule("  sel: {Image: a}\n  sel: {Image: b}\n  condition: sel\n", "d")),
                ("schema.yml", _rule("  sel: {Image: x}\n  condition: sel\n", "s", head="level: urgent\n"))]]
    cold = load_ruleset(sources, cache_dir=tmp_path)[1]
    assert {e.code for e in cold} == {Code.YAML_PARSE, Code.UNKNOWN_MODIFIER, Code.REGEX_UNSAFE,
                                      Code.YAML_DUPLICATE_KEY, Code.SCHEMA_ENUM}

    def parsed_again(*args, **kwargs):
        raise AssertionError("a source was parsed again instead of read from the cache")
    monkeypatch.setattr(opmas.core.ruleset, "_source_record", parsed_again)
    warm = load_ruleset(sources, cache_dir=tmp_path)[1]
    assert warm == cold and [e.code for e in warm] == [e.code for e in cold]
    assert all(type(e.code) is Code for e in warm)


def test_rules_validate_json_lists_every_diagnostic_with_its_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yml").write_text(_rule("  sel:\n    Image: x\n  condition: sel\n", "g"))
    (tmp_path / "bad.yml").write_text(_rule("  sel:\n    Image|nope: x\n  condition: sel\n", "b"))
    (tmp_path / "warn.yml").write_text(_rule("  sel:\n    commandline: x\n  condition: sel\n", "w"))
    assert main(["rules", "validate", "--format", "json", str(tmp_path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {k: report[k] for k in ("files", "rules", "errors", "warnings")} == \
        {"files": 3, "rules": 2, "errors": 1, "warnings": 1}
    assert report["diagnostics"] == [
        {"file": str(tmp_path / "bad.yml"), "line": 6, "rule_id": "b", "severity": "error",
         "code": "UNKNOWN_MODIFIER", "message": "detection 'sel': Unknown modifier 'nope'"},
        {"file": str(tmp_path / "warn.yml"), "line": 6, "rule_id": "w", "severity": "warning",
         "code": "FIELD_NAME_CASE", "message": report["diagnostics"][1]["message"]}]
    assert "did you mean 'CommandLine'?" in report["diagnostics"][1]["message"]
    (tmp_path / "bad.yml").unlink()
    assert main(["rules", "validate", "--format", "json", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["errors"] == 0
    assert main(["rules", "validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(" [FIELD_NAME_CASE]") and not out.startswith("{")


def test_docs_diagnostics_md_is_the_registry_rendered() -> None:
    rendered = codes_markdown()
    for code in Code:
        assert f"| `{code}` | {CODE_DOCS[code].severity} |" in rendered
    assert (PROJECT_ROOT / "docs" / "diagnostics.md").read_text() == rendered, \
        "docs/diagnostics.md is stale: python -m opmas.core.errors > docs/diagnostics.md"
