"""The bench's traffic through the broker: its partitions, fast production, and the
raw aiokafka ceiling a worker is compared with."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

PARTITIONS = 8


def say(text: str) -> None:
    """A progress line of the bench, on stderr."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


async def produce_fast(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int]]
) -> float:
    """Produce with ``send_batch`` per partition; returns events/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20)
    await producer.start()
    started = time.perf_counter()
    try:
        batches: dict[int, Any] = {}
        pending = []
        for key, value, partition in records:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for partition, batch in batches.items():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(records) / (time.perf_counter() - started)


async def ceiling(bootstrap: str, topic: str, expected: int) -> float:
    """Raw aiokafka getmany + msgspec decode + a trivial per-user update: events/s."""
    rate, _cpu_s = await ceiling_cost(bootstrap, topic, expected)
    return rate


async def ceiling_cost(bootstrap: str, topic: str, expected: int) -> tuple[float, float]:
    """``ceiling``'s events/s and the CPU seconds this process spent meanwhile."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    decoder = msgspec.json.Decoder()
    last_seen: dict[str, int] = {}
    seen = 0
    started = cpu_started = 0.0
    idle_since = time.monotonic()
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if batches:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 30:
                raise RuntimeError(f"ceiling: only {seen} of {expected} events arrived")
            if not started and batches:
                started = time.perf_counter()
                cpu_started = time.process_time()
            for records in batches.values():
                for record in records:
                    event = decoder.decode(record.value)
                    user = event.get("user_id")
                    if user is None:
                        continue  # a worker's clock tick, once a worker has run
                    if event["ts"] > last_seen.get(user, 0):
                        last_seen[user] = event["ts"]
                    seen += 1
        return seen / (time.perf_counter() - started), time.process_time() - cpu_started
    finally:
        await consumer.stop()
