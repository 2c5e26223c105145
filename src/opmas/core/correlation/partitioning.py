"""Which correlations a runtime partitioned without a correlation stage cannot see whole.

The scale-out workers spread events over partition processors by ``partition_key``
(``opmas.core.partition``: the publishing agent by default, or a dotted event field), and
each processor correlates only its own events (the embedded pipeline feeds one
CorrelationStage instead, see core/correlation/stage.py). A correlation sees all the events of
a group only if every one of its inputs groups by that field; any other correlation
(e.g. one grouped by ``source.ip`` while events are partitioned by agent: a password
spray over several agents) can miss what ``opmas detect`` finds over the whole log.
"""
from __future__ import annotations

from opmas.core.correlation.link import LinkedCorrelation
from opmas.core.partition import AGENT_KEY
from opmas.core.ruleset import RuleSet


def split_by_partitioning(ruleset: RuleSet, partition_key: str) -> list[LinkedCorrelation]:
    """The correlations of ``ruleset`` whose group-by does not hold ``partition_key`` for every
    input (with ``"agent"``, all of them: no event field is the agent), in dependency order."""
    if ruleset.correlations is None:
        return []
    return [corr for corr in ruleset.correlations.correlations
            if partition_key == AGENT_KEY or not all(partition_key in keys for keys in corr.key_fields)]
