"""``engagement backfill``'s second half: write a history's state into the worker's tables.

The worker's tables recover from their changelog topics when a worker
starts (``streams.app``), so the state built from a history
(``agents.offline.history_seed``) is written there, in the layout the worker
writes (``agents.worker.runtime``, ``agents.worker.cohorts``), each record in
its partition:

- ``{app_id}-users-changelog``: every user's packed state, keyed by user id;
- ``{app_id}-clocks-changelog``: each partition's clock (``b"P"``), its
  threshold versions (``b"P:config"``, with ``--config``) and its cohort cells.

A worker started afterwards recovers them, indexes the users, announces each
user's status again and judges from the history's clock on: its ticks move
the clock once events newer than the history arrive (the stall guard), and a
silence due after the history's end is signalled then. Nothing goes through
the input topic, so records appended now (today's append time) cannot move a
clock past a user whose history is still loading.

Only an empty deployment is loaded: a changelog already holding records
stops the load (``BackfillRefused``), since running workers would not see
the writes and recorded state would be mixed with the history's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Final

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from agents.ops.redis_sync import clocks_changelog, users_changelog
from agents.worker.cohorts import cell_key, pack_counts
from agents.worker.table_store import config_key, pack_clock
from streams.decode import partition_for
from streams.kafka import client_options
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics, topic_specs
from tables.cohorts import Cell, CellCounts
from tables.errors import EngagementError
from tables.processor import ClockMark
from tables.state import UserState, pack_state
from tables.thresholds import ThresholdBook, encode_book

SEND_WINDOW: Final = 10_000  # records in flight before their deliveries are awaited
TABLES: Final = ("users", "clocks", "erased")


class BackfillRefused(EngagementError):
    """The deployment cannot take a backfill (it holds state, or the broker is unreachable)."""


class LoadStats(msgspec.Struct):
    users: int = 0
    clock_records: int = 0
    cohort_cells: int = 0


def changelog_specs(settings: Settings) -> list[TopicSpec]:
    """The tables' changelog topics as the worker uses them (compacted, one partition per
    input partition)."""
    compact = {"cleanup.policy": "compact"}
    return [
        TopicSpec(f"{settings.app_id}-{table}-changelog", settings.partitions, dict(compact))
        for table in TABLES
    ]


async def load_seed(
    settings: Settings,
    states: dict[str, UserState],
    clock: ClockMark,
    book: ThresholdBook,
    cells: dict[int, dict[Cell, CellCounts]],
) -> LoadStats:
    """Write the users, the partitions' clock, book and cohort cells into the changelogs.

    ``BackfillRefused`` when the broker cannot be reached or a changelog already
    holds records."""
    try:
        await ensure_topics(settings, topic_specs(settings) + changelog_specs(settings))
        await _refuse_recorded_state(settings)
        return await _write(settings, states, clock, book, cells)
    except KafkaError as exc:
        raise BackfillRefused(
            f"backfill failed talking to the broker at {settings.broker_hosts}: "
            f"{type(exc).__name__} {exc}"
        ) from exc


async def _refuse_recorded_state(settings: Settings) -> None:
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        for topic in (users_changelog(settings), clocks_changelog(settings)):
            tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
            ends = await consumer.end_offsets(tps)
            recorded = sum(ends.values())
            if recorded:
                raise BackfillRefused(
                    f"{topic} already holds {recorded} records: backfill loads an empty "
                    "deployment (a new ENGAGEMENT_APP_ID, or its changelog topics deleted "
                    "with every worker stopped)"
                )
    finally:
        await consumer.stop()


async def _write(
    settings: Settings,
    states: dict[str, UserState],
    clock: ClockMark,
    book: ThresholdBook,
    cells: dict[int, dict[Cell, CellCounts]],
) -> LoadStats:
    stats = LoadStats()
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=20, enable_idempotence=True
    )
    await producer.start()
    pending: list[Awaitable[Any]] = []

    async def send(topic: str, key: bytes, value: bytes, partition: int) -> None:
        pending.append(await producer.send(topic, value, key=key, partition=partition))
        if len(pending) >= SEND_WINDOW:
            await asyncio.gather(*pending)
            pending.clear()

    try:
        users, clocks = users_changelog(settings), clocks_changelog(settings)
        n = settings.partitions
        for user_id, state in states.items():
            key = user_id.encode()
            await send(users, key, pack_state(state), partition_for(key, n))
            stats.users += 1
        packed_book = encode_book(book) if book.scopes else None
        for partition in range(n):
            await send(clocks, str(partition).encode(), pack_clock(clock), partition)
            stats.clock_records += 1
            if packed_book is not None:
                await send(clocks, config_key(partition), packed_book, partition)
                stats.clock_records += 1
            for cell, counts in sorted(cells.get(partition, {}).items()):
                await send(clocks, cell_key(partition, cell), pack_counts(counts), partition)
                stats.cohort_cells += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return stats
