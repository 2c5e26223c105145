"""Rule YAML (engine/sigma/yamldoc.py) reads to exactly what yaml.safe_load reads."""
from __future__ import annotations

import pytest
import yaml

from opmas.core.ruleset import sources_from_paths
from opmas.core.sigma.yamldoc import iter_documents
from opmas.paths import RULES_DIR

TRICKY = [
    "a: &x text\nc: '*x &y'\n",  # an anchor alone is harmless (aliases are refused: test_yaml_limits.py)
    "s: !!str 123\nn: 0x1f\nf: 1e3\nt: yes\nd: 2024-01-01\nts: 2024-01-01T10:00:00Z\nnull: ~\n",
    "q: '1.0'\ndq: \"tab\\there\"\nblock: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "set: !!set {a, b}\nbin: !!binary aGVsbG8=\nomap: !!omap [{a: 1}, {b: 2}]\n",
    "---\nfirst: 1\n---\nsecond: [a, {b: c}]\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_values_are_the_ones_yaml_safe_load_builds(text: str) -> None:
    assert [doc.data for doc in iter_documents(text)] == list(yaml.safe_load_all(text))


def test_the_shipped_rules_read_as_with_yaml_safe_load() -> None:
    for source in sources_from_paths([RULES_DIR]):
        expected = [doc for doc in yaml.safe_load_all(source.text) if doc is not None]
        assert [doc.data for doc in iter_documents(source.text)] == expected, source.name
