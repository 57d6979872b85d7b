"""Users bucketed by the time their next tier falls due, for one partition.

A clock advance pops only the buckets at or below the clock, so the cost of a
tick follows the number of due users, not the number of users. Each user sits
in exactly one bucket (moves are exact: the caller passes the old due time),
so no stale entries pile up. It lives in memory and is rebuilt from the user
table after a restart or a rebalance.
"""

from __future__ import annotations

import heapq
from typing import Final

_EMPTY: Final = 2**62  # floor of an empty index: above any due time


class DueIndex:
    """``due_ms`` buckets of width ``bucket_ms`` holding user ids.

    Coarse buckets keep memory small (one set per bucket, not per user). Once
    the clock reaches a bucket it becomes "current": its users that are not
    yet due move into a small exact heap of ``(due_ms, user)``, so later clock
    advances pop only users that are really due instead of re-scanning the
    whole straddling bucket on every record.
    """

    __slots__ = ("_bucket_ms", "_buckets", "_current", "_fine", "_fine_due", "_heap", "floor_ms")

    def __init__(self, bucket_ms: int) -> None:
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        self._bucket_ms = bucket_ms
        self._buckets: dict[int, set[str]] = {}
        self._heap: list[int] = []
        self._current = -(2**62)  # buckets at or below this live in the exact heap
        self._fine: list[tuple[int, str]] = []
        self._fine_due: dict[str, int] = {}
        # A lower bound of every due time held: lowered by ``add``, made exact
        # by ``next_bucket_start_ms``, so a caller can skip the look in O(1).
        self.floor_ms = _EMPTY

    def __len__(self) -> int:
        return sum(len(users) for users in self._buckets.values()) + len(self._fine_due)

    def add(self, user_id: str, due_ms: int) -> None:
        bucket = due_ms // self._bucket_ms
        if bucket <= self._current:
            if due_ms < self.floor_ms:
                self.floor_ms = due_ms
            self._fine_due[user_id] = due_ms
            heapq.heappush(self._fine, (due_ms, user_id))
            return
        start_ms = bucket * self._bucket_ms
        if start_ms < self.floor_ms:
            self.floor_ms = start_ms  # the bucket's start: moves within it keep the bound
        users = self._buckets.get(bucket)
        if users is None:
            users = self._buckets[bucket] = set()
            heapq.heappush(self._heap, bucket)
        users.add(user_id)

    def discard(self, user_id: str, due_ms: int) -> None:
        bucket = due_ms // self._bucket_ms
        if bucket <= self._current:
            if self._fine_due.get(user_id) == due_ms:
                del self._fine_due[user_id]  # its heap entry is now stale, skipped on pop
            return
        users = self._buckets.get(bucket)
        if users is not None:
            users.discard(user_id)

    def move(self, user_id: str, old_due_ms: int | None, new_due_ms: int | None) -> None:
        if old_due_ms == new_due_ms:
            return
        if old_due_ms is not None:
            if new_due_ms is not None:
                bucket = old_due_ms // self._bucket_ms
                if bucket == new_due_ms // self._bucket_ms and bucket > self._current:
                    return  # the same coarse bucket: nothing to change
            self.discard(user_id, old_due_ms)
        if new_due_ms is not None:
            self.add(user_id, new_due_ms)

    def next_bucket_start_ms(self) -> int | None:
        """A lower bound of the earliest due time held (``None`` when empty)."""
        fine = self._fine
        while fine and self._fine_due.get(fine[0][1]) != fine[0][0]:
            heapq.heappop(fine)
        earliest = fine[0][0] if fine else None
        while self._heap:
            bucket = self._heap[0]
            if self._buckets.get(bucket):
                start = bucket * self._bucket_ms
                found = start if earliest is None else min(start, earliest)
                self.floor_ms = found
                return found
            heapq.heappop(self._heap)
            self._buckets.pop(bucket, None)
        self.floor_ms = _EMPTY if earliest is None else earliest
        return earliest

    def pop_candidates(self, clock_ms: int) -> list[str]:
        """Remove and return users that may be due at ``clock_ms``.

        Users of buckets the clock has just reached are all returned (the
        caller re-adds those not yet due, which then land in the exact heap);
        from the exact heap only users due at or before the clock come out.
        """
        out: list[str] = []
        limit = clock_ms // self._bucket_ms
        heap = self._heap
        while heap and heap[0] <= limit:
            bucket = heapq.heappop(heap)
            users = self._buckets.pop(bucket, None)
            if users:
                out.extend(users)
        if limit > self._current:
            self._current = limit
        fine = self._fine
        fine_due = self._fine_due
        while fine and fine[0][0] <= clock_ms:
            due_ms, user_id = heapq.heappop(fine)
            if fine_due.get(user_id) == due_ms:
                del fine_due[user_id]
                out.append(user_id)
        out.sort()  # deterministic emission order regardless of set order
        return out

    def clear(self) -> None:
        self.floor_ms = _EMPTY
        self._buckets.clear()
        self._heap.clear()
        self._fine.clear()
        self._fine_due.clear()
        self._current = -(2**62)
