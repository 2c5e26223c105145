"""suppress: a flood of identical findings becomes one finding and one count, deterministically."""
from __future__ import annotations

import pytest

from opmas.core.detector import Detector
from tests.unit.correlation.helpers import BASE, auth, of_rule, ruleset, run, shuffled_within
from tests.unit.correlation.test_types import COUNT

FLOOD = """
title: SSH failure (suppressed)
id: fail-sup
logsource: {product: linux, service: sshd}
detection:
    selection: {event.outcome: failure}
    condition: selection
level: low
suppress: {by: [source.ip], for: 10m}
"""


def _flood():
    return ([auth(t, ip="10.0.0.1", eid=f"a{t}") for t in range(0, 300, 6)]  # 50 in 5 min
            + [auth(t, ip="10.0.0.2", eid=f"b{t}") for t in (10, 20, 30)]
            + [auth(900, ip="10.0.0.1", eid="late-burst")])  # after the window: a new first finding


def test_flood_becomes_one_finding_and_one_count():
    findings = run(ruleset(FLOOD), _flood())
    first = [f for f in findings if "suppression" in f.details]
    summaries = [f for f in findings if "suppressed" in f.details]
    assert [(f.details["suppression"]["by"]["source.ip"], f.timestamp - BASE) for f in first] == \
        [("10.0.0.1", 0), ("10.0.0.2", 10), ("10.0.0.1", 900)]
    counts = {f.details["suppressed"]["by"]["source.ip"]: f.details["suppressed"]["count"] for f in summaries}
    assert counts == {"10.0.0.1": 49, "10.0.0.2": 2}
    assert len(findings) == 5
    ip1 = next(f for f in summaries if f.details["suppressed"]["by"]["source.ip"] == "10.0.0.1")
    assert ip1.details["suppressed"]["of"] == first[0].id
    assert ip1.title.endswith("(49 more suppressed)")
    assert len(ip1.event_ids) == 49


@pytest.mark.parametrize("seed", range(3))
def test_suppression_is_deterministic_in_event_time(seed):
    rs = ruleset(FLOOD)
    expected = sorted(f.id for f in run(rs, _flood()))
    arrival = shuffled_within(_flood(), 60.0, seed)
    assert sorted(f.id for f in run(rs, arrival, batch=5)) == expected


def test_summary_is_emitted_when_the_watermark_passes_the_window():
    detector = Detector(ruleset(FLOOD))
    out = detector.process([auth(0), auth(1), auth(2)])
    out += detector.process([auth(100, ip="9.9.9.9")])  # watermark 40: the first finding is final
    assert len(out) == 1
    out = detector.process([auth(700, ip="9.9.9.9")])  # watermark 640 > 600: window of 10.0.0.x closed
    assert [f.details["suppressed"]["count"] for f in out if "suppressed" in f.details] == [2]


def test_correlation_findings_can_be_suppressed():
    text = COUNT + "suppress: {by: [source.ip], for: 1h}\n"
    from tests.unit.correlation.helpers import AUTH_RULES
    findings = of_rule(run(ruleset(AUTH_RULES, text), [auth(t) for t in (0, 1, 2, 100, 101, 102, 200, 201, 202)]),
                       "many-fail")
    assert len(findings) == 2
    assert findings[1].details["suppressed"]["count"] == 2


def test_one_event_id_reused_by_different_events_is_taken_once():
    # same id, time and ip: two findings with one id and one suppression key (once a TypeError in the heap)
    alice, bob = auth(0, user="alice", eid="dup"), auth(0, user="bob", eid="dup")
    detector = Detector(ruleset(FLOOD))
    assert detector.process([alice, bob]) == []  # held until the watermark passes them
    resumed = Detector(ruleset(FLOOD), detector.snapshot())
    for p in (detector, resumed):
        findings = p.process([auth(100, ip="9.9.9.9", eid="later")]) + p.flush()
        assert [f.event_ids for f in findings if f.timestamp == BASE] == [["dup"]]
        assert not [f for f in findings if "suppressed" in f.details]
