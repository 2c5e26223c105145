"""The streams the engine creates, and brings existing ones to."""
from __future__ import annotations

import nats
from nats.js.api import DiscardPolicy, StreamConfig

from opmas.connectors.nats.subjects import EVENTS_PREFIX, EVENTS_STREAM, ensure_streams, subject_token


async def test_a_full_events_stream_refuses_new_events_instead_of_dropping_old_ones(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=EVENTS_STREAM, subjects=[EVENTS_PREFIX + ">"],
                                     discard=DiscardPolicy.OLD))  # as an older release made it
    await ensure_streams(js)
    assert (await js.stream_info(EVENTS_STREAM)).config.discard == DiscardPolicy.NEW
    await nc.close()


def test_subject_token_replaces_what_subjects_cannot_hold() -> None:
    assert subject_token(" web.01 a*b>c\td\r\n") == "web_01_a_b_c_d"
    assert subject_token("  ") == "unknown" and subject_token("host-7_x") == "host-7_x"
