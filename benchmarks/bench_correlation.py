"""Correlation benchmark: events/s, peak memory and bytes per active key for 20 correlation rules.

Events: generic Linux auth-style events (``event.action`` one of ten activities), 100,000
distinct source addresses plus users and hosts, two hours of event time, arriving up to
30 s out of order (lateness 60 s). Rules: ten detection rules (one per activity) and twenty
correlations over them: event_count, value_count, temporal, temporal_ordered, and range
conditions (tumbling windows), grouped by source address, user or host.

Two figures, one core each (the machine is shared: expect noise):
* correlation only: pre-built Events and precomputed detection matches fed to an Observer
  (``see``/``observe`` per event) and a one-partition CorrelationStage (``take``/``advance`` per
  batch) — what correlation costs;
* end to end: the same events through ``Detector.process`` (dispatch, detection, correlation);
  and as the embedded pipeline runs them: four partition processors (by host) feeding
  one ``CorrelationStage``.
Peak memory (tracemalloc) and bytes per active key come from a separate correlation-only run.
events/s are per CPU second of this process (``time.process_time``), with Python's default
GC thresholds and again with the thresholds ``opmas detect`` sets.

    python -m benchmarks.bench_correlation [--events 1000000] [--keys 100000] [--e2e-events N]
"""
from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
from types import SimpleNamespace

from opmas.core.correlation import CorrelationStage, Observer
from opmas.core.detector import Detector
from opmas.core.event import Event, format_time
from opmas.core.partition import partition_of
from opmas.core.processor import Processor
from opmas.core.ruleset import RuleSet, RuleSource, load_ruleset

ACTIONS = ["ssh_fail", "ssh_ok", "conn", "download", "exec", "sudo_fail", "priv", "dns", "http_err", "file_write"]
WEIGHTS = [20, 6, 25, 3, 3, 4, 2, 20, 10, 7]
START = 1_795_000_000.0
SPAN = 7200.0  # seconds of event time
JITTER = 30.0  # seconds out of order (below the 60 s lateness)
TUNED_GC = (20_000, 20, 20)  # fewer young-generation GC passes

CORRELATIONS = [  # (type, rules, group-by, timespan, condition)
    ("event_count", ["ssh_fail"], "source.ip", "5m", {"gte": 10}),
    ("event_count", ["ssh_fail"], "user.name", "10m", {"gte": 20}),
    ("event_count", ["conn"], "source.ip", "1m", {"gte": 50}),
    ("event_count", ["sudo_fail"], "host.name", "5m", {"gte": 5}),
    ("event_count", ["http_err"], "source.ip", "1m", {"gte": 30}),
    ("event_count", ["dns"], "source.ip", "1m", {"gte": 100}),
    ("event_count", ["ssh_fail", "sudo_fail"], "user.name", "15m", {"gte": 30}),
    ("event_count", ["file_write"], "host.name", "1m", {"gte": 200}),
    ("value_count", ["conn"], "source.ip", "1m", {"gte": 25, "field": "destination.port"}),
    ("value_count", ["ssh_fail"], "source.ip", "10m", {"gte": 5, "field": "user.name"}),
    ("value_count", ["ssh_ok"], "user.name", "1h", {"gte": 5, "field": "source.ip"}),
    ("value_count", ["http_err"], "source.ip", "5m", {"gte": 10, "field": "host.name"}),
    ("temporal", ["download", "exec"], "host.name", "5m", None),
    ("temporal", ["ssh_ok", "priv"], "user.name", "10m", None),
    ("temporal", ["conn", "ssh_ok"], "source.ip", "2m", None),
    ("temporal", ["dns", "download"], "host.name", "1m", None),
    ("temporal_ordered", ["download", "exec"], "user.name", "5m", None),
    ("temporal_ordered", ["ssh_fail", "ssh_ok"], "source.ip", "10m", None),
    ("event_count", ["ssh_ok"], "source.ip", "1h", {"gte": 1, "lte": 2}),
    ("value_count", ["conn"], "host.name", "10m", {"gt": 3, "lt": 10, "field": "destination.port"}),
]


