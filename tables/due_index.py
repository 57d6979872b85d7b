"""Users bucketed by the time their next tier falls due, for one partition.

A clock advance pops only the buckets at or below the clock, so the cost of a
tick follows the number of due users, not the number of users. Each user sits
in exactly one bucket (moves are exact: the caller passes the old due time),
so no stale entries pile up. It lives in memory and is rebuilt from the user
table after a restart or a rebalance.
"""

from __future__ import annotations

import heapq


class DueIndex:
    """``due_ms`` buckets of width ``bucket_ms`` holding user ids."""

    __slots__ = ("_bucket_ms", "_buckets", "_heap")

    def __init__(self, bucket_ms: int) -> None:
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        self._bucket_ms = bucket_ms
        self._buckets: dict[int, set[str]] = {}
        self._heap: list[int] = []

    def __len__(self) -> int:
        return sum(len(users) for users in self._buckets.values())

    def add(self, user_id: str, due_ms: int) -> None:
        bucket = due_ms // self._bucket_ms
        users = self._buckets.get(bucket)
        if users is None:
            users = self._buckets[bucket] = set()
            heapq.heappush(self._heap, bucket)
        users.add(user_id)

    def discard(self, user_id: str, due_ms: int) -> None:
        users = self._buckets.get(due_ms // self._bucket_ms)
        if users is not None:
            users.discard(user_id)

    def move(self, user_id: str, old_due_ms: int | None, new_due_ms: int | None) -> None:
        if old_due_ms == new_due_ms:
            return
        if old_due_ms is not None:
            self.discard(user_id, old_due_ms)
        if new_due_ms is not None:
            self.add(user_id, new_due_ms)

    def next_bucket_start_ms(self) -> int | None:
        """The start of the earliest non-empty bucket (``None`` when empty)."""
        while self._heap:
            bucket = self._heap[0]
            if self._buckets.get(bucket):
                return bucket * self._bucket_ms
            heapq.heappop(self._heap)
            self._buckets.pop(bucket, None)
        return None

    def pop_candidates(self, clock_ms: int) -> list[str]:
        """Remove and return users of every bucket that starts at or before ``clock_ms``.

        Some of them may not be due yet (their bucket straddles the clock); the
        caller re-adds those with their due time.
        """
        out: list[str] = []
        limit = clock_ms // self._bucket_ms
        heap = self._heap
        while heap and heap[0] <= limit:
            bucket = heapq.heappop(heap)
            users = self._buckets.pop(bucket, None)
            if users:
                out.extend(users)
        out.sort()  # deterministic emission order regardless of set order
        return out

    def clear(self) -> None:
        self._buckets.clear()
        self._heap.clear()
