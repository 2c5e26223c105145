"""What the Kafka-protocol clients share: the errors a retry may mend."""
from __future__ import annotations

import asyncio

import aiokafka.errors

# what a retry may mend: a broker away, a rebalance, a request timing out
KAFKA_ERRORS = (aiokafka.errors.KafkaError, OSError, asyncio.TimeoutError)
