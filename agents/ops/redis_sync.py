"""``engagement redis-sync``: rebuild the Redis mirror from the tables' changelogs.

Reads ``{app_id}-users-changelog`` and ``{app_id}-clocks-changelog`` from the
beginning to their end offsets at the start (last value per key wins, a
tombstone deletes), writes every user's hash and at-risk membership, then
removes the mirror keys of users that are not in the table. The same key
layout and field derivation as the workers' mirror (``agents.worker.redis_keys``,
``agents.worker.user_view``), so the result is what the workers would have written.

The changelogs trail the tables by up to a commit interval, so a user
changed during the sync may be written with an older value; at the end the
sync (also one that fails part way) raises ``{app_id}:rebuilds``, and every
running worker's mirror, seeing it with its next write or idle check,
rewrites its partitions from its table.

States of every format version this release reads are taken as they are; a
state in a newer version (a newer release wrote it) stops the sync with
``NewerStateError`` before Redis is touched.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from agents.worker.redis_client import BATCH_USERS, REDIS_FAILURES, redis_client
from agents.worker.redis_keys import MirrorKeys, write_user
from agents.worker.redis_sweep import mark_rebuilt, remove_stale
from agents.worker.user_view import is_at_risk, mirror_fields
from streams.decode import partition_for
from streams.kafka import client_options
from streams.model_settings import model_config
from streams.settings import Settings
from tables.clock import NEVER, clock_ms
from tables.errors import EngagementError, NewerStateError, StateFormatError
from tables.model import ModelConfig
from tables.state import UserState, unpack_state

log = logging.getLogger(__name__)
POLL_MS = 500


class ChangelogMissingError(EngagementError):
    """The table's changelog topic does not exist: check ENGAGEMENT_APP_ID."""


class SyncStats(msgspec.Struct):
    users: int = 0
    at_risk: int = 0
    removed: int = 0
    unreadable: int = 0


def users_changelog(settings: Settings) -> str:
    return f"{settings.app_id}-users-changelog"


def clocks_changelog(settings: Settings) -> str:
    return f"{settings.app_id}-clocks-changelog"


async def read_compacted(settings: Settings, topic: str) -> dict[bytes, bytes]:
    """The last value per key of ``topic``, read from the beginning to its end offsets."""
    partitions = await topic_partitions(settings, topic)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    latest: dict[bytes, bytes] = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=POLL_MS)
            for batch in batches.values():
                for record in batch:
                    if record.key is None:
                        continue
                    if record.value is None:
                        latest.pop(record.key, None)
                    else:
                        latest[record.key] = record.value
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return latest


async def topic_partitions(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described: list[Any] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = [t for t in described if t.get("topic") == topic and t.get("error_code") == 0]
    if not found or not found[0]["partitions"]:
        raise ChangelogMissingError(
            f"topic {topic!r} not found: has a worker run with this ENGAGEMENT_APP_ID?"
        )
    return sorted(p["partition"] for p in found[0]["partitions"])


def partition_clocks(blobs: dict[bytes, bytes], lateness_ms: int) -> dict[int, int]:
    """Partition → event-time clock, from the clocks table (key ``b"P"``; the
    first 8 bytes of the value are the greatest contribution, see ``agents.worker.runtime``)."""
    clocks: dict[int, int] = {}
    for key, blob in blobs.items():
        if len(blob) >= 8 and key.isdigit():
            clocks[int(key)] = clock_ms(int.from_bytes(blob[:8], "big", signed=True), lateness_ms)
    return clocks


async def redis_sync(
    settings: Settings, progress: Callable[[str], None] | None = None
) -> SyncStats:
    """Rebuild the mirror of ``settings.app_id`` in ``settings.redis_url``."""
    say = progress or (lambda _text: None)
    stats = SyncStats()
    config = model_config(settings)
    say(f"reading {users_changelog(settings)}")
    blobs = await read_compacted(settings, users_changelog(settings))
    clocks = partition_clocks(
        await read_compacted(settings, clocks_changelog(settings)), settings.lateness_ms
    )
    states: dict[str, UserState] = {}
    for key, blob in blobs.items():
        try:
            states[key.decode()] = unpack_state(blob)
        except NewerStateError:
            raise  # before Redis is touched: skipping the user would delete its keys
        except (StateFormatError, UnicodeDecodeError):
            stats.unreadable += 1
    keys = MirrorKeys(settings.app_id)
    say(f"writing {len(states)} users")
    client = redis_client(settings.redis_url.get_secret_value())
    try:
        try:
            await _write_all(client, keys, states, clocks, settings.partitions, config, stats)
        except BaseException:
            # stopped part way: what it wrote may be older than the tables, so
            # the running workers must rewrite their partitions all the same
            with contextlib.suppress(*REDIS_FAILURES):
                await mark_rebuilt(client, keys)
            raise
        await mark_rebuilt(client, keys)  # running workers rewrite their partitions
    finally:
        await client.aclose()
    return stats


async def _write_all(
    client: Redis,
    keys: MirrorKeys,
    states: dict[str, UserState],
    clocks: dict[int, int],
    partitions: int,
    config: ModelConfig,
    stats: SyncStats,
) -> None:
    """Every user's hash and membership, then no keys for users not in ``states``."""
    ordered = sorted(states)
    placements: dict[str, str] = {}
    for start in range(0, len(ordered), BATCH_USERS):
        pipe = client.pipeline(transaction=False)
        for user_id in ordered[start : start + BATCH_USERS]:
            partition = partition_for(user_id.encode(), partitions)
            fields = mirror_fields(user_id, states[user_id], clocks.get(partition, NEVER), config)
            target = write_user(pipe, keys, user_id, fields)
            placements[user_id] = "" if target is None else target.decode()
            stats.users += 1
            stats.at_risk += is_at_risk(fields)
        await pipe.execute()
    stats.removed = await remove_stale(client, keys, placements.get)
