"""Erasure in the worker: ``$erase`` handling and suppression of erased users' late events.

Owns one ``tables.erasure.ErasureLedger`` per input partition, persisted in
the Faust ``erased`` table under ``"{P}:{salted hash}"`` keys. Every table
write happens while the agent processes a record of partition P (the erasure
itself, an event met after the window, a tick expiring entries), so it lands
in changelog partition P and recovers on the worker that owns P. The user's
state goes through ``TableStore.delete`` (``PartitionEngine.forget``), which
tells the store's observers (status topic tombstone, Redis mirror).
(The request writer, ``engagement erase``, is ``agents.ops.erase``.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from agents.worker.metrics import Metrics
from streams.records import Erase
from streams.settings import Settings
from tables.engine import PartitionEngine
from tables.erasure import (
    ErasureLedger,
    erase_is_current,
    pack_until,
    parse_suppression_key,
    unpack_until,
    window_start_ms,
)

log = logging.getLogger(__name__)

APPLIED: Final = "applied"
STALE: Final = "stale"
SUPPRESSED: Final = "suppressed"


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
    """The ledgers of the partitions this worker handles."""

    def __init__(self, table: Any, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = TableSuppressionStore(table)
        secret = settings.erasure_salt.get_secret_value() if settings.erasure_salt else ""
        if not secret:
            log.warning("ENGAGEMENT_ERASURE_SALT is empty: erased users' hashes are unsalted")
        self._salt = secret.encode()
        self._ledgers: dict[int, ErasureLedger] = {}

    def _new_ledger(self, partition: int) -> ErasureLedger:
        return ErasureLedger(partition, self._salt, self.settings.erasure_suppress_ms, self.store)

    def ledger(self, partition: int) -> ErasureLedger:
        ledger = self._ledgers.get(partition)
        if ledger is None:
            ledger = self._ledgers[partition] = self._new_ledger(partition)
            ledger.load(self.store.entries([partition])[partition])
            self._gauge(ledger)
        return ledger

    def rebuild(self, partitions: Iterable[int]) -> None:
        """Fresh ledgers for ``partitions`` from the recovered table; others dropped."""
        wanted = set(partitions)
        entries = self.store.entries(wanted)
        self._ledgers = {}
        for partition in wanted:
            ledger = self._ledgers[partition] = self._new_ledger(partition)
            ledger.load(entries[partition])
            self._gauge(ledger)

    def apply(self, engine: PartitionEngine, record: Erase, append_ms: int) -> bool:
        """Handle a verified ``$erase``: forget the user, start suppressing; False if stale."""
        if not erase_is_current(record.issued_ms, append_ms, self.settings.max_future_ms):
            self.metrics.erasures.labels(outcome=STALE).inc()
            return False
        engine.forget(record.user_id)
        start_ms = window_start_ms(
            engine.clock_ms, record.issued_ms, append_ms, self.settings.lateness_ms
        )
        ledger = self.ledger(engine.partition)
        ledger.erase(record.user_id, start_ms)
        self.metrics.erasures.labels(outcome=APPLIED).inc()
        self._gauge(ledger)
        return True

    def active(self, partition: int) -> bool:
        """Whether any erased user of ``partition`` is still suppressed (cheap: per event)."""
        ledger = self._ledgers.get(partition)
        if ledger is None:
            ledger = self.ledger(partition)
        return bool(ledger)

    def suppresses(self, partition: int, user_id: str, clock_ms: int) -> bool:
        """Whether an event of ``user_id`` is dropped (the partition clock already
        includes the event's own contribution)."""
        ledger = self.ledger(partition)
        if not ledger:
            return False
        before = len(ledger)
        dropped = ledger.suppresses(user_id, clock_ms)
        if len(ledger) != before:
            self._gauge(ledger)
        return dropped

    def expire(self, partition: int, clock_ms: int) -> None:
        """Drop entries whose window the partition clock has passed (on ticks)."""
        ledger = self._ledgers.get(partition)
        if ledger and ledger.expire(clock_ms):
            self._gauge(ledger)

    def _gauge(self, ledger: ErasureLedger) -> None:
        self.metrics.erasure_suppressions.labels(partition=str(ledger.partition)).set(len(ledger))
