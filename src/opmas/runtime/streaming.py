"""How both streaming runtimes hand events to a ``Processor`` (offline ``opmas detect`` does not):
with the wall clock, which bounds how far ahead correlation event time may move. An event without a
time of its own stays untimed, as offline, so a replayed log gives the same findings either way."""
from __future__ import annotations

import time
from collections.abc import Sequence

from opmas.core.event import Event
from opmas.core.finding import Finding
from opmas.core.processor import Processor


def process_streamed(processor: Processor, events: Sequence[Event]) -> list[Finding]:
    """``processor.process(events, now)`` with the wall clock as ``now``."""
    return processor.process(events, now=time.time())
