"""The worker's state in Faust tables: users' states behind ``TableStore`` (with
its observers), and each input partition's values in the clocks table (its
clock and threshold versions, written in that partition)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tables.clock import NEVER
from tables.processor import ClockMark
from tables.state import UserState, pack_state, unpack_state

StateObserver = Callable[[str, UserState | None], None]


class TableStore:
    """``StateStore`` over the Faust users table (packed bytes, UTF-8 keys).

    Observers (the Redis mirror, the status topic) hear of every change:
    ``observer(user_id, state)`` with ``state=None`` for a deletion. They hear
    it *before* the table is written: what they send at once goes into the
    producer's queue ahead of the changelog record, so after a crash a saved
    state never lacks the output derived from it. While a batch of events is
    applied (``hold``) they hear once per changed user, of its newest state.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self.observers: list[StateObserver] = []
        # While a batch is applied (``hold``): the newest state of each user it
        # changed, unpacked; observed, packed and written once (``write_held``).
        self._held: dict[str, UserState] | None = None
        # tells the batch's table writer the changelog partition of the next write
        self.write_partition: Callable[[int], None] | None = None

    def get(self, user_id: str) -> UserState | None:
        held = self._held
        if held is not None:
            state = held.get(user_id)
            if state is not None:
                return state
        blob = self.table.get(user_id.encode())
        return None if blob is None else unpack_state(blob)

    def put(self, user_id: str, state: UserState) -> None:
        if self._held is not None:
            self._held[user_id] = state  # observed when written (``write_held``)
            return
        for observer in self.observers:
            observer(user_id, state)
        self.table[user_id.encode()] = pack_state(state)

    def delete(self, user_id: str) -> None:
        for observer in self.observers:
            observer(user_id, None)
        if self._held is not None:
            self._held.pop(user_id, None)
        self.table.pop(user_id.encode(), None)

    def hold(self) -> None:
        """Keep states changed from now on until ``release`` (a batch of events):
        a user's state is observed, packed and written once per batch, not per
        event, and the observers see the newest state only."""
        if self._held is None:
            self._held = {}

    def write_held(self, restore_partition: int | None = None) -> None:
        """Write the held states to the table, each in its user's partition;
        then the write partition is ``restore_partition`` again."""
        held = self._held
        if not held:
            return
        at, table, observers = self.write_partition, self.table, self.observers
        for user_id, state in held.items():
            for observer in observers:
                observer(user_id, state)
            if at is not None:
                at(state.partition)
            table[user_id.encode()] = pack_state(state)
        held.clear()
        if at is not None and restore_partition is not None:
            at(restore_partition)

    def release(self) -> None:
        """Write the held states to the table and stop holding."""
        self.write_held()
        self._held = None

    def announce(self, user_id: str, state: UserState) -> None:
        """Tell the observers about a state already stored (nothing is written)."""
        for observer in self.observers:
            observer(user_id, state)


def config_key(partition: int) -> bytes:
    """Key of a partition's threshold versions in the clocks table (written in P)."""
    return f"{partition}:config".encode()


def pack_clock(mark: ClockMark) -> bytes:
    return mark.high_ms.to_bytes(8, "big", signed=True) + mark.events_seen_append_ms.to_bytes(
        8, "big", signed=True
    )


def unpack_clock(blob: bytes | None) -> tuple[int, int]:
    if not blob or len(blob) != 16:
        return NEVER, 0
    return int.from_bytes(blob[:8], "big", signed=True), int.from_bytes(
        blob[8:], "big", signed=True
    )
