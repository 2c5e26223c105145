"""Each correlation type through load_ruleset + Processor: windows open, slide, fire, expire."""
from __future__ import annotations

from opmas.core.correlation.windows import MAX_REFS
from opmas.core.event import format_time
from opmas.core.detector import Detector
from tests.unit.correlation.helpers import AUTH_RULES, BASE, auth, of_rule, ruleset, run

COUNT = """
title: Many failures
id: many-fail
correlation:
    type: event_count
    rules: [ssh_fail]
    group-by: [source.ip]
    timespan: 60s
    condition: {gte: 3}
level: high
"""


def test_event_count_fires_once_at_the_nth_event_of_a_burst():
    rs = ruleset(AUTH_RULES, COUNT)
    events = [auth(t) for t in (0, 10, 20, 30, 40, 50)]  # six in one minute: one burst
    findings = of_rule(run(rs, events), "many-fail")
    assert len(findings) == 1
    f = findings[0]
    assert f.event_ids == [e.id for e in events[:3]]
    assert f.timestamp == BASE + 20
    assert f.severity == "high"
    assert f.group_key == "source.ip=203.0.113.7"
    assert f.details["count"] == 3
    assert f.details["window"]["start"].startswith("2026-11-18")  # BASE is 2026-11-18
    assert f.details["group"] == {"source.ip": "203.0.113.7"}


def test_event_count_window_slides_and_expires():
    rs = ruleset(AUTH_RULES, COUNT)
    # 0 and 50 are within 60 s, 70 is not within 60 s of 0: window slides to anchor 50 -> 50, 70, 100 fires
    findings = of_rule(run(rs, [auth(t) for t in (0, 50, 70, 100)]), "many-fail")
    assert [f.timestamp - BASE for f in findings] == [100]
    assert findings[0].details["window"] == {"start": format_time(BASE + 50), "end": format_time(BASE + 110)}
    # spaced 31 s apart: never three within 60 s
    assert of_rule(run(rs, [auth(t) for t in (0, 31, 62, 93, 124)]), "many-fail") == []


def test_event_count_next_burst_after_the_consumed_window_fires_again():
    rs = ruleset(AUTH_RULES, COUNT)
    times = [0, 1, 2, 3, 4, 59, 60, 61, 62, 200, 201, 202]
    findings = of_rule(run(rs, [auth(t) for t in times]), "many-fail")
    # [0,60) consumed by the first; 60,61,62 is the second burst; 200.. the third
    assert [f.timestamp - BASE for f in findings] == [2, 62, 202]
    assert len({f.id for f in findings}) == 3


def test_groups_are_separate():
    rs = ruleset(AUTH_RULES, COUNT)
    events = [auth(t, ip="10.0.0.1") for t in (0, 1)] + [auth(t, ip="10.0.0.2") for t in (2, 3)]
    assert of_rule(run(rs, events), "many-fail") == []
    events += [auth(4, ip="10.0.0.2")]
    findings = of_rule(run(rs, events), "many-fail")
    assert [f.details["group"]["source.ip"] for f in findings] == ["10.0.0.2"]


def test_events_without_the_group_by_field_are_not_counted():
    rs = ruleset(AUTH_RULES, COUNT)
    events = [auth(t) for t in (0, 1)]
    stray = auth(2)
    del stray.data["source"]
    assert of_rule(run(rs, events + [stray]), "many-fail") == []


VALUE_COUNT = """
title: Many users tried
id: spray
correlation:
    type: value_count
    rules: [ssh_fail]
    group-by: [source.ip]
    timespan: 5m
    condition: {field: user.name, gte: 3}
level: medium
"""


def test_value_count_counts_distinct_values_in_the_window():
    rs = ruleset(AUTH_RULES, VALUE_COUNT)
    same_user = [auth(t, user="root") for t in range(0, 50, 5)]
    assert of_rule(run(rs, same_user), "spray") == []
    events = [auth(0, user="root"), auth(10, user="root"), auth(20, user="admin"), auth(400, user="oracle"),
              auth(410, user="deploy"), auth(420, user="root")]
    findings = of_rule(run(rs, events), "spray")
    # root/admin expire before oracle (5 min); oracle, deploy, root make three at 420
    assert len(findings) == 1
    f = findings[0]
    assert f.details["values"] == ["deploy", "oracle", "root"]
    assert f.details["count"] == 3
    assert f.event_ids == [events[3].id, events[4].id, events[5].id]


