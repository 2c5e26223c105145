"""Shared fixtures: real servers on free ports in temp dirs, stopped after use.

PostgreSQL: one server for the whole session (``shared_postgres``, started when a test first
needs it); ``postgres`` gives each test a new empty database on it, dropped after the test. A test
that stops, kills or restarts PostgreSQL takes ``own_postgres``, a server of its own.

NATS: a server per test (``nats_server``). It starts in about 0.06 s, and JetStream's stream
names are fixed (OPMAS_EVENTS, ...): tests sharing one server would see each other's streams.
"""
from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from opmas.runtime.embedded import NatsServer, Postgres, start_nats, start_postgres


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream for one test."""
    server = start_nats(tmp_path / "nats")
    yield server
    server.stop()


@contextmanager
def _postgres_server() -> Iterator[Postgres]:
    """An embedded PostgreSQL, stopped and its folder removed after the block. The folder is not
    under pytest's basetemp: a pytest run starting meanwhile resets that folder to 0700, which the
    embedded PostgreSQL (run as another user when the tests run as root) cannot traverse."""
    base = Path(tempfile.mkdtemp(prefix="opmas-pg-"))
    try:
        server = start_postgres(base / "pg")
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class Database:
    """A database of one test (or one module) on the session's PostgreSQL. It has the ``url`` of a
    :class:`Postgres` and nothing to stop: a test that stops the server takes ``own_postgres``."""

    server: Postgres
    name: str

    @property
    def url(self) -> str:
        return urlsplit(self.server.url)._replace(path=f"/{self.name}").geturl()


class SharedPostgres:
    """The session's PostgreSQL, handing out new empty databases."""

    def __init__(self, server: Postgres):
        self.server = server
        self._numbers = itertools.count(1)

    def _execute(self, statement: sql.Composed) -> None:
        if not self.server.alive:
            log = (self.server.data_dir / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the session's PostgreSQL is not running (a test stopped it? such a "
                               f"test takes own_postgres):\n{log}")
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(statement)

    @contextmanager
    def database(self) -> Iterator[Database]:
        """A new empty database (template1: no migrations), dropped after the block together with
        the connections still open to it."""
        name = f"test_{next(self._numbers)}"
        self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield Database(self.server, name)
        finally:
            self._execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def shared_postgres() -> Iterator[SharedPostgres]:
    """One embedded PostgreSQL for the session; tests get their own databases on it (``postgres``)."""
    with _postgres_server() as server:
        yield SharedPostgres(server)


@pytest.fixture
def postgres(shared_postgres: SharedPostgres) -> Iterator[Database]:
    """A new empty database (no migrations) on the session's PostgreSQL, for one test."""
    with shared_postgres.database() as database:
        yield database


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """An embedded PostgreSQL of this test's own (empty database, no migrations), for a test that
    stops, kills or restarts the server."""
    with _postgres_server() as server:
        yield server


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
