"""Turning JetStream messages into events, or into dead letters with a reason.

A message holds one JSON object, a JSON array of objects, or JSON lines (many
events per message, for throughput). Each object is an envelope (validated
against the schema) or a raw event, wrapped with the agent id of the subject.
An envelope naming another agent than its subject is refused (agents may publish on
their own subject only); names equal once made subject tokens (``subject_token``, as
``opmas replay`` and the agents publish them) are the same agent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from opmas.connectors.nats.publishers import DeadLetter
from opmas.connectors.source import SourceMessage
from opmas.connectors.nats.subjects import agent_of_subject, subject_token
from opmas.core.event import Event
from opmas.core.envelope import envelope_error, envelope_event, looks_like_envelope


@dataclass(slots=True)
class Decoded:
    """The events of a batch of messages, their archived JSON text, and the rejects."""

    events: list[Event] = field(default_factory=list)
    texts: list[bytes] = field(default_factory=list)  # event data as JSON, parallel to events
    seqs: list[int] = field(default_factory=list)  # stream sequence of each event's message
    times: list[float] = field(default_factory=list)  # stream time of each event's message
    dead: list[DeadLetter] = field(default_factory=list)


def envelope_refusal(obj: dict[str, Any], subject: str, agent: str) -> str | None:
    """Why an envelope published on ``subject`` (of ``agent``) is refused: its schema, or another agent."""
    error = envelope_error(obj)
    if error is not None:
        return f"schema: {error}"
    if subject_token(obj["agent_id"]) != subject_token(agent):
        return f"agent: envelope agent_id {obj['agent_id']!r} differs from the agent of subject {subject}"
    return None


class Intake:
    """Decodes messages; messages over ``max_bytes`` are dead-lettered unread."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def decode(self, messages: list[SourceMessage]) -> Decoded:
        out = Decoded()
        for message in messages:
            self._decode_one(message, out)
        return out

    def _decode_one(self, message: SourceMessage, out: Decoded) -> None:
        data = message.data
        if len(data) > self.max_bytes:
            self._reject(out, message, f"oversized: {len(data)} bytes > max_message_bytes {self.max_bytes}",
                         data)
            return
        agent = agent_of_subject(message.subject)
        try:
            whole = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(whole, list):
                for obj in whole:
                    self._add(out, message, obj, None, agent, None)
            else:
                self._add(out, message, whole, data, agent, None)
            return
        lines = 0
        for line_no, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            lines += 1
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                self._reject(out, message, f"malformed JSON: {exc}", line, line_no)
                continue
            self._add(out, message, obj, line, agent, line_no)
        if not lines:
            self._reject(out, message, "empty message", data)

    def _add(self, out: Decoded, message: SourceMessage, obj, raw: bytes | None, agent: str,
             line_no: int | None) -> None:
        if not isinstance(obj, dict):
            self._reject(out, message, f"not a JSON object: {type(obj).__name__}",
                         raw if raw is not None else orjson.dumps(obj), line_no)
            return
        if looks_like_envelope(obj):
            refusal = envelope_refusal(obj, message.subject, agent)
            if refusal is not None:
                self._reject(out, message, refusal, raw if raw is not None else orjson.dumps(obj), line_no)
                return
            event = envelope_event(obj)
            text = orjson.dumps(obj["data"])
        else:
            own_id = obj.get("id")
            event = Event(id=str(own_id) if own_id is not None else None, data=obj,
                          agent_id=agent)
            text = raw.strip() if raw is not None else orjson.dumps(obj)
        event.raw = text  # the keyword prefilter searches it (Event.raw)
        out.events.append(event)
        out.texts.append(text)
        out.seqs.append(message.seq)
        out.times.append(message.time)

    @staticmethod
    def _reject(out: Decoded, message: SourceMessage, reason: str, payload: bytes,
                line_no: int | None = None) -> None:
        out.dead.append(DeadLetter(reason=reason, subject=message.subject, payload=payload,
                                   headers=message.headers, seq=message.seq, line=line_no))
