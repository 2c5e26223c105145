"""One real stack (PostgreSQL, NATS with JetStream, the API) shared by a test module."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from opmas.embedded import start_nats, start_postgres
from tests.apiserver import ApiServer, api_settings


@pytest.fixture(scope="module")
def stack() -> Iterator[ApiServer]:
    # Not under pytest's basetemp: another pytest run starting meanwhile resets its parent to 0700,
    # which the embedded PostgreSQL (run as another user) then cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="opmas-stack-"))
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
