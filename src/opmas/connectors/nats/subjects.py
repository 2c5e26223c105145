"""OPMAS subjects and JetStream streams, and creating the streams (and the object store bucket
``OPMAS_DEADLETTER_PAYLOADS``, which keeps the whole payload of a dead letter too big to carry it)."""
from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore

EVENTS_STREAM = "OPMAS_EVENTS"
EVENTS_PREFIX = "opmas.events."
FINDINGS_STREAM = "OPMAS_FINDINGS"
FINDINGS_PREFIX = "opmas.findings."
DEADLETTER_STREAM = "OPMAS_DEADLETTER"
DEADLETTER_SUBJECT = "opmas.deadletter"
RELOAD_SUBJECT = "opmas.engine.reload"
REVOKED_SUBJECT = "opmas.auth.revoked"  # an agent's id, once deleted: the auth callout cuts its connections
PAYLOAD_BUCKET = "OPMAS_DEADLETTER_PAYLOADS"
MAX_AGE = 7 * 24 * 3600.0  # seconds the streams (and the bucket) keep a message by default


def events_subject(agent_id: str) -> str:
    """Where an agent publishes its events."""
    return EVENTS_PREFIX + agent_id


def findings_subject(severity: str) -> str:
    return FINDINGS_PREFIX + (severity or "informational")


def control_subject(agent_id: str) -> str:
    """Where management sends an agent its configuration."""
    return f"opmas.control.{agent_id}"


def status_subject(agent_id: str) -> str:
    """Where an agent sends its heartbeats."""
    return f"opmas.status.{agent_id}"


def inbox_prefix(agent_id: str) -> str:
    """The reply-inbox prefix an agent connects with, so NATS permissions can let it read only its
    own replies (JetStream acknowledgements)."""
    return f"_INBOX_{agent_id}"


def agent_of_subject(subject: str) -> str:
    """The agent id of an events subject (``opmas.events.<agent_id>``)."""
    return subject[len(EVENTS_PREFIX):] if subject.startswith(EVENTS_PREFIX) else subject


_UNSAFE_IN_TOKEN = str.maketrans({c: "_" for c in ". *>\t\r\n"})


def subject_token(text: str) -> str:
    """``text`` made safe as one subject token (no dots, spaces or wildcards)."""
    return text.strip().translate(_UNSAFE_IN_TOKEN) or "unknown"


async def ensure_streams(js: JetStreamContext, max_age: float = MAX_AGE,
                         max_bytes: int = 10 << 30, update: bool = True) -> None:
    """Create the events, findings and dead-letter streams (file-backed) where missing, and with
    ``update`` (the engine) bring existing ones to these limits.

    Events use limits retention (not work-queue): the engine resumes from its own
    checkpointed sequence, which may be behind its last acknowledgement. A full events
    stream refuses new events (publishers get an error and retry) rather than dropping
    the oldest, which may not be processed yet.
    """
    for config in (
        StreamConfig(name=EVENTS_STREAM, subjects=[EVENTS_PREFIX + ">"], retention=RetentionPolicy.LIMITS,
                     storage=StorageType.FILE, max_age=max_age, max_bytes=max_bytes,
                     discard=DiscardPolicy.NEW),
        StreamConfig(name=FINDINGS_STREAM, subjects=[FINDINGS_PREFIX + ">"], storage=StorageType.FILE,
                     max_age=max_age, duplicate_window=600.0),
        StreamConfig(name=DEADLETTER_STREAM, subjects=[DEADLETTER_SUBJECT], storage=StorageType.FILE,
                     max_age=max_age, duplicate_window=600.0),
    ):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
            continue
        if not update:
            continue
        try:
            await js.update_stream(config)
        except BadRequestError:
            pass  # a setting the server cannot change in place: keep the existing stream
    await payload_store(js, max_age)


async def payload_store(js: JetStreamContext, max_age: float = MAX_AGE) -> ObjectStore:
    """The bucket of whole dead-letter payloads (file-backed, kept ``max_age`` as the dead letters are),
    created where missing."""
    try:
        return await js.object_store(PAYLOAD_BUCKET)
    except BucketNotFoundError:
        return await js.create_object_store(PAYLOAD_BUCKET, ObjectStoreConfig(
            ttl=max_age, storage=StorageType.FILE, description="whole payloads of truncated dead letters"))
