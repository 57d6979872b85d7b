"""Erasure in the worker: where the erasure ledgers persist.

The record processor (``tables.processor``) decides ``$erase`` and the
suppression of erased users' late events with one ``tables.erasure.ErasureLedger``
per input partition; its entries persist in the Faust ``erased`` table under
``"{P}:{salted hash}"`` keys. Every table write happens while the agent
processes a record of partition P (the erasure itself, an event met after the
window, a tick expiring entries), so it lands in changelog partition P and
recovers on the worker that owns P. The user's state goes through
``TableStore.delete`` (``PartitionEngine.forget``), which tells the store's
observers (status topic tombstone, Redis mirror).
(The request writer, ``engagement erase``, is ``agents.ops.erase``.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from agents.worker.metrics import Metrics
from streams.settings import Settings
from tables.erasure import pack_until, parse_suppression_key, unpack_until
from tables.processor import LedgerWrite

log = logging.getLogger(__name__)


class TableSuppressionStore:
    """``SuppressionStore`` over the Faust ``erased`` table (UTF-8 keys, 8-byte values)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> int | None:
        return unpack_until(self.table.get(key.encode()))

    def put(self, key: str, until_ms: int) -> None:
        self.table[key.encode()] = pack_until(until_ms)

    def delete(self, key: str) -> None:
        self.table.pop(key.encode(), None)

    def entries(self, partitions: Iterable[int]) -> dict[int, list[tuple[str, int]]]:
        """Stored ``(hash, until_ms)`` per wanted partition (the table is small)."""
        wanted = set(partitions)
        out: dict[int, list[tuple[str, int]]] = {p: [] for p in wanted}
        for raw_key, blob in self.table.items():
            parsed = parse_suppression_key(raw_key.decode(errors="replace"))
            until_ms = unpack_until(blob)
            if parsed is None or until_ms is None or parsed[0] not in wanted:
                continue
            out[parsed[0]].append((parsed[1], until_ms))
        return out


class Erasures:
    """Where the processors' erasure ledgers persist, and their metrics."""

    def __init__(self, table: Any, settings: Settings, metrics: Metrics) -> None:
        self.metrics = metrics
        self.store = TableSuppressionStore(table)
        if not settings.erasure_salt or not settings.erasure_salt.get_secret_value():
            log.warning("ENGAGEMENT_ERASURE_SALT is empty: erased users' hashes are unsalted")

    def entries(self, partitions: Iterable[int]) -> dict[int, list[tuple[str, int]]]:
        """The stored ``(hash, until_ms)`` of each wanted partition (a ledger's load)."""
        return self.store.entries(partitions)

    def persist(self, writes: Iterable[LedgerWrite]) -> None:
        """Write a ledger's changes (``until_ms`` ``None``: the entry is gone)."""
        for key, until_ms in writes:
            if until_ms is None:
                self.store.delete(key)
            else:
                self.store.put(key, until_ms)

    def count(self, outcome: str) -> None:
        """One ``$erase`` handled: ``applied`` or ``stale``."""
        self.metrics.erasures.labels(outcome=outcome).inc()

    def gauge(self, partition: int, suppressed_users: int) -> None:
        self.metrics.erasure_suppressions.labels(partition=str(partition)).set(suppressed_users)
