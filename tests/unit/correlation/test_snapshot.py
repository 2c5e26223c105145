"""Snapshot/restore in the middle of windows: nothing lost, nothing fired twice; hot reload keeps state."""
from __future__ import annotations

import json

import pytest

from opmas.core.detector import Detector
from tests.unit.correlation.helpers import AUTH_RULES, auth, of_rule, ruleset, run, sshd_stream
from tests.unit.correlation.test_event_time import _all_types, _canonical
from tests.unit.correlation.test_types import COUNT, RANGE


def _restart_at(rs, events, cut, replay=0, batch=7):
    """Run up to ``cut``, snapshot through JSON, resume in a new Processor (re-delivering ``replay``
    events before the cut, as an at-least-once source does), run to the end and flush."""
    first = Detector(rs)
    findings = []
    for start in range(0, cut, batch):
        findings.extend(first.process(events[start:min(start + batch, cut)]))
    state = json.loads(json.dumps(first.snapshot()))
    second = Detector(rs, state=state)
    rest = events[cut - replay:]
    for start in range(0, len(rest), batch):
        findings.extend(second.process(rest[start:start + batch]))
    findings.extend(second.flush())
    return findings, state


@pytest.mark.parametrize("cut", [1, 57, 133, 250, 399])
def test_restart_anywhere_gives_the_same_findings(cut):
    rs = _all_types()
    events = sshd_stream(3)
    expected = _canonical(run(rs, events))
    findings, state = _restart_at(rs, events, cut)
    assert _canonical(findings) == expected


def test_snapshot_holds_open_windows_and_pending_hits():
    rs = ruleset(AUTH_RULES, COUNT, RANGE, lateness=30)
    detector = Detector(rs)
    detector.process([auth(0), auth(10), auth(80, ip="198.51.100.9")])  # watermark 50
    state = detector.snapshot()
    tracks = state["stage"]["correlator"]["tracks"]
    assert set(tracks) == {"many-fail", "few-fail"}
    assert detector.stats.active_keys >= 1
    assert json.loads(json.dumps(state)) == state
    resumed = Detector(rs, state=json.loads(json.dumps(state)))
    findings = resumed.process([auth(55)])
    findings += resumed.flush()
    assert [f.details["count"] for f in of_rule(findings, "many-fail")] == [3]  # 0, 10 before the restart, 55 after
    assert [f.details["count"] for f in of_rule(findings, "few-fail")] == [3]


def test_restart_with_redelivered_events_fires_once():
    rs = _all_types()
    events = sshd_stream(4)
    expected = _canonical(run(rs, events))
    findings, _ = _restart_at(rs, events, cut=200, replay=30)
    correlation_ids = {f["id"] for f in expected if not f["rule_id"].startswith("ssh-")}
    got = [f for f in _canonical(findings) if f["id"] in correlation_ids]
    assert sorted(f["id"] for f in got) == sorted(correlation_ids)  # none lost, none twice


def test_fired_window_is_not_fired_again_after_restart():
    rs = ruleset(AUTH_RULES, COUNT, lateness=5)
    detector = Detector(rs)
    fired = of_rule(detector.process([auth(0), auth(1), auth(2), auth(20, ip="9.9.9.9")]), "many-fail")
    assert len(fired) == 1
    resumed = Detector(rs, state=json.loads(json.dumps(detector.snapshot())))
    # more failures inside the fired window [0, 60): absorbed, not a second finding
    later = resumed.process([auth(30), auth(31), auth(32)]) + resumed.flush()
    assert of_rule(later, "many-fail") == []


def test_replace_rules_keeps_windows_of_unchanged_correlations():
    rs = ruleset(AUTH_RULES, COUNT)
    detector = Detector(rs)
    detector.process([auth(0), auth(1)])
    detector.replace_rules(ruleset(AUTH_RULES, COUNT))
    assert len(of_rule(detector.process([auth(2)]) + detector.flush(), "many-fail")) == 1
    # a changed definition (threshold) starts afresh: old windows would mean something else
    detector = Detector(rs)
    detector.process([auth(0), auth(1)])
    detector.replace_rules(ruleset(AUTH_RULES, COUNT.replace("gte: 3", "gte: 2")))
    assert of_rule(detector.process([auth(2)]) + detector.flush(), "many-fail") == []


def test_memory_is_bounded_expired_groups_are_dropped():
    rs = ruleset(AUTH_RULES, COUNT, lateness=0)
    detector = Detector(rs)
    for i in range(2000):
        detector.process([auth(i * 10.0, ip=f"10.{i // 250}.{i % 250}.1")])
    # timespan 60 s, one event per 10 s: only the last few addresses can still be in a window
    assert detector.stats.active_keys <= 8
    assert 0 < detector.stats.state_bytes < 50_000


def test_a_flood_of_new_keys_is_capped():
    rs = ruleset(AUTH_RULES, COUNT, lateness=0)
    rs.correlations.max_keys = 3
    detector = Detector(rs)
    detector.process([auth(i * 0.1, ip=f"10.0.0.{i}") for i in range(10)])
    detector.process([auth(5.0, ip="10.9.9.9")])  # groups are made as their hits arrive: 11, 3 kept
    assert detector.stats.active_keys == 3
    assert detector.stats.evicted_keys == 8
    # the survivors are the newest groups, and they still count
    found = of_rule(detector.process([auth(6.0, ip="10.0.0.9"), auth(7.0, ip="10.0.0.9")]) + detector.flush(),
                    "many-fail")
    assert [f.group_key for f in found] == ["source.ip=10.0.0.9"] and found[0].details["count"] == 3
