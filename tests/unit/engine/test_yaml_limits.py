"""YAML aliases are refused with a located error in rule, mapping and configuration files: a "billion
laughs" of a few hundred bytes (nine levels of nine aliases: 387 million strings once expanded) took
53 s and 6.3 GB in ``opmas rules validate`` before (issue 11, item 4)."""
from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from opmas.core.logsource import MappingError, load_mapping
from opmas.core.ruleset import RuleSource, load_ruleset
from opmas.core.sigma.yamldoc import YamlError, iter_documents, load_yaml
from opmas.config import ConfigError, load_config
from tests.paths import PROJECT_ROOT

LAUGHS = "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
                 for prev, name in zip("abcdefgh", "bcdefghi"))
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + LAUGHS  # *a first on line 2
RULE = ("title: Laughs\nid: 0b0b0b0b-0000-4000-8000-000000000011\nlogsource: {product: windows}\nlevel: low\n"
        "detection:\n  sel:\n    Image: x\n  condition: sel\n" + "".join(f"x{line}\n" for line in BOMB.splitlines()))
MAPPING = "name: laughs\nflatten: dotted\nplaceholders:\n" + textwrap.indent(BOMB, "  ")
CONFIG = "partitions: 2\n" + BOMB


def _bounded(run) -> None:
    """``run()`` takes under 2 s (a hang guard) and under 32 MiB of Python allocations."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        run()
    finally:
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 2.0 and peak < 32 * 2**20, (elapsed, peak)


def test_the_bomb_is_small_and_valid_yaml_that_expands_enormously() -> None:
    assert len(BOMB) < 800
    doc = load_yaml("x: 1\n")  # (no alias: loads)
    assert doc == {"x": 1}
    for text in (BOMB, RULE, MAPPING, CONFIG):
        assert "*a" in text


@pytest.mark.timeout(30)
def test_rule_file_with_aliases_is_a_located_error_quickly() -> None:
    found: list = []
    _bounded(lambda: found.append(load_ruleset([RuleSource("rules/laughs.yml", RULE)])))
    ruleset, errors = found[0]
    assert not ruleset.rules
    assert [(e.file, e.line, e.severity) for e in errors] == [("rules/laughs.yml", 10, "error")], errors
    assert "YAML alias *a is not allowed" in errors[0].message
    with pytest.raises(YamlError) as raised:
        list(iter_documents("ok: 1\nbase: &b {k: v}\nmerged:\n  <<: *b\n"))  # merge keys are aliases too
    assert raised.value.line == 4


@pytest.mark.timeout(30)
def test_mapping_file_with_aliases_is_a_located_error_quickly(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yml"
    path.write_text(MAPPING)
    with pytest.raises(MappingError, match=r"line 5: YAML alias \*a is not allowed") as raised:
        _bounded(lambda: load_mapping(path))
    assert raised.value.file == str(path)
    found: list = []
    _bounded(lambda: found.append(load_ruleset([], [path])))
    errors = found[0][1]
    assert len(errors) == 1 and errors[0].file == str(path) and "line 5: YAML alias *a" in errors[0].message


@pytest.mark.timeout(30)
def test_config_file_with_aliases_is_a_located_error_quickly(tmp_path: Path) -> None:
    path = tmp_path / "opmas.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError, match=rf"^{path}:3: YAML alias \*a is not allowed"):
        _bounded(lambda: load_config(path, env={}))
    path.write_text("pipeline:\n  partitions: &p 3\n")  # an anchor alone is fine
    assert load_config(path, env={}).pipeline.partitions == 3


@pytest.mark.timeout(120)
def test_rules_validate_refuses_the_bomb_in_bounded_time_and_memory(tmp_path: Path) -> None:
    (tmp_path / "laughs.yml").write_text(RULE)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "opmas.cli", "rules", "validate", str(tmp_path)],
                          capture_output=True, text=True, timeout=100, cwd=PROJECT_ROOT)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{tmp_path / 'laughs.yml'}:10:" in done.stdout and "YAML alias *a is not allowed" in done.stdout
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert elapsed < 60 and peak_mib < 1024, (elapsed, peak_mib)  # was 53 s and 6.3 GB
