"""Every rule error names file, line, rule id and what is wrong; a broken rule never stops the others."""
from __future__ import annotations

from pathlib import Path

import pytest

from opmas.core.ruleset import RuleSource, load_ruleset
from opmas.cli import main


def _errors(text: str, name: str = "rules/test.yml", mappings: tuple = ()) -> list:
    return load_ruleset([RuleSource(name, text)], mappings)[1]


def _rule(detection: str, rule_id: str = "r-1", head: str = "") -> str:
    return (f"title: T\nid: {rule_id}\n{head}logsource:\n  product: windows\n  category: process_creation\n"
            f"detection:\n{detection}")


@pytest.mark.parametrize("detection,line,fragment", [
    ("  sel:\n    Image|endswithh: x\n  condition: sel\n", 8, "Unknown modifier 'endswithh'"),
    ("  sel:\n    Image: x\n    CommandLine|re: '(unclosed'\n  condition: sel\n", 9, "is invalid"),
    ("  sel:\n    DestinationIp|cidr: '10.0.0.0/33'\n  condition: sel\n", 8, "Invalid CIDR expression"),
    ("  sel:\n    Image: x\n  condition: sel and filter\n", 9, "Detection 'filter' not defined"),
    ("  sel:\n    Image: x\n  condition: sel and and\n", 9, "condition 'sel and and'"),
    ("  sel:\n    Image: x\n  condition: 1 of filter_*\n", 9, "doesn't match any detection"),
    ("  sel:\n    Image|expand: '%Unknown%'\n  condition: sel\n", 8, "placeholder %Unknown% has no configured value"),
    ("  sel:\n    Image:\n      nested: map\n  condition: sel\n", 8, "must be a scalar or a list of scalars"),
    ("  sel: {}\n  condition: sel\n", 7, "is empty"),
    ("  sel:\n    Image: x\n  condition:\n    - sel\n    - sel or nope\n", 11, "Detection 'nope' not defined"),
])
def test_detection_errors_point_at_the_item_or_condition(detection: str, line: int, fragment: str) -> None:
    errors = _errors(_rule(detection))
    assert len(errors) == 1, errors
    error = errors[0]
    assert (error.file, error.line, error.rule_id, error.severity) == ("rules/test.yml", line, "r-1", "error")
    assert fragment in error.message
    assert str(error).startswith(f"rules/test.yml:{line}: [r-1] error: ")


@pytest.mark.parametrize("detection,line,fragment", [
    ("  sel:\n    Image: x\n    Count|contains: 5\n  condition: sel\n", 9,
     "detection 'sel': modifier 'contains' cannot be applied to the value '5'"),
    ("  sel:\n    Image: x\n    Count|exists: yes please\n  condition: sel\n", 9,
     "modifier 'exists' cannot be applied to the value 'yes please'"),
    ("  sel:\n    Image: x\n    Count|gt: abc\n  condition: sel\n", 9, "modifier 'gt' cannot be applied to the value 'abc'"),
    ("  sel:\n    Image: x\n    Ip|cidr|contains: 10.0.0.0/8\n  condition: sel\n", 9,
     "modifier 'contains' cannot be applied to the value '10.0.0.0/8'"),
    ("  sel:\n    Image: x\n    A|fieldref: 5\n  condition: sel\n", 9, "modifier 'fieldref' cannot be applied to the value '5'"),
    ("  kw:\n    - evil\n    - null\n  condition: kw\n", 9, "detection 'kw': keyword null is not supported"),
    ("  kw:\n    - true\n  condition: kw\n", 8, "detection 'kw': keyword true is not supported"),
    ("  sel:\n    Image: x\n    5: foo\n  condition: sel\n", 9, "detection 'sel': field name 5 must be text"),
    ("  sel:\n    Image: x\n    Date: 2024-01-01\n  condition: sel\n", 9,
     "value 2024-01-01 of 'Date' is a YAML date or time: quote it"),
    ("  sel: []\n  condition: sel\n", 7, "detection 'sel': search identifier is empty"),
])
def test_value_type_errors_are_located_and_in_plain_words(detection: str, line: int, fragment: str) -> None:
    errors = _errors(_rule(detection))
    assert [(e.file, e.line, e.rule_id, e.severity) for e in errors] == [("rules/test.yml", line, "r-1", "error")], errors
    assert fragment in errors[0].message
    assert "Sigma" not in errors[0].message and "<class" not in errors[0].message
    assert errors[0].message.count("detection") == 1


