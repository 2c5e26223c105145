"""The inputs of opmas detect: binary EVTX, gzip, folders, globs and several --events, each file's
format told by its content; unknown binary input is an error naming the file."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from opmas.connectors.inputs import Reading, UnknownInput, check
from opmas.cli import main
from tests.paths import EVTX_SAMPLE, SIGMA_DIR

EVTX = EVTX_SAMPLE
SIGMA = SIGMA_DIR
FAILED_LOGON = SIGMA / "rules/windows/builtin/security/account_management/win_security_susp_failed_logon_source.yml"
RULE = """title: Blocked connection
id: 0f6b8a8e-3c2d-4c4e-9a51-2b1f6f0e9a11
logsource: {product: windows, service: security}
detection:
  selection:
    EventID: 5152
    DestPort: '3389'
  condition: selection
level: low
"""


def _findings(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_binary_evtx_is_read_as_evtx_json(tmp_path: Path) -> None:
    records = [obj for obj, _ in Reading(check([str(EVTX)]), pytest.fail).records()]
    assert len(records) == 7
    system = records[0]["Event"]["System"]
    assert system["Channel"] == "Security" and system["EventID"] == 5152
    assert records[0]["Event"]["EventData"]["DestPort"] == "3389"
    (tmp_path / "rule.yml").write_text(RULE)
    out = tmp_path / "findings.jsonl"
    assert main(["detect", str(tmp_path / "rule.yml"), "--events", str(EVTX), "--output", str(out)]) == 0
    found = _findings(out)
    assert [f["rule_title"] for f in found] == ["Blocked connection"]
    assert found[0]["timestamp"] == "2016-06-29T15:24:34.346000Z"  # the record's own time


@pytest.mark.skipif(not FAILED_LOGON.is_file(), reason="no SigmaHQ snapshot in ../shared/sigma")
def test_a_sigmahq_rule_fires_on_binary_evtx(tmp_path: Path) -> None:
    out = tmp_path / "findings.jsonl"
    assert main(["detect", str(FAILED_LOGON), "--events", str(EVTX), "--output", str(out)]) == 0
    [finding] = _findings(out)
    assert finding["rule_title"] == "Failed Logon From Public IP"
    assert finding["details"]["event"]["Event"]["EventData"]["IpAddress"] == "23.94.153.202"


def test_folders_globs_and_several_events_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    (logs / "host-a" / "old").mkdir(parents=True)
    shutil.copy(EVTX, logs / "host-a" / "security.evtx")
    (logs / "host-a" / "old" / "security.evtx.gz").write_bytes(gzip.compress(EVTX.read_bytes()))
    (logs / "host-a" / "notes.txt").write_text("not an event log: a folder search skips it\n")
    lines = b"".join(orjson.dumps({"Event": {"System": {"EventID": 5152, "Channel": "Security"},
                                             "EventData": {"DestPort": "3389", "n": i}}}) + b"\n" for i in range(3))
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    (tmp_path / "b.jsonl").write_bytes(lines[: lines.index(b"\n") + 1])
    (tmp_path / "rule.yml").write_text(RULE)
    out = tmp_path / "findings.jsonl"
    assert main(["detect", str(tmp_path / "rule.yml"), "--events", str(logs), str(tmp_path / "*.jsonl*"),
                 "--events", str(tmp_path / "b.jsonl"), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "18 events" in err and "0 bad records" in err  # 7 + 7 EVTX records, 3 + 1 JSON lines (b.jsonl once)
    found = _findings(out)
    assert len(found) == 6 and len({f["id"] for f in found}) == 4  # the same record twice: the same finding


def test_unknown_binary_input_is_an_error_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rule.yml").write_text(RULE)
    blob = tmp_path / "capture.json"
    blob.write_bytes(bytes(range(256)) * 8)
    good = tmp_path / "good.jsonl"
    good.write_bytes(b'{"a": 1}\n')
    out = tmp_path / "findings.jsonl"
    assert main(["detect", str(tmp_path / "rule.yml"), "--events", str(good), str(blob), str(tmp_path / "none*.evtx"),
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {blob}: not JSON, gzip or EVTX" in err
    assert f"error: no file matches {tmp_path / 'none*.evtx'}" in err
    assert "skipped record" not in err and not out.exists()  # refused before reading anything
    with pytest.raises(UnknownInput, match="not a readable gzip"):
        (tmp_path / "cut.gz").write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:20])
        check([str(tmp_path / "cut.gz")])


def test_text_that_is_not_json_still_gives_bad_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rule.yml").write_text(RULE)
    log = tmp_path / "mixed.log"
    log.write_text('{"a": 1}\nMar  3 10:00:01 host sshd[1]: Accepted password\n{"a": 2}\n')
    assert main(["detect", str(tmp_path / "rule.yml"), "--events", str(log), "--output", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"{log}:2: skipped record: not a JSON object" in err and "2 events" in err


def test_utf8_with_a_byte_order_mark_is_read_and_utf16_is_refused_clearly(tmp_path: Path) -> None:
    text = '[{"a": 1},\n {"a": 2}]\n'
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "bom.json.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + text.encode()))
    records = [obj for obj, _ in Reading(check([str(tmp_path / "bom.json"), str(tmp_path / "bom.json.gz")]),
                                         pytest.fail).records()]
    assert records == [{"a": 1}, {"a": 2}] * 2
    (tmp_path / "ps.json").write_bytes(text.encode("utf-16"))
    with pytest.raises(UnknownInput, match="ps.json: UTF-16 text"):
        check([str(tmp_path / "ps.json")])


def test_an_unreadable_evtx_chunk_is_a_bad_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(EVTX.read_bytes())
    data[5000:5200] = b"\xff" * 200  # inside the only chunk's string table
    broken = tmp_path / "broken.evtx"
    broken.write_bytes(bytes(data))
    (tmp_path / "rule.yml").write_text(RULE)
    assert main(["detect", str(tmp_path / "rule.yml"), "--events", str(broken), str(EVTX),
                 "--output", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"{broken}:0: skipped record: unreadable EVTX" in err
    assert "7 events" in err and "1 bad records" in err  # the good file after it is read whole


def test_evtx_on_stdin_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "rule.yml").write_text(RULE)
    proc = subprocess.run([sys.executable, "-m", "opmas.cli", "detect", str(tmp_path / "rule.yml"), "--events", "-"],
                          input=EVTX.read_bytes(), capture_output=True)
    assert proc.returncode == 2
    assert b"binary EVTX cannot be read from stdin" in proc.stderr


def test_reading_tells_its_position_in_bytes(tmp_path: Path) -> None:
    lines = tmp_path / "e.jsonl.gz"  # random text: about 1 MB compressed, read in several chunks
    lines.write_bytes(gzip.compress(b"".join(orjson.dumps({"n": i, "pad": os.urandom(100).hex()}) + b"\n"
                                             for i in range(5000))))
    reading = Reading(check([str(lines), str(EVTX)]), pytest.fail)
    assert reading.total == lines.stat().st_size + EVTX.stat().st_size
    seen = [reading.position for _ in reading.records()]
    assert seen == sorted(seen) and 0 < seen[0] < seen[4999] <= lines.stat().st_size < seen[5000]
    assert reading.position == reading.total
