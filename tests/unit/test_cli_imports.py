"""``opmas`` imports what a command needs when it runs: building the parser loads no sub-command's
dependencies, so ``opmas detect`` starts without the management API, NATS, PostgreSQL, Faust or ClickHouse."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from opmas.paths import RULES_DIR
from tests.paths import PROJECT_ROOT, SAMPLES_DIR

NOT_FOR_DETECT = ("fastapi", "starlette", "uvicorn", "nats", "psycopg", "faust", "aiokafka", "clickhouse_connect",
                  "chdb", "opmas.api", "opmas.connectors.nats")

# Run in a fresh interpreter: this one has imported whatever other tests needed.
DETECT = """
import json, sys
from opmas.cli import build_parser

rules, events, output, watched = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
args = build_parser().parse_args(["detect", rules, "--events", events, "--output", output])
code = args.func(args)
loaded = [name for name in watched if any(m == name or m.startswith(name + ".") for m in sys.modules)]
print(json.dumps({"code": code, "loaded": loaded}))
"""


def test_detect_imports_no_server_or_api_module(tmp_path: Path) -> None:
    output = tmp_path / "findings.jsonl"
    done = subprocess.run([sys.executable, "-c", DETECT, str(RULES_DIR), str(SAMPLES_DIR / "security_events.jsonl"),
                           str(output), ",".join(NOT_FOR_DETECT)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, done.stderr
    assert output.read_text().strip(), "detect wrote no findings"
    assert result["loaded"] == [], f"opmas detect imported {result['loaded']}"


def test_replay_patience_default_is_the_replay_modules() -> None:
    """``opmas replay --patience`` defaults to connectors.nats.replay.PATIENCE, written out in the
    command module so that registering it does not load NATS."""
    from opmas.connectors.nats.replay import PATIENCE
    from opmas.cli import build_parser

    assert build_parser().parse_args(["replay", "events.jsonl"]).patience == PATIENCE
