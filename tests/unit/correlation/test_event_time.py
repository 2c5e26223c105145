"""Event time: out-of-order and late events, and determinism whatever the arrival order and batching."""
from __future__ import annotations

import random

import pytest

from opmas.agents.sdk import envelope
from opmas.core.event import Event, format_time, parse_time
from opmas.core.envelope import event_from_obj
from opmas.core.detector import Detector
from opmas.core.envelope import envelope_error
from tests.unit.correlation.helpers import BASE, AUTH_RULES, auth, of_rule, ruleset, run, shuffled_within, sshd_stream
from tests.unit.correlation.test_suppression import FLOOD
from tests.unit.correlation.test_types import CHAIN, COUNT, ORDERED, RANGE, TEMPORAL, VALUE_COUNT

LATENESS = 60.0


def _all_types():
    chain = CHAIN.replace("many-fail", "many-fail-2").replace("many_fail", "many_fail_2")
    suppressed = COUNT.replace("many-fail", "many-fail-sup") + "suppress: {by: [source.ip], for: 10m}\n"
    return ruleset(AUTH_RULES, COUNT, VALUE_COUNT, TEMPORAL, ORDERED, RANGE, chain, suppressed,
                   lateness=LATENESS)


def _canonical(findings):
    return sorted((f.to_dict() for f in findings), key=lambda d: d["id"])


def test_the_stream_exercises_every_rule():
    findings = run(_all_types(), sshd_stream(1))
    assert {f.rule_id for f in findings} >= {"many-fail", "spray", "fail-and-ok", "fail-then-ok", "few-fail",
                                             "bf-then-ok", "many-fail-sup"}


@pytest.mark.parametrize("seed", range(6))
def test_window_closing_conditions_give_the_same_findings_whatever_the_arrival_order(seed):
    """What waits for the watermark (a range condition, a detection rule's suppression) never depends on
    arrival order within lateness, nor on batching."""
    rs = ruleset(AUTH_RULES, RANGE, FLOOD, lateness=LATENESS)
    events = sshd_stream(seed)
    expected = _canonical(run(rs, events))
    assert {f["rule_id"] for f in expected} >= {"few-fail", "fail-sup"}
    arrival = shuffled_within(events, LATENESS, seed)
    assert arrival != events
    got = _canonical(run(rs, arrival, batch=random.Random(seed).randint(1, 50)))
    assert got == expected
    assert len({f["id"] for f in got}) == len(got)


@pytest.mark.parametrize("seed", range(6))
def test_conditions_that_fire_on_crossing_give_the_same_findings_in_any_batching(seed):
    """A log in time order gives the same findings however it is batched; and within a batch the
    order hits arrive in does not matter (they are applied in time order)."""
    rs = _all_types()
    events = sshd_stream(seed)
    expected = _canonical(run(rs, events))
    rng = random.Random(seed)
    assert _canonical(run(rs, events, batch=rng.randint(1, 50))) == expected
    arrival = shuffled_within(events, LATENESS, seed)
    assert arrival != events
    assert _canonical(run(rs, arrival, batch=len(arrival))) == expected


def test_streamed_one_by_one_equals_offline():
    rs = _all_types()
    events = sshd_stream(7)
    offline = run(rs, events)
    detector = Detector(rs)
    streamed = []
    for event in events:
        streamed.extend(detector.process([event]))
    before_flush = len(streamed)
    streamed.extend(detector.flush())
    assert _canonical(streamed) == _canonical(offline)
    assert before_flush > 0  # most findings are emitted while streaming, not at the end


def test_late_events_are_counted_and_skipped():
    rs = ruleset(AUTH_RULES, COUNT, lateness=10)
    detector = Detector(rs)
    detector.process([auth(0, ip="1.1.1.1"), auth(100, ip="9.9.9.9")])
    # 50 and 60 are more than 10 s behind 100: late, not counted (else 0,50,60 would not fire anyway: 3 in 60 s)
    findings = detector.process([auth(95, ip="1.1.1.1"), auth(50, ip="1.1.1.1"), auth(60, ip="1.1.1.1")])
    assert detector.stats.late_events == 2
    findings += detector.process([auth(96, ip="1.1.1.1"), auth(97, ip="1.1.1.1")])
    findings += detector.flush()
    found = of_rule(findings, "many-fail")
    assert [len(f.event_ids) for f in found] == [3]
    assert found[0].details["window"]["start"] == format_time(BASE + 95)  # anchored at 95, not at 50


def test_out_of_order_within_lateness_counts():
    rs = ruleset(AUTH_RULES, COUNT, lateness=30)
    in_order = run(rs, [auth(0), auth(10), auth(20)])
    out_of_order = run(rs, [auth(20), auth(0), auth(10)], batch=1)
    assert [f.id for f in in_order] == [f.id for f in out_of_order] and len(in_order) == 1


