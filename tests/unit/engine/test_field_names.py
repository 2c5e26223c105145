"""A rule field written with the wrong case for its logsource is warned about with a suggestion, at
its file, line and rule; the rule still loads (and never matches that field, as it says)."""
from __future__ import annotations

from opmas.core.ruleset import RuleSource, load_ruleset

RULE = """title: Whoami
id: 5f8a3b1e-0000-4000-8000-00000000f1e1
logsource:
  category: process_creation
  product: windows
detection:
  selection:
    - Image|endswith: '\\\\whoami.exe'
    - commandline|contains: whoami
  other:
    parentimage: x
    CustomField: y
  condition: selection or other
"""


def test_a_wrong_case_field_is_warned_with_a_suggestion() -> None:
    ruleset, errors = load_ruleset([RuleSource("whoami.yml", RULE)], cache_dir=None)
    assert len(ruleset.detections) == 1
    assert [str(e) for e in errors] == [
        "whoami.yml:9: [5f8a3b1e-0000-4000-8000-00000000f1e1] warning: field 'commandline' is not a field of "
        "{'category': 'process_creation', 'product': 'windows'} events: did you mean 'CommandLine'? "
        "(field names are case-sensitive; this one never matches) [FIELD_NAME_CASE]",
        "whoami.yml:11: [5f8a3b1e-0000-4000-8000-00000000f1e1] warning: field 'parentimage' is not a field of "
        "{'category': 'process_creation', 'product': 'windows'} events: did you mean 'ParentImage'? "
        "(field names are case-sensitive; this one never matches) [FIELD_NAME_CASE]",
    ]


def test_right_case_custom_fields_and_unknown_logsources_give_no_warning() -> None:
    fixed = RULE.replace("commandline", "CommandLine").replace("parentimage", "ParentImage")
    assert load_ruleset([RuleSource("ok.yml", fixed)], cache_dir=None)[1] == []
    other = RULE.replace("category: process_creation", "category: my_source")
    assert [e for e in load_ruleset([RuleSource("x.yml", other)], cache_dir=None)[1]
            if "did you mean" in e.message] == []


def test_the_warning_survives_the_rule_cache(tmp_path) -> None:
    first = load_ruleset([RuleSource("whoami.yml", RULE)], cache_dir=tmp_path)[1]
    assert load_ruleset([RuleSource("whoami.yml", RULE)], cache_dir=tmp_path)[1] == first and len(first) == 2
