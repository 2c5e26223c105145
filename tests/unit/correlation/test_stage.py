"""One correlation stage fed by partition processors: groups meet across partitions, the
watermark is the partitions' lowest, quiet partitions stop holding it, state survives a restart."""
from __future__ import annotations

import orjson

from opmas.core.correlation import CorrelationStage
from opmas.core.event import Event
from opmas.core.finding import Finding
from opmas.core.processor import Processor
from opmas.core.ruleset import RuleSet
from tests.unit.correlation.helpers import AUTH_RULES, BASE, auth, of_rule, ruleset, run
from tests.unit.correlation.test_types import CHAIN, COUNT, RANGE, VALUE_COUNT

SUPPRESSED = AUTH_RULES.replace("level: low", "level: low\nsuppress: {by: [source.ip], for: 10m}", 1)


class Partitioned:
    """Partition processors, one per partition, and the stage (as the embedded pipeline runs them)."""

    def __init__(self, rs: RuleSet, partitions: int, state: dict | None = None, idle: float = 30.0):
        state = state or {}
        self.processors = [Processor(rs, (state.get("partitions") or {}).get(str(p)))
                           for p in range(partitions)]
        self.stage = CorrelationStage(rs.correlations, state.get("stage"), idle)

    def feed(self, batches: list[tuple[int, list[Event]]], now: float = 0.0) -> list[Finding]:
        findings: list[Finding] = []
        for partition, events in batches:
            processed = self.processors[partition].process(events)
            findings += processed.findings
            self.stage.take(partition, processed.handoff, now)
            findings += self.stage.advance(now)
        return findings

    def snapshot(self) -> dict:
        state = {"partitions": {str(p): pr.snapshot() for p, pr in enumerate(self.processors)},
                 "stage": self.stage.snapshot()}
        return orjson.loads(orjson.dumps(state))  # as a checkpoint stores it


def _ids(findings: list[Finding], rule_id: str) -> list[str]:
    return sorted(f.id for f in of_rule(findings, rule_id))


def _spray_over_hosts() -> list[Event]:
    """Failed logins from one address, round robin over three hosts, then later traffic on each."""
    events = [auth(t * 10, host=f"web-0{t % 3}", user=f"user{t}", eid=f"e{t}") for t in range(6)]
    events += [auth(300 + t, ip="198.51.100.1", host=f"web-0{t}", outcome="success", eid=f"late{t}")
               for t in range(3)]
    return events


def _by_host(events: list[Event]) -> list[tuple[int, list[Event]]]:
    return [(int(e.data["host"]["name"][-1]), [e]) for e in events]


def test_groups_meet_across_partitions_with_the_whole_log_ids():
    rs = ruleset(AUTH_RULES, COUNT, VALUE_COUNT)
    events = _spray_over_hosts()
    whole = run(rs, events, flush=False)
    assert _ids(whole, "many-fail") and _ids(whole, "spray")
    per_host = [run(rs, [e for e in events if e.data["host"]["name"] == h], flush=False)
                for h in ("web-00", "web-01", "web-02")]
    assert not any(_ids(f, "many-fail") for f in per_host)  # each host alone saw 2 failures
    staged = Partitioned(ruleset(AUTH_RULES, COUNT, VALUE_COUNT), 3).feed(_by_host(_spray_over_hosts()))
    for rule_id in ("many-fail", "spray"):
        assert _ids(staged, rule_id) == _ids(whole, rule_id)


def test_a_lagging_partition_holds_windows_open_instead_of_losing_its_hits():
    rs = ruleset(AUTH_RULES, RANGE)  # "a few failures" (gt 1, lte 3): known when the window closes
    ahead = [auth(1000 + t, ip="198.51.100.9", host="web-00", eid=f"a{t}") for t in range(0, 200, 10)]
    behind = [auth(t * 10, host="web-01", eid=f"b{t}") for t in range(3)]  # 1,000 s behind: late for web-00
    staged = Partitioned(rs, 2)
    assert not of_rule(staged.feed([(1, behind), (0, ahead)]), "few-fail")  # web-01's hits wait for it
    assert staged.stage.correlator.late_hits == 0
    tick = auth(400, ip="198.51.100.1", host="web-01", outcome="success", eid="tick")
    assert [f.event_ids for f in of_rule(staged.feed([(1, [tick])]), "few-fail")] == [["b0", "b1", "b2"]]


