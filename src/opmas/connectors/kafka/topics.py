"""Creating the events topic with the configured number of partitions, and checking it."""
from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from opmas.connectors.kafka.security import KafkaSecurity


class TopicLayoutError(RuntimeError):
    """The topic exists with another partition count than the configuration says."""


def bootstrap(url: str) -> str:
    """``kafka://host:port[,host:port]`` or ``host:port[,...]`` -> aiokafka bootstrap servers."""
    return ",".join(part.removeprefix("kafka://") for part in url.split(","))


async def ensure_topic(url: str, topic: str, partitions: int, replication: int = 1,
                       security: KafkaSecurity = KafkaSecurity()) -> int:
    """Create ``topic`` with ``partitions`` partitions if missing; returns its partition count.

    An existing topic with another count is an error: events would be split differently
    from the processors' checkpointed state.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(url), **security.client_kwargs())
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            try:
                await admin.create_topics([NewTopic(topic, partitions, replication)])
            except TopicAlreadyExistsError:
                pass
        described = await admin.describe_topics([topic])
        count = len(described[0]["partitions"])
    finally:
        await admin.close()
    if count != partitions:
        raise TopicLayoutError(
            f"topic {topic!r} has {count} partitions but OPMAS is configured for {partitions}:"
            f" set partitions to {count} or use another topic")
    return count
