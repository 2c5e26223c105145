"""OPMAS installed as a user installs it: from its wheel, not editable, into a venv that is not
activated (the venv's ``bin`` is not on PATH). The shipped rules, schemas, mappings and SQL come
from the wheel; nats-server and PostgreSQL are found through their packages, never PATH."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

from opmas.runtime.embedded import free_port
from tests.paths import PROJECT_ROOT, SAMPLES_DIR

# PATH without the venv, pyenv shims or any other place an `opmas` or a server binary could be found
BARE_PATH = "/usr/bin:/bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the wheel built from this checkout (its dependencies: this environment's)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # built from a copy: a build leaves build/ and egg-info beside its sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, source / name)
    shutil.copytree(PROJECT_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(source)],
                   check=True, timeout=300, capture_output=True)
    [wheel] = (base / "dist").glob("opmas-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("opmas/rules/linux/auth/", "opmas/schemas/event.schema.json", "opmas/core/mappings/windows.yml",
                    "opmas/core/taxonomy.yml", "opmas/connectors/postgres/sql/001_core.sql"):
        assert any(n.startswith(shipped) for n in names), f"the wheel lacks {shipped}"
    assert {n.split("/")[0] for n in names if "/" in n} <= {"opmas", wheel.name.split("-")[0] + "-" +
                                                              wheel.name.split("-")[1] + ".dist-info"}
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # The dependencies: this environment's site-packages, after the venv's own (a path file's lines
    # are appended to sys.path; the path files there, such as an editable opmas's, are not run).
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    here = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (Path(site) / "opmas-test-dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    return venv


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPMAS_", "NATS_", "VIRTUAL_ENV", "PYTHON"))}
    return {**env, "PATH": BARE_PATH, "HOME": str(tmp_path), "OPMAS_CACHE_DIR": "off", **extra}


def test_the_wheel_runs_detect_and_validate_on_its_shipped_rules(installed: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import opmas; print(opmas.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True)
    assert where.stdout.strip().startswith(str(installed)), where.stdout  # the wheel's, not the checkout's
    validated = subprocess.run([str(installed / "bin" / "opmas"), "rules", "validate"], capture_output=True,
                               text=True, env=env, cwd=tmp_path, timeout=120)
    assert validated.returncode == 0, validated.stderr
    assert "101 rules loaded, 0 errors" in validated.stdout + validated.stderr
    detected = subprocess.run([str(installed / "bin" / "opmas"), "detect", "--events",
                               str(SAMPLES_DIR / "security_events.jsonl")],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert detected.returncode == 0, detected.stderr
    assert len(detected.stdout.splitlines()) == 160, detected.stderr


def test_opmas_up_from_a_venv_that_is_not_activated(installed: Path, tmp_path: Path) -> None:
    """The embedded servers start though neither the venv nor any server binary is on PATH, and a
    data dir given by the environment is used (the installed package has no checkout beside it)."""
    data = tmp_path / "data"
    env = _env(tmp_path, OPMAS_DATA_DIR=str(data), OPMAS_NATS_PORT=str(free_port()),
               OPMAS_API_PORT=str(free_port()), OPMAS_WORKERS="0")
    up = subprocess.Popen([str(installed / "bin" / "opmas"), "up"], env=env, cwd=tmp_path, stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and up.poll() is None:
            line = up.stderr.readline()
            lines.append(line)
            if "OPMAS is up" in line:
                break
        assert any("OPMAS is up" in line for line in lines), "".join(lines)
        assert (data / "nats.url").is_file() and (data / "postgres").is_dir()
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    assert up.returncode == 0, "".join(lines) + up.stderr.read()
