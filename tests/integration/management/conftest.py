"""One real stack (a database on the session's PostgreSQL, NATS with JetStream, the API) shared by a test module."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from opmas.connectors.clickhouse.archive import Archive, connect
from opmas.runtime.embedded import start_nats
from tests.integration.apiserver import ApiServer, api_settings


@pytest.fixture(scope="module")
def stack(request, shared_postgres) -> Iterator[ApiServer]:
    """The API; with an (empty) embedded event archive where the test module sets ``WITH_ARCHIVE``."""
    base = Path(tempfile.mkdtemp(prefix="opmas-stack-"))
    nats_server = start_nats(base / "nats")
    archive = None
    if getattr(request.module, "WITH_ARCHIVE", False):
        archive = Archive(connect(None, base / "chdb"))
        archive.ensure_table()
    try:
        with shared_postgres.database() as database:
            server = ApiServer(api_settings(database.url, nats_server.url, base / "data"), archive=archive).start()
            server.nats_url = nats_server.url
            server.db_url = database.url
            try:
                yield server
            finally:
                server.stop()
    finally:
        nats_server.stop()
        if archive is not None:
            archive.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(stack: ApiServer):
    """An httpx client with an admin JWT."""
    with stack.client(stack.token()) as client:
        yield client
