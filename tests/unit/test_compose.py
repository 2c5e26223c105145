"""docker-compose.yml (no Docker engine here): the services run real ``opmas`` commands with
settings OPMAS knows, the API is published, and NATS takes the messages the engine takes."""
from __future__ import annotations

import re

import yaml

from opmas.cli import build_parser
from opmas.config import Config, settings
from tests.paths import PROJECT_ROOT


def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_engine_runs_opmas_up_with_known_settings_and_publishes_the_api() -> None:
    engine = compose()["services"]["engine"]
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    assert engine["command"][0] == "opmas" and engine["command"][1] in commands
    env = engine["environment"]
    known = {f.metadata["env"] for _, f in settings()}
    assert set(env) <= known, set(env) - known
    assert env["OPMAS_API_HOST"] == "0.0.0.0"  # 127.0.0.1 inside a container is unreachable
    assert f"{env['OPMAS_API_PORT']}:{env['OPMAS_API_PORT']}" in engine["ports"]
    assert set(engine["depends_on"]) == {"nats", "postgres", "clickhouse"}


def test_nats_max_payload_is_the_engines_message_limit() -> None:
    doc = compose()
    nats = doc["services"]["nats"]
    target = nats["configs"][0]["target"]
    assert nats["command"][nats["command"].index("-c") + 1] == target
    content = doc["configs"][nats["configs"][0]["source"]]["content"]
    max_payload = int(re.search(r"max_payload:\s*(\d+)", content).group(1))
    limit = int(doc["services"]["engine"]["environment"].get("OPMAS_MAX_MESSAGE_BYTES", Config().nats.max_message_bytes))
    assert max_payload == limit
