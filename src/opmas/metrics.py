"""Prometheus metrics the pipeline updates; the management API exposes them on /metrics, the
scale-out commands (``--metrics-port``) with ``serve``.

All live in the default registry (``prometheus_client.REGISTRY``).
"""
from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_PROCESSED = Counter(
    "opmas_events_processed", "Events evaluated by the partition processors", ["partition"])
MESSAGES_RECEIVED = Counter(
    "opmas_messages_received", "JetStream messages fetched from the events stream")
FINDINGS = Counter(
    "opmas_findings", "Findings produced", ["severity", "rule_id"])
PROCESSING_LATENCY = Histogram(
    "opmas_processing_latency_seconds",
    "From a message's arrival in JetStream to its acknowledgement (after all sinks)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
BATCH_SIZE = Histogram(
    "opmas_batch_events", "Events per processed batch",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 50000))
CONSUMER_LAG = Gauge(
    "opmas_consumer_lag", "Messages in the events stream not yet delivered to the engine")
DEAD_LETTERS = Counter(
    "opmas_dead_letters", "Messages or lines sent to opmas.deadletter", ["reason"])
LATE_EVENTS = Counter(
    "opmas_late_events", "Events behind the watermark by more than the allowed lateness", ["partition"])
FUTURE_EVENTS = Counter(
    "opmas_future_events", "Events dated more than max_future after the runtime's clock, kept out of"
    " correlation windows", ["partition"])
UNTIMED_EVENTS = Counter(
    "opmas_untimed_events", "Events without an event time, kept out of correlation windows", ["partition"])
EVICTED_KEYS = Counter(
    "opmas_evicted_keys", "Correlation groups dropped unfinished to stay within max_keys", ["partition"])
STATE_BYTES = Gauge(
    "opmas_state_bytes", "Size of a partition processor's state", ["partition"])
ACTIVE_KEYS = Gauge(
    "opmas_state_keys", "Correlation keys held by a partition processor", ["partition"])
CHECKPOINTS_BEHIND = Counter(
    "opmas_checkpoints_behind",
    "Partitions restored from a checkpoint older than their committed offset (records never applied)",
    ["partition"])
SINK_RETRIES = Counter(
    "opmas_sink_retries", "Sink writes retried because a server was unavailable", ["sink"])
ARCHIVED_EVENTS = Counter(
    "opmas_archived_events", "Events written to the ClickHouse archive")
RULES_LOADED = Gauge(
    "opmas_rules_loaded", "Rules in the running rule set")
RULE_RELOADS = Counter(
    "opmas_rule_reloads", "Rule set reload attempts", ["outcome"])

BRIDGED_EVENTS = Counter(
    "opmas_bridged_events", "Events the bridge produced to the Kafka events topic")
BRIDGE_ACKED_SEQ = Gauge(
    "opmas_bridge_acked_seq", "Events stream sequence of the last JetStream message the bridge acknowledged")
ARCHIVE_SKIPPED_RECORDS = Counter(
    "opmas_archive_skipped_records", "Records of the events topic that are not OPMAS events (not archived)")


def serve(port: int | None) -> None:
    """Serve the metrics on http://0.0.0.0:PORT/metrics from a daemon thread (None: not at all)."""
    if port:
        start_http_server(port)


# ProcessorStats fields that count up, and their counters.
PARTITION_COUNTERS = {"late_events": LATE_EVENTS, "future_events": FUTURE_EVENTS,
                      "untimed_events": UNTIMED_EVENTS, "evicted_keys": EVICTED_KEYS}


def export_partition(partition: int | str, stats: Mapping[str, int], seen: dict[str, int]) -> None:
    """Set a partition processor's state gauges from its ``stats`` (ProcessorStats fields) and move
    its counters by what they added since ``seen``, the values last exported (updated here).
    The embedded pipeline's correlation stage reports as partition ``"correlation"``."""
    label = str(partition)
    STATE_BYTES.labels(label).set(stats["state_bytes"])
    ACTIVE_KEYS.labels(label).set(stats["active_keys"])
    for name, counter in PARTITION_COUNTERS.items():
        added = stats[name] - seen.get(name, 0)
        if added > 0:
            counter.labels(label).inc(added)
        seen[name] = stats[name]


def forget_partition(partition: int | str) -> None:
    """Drop the state gauges of a partition this process no longer holds."""
    for gauge in (STATE_BYTES, ACTIVE_KEYS):
        gauge.remove(str(partition))
