"""`opmas replay`: every event published, order kept per agent, unreadable records forwarded."""
from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess
import sys
import time

import nats
import nats.js.errors
import orjson
import pytest
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StreamConfig

from opmas.connectors.inputs import check
from opmas.connectors.nats.replay import replay
from opmas.connectors.nats.subjects import EVENTS_PREFIX, EVENTS_STREAM, ensure_streams
from tests.paths import EVTX_SAMPLE

EVTX = EVTX_SAMPLE


async def stream_events(url: str) -> list[tuple[str, bytes]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
    out = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(EVENTS_STREAM, seq)
        out.extend((msg.subject, line) for line in msg.data.split(b"\n"))
    await nc.close()
    return out


@pytest.mark.parametrize("batch", [1, 4])
async def test_order_per_agent_is_kept(tmp_path, nats_server, batch):
    records = [{"id": f"e{i}", "agent_id": f"agent-{i % 3}", "type": "t", "data": {"n": i}} for i in range(60)]
    raw = [{"id": f"r{i}", "host": {"name": "web-7"}, "message": f"line {i}"} for i in range(10)]
    path = tmp_path / "log.jsonl"
    lines = [orjson.dumps(r) for r in records[:30]] + [b"{oops"] + [orjson.dumps(r) for r in records[30:] + raw]
    path.write_bytes(b"\n".join(lines) + b"\n")
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    await nc.close()

    result = await replay(check([str(path)]), nats_server.url, batch=batch)
    assert (result.events, result.bad_records) == (70, 1)
    published = await stream_events(nats_server.url)
    assert (b"{oops" in [line for _, line in published])
    by_subject: dict[str, list[str]] = {}
    for subject, line in published:
        if line != b"{oops":
            by_subject.setdefault(subject, []).append(orjson.loads(line)["id"])
    for agent in range(3):
        assert by_subject[f"opmas.events.agent-{agent}"] == [f"e{i}" for i in range(agent, 60, 3)]
    assert by_subject["opmas.events.web-7"] == [f"r{i}" for i in range(10)]


async def test_a_folder_of_binary_evtx_and_json_is_replayed(tmp_path, nats_server):
    folder = tmp_path / "case"
    (folder / "dc1").mkdir(parents=True)
    shutil.copy(EVTX, folder / "dc1" / "Security.evtx")
    (folder / "web.jsonl.gz").write_bytes(gzip.compress(b'{"id": "w1", "host": {"name": "web-7"}}\n'))
    broken = bytearray(EVTX.read_bytes())
    broken[5000:5200] = b"\xff" * 200
    (folder / "dc1" / "broken.evtx").write_bytes(bytes(broken))
    nc = await nats.connect(nats_server.url)
    await ensure_streams(nc.jetstream())
    await nc.close()

    result = await replay(check([str(folder)]), nats_server.url)
    assert (result.events, result.unreadable, result.bad_records) == (8, 1, 0)
    published = await stream_events(nats_server.url)
    evtx = [orjson.loads(line) for subject, line in published if subject == "opmas.events.temporal"]
    assert [e["Event"]["System"]["EventID"] for e in evtx] == [5152, 4611, 4776, 4625, 5152, 5157, 4673]
    assert [subject for subject, _ in published if subject != "opmas.events.temporal"] == ["opmas.events.web-7"]


async def test_messages_stay_within_max_payload_and_a_too_large_event_is_skipped(tmp_path, nats_server, caplog):
    nc = await nats.connect(nats_server.url)
    limit = nc.max_payload
    await nc.close()
    records = [{"id": f"e{i}", "message": "x" * (limit // 8)} for i in range(20)]
    records.insert(5, {"id": "huge", "message": "x" * limit})
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records))

    result = await replay(check([str(path)]), nats_server.url, agent="a1", batch=100)
    assert (result.events, result.oversized) == (20, 1)
    assert result.messages > 2  # 20 events of an eighth of the limit need at least three messages
    assert [orjson.loads(line)["id"] for _, line in await stream_events(nats_server.url)] == \
        [r["id"] for r in records if r["id"] != "huge"]
    assert "record 6 of the input" in caplog.text


@pytest.mark.timeout(60)
async def test_a_message_filled_to_the_limit_still_fits_with_its_header(tmp_path, nats_server):
    nc = await nats.connect(nats_server.url)
    limit = nc.max_payload
    await nc.close()
    size = (limit - 3) // 4  # four such lines and three separators fill max_payload to the byte
    records = [{"id": f"e{i}", "message": ""} for i in range(8)]
    for record in records:
        record["message"] = "x" * (size - len(orjson.dumps(record)))
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    result = await replay(check([str(path)]), nats_server.url, agent="a1", batch=100)
    assert (result.events, result.oversized) == (8, 0)
    assert [orjson.loads(line)["id"] for _, line in await stream_events(nats_server.url)] == [r["id"] for r in records]


async def test_messages_stay_within_the_engines_message_limit(tmp_path, nats_server):
    records = [{"id": f"e{i}", "message": "x" * 1000} for i in range(20)]
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records))
    result = await replay(check([str(path)]), nats_server.url, agent="a1", batch=100, max_bytes=4096)
    assert (result.events, result.oversized) == (20, 0)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    sizes = [len((await js.get_msg(EVENTS_STREAM, seq)).data) for seq in range(1, result.messages + 1)]
    await nc.close()
    assert len(sizes) >= 5 and max(sizes) <= 4096  # 20 kB in messages of at most 4 kB (the server takes 1 MiB)