def test_a_threshold_fires_on_the_hit_that_crosses_it_whatever_the_other_partitions():
    """Issue 13: a condition that can only grow true does not wait for the watermark: the brute force
    fires with its third failure, though another partition is far behind and nothing comes after."""
    rs = ruleset(AUTH_RULES, COUNT)
    staged = Partitioned(rs, 2)
    staged.feed([(1, [auth(0, ip="198.51.100.1", host="web-01", outcome="success", eid="behind")])])
    burst = [auth(1000 + t, host="web-00", eid=f"x{t}") for t in range(0, 30, 10)]
    fired = of_rule(staged.feed([(0, burst)]), "many-fail")
    assert [f.event_ids for f in fired] == [["x0", "x10", "x20"]]
    assert staged.stage.watermark(0.0) == BASE - rs.correlations.lateness  # held back by the other partition


def test_a_sequence_completes_when_a_step_arrives_after_the_one_that_follows_it():
    """A partition that lags (a worker failing over) delivers the failures after the success it precedes:
    the brute force then success still fires on arrival, with the id of the log in order."""
    events = [auth(0, ip="192.0.2.1", host="web-00", outcome="success", eid="first"),
              auth(1, host="web-00", eid="f0"), auth(5, host="web-00", eid="f1"), auth(10, host="web-00", eid="f2"),
              auth(100, host="web-01", outcome="success", eid="ok")]
    whole = of_rule(run(ruleset(AUTH_RULES, CHAIN), events), "bf-then-ok")
    staged = Partitioned(ruleset(AUTH_RULES, CHAIN), 2)
    assert not staged.feed([(0, events[:1]), (1, events[4:])])  # web-00 holds the watermark at its first event
    fired = of_rule(staged.feed([(0, events[1:4])]), "bf-then-ok")
    assert [f.id for f in fired] == [f.id for f in whole] and len(fired) == 1


def test_a_quiet_partition_stops_holding_the_watermark_after_the_idle_timeout():
    rs = ruleset(AUTH_RULES, RANGE)
    staged = Partitioned(rs, 2, idle=30.0)
    staged.feed([(1, [auth(0, ip="198.51.100.1", host="web-01", outcome="success", eid="quiet")])], now=100.0)
    burst = [auth(t, host="web-00", eid=f"x{t}") for t in range(0, 30, 10)] + \
        [auth(500, ip="198.51.100.2", host="web-00", outcome="success", eid="tick")]
    assert not _ids(staged.feed([(0, burst)], now=110.0), "few-fail")  # held by the quiet partition
    lateness = rs.correlations.lateness
    assert staged.stage.watermark(110.0) == BASE - lateness  # the quiet partition's
    findings = staged.stage.advance(now=131.0)  # 31 s since its watermark last rose: idle
    assert staged.stage.watermark(131.0) == BASE + 500 - lateness
    assert [f.event_ids for f in of_rule(findings, "few-fail")] == [["x0", "x10", "x20"]]


def test_on_a_quiet_live_stream_the_clock_moves_the_watermark():
    """Issue 13: on a live stream (event time near the clock) whose partitions are all idle, the clock
    moves the watermark to ``now - lateness``; a replayed old log still waits for its events."""
    rs = ruleset(AUTH_RULES, COUNT)
    lateness = rs.correlations.lateness
    burst = [auth(t, host="web-00", eid=f"x{t}") for t in range(0, 30, 10)]
    live = Partitioned(rs, 2, idle=5.0)
    live.feed([(0, burst)], now=BASE + 21)
    assert live.stage.watermark(BASE + 25) == BASE + 20 - lateness  # not idle yet
    assert live.stage.watermark(BASE + 90) == BASE + 90 - lateness  # idle: the clock
    replayed = Partitioned(ruleset(AUTH_RULES, COUNT), 2, idle=5.0)
    later = BASE + 2 * 86400  # the same events replayed two days later: not live
    replayed.feed([(0, burst)], now=later)
    assert replayed.stage.watermark(later + 3600) == BASE + 20 - lateness


