"""The relay: source batch -> transform -> every sink -> commit, one batch at a time.

The bridge (JetStream -> Kafka, dead letters to NATS) and the archiver (Kafka -> ClickHouse) are
relays: a ``Source`` (connectors/source.py), a pure ``transform`` of a batch of messages, and
``routes``, each a sink and what of the transformed batch it takes. For each batch the relay:

0. (once) starts the source after its last commit and tells ``started`` where;
1. transforms it (in a thread with ``offload``: CPU-heavy encoding off the event loop);
2. writes to each sink in turn, in the order of ``routes``, what the batch holds for it (nothing:
   skipped), retrying on the errors the sink names with bounded backoff (``retry``), so a sink
   that is away stalls the relay and the source holds the backlog;
3. only then commits the batch to the source (``ack`` of its last message, retried on the
   source's errors);
4. calls ``committed(messages, transformed)`` (metrics, logs of what every sink now holds).

So a crash anywhere before the commit re-reads the batch on restart (at-least-once); the sinks
must take a repeat (Kafka consumers drop the bridge's re-sent records by their stream position,
the archive collapses rows on the event id, JetStream deduplicates dead letters by their id).
A retry passes the sink the same object again: a sink that can store part of a write records its
progress in it and resumes after what was stored (the Kafka events sink does, per partition).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from opmas.connectors.source import Source, SourceMessage
from opmas.runtime.retry import retry

log = logging.getLogger("opmas.relay")

Out = TypeVar("Out")


class RelaySink(Protocol):
    """Where a relay writes: ``write`` returns once the items are held (the same items again: harmless)."""

    name: str  # in logs and retries
    errors: tuple[type[BaseException], ...]  # what a retry may mend

    async def write(self, items: Any) -> None: ...


class Relay(Generic[Out]):
    """Moves batches from ``source`` through ``transform`` to the sinks of ``routes`` until ``stop``
    is set; ``abort`` gives up retries (a second signal)."""

    def __init__(self, source: Source, transform: Callable[[list[SourceMessage]], Out],
                 routes: Sequence[tuple[RelaySink, Callable[[Out], Any]]], batch_size: int, batch_wait: float,
                 retry_max_delay: float = 10.0, abort: asyncio.Event | None = None,
                 committed: Callable[[list[SourceMessage], Out], None] | None = None,
                 started: Callable[[int], None] | None = None, offload: bool = False):
        self.source = source
        self.transform = transform
        self.routes = list(routes)
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.retry_max_delay = retry_max_delay
        self.abort = abort if abort is not None else asyncio.Event()
        self.committed = committed
        self.started = started
        self.offload = offload

    async def run(self, stop: asyncio.Event) -> None:
        """Start the source after its last commit (``started`` is told that position), then relay
        batches until ``stop``; the source is stopped on the way out."""
        source = self.source
        try:
            after = await retry(lambda: source.start(None), source.name, source.errors, self.retry_max_delay,
                                self.abort)
            if self.started is not None:
                self.started(after)
            while not stop.is_set():
                try:
                    messages = await retry(lambda: source.fetch(self.batch_size, self.batch_wait),
                                           f"{source.name}-fetch", source.errors, self.retry_max_delay, stop)
                except source.errors:
                    if stop.is_set():  # stopping while the source is away: nothing fetched, nothing lost
                        break
                    raise
                if messages:
                    await self.relay(messages)
        finally:
            await source.stop()

    async def relay(self, messages: list[SourceMessage]) -> Out:
        """One batch: transformed, into every sink, then committed."""
        out = await asyncio.to_thread(self.transform, messages) if self.offload else self.transform(messages)
        for sink, take in self.routes:
            items = take(out)
            if items:
                await retry(lambda sink=sink, items=items: sink.write(items), sink.name, sink.errors, self.retry_max_delay, self.abort)
        last = messages[-1]
        await retry(lambda: self.source.ack(last), f"{self.source.name}-ack", self.source.errors,
                    self.retry_max_delay, self.abort)
        if self.committed is not None:
            self.committed(messages, out)
        return out
