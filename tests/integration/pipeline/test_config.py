"""Configuration: defaults under the data dir, then the YAML file, then the environment."""
from pathlib import Path

import pytest

from opmas.config import Config, ConfigError, load_config


def test_defaults_are_embedded(tmp_path):
    config = load_config(env={})
    assert config == Config()
    assert config.nats.url is None and config.postgres.url is None and config.clickhouse.url is None
    assert config.clickhouse_dir == config.data_dir / "clickhouse"


def test_file_then_environment(tmp_path):
    path = tmp_path / "opmas.yaml"
    path.write_text("pipeline:\n  partitions: 8\n  rules: [a, b]\n  watch_rules: false\nnats:\n  url: nats://file:4222\n")
    config = load_config(path, env={"NATS_URL": "nats://env:4222", "OPMAS_BATCH_SIZE": "50",
                                    "OPMAS_DATA_DIR": str(tmp_path / "d")})
    assert config.pipeline.partitions == 8
    assert config.nats.url == "nats://env:4222"
    assert config.pipeline.batch_size == 50
    assert config.pipeline.rules == (Path("a"), Path("b"))
    assert config.pipeline.watch_rules is False
    assert config.data_dir == (tmp_path / "d").resolve()
    assert load_config(env={"OPMAS_CONFIG": str(path)}).pipeline.partitions == 8


@pytest.mark.parametrize("text, message", [
    ("partitionz: 3\n", "unknown setting 'partitionz'"),
    ("pipeline:\n  partitionz: 3\n", "pipeline: unknown setting 'partitionz'"),
    ("pipeline: 3\n", "pipeline: expected a mapping"),
    ("pipeline:\n  partitions: many\n", "partitions"),
    ("pipeline:\n  partitions: 0\n", "partitions must be >= 1"),
    ("pipeline:\n  lateness: -1\n", "lateness must be >= 0"),
    ("pipeline:\n  max_future: -1\n", "max_future must be >= 0"),
    ("api:\n  port: 70000\n", "api.port must be in 1..65535"),
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
    assert config.pipeline.lateness == 7.5
    _, ruleset, _ = RuleFiles((RULES_DIR,), lateness=config.pipeline.lateness).load()
    assert ruleset.correlations.lateness == 7.5


def test_max_future_reaches_the_processors():
    """OPMAS_MAX_FUTURE bounds how far ahead of the clock event time may move in every processor."""
    from opmas.paths import RULES_DIR
    from opmas.runtime.evaluator import Evaluator, Layout
    from opmas.runtime.rules import RuleFiles

    config = load_config(env={"OPMAS_MAX_FUTURE": "30"})
    assert config.pipeline.max_future == 30.0
    _, ruleset, _ = RuleFiles((RULES_DIR,)).load()
    evaluator = Evaluator(Layout(3, "agent", 1), 0, ruleset, None, 1 << 20, config.pipeline.max_future)
    assert [p.max_future for p in evaluator.processors.values()] == [30.0] * 3


def test_the_configuration_reference_is_generated_from_the_tree():
    """docs/configuration.md lists every setting, as ``python -m opmas.config`` renders it."""
    from opmas.config import reference, settings
    from tests.paths import PROJECT_ROOT

    assert (PROJECT_ROOT / "docs" / "configuration.md").read_text() == reference()
    variables = [f.metadata["env"] for _, f in settings()]
    assert len(variables) == len(set(variables)), "two settings share an environment variable"
    assert all(f.metadata["doc"] for _, f in settings())


def test_secrets_are_left_out_of_the_described_configuration():
    from opmas.config import describe

    described = describe(load_config(env={"OPMAS_DB_URL": "postgresql://u:pw@db/x", "OPMAS_ADMIN_TOKEN": "s3cret"}))
    assert described["postgres"]["url"] == "(set)" and described["api"]["admin_token"] == "(set)"
    assert "s3cret" not in str(described) and "pw@" not in str(described)


def test_sections_come_from_yaml_env_and_flags_in_that_order(tmp_path):
    path = tmp_path / "opmas.yaml"
    path.write_text("api:\n  port: 9000\n  host: 0.0.0.0\npipeline:\n  workers: 3\n")
    config = load_config(path, env={"OPMAS_API_PORT": "9100"}).with_overrides(pipeline={"workers": 1, "rules": None})
    assert (config.api.port, config.api.host, config.pipeline.workers) == (9100, "0.0.0.0", 1)
    assert config.client_api_url() == "http://127.0.0.1:9100"  # agents on this machine
    assert config.pipeline.rules == Config().pipeline.rules
