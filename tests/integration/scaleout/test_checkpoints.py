"""The workers' checkpoints: never written for a partition that may have moved to another worker, and
small enough for a Kafka record with many open correlation windows."""
from __future__ import annotations

import orjson

from opmas.core.event import Event
from opmas.core.detector import Detector
from opmas.paths import RULES_DIR
from opmas.runtime.faust_worker import CHECKPOINT_MAX_BYTES, decode_checkpoint, encode_checkpoint, fenced
from opmas.runtime.rules import RuleFiles


def test_fence_keeps_checkpoints_of_assigned_partitions_only():
    assert fenced([0, 2], {0, 1, 2}, None, 55.0) == []
    assert fenced([0, 2, 3], {0, 1}, None, 55.0) == [2, 3]  # revoked while the batch ran
    assert fenced([0, 2], {0, 1, 2}, 10.0, 55.0) == []  # a rebalance waits for the batch
    assert fenced([2, 0], {0, 1, 2}, 55.0, 55.0) == [0, 2]  # it waited too long: the group moved on


def ssh_failure(n: int) -> Event:
    ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    return Event(id=f"ssh-{n}", data={
        "@timestamp": f"2026-11-20T08:00:{n // 1000:02d}.{n % 1000:03d}Z",  # all within one window
        "event": {"dataset": "linux.auth", "outcome": "failure"}, "host": {"name": "bastion"},
        "process": {"name": "sshd", "pid": 4000}, "user": {"name": "deploy"}, "source": {"ip": ip, "port": 40000},
        "message": f"Failed password for deploy from {ip} port 40000 ssh2"})


def test_checkpoint_of_many_correlation_keys_fits_a_kafka_record():
    """Tens of thousands of keys in open correlation windows: the JSON is over Kafka's default 1 MiB
    message size, the checkpoint record well under it, and it decodes to the same checkpoint."""
    _, ruleset, _ = RuleFiles((RULES_DIR,)).load()
    detector = Detector(ruleset)
    detector.process([ssh_failure(n) for n in range(30_000)])
    checkpoint = {"layout": {"partitions": 4, "key": "agent"}, "source": [7, 0], "offset": 3,
                  "state": detector.snapshot()}
    raw = encode_checkpoint(checkpoint)
    assert len(orjson.dumps(checkpoint)) > 1 << 20 > 2 * len(raw)
    assert decode_checkpoint(raw) == checkpoint
    assert decode_checkpoint(orjson.dumps(checkpoint)) == checkpoint  # written before compression
    assert len(raw) < CHECKPOINT_MAX_BYTES
