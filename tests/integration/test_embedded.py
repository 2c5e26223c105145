"""The embedded servers start from pip-installed packages and answer."""
import asyncio

import nats

from opmas.runtime.embedded import nats_server_binary, start_nats


async def test_nats_jetstream_answers(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="T", subjects=["t.>"])
    ack = await js.publish("t.x", b"hello")
    assert ack.seq == 1
    await nc.close()


def test_nats_server_is_found_through_its_package_not_path(tmp_path, monkeypatch):
    """`opmas up` from a venv that is not activated: the venv's scripts folder is not on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert nats_server_binary().endswith("/nats-server")
    server = start_nats(tmp_path / "store")
    try:
        async def publish() -> int:
            nc = await nats.connect(server.url)
            await nc.jetstream().add_stream(name="T", subjects=["t.>"])
            ack = await nc.jetstream().publish("t.x", b"hello")
            await nc.close()
            return ack.seq
        assert asyncio.run(publish()) == 1
    finally:
        server.stop()
