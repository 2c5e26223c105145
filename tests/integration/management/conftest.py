"""One real stack (a database on the session's PostgreSQL, NATS with JetStream, the API) shared by a test module."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from opmas.runtime.embedded import start_nats
from tests.integration.apiserver import ApiServer, api_settings


@pytest.fixture(scope="module")
def stack(shared_postgres) -> Iterator[ApiServer]:
    base = Path(tempfile.mkdtemp(prefix="opmas-stack-"))
    nats_server = start_nats(base / "nats")
    try:
        with shared_postgres.database() as database:
            server = ApiServer(api_settings(database.url, nats_server.url, base / "data")).start()
            server.nats_url = nats_server.url
            server.db_url = database.url
            try:
                yield server
            finally:
                server.stop()
    finally:
        nats_server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(stack: ApiServer):
    """An httpx client with an admin JWT."""
    with stack.client(stack.token()) as client:
        yield client
