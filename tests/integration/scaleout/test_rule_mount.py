"""Rules mounted from a Kubernetes ConfigMap (deploy/workers.yaml mounts opmas-rules at /rules) load once."""
from __future__ import annotations

from opmas.runtime.rules import RuleFiles, blocking_errors
from tests.integration.scaleout.test_reload import RULE


def test_configmap_volume_layout_loads_each_rule_once(tmp_path):
    """Kubernetes writes the files to a timestamped folder, points ``..data`` at it and links each
    key from the top: ``x.yml -> ..data/x.yml``."""
    rules = tmp_path / "rules"
    real = rules / "..2024_11_25_06_00_00.123456789"
    real.mkdir(parents=True)
    (real / "marker.yml").write_text(RULE)
    (rules / "..data").symlink_to(real.name)
    (rules / "marker.yml").symlink_to("..data/marker.yml")
    sources, ruleset, errors = RuleFiles((rules,)).load()
    assert not blocking_errors(errors), errors
    assert [s.name for s in sources] == [str(rules / "marker.yml")]
    assert [r.id for r in ruleset.rules] == ["9c1f3a52-7d44-4c6b-9e0a-2b8d6f1e4a37"]