def test_events_without_time_never_crash():
    rs = ruleset(AUTH_RULES, COUNT, FLOOD)
    event = auth(0, eid="untimed")
    del event.data["@timestamp"]
    detector = Detector(rs)
    findings = detector.process([event, event, event])
    assert detector.stats.untimed_events == 3
    assert [f.event_ids for f in findings if f.rule_id == "fail-sup"] == [["untimed"]] * 3  # not suppressed
    assert of_rule(findings + detector.flush(), "many-fail") == []  # three, but kept out of windows


WIN_FAIL = """
title: Failed logon
id: win-fail
name: win_fail
logsource: {product: windows, service: security}
detection:
    selection: {EventID: 4625}
    condition: selection
level: low
---
title: Failed logons of one user
id: win-many-fail
correlation:
    type: event_count
    rules: [win_fail]
    group-by: [User]
    timespan: 60s
    condition: {gte: 3}
level: high
"""


def _shipped_evtx(i: int, created: str, shipped: str) -> Event:
    """An EVTX failed logon created at ``created``, in an envelope an agent stamped ``shipped``."""
    data = {"Event": {"System": {"Provider": {"@Name": "Microsoft-Windows-Security-Auditing"}, "EventID": 4625,
                                 "Channel": "Security", "TimeCreated": {"@SystemTime": created}},
                      "EventData": {"User": "bob"}}}
    return event_from_obj({"id": f"w{i}", "agent_id": "tail-1", "type": "log", "timestamp": shipped, "data": data})


def test_the_events_own_time_wins_over_the_envelope():
    rs = ruleset(WIN_FAIL)
    # created seconds apart in 2020, shipped hours apart in 2026 (the agent's clock)
    events = [_shipped_evtx(i, f"2020-03-01T10:00:0{i}Z", f"2026-01-01T0{i}:00:00Z") for i in range(3)]
    detector = Detector(rs)
    findings = detector.process(events) + detector.flush()
    assert [e.timestamp for e in events] == [parse_time(f"2020-03-01T10:00:0{i}Z") for i in range(3)]
    [found] = of_rule(findings, "win-many-fail")
    assert found.timestamp == parse_time("2020-03-01T10:00:02Z")
    assert found.details["window"] == {"start": "2020-03-01T10:00:00.000000Z", "end": "2020-03-01T10:01:00.000000Z"}


def test_the_envelope_time_is_the_fallback():
    event = auth(0)
    del event.data["@timestamp"]
    enveloped = event_from_obj({"id": "e1", "agent_id": "a", "type": "log", "timestamp": format_time(BASE + 5),
                                "data": event.data})
    Detector(ruleset(AUTH_RULES)).process([enveloped])
    assert enveloped.timestamp == BASE + 5


def test_the_agent_sdk_stamps_the_datas_time_else_when_it_read_the_event():
    read_at = BASE + 42
    timed = envelope("a", {"@timestamp": "2020-03-01T10:00:00Z"}, "log", "e1", read_at)
    untimed = envelope("a", {"message": "x"}, "log", "e2", read_at)
    garbled = envelope("a", {"@timestamp": "yesterday", "message": "x"}, "log", "e3", read_at)
    assert timed["timestamp"] == "2020-03-01T10:00:00Z"
    assert untimed["timestamp"] == garbled["timestamp"] == format_time(read_at)
    assert "timestamp" not in envelope("a", {"message": "x"}, "log", "e4")
    assert [envelope_error(e) for e in (timed, untimed, garbled)] == [None, None, None]
    evtx = envelope("a", {"Event": {"System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational",
                                               "TimeCreated": {"#attributes": {"SystemTime": "2020-01-01T00:00:00Z"}}},
                                    "EventData": {"Image": "C:\\x.exe"}}}, "windows", "e5", read_at)
    event = event_from_obj(evtx)
    Detector(ruleset(AUTH_RULES)).process([event])
    assert event.timestamp == parse_time("2020-01-01T00:00:00Z")  # the data's own time wins over the read time


def test_an_event_from_a_skewed_clock_does_not_move_event_time():
    rs = ruleset(AUTH_RULES, COUNT, FLOOD, lateness=10)
    skewed = auth(2 * 3600, ip="9.9.9.9", eid="skewed")  # two hours ahead of the runtime's clock
    events = [[auth(0, eid="a"), auth(1, eid="b")], [skewed], [auth(2, eid="c")]]
    streamed, offline = Detector(rs), Detector(rs)
    out = []
    for batch in events:
        out += streamed.process(batch, now=BASE + 5)
        offline.process(batch)
    assert [f.event_ids for f in out if f.rule_id == "fail-sup" and f.timestamp == BASE + 7200] == [["skewed"]]
    assert (streamed.stats.future_events, streamed.stats.late_events) == (1, 0)
    assert (offline.stats.future_events, offline.stats.late_events) == (0, 1)  # without a clock: "c" is late
    resumed = Detector(rs, streamed.snapshot())
    out += resumed.flush()
    assert resumed.stats.future_events == 1
    assert [f.event_ids for f in of_rule(out, "many-fail")] == [["a", "b", "c"]]
