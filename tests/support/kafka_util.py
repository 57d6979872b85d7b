"""Kafka helpers for tests: create topics up front, read a topic back whole.

Both work on the embedded broker and on real Kafka. ``consume_all`` decides
it has everything by count or by quiet time, never by end offsets: the
embedded broker reports wrong ones (see FAUST-NOTES).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

_POLL_MS = 200


@dataclass(frozen=True, slots=True)
class Record:
    """One record as the broker returned it; values stay bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    configs: Mapping[str, str] | None = None,
    *,
    replication_factor: int = 1,
    exist_ok: bool = False,
    timeout_s: float = 30.0,
) -> None:
    """Create ``{name: partitions}`` with the same ``configs`` each, then wait
    until every partition has a leader (a producer may use them at once).

    Configs are always given explicitly: the embedded broker describes only
    the configs a topic was created with.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        new = [
            NewTopic(name, partitions, replication_factor, topic_configs=dict(configs or {}))
            for name, partitions in topics.items()
        ]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            if not exist_ok:
                raise
        deadline = time.monotonic() + timeout_s
        while not await _all_have_leaders(admin, topics):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topics {sorted(topics)} have no leaders after {timeout_s} s")
            await asyncio.sleep(_POLL_MS / 1000)
    finally:
        await admin.close()


async def _all_have_leaders(admin: AIOKafkaAdminClient, topics: Mapping[str, int]) -> bool:
    described = await admin.describe_topics(list(topics))
    by_name = {t["topic"]: t for t in described}
    for name, partitions in topics.items():
        topic = by_name.get(name)
        if topic is None or topic["error_code"] != 0:
            return False
        leaders = [p for p in topic["partitions"] if p["leader"] is not None and p["leader"] >= 0]
        if len(leaders) < partitions:
            return False
    return True


async def _partitions(bootstrap: str, topic: str, timeout_s: float) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            (described,) = await admin.describe_topics([topic])
            if described["error_code"] == 0 and described["partitions"]:
                return sorted(p["partition"] for p in described["partitions"])
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic!r} not found on {bootstrap}")
            await asyncio.sleep(_POLL_MS / 1000)
    finally:
        await admin.close()


async def consume_all(
    bootstrap: str,
    topic: str,
    timeout_s: float = 30.0,
    *,
    idle_s: float = 2.0,
    expected: int | None = None,
    isolation_level: str = "read_uncommitted",
) -> list[Record]:
    """Read ``topic`` from the beginning of every partition, without a group.

    Stops when ``expected`` records arrived, else once nothing new arrived for
    ``idle_s`` after at least one poll; raises ``TimeoutError`` if
    ``expected`` is not reached within ``timeout_s``. Records come back in
    (partition, offset) order.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation_level,
    )
    deadline = time.monotonic() + timeout_s
    partitions = await _partitions(bootstrap, topic, timeout_s)
    await consumer.start()
    records: list[Record] = []
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while expected is None or len(records) < expected:
            now = time.monotonic()
            if expected is None and now - last_new >= idle_s:
                break
            if now >= deadline:
                if expected is None:
                    break
                raise TimeoutError(
                    f"{len(records)} of {expected} records on {topic!r} after {timeout_s} s"
                )
            batches = await consumer.getmany(timeout_ms=_POLL_MS)
            for batch in batches.values():
                for msg in batch:
                    records.append(
                        Record(
                            topic=msg.topic,
                            partition=msg.partition,
                            offset=msg.offset,
                            timestamp_ms=msg.timestamp,
                            key=msg.key,
                            value=msg.value,
                            headers=tuple((k, bytes(v)) for k, v in msg.headers),
                        )
                    )
                    last_new = time.monotonic()
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records
