"""Scale-out correlation: one correlation stage for all the workers, behind a one-partition topic.

The workers' partition processors run split (engine/processor.py): after each events record
a processor hands over its correlation hits, suppression offers and watermark. A worker sends
a batch's handoffs, each tagged with its events partition and record offset, as one record to
the topic ``<events topic>-correlation`` (one partition) before it checkpoints the batch. Kafka
gives that partition to one worker, whose ``StageRuntime`` feeds the handoffs to a
CorrelationStage (engine/correlation/stage.py): a correlation's groups meet there whatever
partition or worker detected their events, as in the embedded pipeline. Its findings go to NATS
and PostgreSQL (the events they cite were stored by the workers that detected them), then the
stage's state and the last record offset it took per events partition are checkpointed in the
table ``correlation-checkpoint``, and only then is the batch acknowledged.

A worker that dies after sending and before its checkpoint replays those events records: their
handoffs come again with offsets the stage has taken, and are dropped. A stage that dies (or
moves) restores from its checkpoint and takes the handoffs after it again.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson

from engine.correlation import CorrelationSet, CorrelationStage, Handoff
from engine.correlation.suppression import finding_from_dict
from engine.finding import Finding
from opmas import metrics

log = logging.getLogger("opmas.worker.correlation")

STAGE_KEY = 0  # the one key of the checkpoint table (its changelog has one partition)
Tagged = tuple[int, int, Handoff]  # (events partition, offset of the record the handoff covers, handoff)


def correlation_topic(events_topic: str) -> str:
    """The topic of the handoffs, beside the events topic."""
    return f"{events_topic}-correlation"


def encode_handoffs(items: Sequence[Tagged]) -> bytes:
    """A batch's tagged handoffs as one record value (JSON)."""
    return orjson.dumps([
        [p, offset, h.watermark, h.hits, [[rule_id, f.to_dict(), ts, key] for rule_id, f, ts, key in h.offers]]
        for p, offset, h in items])


def decode_handoffs(raw: bytes) -> list[Tagged]:
    """Inverse of encode_handoffs."""
    return [(p, offset, Handoff(hits=[tuple(hit) for hit in hits],
                                offers=[(rule_id, finding_from_dict(f), ts, key) for rule_id, f, ts, key in offers],
                                watermark=watermark))
            for p, offset, watermark, hits, offers in orjson.loads(raw)]


class StageRuntime:
    """The correlation stage of the worker that holds the handoffs topic's partition (the worker
    runs the agent, the sinks and the checkpoint table; see faust_worker.py)."""

    def __init__(self, layout: dict[str, Any], idle_timeout: float):
        self.layout = layout
        self.idle_timeout = idle_timeout
        self.assigned = False  # this worker holds the handoffs partition (restored from its checkpoint)
        self.stage: CorrelationStage | None = None  # None also while the rules have no correlations
        self.taken: dict[int, int] = {}  # events partition -> offset of the last record whose handoff was taken
        self.exported: dict[str, int] = {}

    def restore(self, cset: CorrelationSet | None, raw: dict[str, Any] | None) -> None:
        """The stage from its checkpoint (empty if none, or of another layout)."""
        state, taken = None, {}
        if raw is not None:
            if raw.get("layout") == self.layout:
                state, taken = raw["state"], {int(p): int(o) for p, o in raw["taken"].items()}
            else:
                log.warning("correlation checkpoint layout differs from the configuration: starting empty",
                            extra={"checkpoint_layout": raw.get("layout"), "layout": self.layout})
        self.taken = taken
        self.assigned = True
        self.stage = CorrelationStage(cset, state, self.idle_timeout) if cset is not None else None
        log.info("correlation stage assigned", extra={"state_restored": state is not None,
                                                      "partitions_taken": len(taken)})

    def drop(self) -> None:
        """The handoffs partition moved to another worker."""
        self.assigned, self.stage, self.taken = False, None, {}

    def replace_rules(self, cset: CorrelationSet | None) -> None:
        """Hot reload: carry the groups of unchanged correlations."""
        if not self.assigned:
            return
        if cset is None:
            self.stage = None
        elif self.stage is None:
            self.stage = CorrelationStage(cset, None, self.idle_timeout)
        else:
            self.stage.replace(cset)

    def take(self, values: Sequence[bytes]) -> list[Finding]:
        """Take the handoffs of a batch of records (those already taken are dropped) and advance."""
        stage = self.stage
        if stage is None:
            return []
        now = time.time()
        for value in values:
            for p, offset, handoff in decode_handoffs(value):
                if offset > self.taken.get(p, -1):
                    stage.take(p, handoff, now)
                    self.taken[p] = offset
        return stage.advance(now)

    def checkpoint(self) -> dict[str, Any]:
        """The stage's state and what it took, as the table stores it."""
        assert self.stage is not None
        metrics.export_partition("correlation", self.stage.stats(), self.exported)
        return {"layout": self.layout, "taken": {str(p): o for p, o in self.taken.items()},
                "state": self.stage.snapshot()}
