"""Re-keying a partition's correlation hits by group, for a runtime whose correlation is partitioned too.

The scale-out workers detect per events partition but cannot hold one correlation stage for the
whole stream in one process. So, as Kafka Streams and Faust re-key a stream through a repartition
topic, each partition's ``Handoff`` is split by *correlation partition*: a hit goes to the partition
of its correlation's group, a suppression offer to that of its rule's suppression key, and the
watermark to every partition (each correlation partition's stage takes the watermark of every
events partition, as the stage of ``opmas up`` does). A group's hits then meet in one stage
whatever events partition they were detected in, and the findings and ids are those of one stage.

A chain (a correlation whose input is another correlation) is decided in one stage: the hits of a
correlation that others reference are routed by the group key of the outermost correlation that
references it, derived from their own group values as the chain derives it.
"""
from __future__ import annotations

from dataclasses import dataclass

from opmas.core.correlation.compiled import CorrelationSet
from opmas.core.correlation.correlator import SEP, Handoff, InputKey, input_keys
from opmas.core.partition import partition_of


@dataclass(frozen=True, slots=True)
class _Outer:
    """Where the results of a correlation go next: the referencing correlation and its input."""

    index: int  # the referencing correlation's index in CorrelationSet.correlations
    input: InputKey


class Router:
    """Splits a Handoff into one per correlation partition (``partitions`` of them)."""

    def __init__(self, cset: CorrelationSet, partitions: int):
        self.partitions = partitions
        correlations = cset.correlations
        self.rule_ids = [c.rule_id for c in correlations]
        self.group_by = [tuple(c.spec.group_by) for c in correlations]
        index = {c.rule_id: i for i, c in enumerate(correlations)}
        self.outer: dict[int, _Outer] = {}
        for i, corr in enumerate(correlations):
            for keyer, rule_id in zip(input_keys(corr), corr.inputs):
                if rule_id in index:
                    self.outer.setdefault(index[rule_id], _Outer(i, keyer))

    def route(self, correlation: int, key: str) -> int:
        """The correlation partition of a hit of ``correlation`` in group ``key``."""
        outer = self.outer.get(correlation)
        while outer is not None:
            names = self.group_by[correlation]
            values = dict(zip(names, key.split(SEP) if len(names) > 1 else [key])) if names else {}
            keyed = outer.input.of(values)
            if keyed is None:
                break  # the chain drops this result anyway: route it by its own group
            correlation, key = outer.index, keyed[0]
            outer = self.outer.get(correlation)
        return partition_of(f"{self.rule_ids[correlation]}{SEP}{key}", self.partitions)

    def split(self, handoff: Handoff) -> dict[int, Handoff]:
        """The handoff's hits and offers by correlation partition; every partition gets the watermark."""
        parts = {q: Handoff(watermark=handoff.watermark) for q in range(self.partitions)}
        for hit in handoff.hits:
            parts[self.route(hit[0], hit[3])].hits.append(hit)
        for offer in handoff.offers:
            parts[partition_of(f"{offer[0]}{SEP}{offer[3]}", self.partitions)].offers.append(offer)
        return parts