TEMPORAL = """
title: Failure and success
id: fail-and-ok
correlation:
    type: temporal
    rules: [ssh_fail, ssh_ok]
    group-by: [source.ip]
    timespan: 2m
level: medium
"""
ORDERED = TEMPORAL.replace("temporal\n", "temporal_ordered\n").replace("fail-and-ok", "fail-then-ok")


def test_temporal_any_order_within_timespan():
    rs = ruleset(AUTH_RULES, TEMPORAL)
    assert len(of_rule(run(rs, [auth(0, outcome="success"), auth(30)]), "fail-and-ok")) == 1
    assert len(of_rule(run(rs, [auth(0), auth(30, outcome="success")]), "fail-and-ok")) == 1
    assert of_rule(run(rs, [auth(0), auth(121, outcome="success")]), "fail-and-ok") == []
    assert of_rule(run(rs, [auth(0), auth(1), auth(2)]), "fail-and-ok") == []
    f = of_rule(run(rs, [auth(0), auth(30, outcome="success")]), "fail-and-ok")[0]
    assert f.details["rules"] == ["ssh-fail", "ssh-ok"]


def test_temporal_ordered_needs_the_order():
    rs = ruleset(AUTH_RULES, ORDERED)
    assert of_rule(run(rs, [auth(0, outcome="success"), auth(30)]), "fail-then-ok") == []
    found = of_rule(run(rs, [auth(0, outcome="success"), auth(30), auth(60, outcome="success")]), "fail-then-ok")
    assert len(found) == 1 and found[0].timestamp == BASE + 60
    assert of_rule(run(rs, [auth(0), auth(121, outcome="success")]), "fail-then-ok") == []
    # the latest failure still within the timespan counts
    found = of_rule(run(rs, [auth(0), auth(100), auth(200, outcome="success")]), "fail-then-ok")
    assert len(found) == 1 and found[0].details["window"]["start"] == format_time(BASE + 100)
    assert found[0].event_ids[0] != found[0].event_ids[1]


RANGE = """
title: A few failures, not many
id: few-fail
correlation:
    type: event_count
    rules: [ssh_fail]
    group-by: [source.ip]
    timespan: 60s
    condition: {gt: 1, lte: 3}
"""


def test_range_condition_is_decided_when_the_window_closes():
    rs = ruleset(AUTH_RULES, RANGE)
    assert of_rule(run(rs, [auth(0)]), "few-fail") == []
    two = of_rule(run(rs, [auth(0), auth(10)]), "few-fail")
    assert len(two) == 1 and two[0].details["count"] == 2
    assert of_rule(run(rs, [auth(t) for t in (0, 10, 20, 30)]), "few-fail") == []  # 4 > 3
    # tumbling from the first event: [0,60) has 2, [70,130) has 3
    found = of_rule(run(rs, [auth(t) for t in (0, 10, 70, 80, 90)]), "few-fail")
    assert [f.details["count"] for f in found] == [2, 3]


def test_range_window_fires_when_the_watermark_passes_not_before():
    rs = ruleset(AUTH_RULES, RANGE, lateness=10)
    from opmas.core.detector import Detector
    detector = Detector(rs)
    assert of_rule(detector.process([auth(0), auth(10)]), "few-fail") == []
    assert of_rule(detector.process([auth(65, ip="198.51.100.1")]), "few-fail") == []  # watermark 55 < 60
    found = of_rule(detector.process([auth(75, ip="198.51.100.1")]), "few-fail")  # watermark 65 >= 60
    assert len(found) == 1


CHAIN = """
title: Brute force then success
id: bf-then-ok
correlation:
    type: temporal_ordered
    rules: [many_fail, ssh_ok]
    group-by: [source.ip]
    timespan: 10m
level: critical
---""" + COUNT.replace("level: high", "name: many_fail")


def test_chained_correlation_and_generate_false_hides_inner_results():
    rs = ruleset(AUTH_RULES, CHAIN)
    events = [auth(0), auth(5), auth(10), auth(100, outcome="success")]
    findings = run(rs, events)
    assert [f.rule_id for f in findings] == ["bf-then-ok"]  # inner and detection findings are hidden
    assert findings[0].event_ids == [e.id for e in events]
    assert findings[0].severity == "critical"
    assert of_rule(run(rs, [auth(0), auth(5), auth(100, outcome="success")]), "bf-then-ok") == []


