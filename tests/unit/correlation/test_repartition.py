"""Re-keying hits by group (the scale-out workers): stages fed per correlation partition find what one
stage finds, chains included, and the hits record format carries hits, offers and watermarks."""
from __future__ import annotations

import pytest

from opmas.connectors.kafka.hits import HandoffPart, decode_parts, encode_parts
from opmas.core.correlation import CorrelationStage
from opmas.core.correlation.repartition import Router
from opmas.core.finding import Finding
from opmas.core.partition import partition_of
from opmas.core.processor import Processor
from tests.unit.correlation.helpers import AUTH_RULES, auth, of_rule, ruleset, run, sshd_stream
from tests.unit.correlation.test_suppression import FLOOD
from tests.unit.correlation.test_types import CHAIN, COUNT, ORDERED, RANGE, TEMPORAL, VALUE_COUNT


def _rules():
    return ruleset(AUTH_RULES, COUNT, VALUE_COUNT, TEMPORAL, ORDERED, RANGE, CHAIN.replace("many-fail", "many-fail-2")
                   .replace("many_fail", "many_fail_2"), FLOOD)


def _repartitioned(events, partitions: int, correlation_partitions: int) -> list[Finding]:
    """Events partitioned by host, hits re-keyed to ``correlation_partitions`` stages, as the workers run."""
    rs = _rules()
    processors = [Processor(rs) for _ in range(partitions)]
    router = Router(rs.correlations, correlation_partitions)
    stages = [CorrelationStage(rs.correlations) for _ in range(correlation_partitions)]
    findings: list[Finding] = []
    for start in range(0, len(events), 25):
        batch: dict[int, list] = {}
        for event in events[start:start + 25]:
            batch.setdefault(partition_of(event.data["host"]["name"], partitions), []).append(event)
        for p, share in batch.items():
            processed = processors[p].process(share)
            findings += processed.findings
            for q, handoff in router.split(processed.handoff).items():
                stages[q].take(p, handoff, None)
        for stage in stages:
            findings += stage.advance(None)
    for stage in stages:
        findings += stage.flush()
    return findings


def _hosts(events):
    for i, event in enumerate(events):
        event.data["host"] = {"name": f"web-{i % 5}"}
    return events


@pytest.mark.parametrize("seed", range(3))
def test_stages_per_correlation_partition_find_what_one_stage_finds(seed):
    expected = sorted(f.id for f in run(_rules(), _hosts(sshd_stream(seed))))
    assert {f.rule_id for f in run(_rules(), _hosts(sshd_stream(seed)))} >= {"many-fail", "bf-then-ok", "few-fail"}
    assert sorted(f.id for f in _repartitioned(_hosts(sshd_stream(seed)), 3, 4)) == expected


def test_a_chain_is_routed_by_its_outermost_group():
    rs = ruleset(AUTH_RULES, CHAIN)
    router = Router(rs.correlations, 8)
    inner = next(i for i, c in enumerate(rs.correlations.correlations) if c.rule_id == "many-fail")
    outer = next(i for i, c in enumerate(rs.correlations.correlations) if c.rule_id == "bf-then-ok")
    for ip in ("10.0.0.1", "198.51.100.7", "203.0.113.9"):
        assert router.route(inner, ip) == router.route(outer, ip)
    fired = of_rule(_split_run(rs, router), "bf-then-ok")
    assert len(fired) == 1


def _split_run(rs, router):
    processor = Processor(rs)
    stages = [CorrelationStage(rs.correlations) for _ in range(router.partitions)]
    processed = processor.process([auth(0), auth(5), auth(10), auth(100, outcome="success")])
    out = []
    for q, handoff in router.split(processed.handoff).items():
        stages[q].take(0, handoff, None)
        out += stages[q].flush()
    return out


def test_the_hits_record_round_trips_and_counts_unknown_correlations():
    rs = ruleset(AUTH_RULES, COUNT, FLOOD)
    processed = Processor(rs).process([auth(0, eid="a"), auth(1, eid="b")])
    assert processed.handoff.hits and processed.handoff.offers
    rule_ids = [c.rule_id for c in rs.correlations.correlations]
    value = encode_parts([HandoffPart(2, 41, processed.handoff)], rule_ids)
    [part], unknown = decode_parts(value, {rule_id: i for i, rule_id in enumerate(rule_ids)})
    assert (part.partition, part.offset, unknown) == (2, 41, 0)
    assert part.handoff.hits == processed.handoff.hits
    assert part.handoff.watermark == processed.handoff.watermark
    assert [(r, f.to_dict(), t, k) for r, f, t, k in part.handoff.offers] == \
        [(r, f.to_dict(), t, k) for r, f, t, k in processed.handoff.offers]
    _, unknown = decode_parts(value, {})
    assert unknown == len(processed.handoff.hits)
    with pytest.raises(ValueError):
        decode_parts(b"not a record", {})
