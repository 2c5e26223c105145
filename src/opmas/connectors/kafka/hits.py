"""The correlation hits topic's record format (the scale-out workers' repartition topic).

A worker that processed a batch of events partitions sends each correlation partition q one record
(to partition q of the hits topic): for every events partition p of the batch, p's hits and
suppression offers that belong to q (core/correlation/repartition.py), p's watermark, and the
Kafka offset of p's last events record in the batch. That offset grows along p, so the
correlation side applies each part once, whether Kafka redelivered the record or a worker that
replayed a batch sent it again. Hits name their correlation by rule id, not by its index in
a rule set, so workers a reload has not yet reached still agree.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from opmas.core.correlation import Handoff
from opmas.core.finding import Finding

_FINDING_FIELDS = tuple(f.name for f in fields(Finding))


@dataclass(slots=True)
class HandoffPart:
    """One events partition's share of a correlation partition's hits, offers and watermark."""

    partition: int  # events partition
    offset: int  # Kafka offset of its last events record in the batch
    handoff: Handoff


def encode_parts(parts: Sequence[HandoffPart], rule_ids: Sequence[str]) -> bytes:
    """A record value for ``parts``; ``rule_ids[i]`` is the rule id of correlation ``i`` of the hits."""
    return orjson.dumps({"parts": [{
        "p": part.partition, "o": part.offset, "w": part.handoff.watermark,
        "h": [[rule_ids[index], ts, eid, key, val] for index, ts, eid, key, val in part.handoff.hits],
        "s": [[rule_id, {name: getattr(finding, name) for name in _FINDING_FIELDS}, ts, key]
              for rule_id, finding, ts, key in part.handoff.offers],
    } for part in parts]})


def decode_parts(value: bytes, index_of: dict[str, int]) -> tuple[list[HandoffPart], int]:
    """The parts of a value written by ``encode_parts``, with each hit's correlation as its index in
    ``index_of`` (the running rule set's); also the count of hits of correlations it does not have
    (a rule reload between the two sides). Raises ValueError on anything else."""
    try:
        obj: dict[str, Any] = orjson.loads(value)
        parts, unknown = [], 0
        for part in obj["parts"]:
            hits = []
            for rule_id, ts, eid, key, val in part["h"]:
                index = index_of.get(rule_id)
                if index is None:
                    unknown += 1
                else:
                    hits.append((index, float(ts), eid, key, val))
            offers = [(rule_id, Finding(**finding), float(ts), key) for rule_id, finding, ts, key in part["s"]]
            watermark = part["w"]
            parts.append(HandoffPart(int(part["p"]), int(part["o"]),
                                     Handoff(hits, offers, None if watermark is None else float(watermark))))
        return parts, unknown
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an OPMAS correlation hits record: {exc}") from exc
