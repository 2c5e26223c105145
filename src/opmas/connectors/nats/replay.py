"""Publishing recorded event logs to NATS, order per agent preserved (``opmas replay PATH...``: files,
folders, globs; JSON, binary EVTX, gzip, as opmas.connectors.inputs reads them).

A full events stream (DiscardPolicy.NEW) refuses messages until room is freed (old events age
out, the limit is raised); a refused or unanswered message is published again with backoff for
up to ``--patience`` seconds (a message refused while later ones got through is stored after
them: the engine's lateness absorbs that). Each message carries a ``Nats-Msg-Id`` unique to this run, so one
stored despite an unanswered publish is not stored twice.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from opmas.connectors.files import BadRecord
from opmas.connectors.inputs import Input, Reading
from opmas.connectors.nats.client import connect
from opmas.core.envelope import looks_like_envelope
from opmas.connectors.nats.subjects import ensure_streams, events_subject, subject_token

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger("opmas.replay")

PATIENCE = 60.0  # seconds one message may be refused (stream full) or unanswered before replay gives up
ACK_WAIT = 5.0  # seconds to wait for JetStream to answer a publish
FULL_STREAM = ("maximum bytes exceeded", "maximum messages exceeded")
HEADER_ROOM = 256  # bytes of max_payload kept for the Nats-Msg-Id header (the server counts headers too)


class ReplayStalled(RuntimeError):
    """JetStream kept refusing (or not answering) a message for the whole patience."""


@dataclass
class ReplayResult:
    events: int = 0
    messages: int = 0
    bad_records: int = 0
    unreadable: int = 0  # records that could not be read at all (an EVTX chunk the parser refused), logged
    oversized: int = 0  # events larger than a message may be, skipped
    seconds: float = 0.0


def agent_of(obj: dict[str, Any], default: str | None) -> str:
    """The agent a recorded object is published as: the envelope's, ``--agent``, its host, 'replay'."""
    if looks_like_envelope(obj) and isinstance(obj.get("agent_id"), str):  # read records are valid envelopes
        return subject_token(obj["agent_id"])
    if default:
        return subject_token(default)
    host = obj.get("host")
    name = host.get("name") if isinstance(host, dict) else obj.get("host.name")
    if name is None:
        system = (obj.get("Event") or {}).get("System") if isinstance(obj.get("Event"), dict) else None
        name = system.get("Computer") if isinstance(system, dict) else None
    return subject_token(str(name)) if name else "replay"


