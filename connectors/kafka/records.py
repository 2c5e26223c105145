"""The events topic's record format, shared by the bridge, the Faust workers and the archiver.

Key: the event's partition key (UTF-8). Partition: ``engine.partition.partition_of(key, N)``,
chosen by the bridge, so a topic of N partitions splits events exactly as the embedded
runtime's N partition processors do. Value: one JSON object per event, carrying where
the event came from in JetStream (``seq`` of its message, ``idx`` of the event in that
message): that pair grows along each partition, so a consumer drops any record at or
below the last one it processed, whether Kafka redelivered it or the bridge re-sent it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from engine.event import Event


@dataclass(slots=True)
class EventRecord:
    """One event on the events topic and its position in the JetStream events stream."""

    event: Event
    seq: int  # JetStream stream sequence of the message the event came in
    idx: int  # position of the event within that message
    time: float  # epoch seconds the message entered the stream

    @property
    def source(self) -> tuple[int, int]:
        """Position in the source stream; grows along every partition of the topic."""
        return (self.seq, self.idx)


def encode(record: EventRecord) -> bytes:
    event = record.event
    return orjson.dumps({
        "id": event.id, "agent_id": event.agent_id, "type": event.type, "timestamp": event.timestamp,
        "data": event.data, "seq": record.seq, "idx": record.idx, "time": record.time,
    })


def decode(value: bytes) -> EventRecord:
    """The record of a value written by ``encode``; raises ValueError on anything else."""
    try:
        obj: dict[str, Any] = orjson.loads(value)
        event = Event(id=obj["id"], data=obj["data"], timestamp=obj["timestamp"], agent_id=obj["agent_id"],
                      type=obj["type"])
        return EventRecord(event, int(obj["seq"]), int(obj["idx"]), float(obj["time"]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not an OPMAS event record: {exc}") from exc