def test_validate_prints_no_re2_log_lines(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.yml").write_text(_rule("  sel:\n    Image|re: '(unclosed'\n  condition: sel\n"))
    assert main(["rules", "validate", str(tmp_path)]) == 1
    out, err = capfd.readouterr()
    assert "Regular expression '(unclosed' is invalid: missing ): (unclosed" in out and "b'" not in out
    assert "re2" not in err.lower()


@pytest.mark.parametrize("text,line,fragment", [
    ("id: r-1\nlogsource: {product: windows}\ndetection:\n  sel: {a: b}\n  condition: sel\n", 1, "'title' is a required property"),
    ("title: T\nid: r-1\nlevel: urgent\nlogsource: {product: windows}\ndetection:\n  sel: {a: b}\n  condition: sel\n", 3, "level"),
    ("title: T\nid: r-1\nlogsource: {product: windows}\n", 1, "'detection' is a required property"),
    ("title: T\nid: r-1\nlogsource: {product: windows}\ndetection:\n  sel: {a: b}\n", 4, "'condition' is a required property"),
    ("title: T\nid: r-1\ntags: ['Attack T1059']\nlogsource: {}\ndetection:\n  sel: {a: b}\n  condition: sel\n", 3, "tags/0"),
    ("title: T\nid: r-1\nlogsource: {}\ndetection:\n  sel: {a: b}\n  condition: sel\nfinding:\n  titel: x\n", 7, "finding"),
    ("title: T\nid: r-1\nlogsource: {}\ndetection:\n  sel: {a: b}\n  condition: sel\ntests:\n  match: {a: 1}\n", 8, "tests/match"),
])
def test_schema_errors_have_lines(text: str, line: int, fragment: str) -> None:
    errors = _errors(text)
    assert errors and errors[0].line == line and errors[0].rule_id == "r-1", errors
    assert errors[0].message.startswith("schema: ") and fragment in errors[0].message


def test_bad_yaml_reports_the_line() -> None:
    errors = _errors("title: T\nid: r-1\ndetection:\n  sel: [unclosed\n  condition: sel\n")
    assert len(errors) == 1 and errors[0].line == 5 and "bad YAML" in errors[0].message and errors[0].rule_id is None


def test_bad_yaml_in_a_later_document_keeps_the_rules_before_it() -> None:
    first = _rule("  sel:\n    Image: x\n  condition: sel\n", "good-1")
    second = _rule("  sel:\n    Image: y\n  condition: sel\n", "good-2")
    broken = "title: T\nid: bad-3\ndetection:\n  sel: [unclosed\n  condition: sel\n"
    ruleset, errors = load_ruleset([RuleSource("multi.yml", f"{first}---\n{second}---\n{broken}")])
    assert [r.id for r in ruleset.rules] == ["good-1", "good-2"]
    assert [(e.file, e.line, e.rule_id) for e in errors] == [("multi.yml", 25, None)]
    assert "bad YAML" in errors[0].message


def test_document_must_be_a_mapping() -> None:
    errors = _errors("- just\n- a list\n")
    assert errors[0].message == "a rule document must be a mapping" and errors[0].line == 1


def test_broken_rule_does_not_stop_the_others_in_the_same_file() -> None:
    good = _rule("  sel:\n    Image: x\n  condition: sel\n", "good-1")
    bad = _rule("  sel:\n    Image|nope: x\n  condition: sel\n", "bad-2")
    good2 = _rule("  sel:\n    Image: y\n  condition: sel\n", "good-3")
    ruleset, errors = load_ruleset([RuleSource("multi.yml", f"{good}---\n{bad}---\n{good2}")])
    assert [r.id for r in ruleset.rules] == ["good-1", "good-3"]
    assert [(e.rule_id, e.line) for e in errors] == [("bad-2", 18)]


@pytest.mark.parametrize("regex", ["evil\\z", "\\pL", "\\x{41}"])
def test_regex_valid_for_pysigma_but_not_python_is_a_rule_error(regex: str) -> None:
    bad = _rule(f"  sel:\n    a|re: '{regex}'\n  condition: sel\n", "bad-1")
    good = _rule("  sel:\n    Image: y\n  condition: sel\n", "good-2")
    ruleset, errors = load_ruleset([RuleSource("re.yml", f"{bad}---\n{good}")])
    assert [r.id for r in ruleset.rules] == ["good-2"]
    assert [(e.file, e.line, e.rule_id, e.severity) for e in errors] == [("re.yml", 6, "bad-1", "error")]
    assert regex in errors[0].message


def test_duplicate_id_duplicate_key_and_unmapped_logsource() -> None:
    first = _rule("  sel:\n    Image: x\n  condition: sel\n", "same")
    ruleset, errors = load_ruleset([RuleSource("a.yml", first), RuleSource("b.yml", first)])
    assert len(ruleset.rules) == 1
    assert errors[0].file == "b.yml" and errors[0].line == 2 and "duplicate rule id (first defined at a.yml:1)" in errors[0].message
    dup_key = "title: T\nid: k\nlogsource: {}\ndetection:\n  sel: {a: b}\n  sel: {a: c}\n  condition: sel\n"
    warnings = _errors(dup_key)
    assert [(w.severity, w.line) for w in warnings] == [("warning", 6)] and "duplicate key detection/sel" in warnings[0].message
    unmapped = "title: T\nid: u\nlogsource: {product: zos, service: smf}\ndetection:\n  sel: {a: b}\n  condition: sel\n"
    ruleset, errors = load_ruleset([RuleSource("u.yml", unmapped)])
    assert len(ruleset.rules) == 1 and errors[0].severity == "warning" and errors[0].line == 3
    assert "not covered by any mapping" in errors[0].message


def test_multi_document_global_action() -> None:
    text = ("action: global\ntitle: Shared\nlogsource: {product: windows, category: process_creation}\n"
            "detection:\n  condition: sel\n---\nid: one\ndetection:\n  sel:\n    Image: a\n"
            "---\nid: two\ndetection:\n  sel:\n    Image|bad: b\n")
    ruleset, errors = load_ruleset([RuleSource("g.yml", text)])
    assert [r.id for r in ruleset.rules] == ["one"] and ruleset.rules[0].title == "Shared"
    assert [(e.rule_id, e.line) for e in errors] == [("two", 15)]


def test_invalid_mapping_file_is_reported(tmp_path: Path) -> None:
    mapping = tmp_path / "bad.yml"
    mapping.write_text("name: x\nflatten: xml\n")
    _, errors = load_ruleset([], [mapping])
    assert errors[0].file == str(mapping) and "flatten" in errors[0].message


def test_rules_validate_command_lists_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.yml").write_text(_rule("  sel:\n    Image: x\n  condition: sel\n", "g"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yaml").write_text(_rule("  sel:\n    Image|nope: x\n  condition: nope\n", "b"))
    assert main(["rules", "validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'sub' / 'bad.yaml'}:8: [b] error: detection 'sel': Unknown modifier 'nope'" in out
    assert "2 files, 1 rules loaded, 1 errors" in out
    assert main(["rules", "validate", str(tmp_path / "good.yml")]) == 0
    assert main(["rules", "validate", str(tmp_path / "missing.yml")]) == 2


_SYSMON = "Microsoft-Windows-Sysmon/Operational"


def _process(image: str, user: str = "bob", computer: str = "WS-1") -> dict:
    return {"Event": {"System": {"Channel": _SYSMON, "EventID": 1},
                      "EventData": {"Image": image, "User": user, "ComputerName": computer}}}


def test_sigma_filter_applies_its_condition_to_referenced_rules() -> None:
    """pySigma SigmaFilter.apply_on_rule: the rule's condition ``and (filter condition)``."""
    from tests.unit.engine.conftest import matched_ids

    rule = _rule("  sel:\n    Image|endswith: '\\rar.exe'\n  condition: sel\n", "6f3e2987-db24-4c78-a860-b4f4095a7095")
    other = _rule("  sel:\n    Image|endswith: '\\7z.exe'\n  condition: sel\n", "other")
    sigma_filter = ("title: Filter Out Domain Controllers\nid: f-dc\nlogsource:\n    category: process_creation\n"
                    "    product: windows\nfilter:\n    rules:\n        - 6f3e2987-db24-4c78-a860-b4f4095a7095\n"
                    "        - missing-rule\n    selection:\n        ComputerName|startswith: 'DC-'\n"
                    "    condition: not selection\n")
    ruleset, errors = load_ruleset([RuleSource("mf_dc.yml", sigma_filter), RuleSource("r.yml", f"{rule}---\n{other}")])
    assert [(e.file, e.line, e.rule_id, e.message) for e in errors] == [
        ("mf_dc.yml", 9, "f-dc", "filter references unknown rule 'missing-rule'")]
    assert matched_ids(ruleset, [_process("C:\\rar.exe", computer="DC-01")]) == []
    assert matched_ids(ruleset, [_process("C:\\rar.exe")]) == ["6f3e2987-db24-4c78-a860-b4f4095a7095"]
    assert matched_ids(ruleset, [_process("C:\\7z.exe", computer="DC-01")]) == ["other"]


@pytest.mark.parametrize("rules", ["any", "ANY", "[]"])
def test_sigma_filter_for_any_rule_applies_where_the_logsource_is_contained(rules: str) -> None:
    from tests.unit.engine.conftest import matched_ids

    windows = _rule("  sel:\n    Image|endswith: '\\rar.exe'\n  condition: sel\n", "windows")
    generic = ("title: G\nid: generic\nlogsource: {category: process_creation}\n"
               "detection:\n  sel:\n    Image|endswith: '\\rar.exe'\n  condition: sel\n")
    sigma_filter = (f"title: F\nid: f\nlogsource: {{product: Windows}}\nfilter:\n  rules: {rules}\n"
                    "  selection:\n    User: adm_bob\n  condition: not selection\n")
    ruleset, errors = load_ruleset([RuleSource("r.yml", f"{windows}---\n{generic}"), RuleSource("f.yml", sigma_filter)])
    assert not errors, errors
    # the filter applies to the windows rule only: the generic rule does not name product windows
    assert matched_ids(ruleset, [_process("C:\\rar.exe", user="adm_bob")]) == ["generic"]
    assert matched_ids(ruleset, [_process("C:\\rar.exe")]) == ["windows", "generic"]


def test_deprecated_timeframe_is_not_a_search_identifier() -> None:
    from tests.unit.engine.conftest import matched_ids

    text = "title: T\nid: t\nlogsource: {}\ndetection:\n  sel: {a: b}\n  timeframe: 5m\n  condition: all of them\n"
    ruleset, errors = load_ruleset([RuleSource("t.yml", text)])
    assert not errors and matched_ids(ruleset, [{"a": "b"}]) == ["t"]


def test_multi_document_repeat_and_reset() -> None:
    text = ("action: global\nlogsource: {product: windows, category: process_creation}\nlevel: high\n---\n"
            "title: First\nid: first\ndetection:\n  sel:\n    Image: a\n  condition: sel\n---\n"
            "action: repeat\nid: second\ntitle: Second\n---\n"
            "action: reset\n---\n"
            "title: Third\nid: third\nlogsource: {product: linux}\ndetection:\n  sel:\n    x: y\n  condition: sel\n")
    ruleset, errors = load_ruleset([RuleSource("m.yml", text)])
    assert not errors
    by_id = {r.id: r for r in ruleset.rules}
    assert list(by_id) == ["first", "second", "third"]
    assert by_id["second"].title == "Second" and by_id["second"].level == "high"
    assert by_id["second"].logsource == {"product": "windows", "category": "process_creation"}
    assert by_id["third"].level is None and by_id["third"].logsource == {"product": "linux"}


def test_more_located_errors(tmp_path: Path) -> None:
    only_condition = "title: T\nid: c\nlogsource: {}\ndetection:\n  condition: sel\n"
    errors = _errors(only_condition)
    assert [(e.line, e.rule_id, e.message) for e in errors] == [(4, "c", "no search identifiers in detection")]
    _, errors = load_ruleset([], [tmp_path / "missing.yml"])
    assert errors[0].file == str(tmp_path / "missing.yml") and "cannot read mapping" in errors[0].message
    rule = _rule("  sel:\n    Image: x\n  condition: sel\n", "r")
    mismatched = ("title: F\nid: f\nlogsource: {product: linux}\nfilter:\n  rules: r\n  sel:\n    User: root\n"
                  "  condition: sel\n")
    ruleset, errors = load_ruleset([RuleSource("r.yml", rule), RuleSource("f.yml", mismatched)])
    assert [(e.file, e.line, e.rule_id, e.severity) for e in errors] == [("f.yml", 5, "f", "warning")]
    assert "filter logsource {'product': 'linux'} differs from rule 'r'" in errors[0].message
    assert "not applied" in errors[0].message and "User" not in ruleset.detection("r").fields


def test_a_rule_id_no_component_can_address_is_refused_at_its_line() -> None:
    rule = "title: t\nid: {}\nlogsource: {{}}\ndetection:\n  s: {{a: 1}}\n  condition: s\n"
    ruleset, errors = load_ruleset([RuleSource("x.yml", rule.format("../../etc/x")),
                                    RuleSource("y.yml", rule.format("ssh-brute_force.v2"))], cache_dir=None)
    assert [r.id for r in ruleset.rules] == ["ssh-brute_force.v2"]
    assert [str(e) for e in errors] == ["x.yml:2: error: rule id '../../etc/x' cannot be addressed: use a UUID, or "
                                        "letters, digits, '.', '_' and '-' (starting with a letter or digit, at most "
                                        "128 characters) [RULE_ID_INVALID]"]