def bench_rules() -> list[RuleSource]:
    """Ten detection rules and the twenty correlations, one source."""
    docs = []
    for action in ACTIONS:
        docs.append(f"title: {action}\nid: det-{action}\nname: {action}\n"
                    f"logsource: {{product: linux, service: auth}}\n"
                    f"detection: {{selection: {{event.action: {action}}}, condition: selection}}\nlevel: low\n")
    for i, (ctype, rules, group, span, condition) in enumerate(CORRELATIONS):
        cond = f"\n    condition: {condition}" if condition else ""
        docs.append(f"title: correlation {i}\nid: corr-{i}\ncorrelation:\n    type: {ctype}\n"
                    f"    rules: {rules}\n    group-by: [{group}]\n    timespan: {span}{cond}\nlevel: high\n")
    return [RuleSource("bench_correlation.yml", "---\n".join(docs))]


def make_events(count: int, keys: int, seed: int = 11) -> tuple[list[Event], list[str]]:
    """Events in arrival order (time + up to JITTER s of disorder) and each one's matching rule id."""
    rng = random.Random(seed)
    ips = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(keys)]
    actions = rng.choices(ACTIONS, WEIGHTS, k=count)
    events, matches = [], []
    for i in range(count):
        ts = START + SPAN * i / count
        arrival = ts + rng.uniform(0, JITTER)
        action = actions[i]
        data = {
            "@timestamp": format_time(ts),
            "event": {"dataset": "linux.auth", "action": action},
            "source": {"ip": ips[rng.randrange(keys)]},
            "user": {"name": f"user{rng.randrange(2000)}"},
            "host": {"name": f"host{rng.randrange(500)}"},
            "destination": {"port": rng.randrange(1, 1025)},
        }
        events.append((arrival, Event(id=f"e{i}", data=data, timestamp=ts)))
        matches.append((arrival, f"det-{action}"))
    order = sorted(range(count), key=lambda j: events[j][0])
    return [events[j][1] for j in order], [matches[j][1] for j in order]


def _flat(event: Event) -> dict:
    data = event.data
    return {"source.ip": data["source"]["ip"], "user.name": data["user"]["name"],
            "host.name": data["host"]["name"], "destination.port": data["destination"]["port"]}


class Fed:
    """An Observer and a one-partition CorrelationStage fed precomputed detection matches."""

    def __init__(self, ruleset: RuleSet):
        self.rules = {rule.id: rule for rule in ruleset.detections}
        self.observer: Observer = ruleset.correlations.observer()
        self.stage = CorrelationStage(ruleset.correlations)

    def feed(self, events: list[Event], matches: list[str], views: list, start: int, end: int) -> int:
        """Findings of events ``start:end`` as one batch."""
        see, observe, rules = self.observer.see, self.observer.observe, self.rules
        for i in range(start, end):
            event = events[i]
            see(event)
            observe(rules[matches[i]], event, views[i])
        self.stage.take(0, self.observer.take(), None)
        return len(self.stage.advance(None))

    @property
    def late(self) -> int:
        return self.observer.late_events + self.stage.correlator.late_hits


def correlation_only(ruleset: RuleSet, events: list[Event], matches: list[str], views: list, batch: int = 1000
                     ) -> tuple[float, int, Fed]:
    """Seconds and findings for feeding precomputed matches straight to correlation."""
    fed = Fed(ruleset)
    findings = 0
    gc.collect()
    started = time.process_time()
    for start in range(0, len(events), batch):
        findings += fed.feed(events, matches, views, start, min(start + batch, len(events)))
    findings += len(fed.stage.flush())
    return time.process_time() - started, findings, fed


def end_to_end(ruleset: RuleSet, events: list[Event], batch: int = 1000) -> tuple[float, int, Detector]:
    """Seconds and findings through Detector.process + flush."""
    detector = Detector(ruleset)
    findings = 0
    gc.collect()
    started = time.process_time()
    for start in range(0, len(events), batch):
        findings += len(detector.process(events[start:start + batch]))
    findings += len(detector.flush())
    return time.process_time() - started, findings, detector


def staged(ruleset: RuleSet, events: list[Event], partitions: int = 4, batch: int = 1000
           ) -> tuple[float, int, CorrelationStage]:
    """Seconds and findings through partition Processors (partitioned by host) and one CorrelationStage."""
    processors = [Processor(ruleset) for _ in range(partitions)]
    stage = CorrelationStage(ruleset.correlations)
    findings = 0
    gc.collect()
    started = time.process_time()
    for start in range(0, len(events), batch):
        routed: dict[int, list[Event]] = {}
        for event in events[start:start + batch]:
            routed.setdefault(partition_of(event.data["host"]["name"], partitions), []).append(event)
        for p, share in routed.items():
            processed = processors[p].process(share)
            findings += len(processed.findings)
            stage.take(p, processed.handoff, None)
        findings += len(stage.advance(None))
    findings += len(stage.flush())
    return time.process_time() - started, findings, stage


