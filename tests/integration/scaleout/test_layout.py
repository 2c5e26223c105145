"""The events topic's partition count is the processors' layout: a mismatch is refused, not mixed."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from opmas.connectors.kafka.topics import TopicLayoutError, ensure_topic
from tests.paths import PROJECT_ROOT


def test_topic_with_another_partition_count_is_refused(tansu):
    assert asyncio.run(ensure_topic(tansu.url, "opmas-events", 4)) == 4
    assert asyncio.run(ensure_topic(tansu.url, "opmas-events", 4)) == 4  # idempotent
    with pytest.raises(TopicLayoutError, match="has 4 partitions but OPMAS is configured for 6"):
        asyncio.run(ensure_topic(tansu.url, "opmas-events", 6))
    done = subprocess.run(
        [sys.executable, "-m", "opmas.cli", "worker"], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "OPMAS_KAFKA_URL": tansu.url, "OPMAS_PARTITIONS": "6",
                         "NATS_URL": "nats://127.0.0.1:1", "OPMAS_DB_URL": "postgresql:///unused"})
    assert done.returncode == 2
    assert "has 4 partitions but OPMAS is configured for 6" in done.stderr


def test_scaleout_commands_say_which_server_is_missing():
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "OPMAS_DB_URL", "OPMAS_KAFKA_URL")}
    done = subprocess.run([sys.executable, "-m", "opmas.cli", "worker"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert "worker needs OPMAS_KAFKA_URL, NATS_URL, OPMAS_DB_URL" in done.stderr
