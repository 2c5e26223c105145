"""One real stack (PostgreSQL, NATS with JetStream, the API) shared by a test module."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from opmas.runtime.embedded import Postgres, start_nats, start_postgres
from tests.integration.apiserver import ApiServer, api_settings


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """As tests/conftest.py's, but not under pytest's basetemp: a pytest run starting meanwhile
    resets that folder to 0700, which the embedded PostgreSQL (run as another user) cannot traverse."""
    base = Path(tempfile.mkdtemp(prefix="opmas-pg-"))
    server = start_postgres(base / "pg")
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[ApiServer]:
    base = Path(tempfile.mkdtemp(prefix="opmas-stack-"))  # not under basetemp: see ``postgres``
    nats_server = start_nats(base / "nats")
    postgres = start_postgres(base / "pg")
    server = ApiServer(api_settings(postgres.url, nats_server.url, base / "data")).start()
    server.nats_url = nats_server.url
    server.db_url = postgres.url
    try:
        yield server
    finally:
        server.stop()
        nats_server.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(stack: ApiServer):
    """An httpx client with an admin JWT."""
    with stack.client(stack.token()) as client:
        yield client
