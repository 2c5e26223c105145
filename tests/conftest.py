"""Shared fixtures: real servers on free ports in temp dirs, stopped after use."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opmas.runtime.embedded import NatsServer, Postgres, start_nats, start_postgres


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream for one test."""
    server = start_nats(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Postgres]:
    """A fresh embedded PostgreSQL for one test (empty database, no migrations)."""
    server = start_postgres(tmp_path / "pg")
    yield server
    server.stop()


@pytest.fixture
def chdb_dir(tmp_path: Path) -> Path:
    """A folder for an embedded ClickHouse (chdb) archive."""
    path = tmp_path / "chdb"
    path.mkdir()
    return path


@pytest.fixture(autouse=True, scope="session")
def rule_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The rule cache (engine/rule_cache.py) of the whole suite, in a temp dir (never the home folder)."""
    path = tmp_path_factory.mktemp("rule-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPMAS_CACHE_DIR", str(path))
        yield path