async def replay(inputs: list[Input], nats_url: str, rate: float | None = None, agent: str | None = None,
                 batch: int = 100, progress: Progress | None = None, patience: float = PATIENCE,
                 max_bytes: int | None = None, options: dict[str, Any] | None = None) -> ReplayResult:
    """Publish every object of ``inputs`` through JetStream; bad records are sent as they are (the
    engine dead-letters them); what has no bytes to send (an unreadable EVTX chunk) is logged. A message never exceeds the server's max_payload, nor ``max_bytes``
    (the engine's max_message_bytes); an event that alone would is skipped with a warning
    (``oversized``). Returns once JetStream has stored everything; raises ReplayStalled if a
    message is refused for ``patience`` seconds."""
    result = ReplayResult()
    nc = await connect(nats_url, "opmas-replay", **(options or {}))
    js = nc.jetstream()
    await ensure_streams(js, update=False)  # replaying before the engine first ran stores the events too
    limit = min(nc.max_payload - HEADER_ROOM, max_bytes or nc.max_payload)
    buffers: dict[str, list[bytes]] = {}
    sizes: dict[str, int] = {}  # per buffer: its lines' bytes plus one separator each
    records = 0  # objects and unreadable lines read so far
    pending: list[Pending] = []
    run = uuid.uuid4().hex[:12]
    task = progress.add_task("replaying", total=None) if progress else None
    start = time.monotonic()

    async def send(subject: str, lines: list[bytes]) -> None:
        data, headers = b"\n".join(lines), {"Nats-Msg-Id": f"replay-{run}-{result.messages}"}
        pending.append(Pending(subject, data, headers, await js.publish_async(subject, data, headers=headers)))
        result.messages += 1
        if len(pending) >= 2000:
            await _settle(js, pending, patience)

    bad: list[BadRecord] = []
    fallback = events_subject(subject_token(agent or "replay"))

    def fits(line: bytes) -> bool:
        nonlocal records
        records += 1
        if len(line) <= limit:
            return True
        result.oversized += 1
        log.warning(f"record {records} of the input has {len(line):,} bytes, more than the "
                    f"message limit of {limit:,}: skipped", extra={"record": records})
        return False

    async def take(obj: dict[str, Any]) -> None:
        nonlocal buffers, sizes
        line = orjson.dumps(obj)
        if not fits(line):
            return
        key = agent_of(obj, agent)
        lines = buffers.setdefault(key, [])
        if lines and sizes[key] + len(line) > limit:  # joined with this line the message would be too large
            await send(events_subject(key), lines)
            buffers[key] = lines = []
        sizes[key] = (sizes[key] if lines else 0) + len(line) + 1
        lines.append(line)
        result.events += 1
        if len(lines) >= batch:
            await send(events_subject(key), lines)
            buffers[key] = []
        if rate:
            ahead = result.events / rate - (time.monotonic() - start)
            if ahead > 0.05:
                for key, lines in buffers.items():  # nothing waits in a buffer while we sleep
                    if lines:
                        await send(events_subject(key), lines)
                buffers, sizes = {}, {}
                await asyncio.sleep(ahead)
        if progress and result.events % 1000 == 0:
            progress.update(task, completed=result.events, description=f"replaying {result.events:,} events")

    async def salvage() -> None:
        """A bad record may span good lines (a broken line read as the start of a multi-line
        object): take those, forward the rest unchanged for the engine to dead-letter."""
        while bad:
            record = bad.pop(0)
            if not record.raw:
                result.unreadable += 1
                log.warning(f"{record.file}: {record.reason}", extra={"file": record.file, "record": record.line})
                continue
            for line in record.raw.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict):
                    await take(obj)
                elif fits(line):
                    result.bad_records += 1
                    await send(fallback, [line])

    try:
        for obj, _ in Reading(inputs, bad.append).records():
            await salvage()
            await take(obj)
        await salvage()
        for key, lines in buffers.items():
            if lines:
                await send(events_subject(key), lines)
        await _settle(js, pending, patience)
    finally:
        await nc.close()
    result.seconds = time.monotonic() - start
    if progress:
        progress.update(task, completed=result.events, description=f"replayed {result.events:,} events")
    return result


@dataclass(slots=True)
class Pending:
    """A published message and the future of JetStream's answer."""

    subject: str
    data: bytes
    headers: dict[str, str]
    future: asyncio.Future


def retryable(exc: BaseException) -> bool:
    """A refusal that may go away: the events stream is full, or JetStream did not answer."""
    if isinstance(exc, (asyncio.TimeoutError, nats.errors.TimeoutError)):
        return True
    return isinstance(exc, nats.js.errors.APIError) and any(text in str(exc.description) for text in FULL_STREAM)


async def _settle(js: JetStreamContext, pending: list[Pending], patience: float) -> None:
    """Wait for JetStream to confirm every pending publish, then publish each refused or unanswered
    one again, in order. (nats-py leaves the future of a refused ``publish_async`` pending for ever:
    its reply handler raises instead of failing the future; hence the one shared wait.)"""
    items = pending[:]
    pending.clear()
    if items:
        await asyncio.wait([item.future for item in items], timeout=ACK_WAIT)
    for item in items:
        future = item.future
        if not future.done():
            future.cancel()  # frees its slot of publish_async's pending limit
            error: BaseException = asyncio.TimeoutError(f"no answer within {ACK_WAIT:.0f} s")
        elif future.exception() is None:
            continue
        else:
            error = future.exception()
            if not retryable(error):
                raise error
        await publish_patiently(js, item.subject, item.data, item.headers, patience, error)


async def publish_patiently(js: JetStreamContext, subject: str, data: bytes, headers: dict[str, str],
                            patience: float, error: BaseException | None = None) -> None:
    """Publish until JetStream stores the message, waiting 0.1 s, 0.2 s ... (at most 5 s) after each
    retryable refusal; ReplayStalled once ``patience`` seconds have gone by."""
    deadline = time.monotonic() + patience
    delay = 0.1
    while True:
        if error is not None:
            if time.monotonic() + delay > deadline:
                raise ReplayStalled(f"JetStream refused a message on {subject} for {patience:.0f} s: {error}")
            log.warning("events stream refused a message, retrying", extra={
                "subject": subject, "retry_in": delay, "reason": str(error)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        try:
            await js.publish(subject, data, timeout=ACK_WAIT, headers=headers)
            return
        except Exception as exc:
            if not retryable(exc):
                raise
            error = exc
