"""Configuration: defaults under the data dir, then the YAML file, then the environment."""
from pathlib import Path

import pytest

from opmas.config import Config, ConfigError, load_config


def test_defaults_are_embedded(tmp_path):
    config = load_config(env={})
    assert config == Config()
    assert config.nats_url is None and config.db_url is None and config.clickhouse_url is None
    assert config.clickhouse_dir == config.data_dir / "clickhouse"


def test_file_then_environment(tmp_path):
    path = tmp_path / "opmas.yaml"
    path.write_text("partitions: 8\nnats_url: nats://file:4222\nrules: [a, b]\nwatch_rules: false\n")
    config = load_config(path, env={"NATS_URL": "nats://env:4222", "OPMAS_BATCH_SIZE": "50",
                                    "OPMAS_DATA_DIR": str(tmp_path / "d")})
    assert config.partitions == 8
    assert config.nats_url == "nats://env:4222"
    assert config.batch_size == 50
    assert config.rules == (Path("a"), Path("b"))
    assert config.watch_rules is False
    assert config.data_dir == (tmp_path / "d").resolve()
    assert load_config(env={"OPMAS_CONFIG": str(path)}).partitions == 8


@pytest.mark.parametrize("text, message", [
    ("partitionz: 3\n", "unknown setting 'partitionz'"),
    ("partitions: many\n", "partitions"),
    ("partitions: 0\n", "partitions must be >= 1"),
    ("lateness: -1\n", "lateness must be >= 0"),
    ("max_future: -1\n", "max_future must be >= 0"),
    ("- a list\n", "expected a mapping"),
])
def test_bad_settings_are_reported(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, env={})


def test_lateness_reaches_the_loaded_correlations():
    """OPMAS_LATENESS is the allowed out-of-orderness of the rule set the runtimes load."""
    from opmas.paths import RULES_DIR
    from opmas.runtime.rules import RuleFiles

    config = load_config(env={"OPMAS_LATENESS": "7.5"})
    assert config.lateness == 7.5
    _, ruleset, _ = RuleFiles((RULES_DIR,), lateness=config.lateness).load()
    assert ruleset.correlations.lateness == 7.5


def test_max_future_reaches_the_processors():
    """OPMAS_MAX_FUTURE bounds how far ahead of the clock event time may move in every processor."""
    from opmas.paths import RULES_DIR
    from opmas.runtime.evaluator import Evaluator, Layout
    from opmas.runtime.rules import RuleFiles

    config = load_config(env={"OPMAS_MAX_FUTURE": "30"})
    assert config.max_future == 30.0
    _, ruleset, _ = RuleFiles((RULES_DIR,)).load()
    evaluator = Evaluator(Layout(3, "agent", 1), 0, ruleset, None, 1 << 20, config.max_future)
    assert [p.max_future for p in evaluator.processors.values()] == [30.0] * 3
