"""Which correlations a runtime partitioned by a key cannot see whole."""
from __future__ import annotations

from opmas.core.correlation import split_by_partitioning
from opmas.core.ruleset import load_ruleset, sources_from_paths
from opmas.paths import RULES_DIR
from tests.unit.correlation.helpers import AUTH_RULES, ruleset
from tests.unit.correlation.test_types import COUNT, VALUE_COUNT

PER_HOST_USER = COUNT.replace("many-fail", "host-user-fail").replace("[source.ip]", "[host.name, user.name]")


def _ids(rs, key: str) -> list[str]:
    return [corr.rule_id for corr in split_by_partitioning(rs, key)]


def test_correlations_not_grouped_by_the_partition_key_are_listed():
    rs = ruleset(AUTH_RULES, COUNT, VALUE_COUNT, PER_HOST_USER)
    assert _ids(rs, "source.ip") == ["host-user-fail"]
    assert _ids(rs, "host.name") == ["many-fail", "spray"]
    assert _ids(rs, "user.name") == ["many-fail", "spray"]  # spray counts user.name, groups by source.ip
    assert _ids(rs, "agent") == ["many-fail", "spray", "host-user-fail"]  # no event field is the agent
    assert _ids(ruleset(AUTH_RULES), "agent") == []


def test_the_shipped_ssh_brute_force_needs_source_ip_partitioning():
    rs, errors = load_ruleset(sources_from_paths([RULES_DIR / "correlation"]))
    assert not errors
    brute_force = {r.id for r in rs.rules if r.kind == "correlation" and "ssh" in r.source}
    assert len(brute_force) == 2 and brute_force <= set(_ids(rs, "agent"))
    assert brute_force.isdisjoint(_ids(rs, "source.ip"))
