"""ENGAGEMENT_REPARTITION on a real broker: events from a key partitioner other
than murmur2 (here round-robin) are sent on to their key's partition and applied
there, beside events from the default partitioner; nothing reaches the DLQ."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from support.metrics import sample
from support.workers import Deployment, event, latest_states, now_ms, produce, read_topic, wait_for

from agents.worker.emit import FORWARDED_HEADER

EVENTS_PER_USER = 4


def home_of(user: str, partitions: int) -> int:
    return (murmur2(user.encode()) & 0x7FFFFFFF) % partitions


async def produce_round_robin(
    bootstrap: str, topic: str, records: list[dict[str, Any]], partitions: int
) -> int:
    """Round-robin over the partitions, whatever the key (kafka-go's default
    balancer); returns how many landed away from their key's murmur2 partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    misrouted = 0
    try:
        for n, record in enumerate(records):
            partition = n % partitions
            misrouted += partition != home_of(record["user_id"], partitions)
            await producer.send(
                topic,
                key=record["user_id"].encode(),
                value=json.dumps(record).encode(),
                partition=partition,
            )
        await producer.flush()
    finally:
        await producer.stop()
    return misrouted


async def test_events_from_two_partitioners_are_all_applied_on_their_key_partition(
    kafka_broker: Any, tmp_path: Any
) -> None:
    deployment = Deployment(kafka_broker.url, tmp_path, ENGAGEMENT_REPARTITION="true")
    await deployment.create_topics()
    settings = deployment.settings
    partitions = settings.partitions
    base = now_ms()
    murmur_users = [f"m{i}" for i in range(12)]
    robin_users = [f"r{i}" for i in range(12)]
    by_murmur = [
        event(u, f"{u}-{n}", base + n) for n in range(EVENTS_PER_USER) for u in murmur_users
    ]
    by_robin = [event(u, f"{u}-{n}", base + n) for n in range(EVENTS_PER_USER) for u in robin_users]
    worker = await deployment.start_worker()
    try:
        await produce(deployment.bootstrap, settings.topic_events, by_murmur)
        misrouted = await produce_round_robin(
            deployment.bootstrap, settings.topic_events, by_robin, partitions
        )
        assert misrouted > 0  # round-robin over 4+ partitions misses most keys' partition

        async def forwarded(count: int) -> bool:
            with contextlib.suppress(OSError):
                text = await asyncio.to_thread(worker.metrics_text)
                return sample(text, "engagement_repartitioned_total") >= count
            return False

        assert await wait_for(lambda: forwarded(misrouted), 120), deployment.log_tail()

        async def settled() -> bool:
            states = await latest_states(deployment)
            return all(
                u in states and states[u].events_total == EVENTS_PER_USER
                for u in murmur_users + robin_users
            )

        assert await wait_for(settled, 90, interval_s=1.0), deployment.log_tail()
        states = await latest_states(deployment)
        for user in murmur_users + robin_users:
            assert states[user].partition == home_of(user, partitions), user

        text = await asyncio.to_thread(worker.metrics_text)
        assert sample(text, "engagement_repartitioned_total") == misrouted
        assert sample(text, "engagement_dlq_total") == 0

        inputs = await read_topic(deployment.bootstrap, settings.topic_events, timeout_s=15)
        copies = [r for r in inputs if any(name == FORWARDED_HEADER for name, _ in r.headers)]
        assert len(copies) == misrouted
        for record in copies:
            user = json.loads(record.value)["user_id"]
            assert record.partition == home_of(user, partitions)
            source = dict(record.headers)[FORWARDED_HEADER].decode().split(":")
            assert int(source[0]) != record.partition
    finally:
        worker.stop()