def memory(ruleset: RuleSet, events: list[Event], matches: list[str], views: list) -> tuple[int, int, int]:
    """(peak bytes, bytes held by the state at its largest sampled point, active keys then)."""
    fed = Fed(ruleset)
    correlator = fed.stage.correlator
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    best = (0, 0)
    for start in range(0, len(events), 1000):
        fed.feed(events, matches, views, start, min(start + 1000, len(events)))
        if start % 50_000 == 0:
            held = tracemalloc.get_traced_memory()[0] - base
            if correlator.active_keys > best[1]:
                best = (held, correlator.active_keys)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, best[0], best[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--e2e-events", type=int, default=0, help="events for the end-to-end run (0: all)")
    args = parser.parse_args(argv)

    ruleset, errors = load_ruleset(bench_rules())
    if errors:
        raise SystemExit("\n".join(map(str, errors)))
    print(f"rules: {len(ruleset.detections)} detection, {len(ruleset.correlations.correlations)} correlation; "
          f"lateness {ruleset.correlations.lateness:.0f} s, disorder up to {JITTER:.0f} s")
    started = time.perf_counter()
    events, matches = make_events(args.events, args.keys)
    views = [SimpleNamespace(flat=_flat(e)) for e in events]
    gc.freeze()  # the pre-built input is not the system under test: keep the cyclic GC off it
    print(f"generated {len(events):,} events, {args.keys:,} source addresses, "
          f"{SPAN / 3600:.0f} h of event time in {time.perf_counter() - started:.1f} s")

    seconds, findings, fed = correlation_only(ruleset, events, matches, views)
    print(f"correlation only: {len(events) / seconds:,.0f} events/s ({seconds:.1f} s), {findings:,} findings, "
          f"late {fed.late}")

    peak, held, keys = memory(ruleset, events, matches, views)
    print(f"memory: peak {peak / 2**20:.0f} MiB (tracemalloc); {keys:,} active keys held {held / 2**20:.0f} MiB "
          f"= {held / max(keys, 1):.0f} bytes per active key (estimate reported by stats: "
          f"{correlator_estimate(ruleset, events, matches, views, keys)})")

    sample = [Event(id=e.id, data=e.data) for e in events[:args.e2e_events or None]]  # time from the mapping
    gc.freeze()
    seconds, findings, detector = end_to_end(ruleset, sample)
    print(f"end to end (Detector, {len(sample):,} events): {len(sample) / seconds:,.0f} events/s "
          f"({seconds:.1f} s), {findings:,} findings, late {detector.stats.late_events}")

    for event in sample:
        event.timestamp = None
    seconds, findings, stage = staged(ruleset, sample)
    print(f"as the pipeline runs it (4 partitions + one correlation stage): {len(sample) / seconds:,.0f} "
          f"events/s ({seconds:.1f} s), {findings:,} findings, late hits {stage.correlator.late_hits}")

    gc.set_threshold(*TUNED_GC)
    seconds, findings, _ = correlation_only(ruleset, events, matches, views)
    print(f"with gc.set_threshold{TUNED_GC} (as opmas detect runs): correlation only "
          f"{len(events) / seconds:,.0f} events/s", end="")
    for event in sample:
        event.timestamp = None
    seconds, findings, _ = end_to_end(ruleset, sample)
    print(f", end to end {len(sample) / seconds:,.0f} events/s")
    return 0


def correlator_estimate(ruleset: RuleSet, events: list[Event], matches: list[str], views: list, keys: int) -> str:
    """The Correlator's own state_bytes estimate per key at a comparable point (a fresh run, first half)."""
    fed = Fed(ruleset)
    correlator = fed.stage.correlator
    half = len(events) // 2
    for start in range(0, half, 1000):
        fed.feed(events, matches, views, start, min(start + 1000, half))
    return f"{correlator.state_bytes / max(correlator.active_keys, 1):.0f} bytes per key at {correlator.active_keys:,} keys"


if __name__ == "__main__":
    raise SystemExit(main())
