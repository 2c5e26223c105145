"""The events topic's record format, shared by the bridge, the Faust workers and the archiver.

Key: the events' partition key (UTF-8). Partition: ``partition_of(key, N)``, chosen by
the bridge, so a topic of N partitions splits events exactly as the embedded runtime's N
partition processors do. Value: a JSON object holding the events of one JetStream message
that fall in that partition (up to ``MAX_RECORD_BYTES``; more make several records), each
with where it came from (``seq`` of its message, ``idx`` of the event in that message).
That pair grows along each partition, so a consumer drops any event at or below the last
one it processed, whether Kafka redelivered it or the bridge re-sent it. Many events per
record keep the per-record cost of Kafka clients and Faust off the per-event path.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from opmas.core.event import Event


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


MAX_RECORD_BYTES = 256 << 10  # well under the 1 MiB default message size of Kafka and Redpanda


def _event_obj(record: EventRecord) -> dict[str, Any]:
    event = record.event
    return {"id": event.id, "agent_id": event.agent_id, "type": event.type, "timestamp": event.timestamp,
            "data": event.data, "idx": record.idx}


def encode(records: Sequence[EventRecord]) -> list[bytes]:
    """Values for ``records`` (events of one JetStream message, in order): one, or several when
    they exceed ``MAX_RECORD_BYTES``."""
    if not records:
        return []
    head = {"seq": records[0].seq, "time": records[0].time}
    values: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for record in records:
        encoded = orjson.dumps(_event_obj(record))
        if chunk and size + len(encoded) > MAX_RECORD_BYTES:
            values.append(_value(head, chunk))
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + 1
    values.append(_value(head, chunk))
    return values


def _value(head: dict[str, Any], events: list[bytes]) -> bytes:
    return orjson.dumps(head)[:-1] + b',"events":[' + b",".join(events) + b"]}"


def decode(value: bytes) -> list[EventRecord]:
    """The events of a value written by ``encode``; raises ValueError on anything else."""
    try:
        obj: dict[str, Any] = orjson.loads(value)
        seq, time = int(obj["seq"]), float(obj["time"])
        return [EventRecord(Event(id=e["id"], data=e["data"], timestamp=e["timestamp"], agent_id=e["agent_id"],
                                  type=e["type"]), seq, int(e["idx"]), time)
                for e in obj["events"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an OPMAS events record: {exc}") from exc
