"""opmas rules import: a SigmaHQ-layout tree or release zip copied into a rules directory, filtered by
status and level, only what loads; every file left out reported with why; hostile zips refused."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from opmas.cli import main
from opmas.cli.rule_import import MAX_FILE
from tests.paths import SIGMA_DIR

SIGMA = SIGMA_DIR


def rule(title: str, status: str, level: str, detection: str = "s: {CommandLine|contains: x}") -> str:
    return (f"title: {title}\nid: {title.lower().replace(' ', '-')}\nstatus: {status}\nlevel: {level}\n"
            f"logsource: {{category: process_creation, product: windows}}\ndetection:\n  {detection}\n  condition: s\n")


PACK = {
    "rules/windows/stable_high.yml": rule("Stable high", "stable", "high"),
    "rules/windows/test_medium.yml": rule("Test medium", "test", "medium"),
    "rules/windows/experimental_low.yml": rule("Experimental low", "experimental", "low"),
    "deprecated/windows/old.yml": rule("Old one", "deprecated", "high"),
    "rules/windows/broken.yml": rule("Broken", "stable", "high", "s: {CommandLine|nope: x}"),
    "rules/windows/bad_yaml.yml": "title: [unclosed\n",
    "rules/.hidden/skip.yml": rule("Hidden", "stable", "high"),
    "rules/README.md": "not a rule file",
}


def _tree(root: Path) -> Path:
    for rel, text in PACK.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, text in PACK.items():
            archive.writestr(rel, text)
        for rel, data in (extra or {}).items():
            archive.writestr(rel, data)
    return path


@pytest.mark.parametrize("kind", ["tree", "zip"])
def test_import_filters_loads_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    pack = _tree(tmp_path / "pack") if kind == "tree" else _zip(tmp_path / "pack.zip")
    into = tmp_path / "rules"
    assert main(["rules", "import", str(pack), "--into", str(into), "--status", "stable,test",
                 "--min-level", "medium"]) == 0
    out = capsys.readouterr().out
    written = sorted(p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file())
    assert written == ["rules/windows/stable_high.yml", "rules/windows/test_medium.yml"]
    assert (into / "rules/windows/stable_high.yml").read_text() == PACK["rules/windows/stable_high.yml"]
    assert "deprecated/windows/old.yml: skipped (status): status deprecated" in out
    assert "rules/windows/experimental_low.yml: skipped (status): status experimental" in out
    assert "rules/windows/broken.yml: skipped (error): line 7: detection 's': Unknown modifier 'nope'" in out
    assert "rules/windows/bad_yaml.yml: skipped (error): line 2: bad YAML" in out
    assert "6 rule files: 2 imported" in out and "skipped: 2 error, 2 status" in out
    assert main(["rules", "import", str(pack), "--into", str(into), "--min-level", "high"]) == 0  # again: replaced
    assert "rules/windows/test_medium.yml: skipped (level): level medium, below high" in capsys.readouterr().out


def test_a_hostile_zip_is_refused_member_by_member(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pack = _zip(tmp_path / "evil.zip", {"../../escape.yml": PACK["rules/windows/stable_high.yml"].encode(),
                                        "/abs/rooted.yml": b"title: x\n",
                                        "rules/big.yml": b"# " + b"x" * MAX_FILE + b"\n"})  # compresses to ~1 KiB
    into = tmp_path / "out" / "rules"
    assert main(["rules", "import", str(pack), "--into", str(into)]) == 0
    out = capsys.readouterr().out
    assert "../../escape.yml: skipped (refused): unsafe path in the zip" in out
    assert "/abs/rooted.yml: skipped (refused): unsafe path in the zip" in out
    assert "rules/big.yml: skipped (refused)" in out and "over the 1,048,576-byte limit" in out
    assert not (tmp_path / "escape.yml").exists() and not (tmp_path / "out" / "escape.yml").exists()


def test_nothing_imported_or_not_a_pack_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["rules", "import", str(tmp_path / "empty"), "--into", str(tmp_path / "r")]) == 1
    (tmp_path / "file.txt").write_text("hello")
    assert main(["rules", "import", str(tmp_path / "file.txt"), "--into", str(tmp_path / "r")]) == 2
    assert main(["rules", "import", str(tmp_path / "empty"), "--status", "stabel"]) == 2
    assert "unknown status stabel" in capsys.readouterr().err


@pytest.mark.skipif(not (SIGMA / "rules" / "windows" / "process_creation").is_dir(), reason="no SigmaHQ snapshot")
def test_real_sigmahq_rules_import_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = SIGMA / "rules" / "windows" / "process_creation"
    pack = tmp_path / "pack" / "rules" / "windows" / "process_creation"
    pack.mkdir(parents=True)
    for path in sorted(source.glob("proc_creation_win_whoami*.yml")):
        (pack / path.name).write_bytes(path.read_bytes())
    into = tmp_path / "rules"
    assert main(["rules", "import", str(tmp_path / "pack"), "--into", str(into)]) == 0
    imported = list(into.rglob("*.yml"))
    assert len(imported) == len(list(pack.glob("*.yml"))) > 0
    assert main(["rules", "validate", str(into)]) == 0
