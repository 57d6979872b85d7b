"""Erased users of one partition: a salted hash each, kept for a window on the partition clock.

An erasure removes the user's state and due entry (``PartitionEngine.forget``);
what remains is only ``HMAC-SHA256(ERASURE_SALT, user_id)`` (never the id)
with the partition-clock time until which that user's events are dropped.
Once the clock passes it the entry expires and the user would start as new.

Storage is injected: a Faust table live, a dict in tests.
Store keys carry the partition prefix ``"{P}:{hash}"`` so one store may
hold several partitions (the Faust memory store is one dict for all of them).
Every decision here depends only on the log (the erasure's signed
``issued_ms``, the append time ``R`` and the partition clock), so replaying
the same log drops the same events.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Final, Protocol

HASH_HEX_CHARS: Final = 32  # 128 bits of the HMAC: no collisions in practice


def erased_hash(salt: bytes, user_id: str) -> str:
    """The salted hash kept for an erased user (hex)."""
    digest = hmac.new(salt, user_id.encode(), hashlib.sha256).hexdigest()
    return digest[:HASH_HEX_CHARS]


def suppression_key(partition: int, digest: str) -> str:
    return f"{partition}:{digest}"


def parse_suppression_key(key: str) -> tuple[int, str] | None:
    """``(partition, hash)`` of a store key, ``None`` for a foreign key."""
    prefix, sep, digest = key.partition(":")
    if not sep or not prefix.isdigit() or len(digest) != HASH_HEX_CHARS:
        return None
    return int(prefix), digest


def pack_until(until_ms: int) -> bytes:
    return until_ms.to_bytes(8, "big", signed=True)


def unpack_until(blob: bytes | None) -> int | None:
    if blob is None or len(blob) != 8:
        return None
    return int.from_bytes(blob, "big", signed=True)


def erase_is_current(issued_ms: int, append_ms: int, max_future_ms: int) -> bool:
    """False for a request issued more than ``MAX_FUTURE`` before its append time
    (a copied old request replayed into the topic)."""
    return issued_ms >= append_ms - max_future_ms


def window_start_ms(clock_ms: int, issued_ms: int, append_ms: int, lateness_ms: int) -> int:
    """Where the suppression window starts on the partition clock.

    The partition clock when the erasure is handled; on a partition whose
    clock has not started (or lags), the erasure's own time, capped by the
    broker's append time as an event's time is.
    """
    return max(clock_ms, min(issued_ms, append_ms) - lateness_ms)


class SuppressionStore(Protocol):
    """Where suppression entries persist: ``key -> until_ms``."""

    def get(self, key: str) -> int | None: ...

    def put(self, key: str, until_ms: int) -> None: ...

    def delete(self, key: str) -> None: ...


class DictSuppressionStore:
    """A plain in-memory store (tests)."""

    def __init__(self) -> None:
        self.entries: dict[str, int] = {}

    def get(self, key: str) -> int | None:
        return self.entries.get(key)

    def put(self, key: str, until_ms: int) -> None:
        self.entries[key] = until_ms

    def delete(self, key: str) -> None:
        self.entries.pop(key, None)


class ErasureLedger:
    """The live suppression entries of one partition, mirrored in memory.

    The store is the durable copy; the in-memory view (``hash -> until_ms``)
    makes the common case, a partition with no erased user, cost nothing per
    event, and is rebuilt from the store with :meth:`load` after a restart.
    """

    def __init__(
        self, partition: int, salt: bytes, suppress_ms: int, store: SuppressionStore
    ) -> None:
        self.partition = partition
        self.suppress_ms = suppress_ms
        self._salt = salt
        self._store = store
        # hash -> until_ms; read it, never write it, outside (one dict for its life,
        # so a caller may keep it to test cheaply per event whether any user is suppressed)
        self.until_ms: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.until_ms)

    def __bool__(self) -> bool:
        return bool(self.until_ms)

    def load(self, entries: Iterable[tuple[str, int]]) -> None:
        """Replace the in-memory view with ``(hash, until_ms)`` pairs read from the store."""
        self.until_ms.clear()
        self.until_ms.update(entries)

    def erase(self, user_id: str, start_ms: int) -> int:
        """Start (or extend) suppression of ``user_id``; returns the clock time it ends."""
        digest = erased_hash(self._salt, user_id)
        until_ms = max(start_ms + self.suppress_ms, self.until_ms.get(digest, start_ms))
        self.until_ms[digest] = until_ms
        self._store.put(suppression_key(self.partition, digest), until_ms)
        return until_ms

    def suppresses(self, user_id: str, clock_ms: int) -> bool:
        """Whether an event of ``user_id`` is dropped at ``clock_ms`` (expires lazily)."""
        if not self.until_ms:
            return False
        digest = erased_hash(self._salt, user_id)
        until_ms = self.until_ms.get(digest)
        if until_ms is None:
            return False
        if clock_ms >= until_ms:
            self._drop(digest)
            return False
        return True

    def expire(self, clock_ms: int) -> int:
        """Remove every entry whose window the clock has passed; returns how many."""
        if not self.until_ms:
            return 0
        done = [digest for digest, until_ms in self.until_ms.items() if clock_ms >= until_ms]
        for digest in done:
            self._drop(digest)
        return len(done)

    def _drop(self, digest: str) -> None:
        del self.until_ms[digest]
        self._store.delete(suppression_key(self.partition, digest))
