"""One real stack (PostgreSQL, NATS with JetStream, the API) shared by a test module."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from opmas.embedded import start_nats, start_postgres
from tests.apiserver import ApiServer, api_settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[ApiServer]:
    base = tmp_path_factory.mktemp("stack")
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


@pytest.fixture(scope="module")
def admin(stack: ApiServer):
    """An httpx client with an admin JWT."""
    with stack.client(stack.token()) as client:
        yield client
