"""The events source: one durable JetStream pull consumer, fetched in batches, acked cumulatively.

The consumer uses AckPolicy.ALL: acknowledging a message acknowledges every message
delivered before it, so a batch costs one ack. The engine positions the consumer at
its checkpointed stream sequence on start (the consumer is recreated there), and
skips redeliveries of messages it already processed in this run.
"""
from __future__ import annotations

import asyncio

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from opmas.connectors.nats.client import NATS_ERRORS
from opmas.connectors.nats.subjects import EVENTS_PREFIX, EVENTS_STREAM
from opmas.connectors.source import SourceMessage


class JetStreamSource:
    """Batches of messages from the events stream through the durable consumer ``durable``
    (a ``connectors.source.Source``)."""

    name = "nats"
    errors = NATS_ERRORS

    def __init__(self, js: JetStreamContext, durable: str, stream: str = EVENTS_STREAM,
                 ack_wait: float = 300.0):
        self.js = js
        self.durable = durable
        self.stream = stream
        self.ack_wait = ack_wait
        self.last_seq = 0  # highest stream sequence handed out in this run
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self, after_seq: int | None) -> int:
        """Position the consumer just after ``after_seq`` (the checkpoint), or, without one, after
        the consumer's acknowledged floor (from the start for a new consumer). Returns that seq."""
        if after_seq is None:
            try:
                info = await self.js.consumer_info(self.stream, self.durable)
                after_seq = info.ack_floor.stream_seq if info.ack_floor else 0
            except NotFoundError:
                after_seq = 0
        try:
            await self.js.delete_consumer(self.stream, self.durable)
        except NotFoundError:
            pass
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.ALL, ack_wait=self.ack_wait,
            max_deliver=-1, max_ack_pending=-1, filter_subject=EVENTS_PREFIX + ">",
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after_seq else DeliverPolicy.ALL,
            opt_start_seq=after_seq + 1 if after_seq else None,
        )
        self._sub = await self.js.pull_subscribe(EVENTS_PREFIX + ">", durable=self.durable,
                                                 stream=self.stream, config=config)
        self.last_seq = after_seq
        return after_seq

    async def fetch(self, max_messages: int, wait: float) -> list[SourceMessage]:
        """Up to ``max_messages`` new messages, waiting at most ``wait`` s for the first."""
        assert self._sub is not None, "start() first"
        try:
            msgs = await self._sub.fetch(max_messages, timeout=wait)
        except (asyncio.TimeoutError, TimeoutError):
            return []
        out: list[SourceMessage] = []
        for msg in msgs:
            meta = msg.metadata
            seq = meta.sequence.stream
            if seq <= self.last_seq:
                continue  # a redelivery of a message this run already processed
            self.last_seq = seq
            out.append(SourceMessage(msg.subject, msg.data, seq, meta.timestamp.timestamp(),
                                     msg.headers, msg))
        if not out and msgs:
            await msgs[-1].ack()  # only redeliveries: acknowledge them again
        return out

    async def ack(self, message: SourceMessage) -> None:
        """Acknowledge ``message`` and every message delivered before it."""
        await message.token.ack()

    async def end(self) -> int:
        """The stream sequence of the last message in the stream."""
        return int((await self.js.stream_info(self.stream)).state.last_seq)

    async def pending(self) -> int:
        """Messages in the stream not yet delivered to this consumer (the consumer lag)."""
        info = await self.js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is going away anyway
                pass
