"""The embedded servers start from pip-installed packages and answer."""
import nats


async def test_nats_jetstream_answers(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(name="T", subjects=["t.>"])
    ack = await js.publish("t.x", b"hello")
    assert ack.seq == 1
    await nc.close()