def test_generate_true_keeps_referenced_findings():
    rs = ruleset(AUTH_RULES, COUNT.replace("    rules: [ssh_fail]", "    rules: [ssh_fail]\n    generate: true"))
    findings = run(rs, [auth(0), auth(1), auth(2)])
    assert sorted(f.rule_id for f in findings) == ["many-fail", "ssh-fail", "ssh-fail", "ssh-fail"]
    rs = ruleset(AUTH_RULES, COUNT)
    assert [f.rule_id for f in run(rs, [auth(0), auth(1), auth(2)])] == ["many-fail"]


ALIASES = """
title: Connection then auth from the same address
id: alias-corr
correlation:
    type: temporal
    rules: [ssh_fail, ssh_ok]
    group-by: [addr]
    aliases:
        addr:
            ssh_fail: source.ip
            ssh-ok: host.name
    timespan: 1m
"""


def test_aliases_map_the_group_field_per_rule():
    rs = ruleset(AUTH_RULES, ALIASES)
    events = [auth(0, ip="10.1.1.1"), auth(10, outcome="success", ip="x", host="10.1.1.1")]
    found = of_rule(run(rs, events), "alias-corr")
    assert len(found) == 1 and found[0].details["group"] == {"addr": "10.1.1.1"}
    events = [auth(0, ip="10.1.1.1"), auth(10, outcome="success", ip="10.1.1.1", host="web")]
    assert of_rule(run(rs, events), "alias-corr") == []


def test_references_across_files_of_the_rule_set():
    rs = ruleset(AUTH_RULES, COUNT)  # two sources: the correlation references a rule of the other file
    assert rs.correlations is not None
    kinds = {m.id: m.kind for m in rs.rules}
    assert kinds["many-fail"] == "correlation" and kinds["ssh-fail"] == "detection"


def test_multi_field_group_by_and_title_template():
    text = COUNT.replace("group-by: [source.ip]", "group-by: [source.ip, user.name]") + \
        "finding: {title: '{count} failures from {source.ip} as {user.name}'}\n"
    rs = ruleset(AUTH_RULES, text)
    events = [auth(0, user="a"), auth(1, user="b"), auth(2, user="a"), auth(3, user="a")]
    found = of_rule(run(rs, events), "many-fail")
    assert [f.title for f in found] == ["3 failures from 203.0.113.7 as a"]
    assert found[0].group_key == "source.ip=203.0.113.7, user.name=a"


ANY_SSHD = """
title: Any sshd event
id: ssh-any
name: ssh_any
logsource: {product: linux, service: sshd}
detection:
    selection: {process.name: sshd}
    condition: selection
"""
TWO_STEPS = """
title: Failure then any sshd event
id: fail-then-any
correlation:
    type: temporal_ordered
    rules: [ssh_fail, ssh_any]
    group-by: [source.ip]
    timespan: 1m
---
title: Failures counted once per event
id: count-once
correlation:
    type: event_count
    rules: [ssh_fail, ssh_any]
    group-by: [source.ip]
    timespan: 1m
    condition: {gte: 2}
"""


def test_one_event_matching_two_referenced_rules():
    rs = ruleset(AUTH_RULES, ANY_SSHD, TWO_STEPS)
    single = run(rs, [auth(0)])  # matches ssh_fail and ssh_any: one event is not a sequence, nor two events
    assert of_rule(single, "fail-then-any") == [] and of_rule(single, "count-once") == []
    pair = run(rs, [auth(0), auth(5)])
    assert len(of_rule(pair, "fail-then-any")) == 1 and len(of_rule(pair, "count-once")) == 1


def test_value_count_upper_bound_counts_past_the_kept_references():
    def spray(condition: str):
        return ruleset(AUTH_RULES, VALUE_COUNT.replace("gte: 3", condition))
    events = [auth(i * 0.1, user=f"u{i}", eid=f"e{i}") for i in range(2000)]  # 2000 users in 200 s
    detector = Detector(spray("gt: 1000, lte: 5000"))
    detector.process(events[:1500])
    resumed = Detector(detector.processor.ruleset, detector.snapshot())
    [found] = of_rule(resumed.process(events[1500:]) + resumed.flush(), "spray")
    assert found.details["count"] == 2000 and len(found.details["values"]) == 2000
    assert found.event_ids == [e.id for e in events[:MAX_REFS]]
    assert of_rule(run(spray("lt: 1500"), events), "spray") == []
    assert [f.details["count"] for f in of_rule(run(spray("lt: 2001"), events), "spray")] == [2000]
