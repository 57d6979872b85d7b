"""Sweeps over the whole Redis mirror: stale keys removed after a resync, and the
rebuild counter that ``engagement redis-sync`` raises for the workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from redis.asyncio import Redis

from agents.worker.redis_client import BATCH_USERS, round_trip, scan_keys, scan_members
from agents.worker.redis_keys import MirrorKeys

KEEP: Final = "*"  # ``remove_stale``: leave this user's keys as they are


async def remove_stale(
    client: Redis,
    keys: MirrorKeys,
    placement: Callable[[str], str | None],
    batch: int = BATCH_USERS,
) -> int:
    """Delete the keys of users gone from the table and the memberships of sets
    users no longer belong in; returns how many users lost a key.

    ``placement(user_id)``: ``None`` for a user no longer stored, else the
    at-risk set key the user belongs in (``""``: none), or ``KEEP`` for a user
    this caller does not own."""
    known: dict[str, str | None] = {}

    def where(user_id: str) -> str | None:
        if user_id not in known:
            known[user_id] = placement(user_id)
        return known[user_id]

    doomed_hashes: set[str] = set()
    async for key in scan_keys(client, keys.user_pattern):
        user_id = keys.user_of(key)
        if user_id is not None and where(user_id) is None:
            doomed_hashes.add(user_id)
    doomed_members: list[tuple[str, str]] = []
    async for key in scan_keys(client, keys.set_pattern):
        if not key.endswith((":at_risk", ":at_risk_holdout")):
            continue
        async for user_id in scan_members(client, key):
            proper = where(user_id)
            if proper != KEEP and proper != key:
                doomed_members.append((key, user_id))
    commands = [("DEL", keys.user(u), "") for u in sorted(doomed_hashes)]
    commands += [("ZREM", key, u) for key, u in doomed_members]
    for start in range(0, len(commands), batch):
        pipe = client.pipeline(transaction=False)
        for command, key, member in commands[start : start + batch]:
            if command == "DEL":
                pipe.delete(key)
            else:
                pipe.zrem(key, member)
        await round_trip(pipe.execute())
    return len(doomed_hashes | {u for _k, u in doomed_members})


async def mark_rebuilt(client: Redis, keys: MirrorKeys) -> int:
    """Tell the workers' mirrors that the mirror was rebuilt from the changelogs
    (``engagement redis-sync``): each rewrites its partitions from its table."""
    return int(await round_trip(client.incr(keys.rebuilds)))


def rebuild_count(value: str | bytes | None) -> int:
    return int(value) if value else 0
