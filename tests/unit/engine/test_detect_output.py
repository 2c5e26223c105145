"""opmas detect's output for an analyst: CSV, the summary table, --min-level and --timeline."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
import pytest

from opmas.cli import main

RULES = {
    "low.yml": ("Low rule", "low", "a"),
    "high.yml": ("High rule", "high", "b"),
}


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, (title, level, value) in RULES.items():
        (rules / name).write_text(f"title: {title}\nid: {name[:-4]}-rule\nlevel: {level}\nlogsource: {{}}\n"
                                  f"detection:\n  s: {{kind: {value}}}\n  condition: s\n")
    # event times out of order; hosts as ECS host.name
    events = [{"@timestamp": f"2026-01-01T00:00:{second:02d}Z", "kind": kind, "host": {"name": host}}
              for second, kind, host in [(30, "a", "ws1"), (10, "b", "ws2"), (20, "b", "ws2"), (5, "a", "ws1"),
                                         (40, "c", "ws3")]]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return rules, path


def _run(case: tuple[Path, Path], tmp_path: Path, *options: str) -> str:
    out = tmp_path / "out"
    assert main(["detect", str(case[0]), "--events", str(case[1]), "--output", str(out), *options]) == 0
    return out.read_text()


def test_csv_has_a_header_and_a_row_per_finding(case, tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(_run(case, tmp_path, "--format", "csv"))))
    assert [(r["rule_title"], r["severity"], r["host"], r["timestamp"]) for r in rows] == [
        ("Low rule", "low", "ws1", "2026-01-01T00:00:30.000000Z"), ("High rule", "high", "ws2", "2026-01-01T00:00:10.000000Z"),
        ("High rule", "high", "ws2", "2026-01-01T00:00:20.000000Z"), ("Low rule", "low", "ws1", "2026-01-01T00:00:05.000000Z")]
    assert all(len(r["id"]) == 36 and len(r["event_ids"]) == 32 for r in rows)


def test_min_level_drops_lower_findings(case, tmp_path: Path) -> None:
    found = [orjson.loads(line) for line in _run(case, tmp_path, "--min-level", "medium").splitlines()]
    assert {f["severity"] for f in found} == {"high"} and len(found) == 2


@pytest.mark.parametrize("run_size", [50_000, 1])  # in memory, and spilled to a file per finding
def test_timeline_sorts_by_event_time(case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_size: int) -> None:
    monkeypatch.setattr("opmas.cli.findings_output.RUN_SIZE", run_size)
    found = [orjson.loads(line) for line in _run(case, tmp_path, "--timeline").splitlines()]
    assert [f["timestamp"][17:19] for f in found] == ["05", "10", "20", "30"]
    rows = list(csv.DictReader(io.StringIO(_run(case, tmp_path, "--timeline", "--format", "csv"))))
    assert [r["timestamp"][17:19] for r in rows] == ["05", "10", "20", "30"]


def test_table_summarises_levels_rules_hosts_time_and_slowest_rules(case, tmp_path: Path) -> None:
    table = _run(case, tmp_path, "--format", "table", "--min-level", "low")
    lines = table.splitlines()
    assert any("high" in line and line.rstrip(" │").endswith(" 2") for line in lines)
    assert any("total" in line and line.rstrip(" │").endswith(" 4") for line in lines)
    assert "first event: 2026-01-01T00:00:05.000000Z   last event: 2026-01-01T00:00:30.000000Z" in table
    assert "High rule" in table and "ws2" in table and "ws3" not in table  # no finding on ws3
    slowest = table[table.index("Slowest"):]
    assert "Low rule" in slowest and "High rule" in slowest
