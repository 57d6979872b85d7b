"""The Redis client of the serving mirror: fast failure, commands packed in C, and
each round trip (a pipeline, a SCAN page, a PING) bounded as a whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import RedisError

T = TypeVar("T")

BATCH_USERS = 1000
SOCKET_TIMEOUT_S = 2.0  # connecting; each reply of a client with read timeouts
# The mirror's bound on one round trip (a pipeline, a SCAN page, a PING): its
# client has no per-reply timeout, which cost as much as the rest of a write.
ROUND_TRIP_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
SCAN_COUNT = 1000
# A Redis outage shows up as any of these; anything else is a bug and stops the task.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


class _HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's sync client packs them; its
    asyncio connections pack in Python, half the cost of a pipelined write."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed


_PACKED_CLASSES: dict[type, type] = {}


def _packed_class(connection_class: type) -> type:
    packed = _PACKED_CLASSES.get(connection_class)
    if packed is None:
        name = f"Hiredis{connection_class.__name__}"
        packed = _PACKED_CLASSES[connection_class] = type(
            name, (_HiredisPacking, connection_class), {}
        )
    return packed


def redis_client(url: str, read_timeout_s: float | None = SOCKET_TIMEOUT_S) -> Redis:
    """A client that fails fast: the mirror retries with its own backoff.

    ``read_timeout_s=None``: no timeout per reply; the caller bounds each
    round trip itself (the mirror: ``round_trip``)."""
    client: Redis = Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=read_timeout_s,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    pool = client.connection_pool
    pool.connection_class = _packed_class(pool.connection_class)
    return client


async def round_trip(call: Awaitable[T]) -> T:
    """``await call`` within ``ROUND_TRIP_TIMEOUT_S`` (``TimeoutError`` after it)."""
    async with asyncio.timeout(ROUND_TRIP_TIMEOUT_S):
        return await call


async def scan_keys(client: Redis, pattern: str) -> AsyncIterator[str]:
    cursor = 0
    while True:
        cursor, found = await round_trip(client.scan(cursor, match=pattern, count=SCAN_COUNT))
        for key in found:
            yield str(key)
        if not cursor:
            break


async def scan_members(client: Redis, key: str) -> AsyncIterator[str]:
    cursor = 0
    while True:
        cursor, members = await round_trip(client.zscan(key, cursor, count=SCAN_COUNT))
        for member, _score in members:
            yield str(member)
        if not cursor:
            break


def backoff_s(failures: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(failures - 1, 0)))