def test_a_window_closing_condition_closes_on_a_quiet_live_stream():
    """A ``lt`` count (too few logins) is known once its window is over: on a quiet live stream the
    clock closes it ``lateness`` after the window's end, with no later event."""
    few = COUNT.replace("id: many-fail", "id: few-fail").replace("condition: {gte: 3}", "condition: {lt: 3}")
    rs = ruleset(AUTH_RULES, few)
    lateness = rs.correlations.lateness
    live = Partitioned(rs, 1, idle=5.0)
    assert not of_rule(live.feed([(0, [auth(0, eid="only"), auth(10, eid="second")])], now=BASE + 11), "few-fail")
    assert not of_rule(live.stage.advance(now=BASE + 60 + lateness - 1), "few-fail")  # the window is open
    closed = of_rule(live.stage.advance(now=BASE + 60 + lateness + 1), "few-fail")
    assert [f.event_ids for f in closed] == [["only", "second"]]


def test_suppression_counts_findings_of_every_partition_once():
    rs = ruleset(SUPPRESSED)
    events = [auth(t * 10, host=f"web-0{t % 2}", eid=f"s{t}") for t in range(6)] + \
        [auth(1000 + t, ip="198.51.100.1", host=f"web-0{t}", outcome="success", eid=f"t{t}") for t in range(2)]
    whole = of_rule(run(rs, events, flush=False), "ssh-fail")
    staged = of_rule(Partitioned(ruleset(SUPPRESSED), 2).feed(
        [(int(e.data["host"]["name"][-1]), [e]) for e in events]), "ssh-fail")
    assert sorted(f.id for f in staged) == sorted(f.id for f in whole)
    assert any(f.details.get("suppressed", {}).get("count") == 5 for f in staged)


def test_a_restart_in_the_middle_of_a_window_resumes_without_losing_or_repeating():
    events = _spray_over_hosts()
    straight = Partitioned(ruleset(AUTH_RULES, COUNT, VALUE_COUNT), 3).feed(_by_host(events))
    first = Partitioned(ruleset(AUTH_RULES, COUNT, VALUE_COUNT), 3)
    before = first.feed(_by_host(events[:4]))
    resumed = Partitioned(ruleset(AUTH_RULES, COUNT, VALUE_COUNT), 3, first.snapshot())
    after = resumed.feed(_by_host(events[4:]))
    assert sorted(f.id for f in before + after) == sorted(f.id for f in straight)
    assert len({f.id for f in before + after}) == len(before + after)


def test_a_stage_told_its_partitions_waits_for_one_that_starts_late():
    """The scale-out workers' stages: events partitions progress independently, so a partition that has
    not reported yet holds the watermark (until ``idle_timeout``), and its hits are not late."""
    rs = ruleset(AUTH_RULES, RANGE)
    early = [auth(1000 + t, ip="198.51.100.9", host="web-00", eid=f"a{t}") for t in range(0, 300, 10)]
    late_start = [auth(t * 10, host="web-01", eid=f"b{t}") for t in range(3)]
    told = CorrelationStage(rs.correlations, None, idle_timeout=30.0, partitions=2)
    unaware = CorrelationStage(rs.correlations, None, idle_timeout=30.0)
    for stage in (told, unaware):
        processors = [Processor(rs), Processor(rs)]
        stage.take(0, processors[0].process(early).handoff, 100.0)
        stage.advance(100.0)
        stage.take(1, processors[1].process(late_start).handoff, 101.0)
        stage.advance(101.0)
    assert told.correlator.late_hits == 0 and unaware.correlator.late_hits == 3
    assert told.watermark(101.0) == BASE - rs.correlations.lateness + 20  # the late starter's
    quiet = CorrelationStage(rs.correlations, None, idle_timeout=30.0, partitions=2)
    quiet.take(0, Processor(rs).process(early).handoff, 100.0)
    assert quiet.watermark(129.0) is None and quiet.watermark(131.0) == BASE + 1290 - rs.correlations.lateness
