"""Issue 11, item 2: a stuck engine can be stopped. Before: with an evaluator that never answered,
`opmas up` did not exit after SIGTERM (two SIGTERMs stopped the API, the engine ran on), and a
writer that failed left the reader waiting forever for room in the queue between them."""
from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import nats
import orjson
import psutil
import psycopg
import pytest

from opmas.connectors.nats.subjects import ensure_streams
from opmas.connectors.postgres.sink import PostgresSink
from opmas.config import Config
from opmas.runtime.embedded import free_port
from opmas.runtime.pipeline import Pipeline
from tests.integration.pipeline.test_kill9 import up_env, wait_gone
from tests.integration.pipeline.test_up import start_up, wait_for_line
from tests.natsauth import service_options

# Every checkpoint write takes a second, then fails for good (no retry can help).
FAILING_CHECKPOINTS = """
CREATE FUNCTION refuse_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(1); RAISE EXCEPTION 'checkpoints refused'; END $$;
CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON engine_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_checkpoint();
"""


async def _publish(url: str, count: int, options: dict | None = None) -> None:
    nc = await nats.connect(url, **(options or {}))
    try:
        js = nc.jetstream()
        await ensure_streams(js, Config().nats.stream_max_age, Config().nats.stream_max_bytes)
        for i in range(count):
            await js.publish(f"opmas.events.agent-{i % 3}", orjson.dumps({"id": f"stuck-{i}", "n": i}))
    finally:
        await nc.close()


@pytest.mark.timeout(240)
def test_sigterm_stops_opmas_up_with_a_stuck_evaluator(tmp_path: Path) -> None:
    data, nats_port = tmp_path / "data", free_port()
    env = up_env(data, nats_port, free_port()) | {"OPMAS_SHUTDOWN_TIMEOUT": "2"}
    log = tmp_path / "up.log"
    up = start_up(env, log)
    worker = None
    try:
        wait_for_line(log, r"OPMAS is up", up)
        [worker] = [p for p in psutil.Process(up.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        worker.send_signal(signal.SIGSTOP)  # stuck: it never answers again
        asyncio.run(_publish(f"nats://127.0.0.1:{nats_port}", 3, service_options(tmp_path / "data")))
        time.sleep(1)  # the engine is waiting for the evaluator
        asked = time.monotonic()
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 1  # cut off at the deadline (was: never)
        print(f"opmas up exited {time.monotonic() - asked:.1f}s after SIGTERM")
        assert "cutting the engine off" in log.read_text()
        assert "opmas stopped" in log.read_text()
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
        wait_gone(data, 30)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        if worker is not None and worker.is_running():
            worker.kill()


async def test_a_failing_writer_ends_the_engine_instead_of_blocking_the_reader(config: Config, archive) -> None:
    await PostgresSink(config.postgres.url).migrate()
    with psycopg.connect(config.postgres.url, autocommit=True) as conn:
        conn.execute(FAILING_CHECKPOINTS)
    await _publish(config.nats.url, 20)
    config = config.with_overrides(pipeline={"workers": 0, "batch_size": 1, "checkpoint_interval": 0.0})
    pipeline = Pipeline.over_nats(config, config.nats.url, config.postgres.url, archive)
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop))
    try:
        with pytest.raises(psycopg.errors.RaiseException, match="checkpoints refused"):
            await asyncio.wait_for(run, 30)  # was: the reader waited forever for room in the queue
    finally:
        stop.set()
        pipeline.abort.set()
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
