"""Write a signed ``$erase`` request into the user's input partition."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaProducer

from streams.control import signer_for
from streams.decode import partition_for
from streams.kafka import client_options
from streams.records import Erase
from streams.settings import Settings
from tables.errors import ConfigurationError


async def send_erase(settings: Settings, user_id: str) -> int:
    """Returns the partition written to."""
    signer = signer_for(settings)
    if signer is None:
        raise ConfigurationError("ENGAGEMENT_CLOCK_KEYS is required to sign an erasure")
    partition = partition_for(user_id.encode(), settings.partitions)
    record = Erase(user_id=user_id, issued_ms=int(time.time() * 1000))
    value, headers = signer.sign(settings.topic_events, partition, record)
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic_events, value=value, partition=partition, headers=headers
        )
    finally:
        await producer.stop()
    return partition