def test_cli_reports_a_summary_and_refuses_bad_arguments(tmp_path, nats_server):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"id": i, "message": "x"}) for i in range(25)))
    run = subprocess.run([sys.executable, "-m", "opmas.cli", "replay", str(path), "--nats", nats_server.url,
                          "--rate", "1000", "--agent", "lab.host 1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "replayed 25 events in 1 messages" in run.stderr
    bad = subprocess.run([sys.executable, "-m", "opmas.cli", "replay", str(path), "--rate", "fast"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--rate must be a positive number" in bad.stderr


async def _full_work_queue(js, max_msgs: int) -> None:
    """The events stream as a small work queue that refuses new messages when full."""
    await js.add_stream(StreamConfig(name=EVENTS_STREAM, subjects=[EVENTS_PREFIX + ">"], max_msgs=max_msgs,
                                     retention=RetentionPolicy.WORK_QUEUE, discard=DiscardPolicy.NEW))


async def test_a_full_stream_is_waited_for_while_a_consumer_drains_it(tmp_path, nats_server):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps({"id": f"e{i}", "message": "x"}) for i in range(40)))
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await _full_work_queue(js, 5)
    # A fetch that times out on a loaded machine leaves what the server sent it unacknowledged, filling
    # the work queue until ack_wait: keep that short so such messages come back at once.
    sub = await js.pull_subscribe(EVENTS_PREFIX + ">", durable="drain", stream=EVENTS_STREAM,
                                  config=ConsumerConfig(ack_wait=5))
    drained: list[str] = []

    async def drain() -> None:
        while True:
            await asyncio.sleep(0.2)  # slower than replay: the stream fills up
            try:
                for msg in await sub.fetch(3, timeout=0.5):
                    drained.append(orjson.loads(msg.data)["id"])
                    await msg.ack_sync()
            except nats.errors.TimeoutError:
                pass

    consumer = asyncio.create_task(drain())
    try:
        result = await asyncio.wait_for(replay(check([str(path)]), nats_server.url, agent="a1", batch=1, patience=30), 90)
        assert result.messages == 40
        deadline = time.monotonic() + 20
        while len(set(drained)) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        consumer.cancel()
        await nc.close()
    # nothing lost; a message whose fetch timed out comes back after ack_wait (at-least-once)
    assert set(drained) == {f"e{i}" for i in range(40)}


def test_cli_exits_non_zero_when_the_stream_stays_full(tmp_path, nats_server):
    async def fill() -> None:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await _full_work_queue(js, 2)
        for i in range(2):
            await js.publish("opmas.events.a1", b"{}")
        with pytest.raises(nats.js.errors.APIError, match="maximum messages exceeded"):
            await js.publish("opmas.events.a1", b"{}")
        await nc.close()

    asyncio.run(fill())
    path = tmp_path / "log.jsonl"
    path.write_bytes(orjson.dumps({"id": "e1", "message": "x"}))
    run = subprocess.run([sys.executable, "-m", "opmas.cli", "replay", str(path), "--nats", nats_server.url,
                          "--patience", "1.5"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "JetStream refused a message on opmas.events" in run.stderr and "maximum messages exceeded" in run.stderr
