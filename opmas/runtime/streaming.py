"""How both streaming runtimes hand events to a ``Processor`` (offline ``opmas detect`` does not):
the wall clock bounds how far ahead event time may move, and an event without a time of its own
takes the time its message entered the stream (stored with the message, so a replay after a
restart gives it the same time)."""
from __future__ import annotations

import time
from collections.abc import Sequence

from engine.event import Event
from engine.finding import Finding
from engine.processor import Processor


def process_streamed(processor: Processor, events: Sequence[Event], stream_times: Sequence[float]) -> list[Finding]:
    """``processor.process(events, now)``; ``stream_times[i]`` (epoch seconds) is the time of
    ``events[i]`` where neither the envelope nor the mapped event data has one."""
    for event, stream_time in zip(events, stream_times, strict=True):
        if event.timestamp is None:
            event.timestamp = stream_time
    return processor.process(events, now=time.time())
