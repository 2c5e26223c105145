"""Bad correlation rules are reported with file, line and rule id, and never take the others down."""
from __future__ import annotations

import pytest

from opmas.core.ruleset import RuleSource, load_ruleset
from tests.unit.correlation.helpers import AUTH_RULES

GOOD = """
title: Good one
id: good
correlation:
    type: event_count
    rules: [ssh_fail]
    group-by: [source.ip]
    timespan: 1m
    condition: {gte: 2}
"""


def _bad(correlation: str, extra: str = "") -> str:
    return f"""
title: Bad one
id: bad
correlation:
{correlation}{extra}"""


CASES = [
    ("    type: event_count\n    rules: [ssh_fail, no_such_rule]\n    group-by: [source.ip]\n    timespan: 1m\n"
     "    condition: {gte: 2}\n", 6, "unknown rule 'no_such_rule'"),
    ("    type: event_count\n    rules: [ssh_fail]\n    timespan: 5 minutes\n    condition: {gte: 2}\n",
     7, "timespan '5 minutes' is invalid"),
    ("    type: event_count\n    rules: [ssh_fail]\n    timespan: 0m\n    condition: {gte: 2}\n",
     7, "greater than zero"),
    ("    type: event_count\n    rules: [ssh_fail]\n    timespan: 1m\n    condition: {more: 2}\n",
     8, "unknown operator(s) more"),
    ("    type: event_count\n    rules: [ssh_fail]\n    timespan: 1m\n    condition: {gte: lots}\n",
     8, "'lots' is not a non-negative number"),
    ("    type: event_count\n    rules: [ssh_fail]\n    timespan: 1m\n    condition: {gt: 5, lt: 6}\n",
     8, "can never hold"),
    ("    type: value_count\n    rules: [ssh_fail]\n    timespan: 1m\n    condition: {gte: 2}\n",
     8, "needs 'field'"),
    ("    type: temporal\n    rules: [ssh_fail, ssh_ok]\n    timespan: 1m\n    condition: {gte: 3}\n",
     8, "with 2 referenced rule(s)"),
    ("    type: temporal_ordered\n    rules: [ssh_fail, ssh_ok]\n    timespan: 1m\n    condition: {lt: 2}\n",
     8, "only lower bounds"),
    ("    type: event_count\n    rules: [ssh_fail]\n    timespan: 1m\n", 4, "needs a condition"),
    ("    type: sometimes\n    rules: [ssh_fail]\n    timespan: 1m\n", 5, "type 'sometimes'"),
    ("    type: event_count\n    rules: [ssh_fail]\n    timespan: 1m\n    condition: {gte: 2}\n",
     9, "suppress needs 'for'"),
]


@pytest.mark.parametrize("body,line,message", CASES)
def test_bad_correlation_is_located_and_the_rest_loads(body, line, message):
    extra = "suppress: {by: [source.ip]}\n" if "suppress" in message else ""
    sources = [RuleSource("auth.yml", AUTH_RULES), RuleSource("bad.yml", _bad(body, extra)),
               RuleSource("good.yml", GOOD)]
    ruleset, errors = load_ruleset(sources)
    bad = [e for e in errors if e.rule_id == "bad"]
    assert bad, errors
    assert any(message in e.message for e in bad), bad
    hit = next(e for e in bad if message in e.message)
    assert (hit.file, hit.line) == ("bad.yml", line)
    ids = {m.id for m in ruleset.rules}
    assert "good" in ids and "bad" not in ids
    assert [c.rule_id for c in ruleset.correlations.correlations] == ["good"]


def test_cycle_between_correlations_is_refused():
    text = """
title: A
id: corr-a
correlation: {type: event_count, rules: [corr-b], timespan: 1m, condition: {gte: 1}}
---
title: B
id: corr-b
correlation: {type: event_count, rules: [corr-a], timespan: 1m, condition: {gte: 1}}
"""
    ruleset, errors = load_ruleset([RuleSource("auth.yml", AUTH_RULES), RuleSource("cycle.yml", text),
                                    RuleSource("good.yml", GOOD)])
    assert any("cycle" in e.message and e.file == "cycle.yml" for e in errors), errors
    assert [c.rule_id for c in ruleset.correlations.correlations] == ["good"]


def test_bad_suppress_on_a_detection_rule_refuses_that_rule():
    text = AUTH_RULES.replace("level: low\n---", "level: low\nsuppress: {for: soon}\n---", 1)
    ruleset, errors = load_ruleset([RuleSource("auth.yml", text)])
    assert [(e.file, e.rule_id) for e in errors] == [("auth.yml", "ssh-fail")]
    assert "timespan 'soon' is invalid" in errors[0].message
    assert [m.id for m in ruleset.rules] == ["ssh-ok"]


def test_alias_naming_a_rule_outside_the_correlation():
    body = ("    type: temporal\n    rules: [ssh_fail, ssh_ok]\n    group-by: [ip]\n    timespan: 1m\n"
            "    aliases:\n        ip: {ssh_fail: source.ip, other: source.ip}\n")
    ruleset, errors = load_ruleset([RuleSource("auth.yml", AUTH_RULES), RuleSource("bad.yml", _bad(body))])
    assert any("alias 'ip' names 'other'" in e.message and e.rule_id == "bad" for e in errors), errors


def test_a_duplicate_correlation_name_is_refused_with_both_locations():
    first = GOOD.replace("id: good\n", "id: burst-1\nname: burst\n")
    second = GOOD.replace("id: good\n", "id: burst-2\nname: burst\n")
    chained = GOOD.replace("id: good", "id: chained").replace("[ssh_fail]", "[burst]")
    ruleset, errors = load_ruleset([RuleSource("auth.yml", AUTH_RULES), RuleSource("one.yml", first),
                                    RuleSource("two.yml", second + "---" + chained)])
    by_rule = {e.rule_id: e for e in errors}
    assert set(by_rule) == {"burst-2", "chained"}, errors
    assert (by_rule["burst-2"].file, by_rule["burst-2"].line) == ("two.yml", 2)
    assert "duplicate name 'burst': burst-1 (one.yml:2) has it too" in by_rule["burst-2"].message
    assert "'burst' is ambiguous: it is the name of burst-1 (one.yml:2), burst-2 (two.yml:2)" \
        in by_rule["chained"].message
    assert [c.rule_id for c in ruleset.correlations.correlations] == ["burst-1"]


def test_a_correlation_naming_a_detection_name_two_rules_have_is_refused():
    twin = AUTH_RULES.split("---")[0].replace("id: ssh-fail", "id: ssh-fail-twin")
    ruleset, errors = load_ruleset([RuleSource("auth.yml", AUTH_RULES), RuleSource("twin.yml", twin),
                                    RuleSource("good.yml", GOOD)])
    lines = {m.id: m.line for m in ruleset.rules}
    assert [(e.file, e.line, e.rule_id) for e in errors] == [("good.yml", 6, "good")]
    assert (f"'ssh_fail' is ambiguous: it is the name of ssh-fail (auth.yml:{lines['ssh-fail']}), "
            f"ssh-fail-twin (twin.yml:{lines['ssh-fail-twin']})") in errors[0].message
    assert ruleset.correlations is None
