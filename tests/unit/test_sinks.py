"""Finding sinks chosen by name (connectors/sinks.py) and the JSON-lines file sink, without servers;
tests/integration/pipeline/test_announce_once.py runs the file sink in a pipeline."""
from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from opmas.connectors.jsonl import JsonLinesSink
from opmas.connectors.records import FindingRecord
from opmas.connectors.sinks import SINKS, SinkError, build_sinks
from opmas.core.finding import Finding, finding_id


def _findings(n: int) -> list[FindingRecord]:
    return [FindingRecord.of(Finding(id=finding_id("r", [f"e{i}"]), rule_id="r", rule_title="R", severity="low",
                                     tags=[], event_ids=[f"e{i}"], timestamp=1764043200.0 + i, title="R",
                                     details={"i": i}))
            for i in range(n)]


def test_a_sink_is_chosen_by_name_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    [sink] = build_sinks([f"file:{tmp_path / 'f.jsonl'}"])
    assert isinstance(sink, JsonLinesSink) and sink.path == tmp_path / "f.jsonl"
    for spec in ("kafka:somewhere", "file:", "file", ""):
        with pytest.raises(SinkError, match="expected NAME:TARGET with NAME one of file"):
            build_sinks([spec])
    assert set(SINKS) == {"file"}


def test_the_file_sink_appends_whole_findings_private_to_the_user(tmp_path: Path) -> None:
    path = tmp_path / "new" / "findings.jsonl"
    sink = JsonLinesSink(path)
    records = _findings(3)

    async def run() -> None:
        await sink.open()
        await sink.write(records[:2])
        await sink.write([])
        await sink.write(records[2:])
        await sink.close()
        await sink.open()  # reopened (a restart): appended to, never truncated
        await sink.write(records[:1])
        await sink.close()

    asyncio.run(run())
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["id"] for line in lines] == [r.id for r in records] + [records[0].id]
    assert lines[1]["details"] == {"i": 1} and lines[1]["rule_id"] == "r"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_sink_that_cannot_open_is_refused_at_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SinkError, match=f"cannot open: File exists \\({blocker}\\)"):
        asyncio.run(JsonLinesSink(blocker / "findings.jsonl").open())


def test_opmas_up_refuses_a_bad_sink_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "OPMAS_DATA_DIR": str(tmp_path / "data"), "OPMAS_CONFIG": ""}
    for spec, message in (("nowhere:x", "expected NAME:TARGET"), (f"file:{tmp_path}/f/x", None)):
        if message is None:
            (tmp_path / "f").write_text("")  # a file where the folder should be
            message = "cannot open: File exists"
        done = subprocess.run([sys.executable, "-m", "opmas.cli", "up", "--sink", spec], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()  # no server was started
