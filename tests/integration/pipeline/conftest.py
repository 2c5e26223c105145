"""Helpers for the pipeline tests: a config on the fixture servers, an in-process engine, waiting."""
from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest

from opmas.connectors.clickhouse.archive import Archive, connect
from opmas.config import Config, NatsConfig, PipelineConfig, PostgresConfig
from opmas.paths import RULES_DIR
from opmas.runtime.pipeline import Pipeline

@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped rules, correlations included (tests may edit it)."""
    target = tmp_path / "rules"
    shutil.copytree(RULES_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture
def config(request: pytest.FixtureRequest, tmp_path: Path, nats_server, chdb_dir, rules_dir) -> Config:
    """A config on the test's servers: its database on the session's PostgreSQL (``postgres``), or
    its own PostgreSQL when the test takes ``own_postgres`` (a test that stops the server)."""
    postgres = request.getfixturevalue("own_postgres" if "own_postgres" in request.fixturenames else "postgres")
    return Config(data_dir=tmp_path / "data", nats=NatsConfig(url=nats_server.url),
                  postgres=PostgresConfig(url=postgres.url),
                  pipeline=PipelineConfig(rules=(rules_dir,), partitions=3, batch_size=200, checkpoint_interval=0.2,
                                          retry_max_delay=0.5, watch_rules=False,
                                          # no partition turns idle mid-test: findings as expected_findings
                                          partition_idle=3600.0))


@pytest.fixture
def archive(chdb_dir: Path):
    archive = Archive(connect(None, chdb_dir))
    yield archive
    archive.close()


@asynccontextmanager
async def running(config: Config, archive: Archive) -> AsyncIterator[Pipeline]:
    """An engine running in this process until the block ends."""
    pipeline = Pipeline.over_nats(config, config.nats.url, config.postgres.url, archive)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    ready = asyncio.create_task(pipeline.ready.wait())
    await asyncio.wait([task, ready], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises the start-up error
    assert pipeline.ready.is_set(), "engine did not start"
    try:
        yield pipeline
    finally:
        stop.set()
        pipeline.abort.set()
        await asyncio.wait_for(task, 60)


# How many event ids cited by findings have no row in the events table (should be none).
UNSTORED_CITED_EVENTS = ("SELECT count(*) FROM findings f, unnest(f.event_ids) x"
                         " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = x)")


async def finding_ids_in_postgres(url: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT id::text FROM findings")
        return [row[0] for row in await cur.fetchall()]
