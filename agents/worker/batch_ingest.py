"""The batch ingest path: whole fetches beneath Faust's stream, on both stores.

Faust hands every fetched record to its conductor, a channel queue, a
``Stream`` and an ``Event`` one at a time (docs/BATCH-INGEST.md measured its
fetch loop alone at 29 µs per record). Here the consumer's drain loop is
replaced for the input topic only (``agents.worker.checkpoint.install``): each fetch
of input records goes to ``BatchIngest.on_batch`` as one list, while Faust
keeps the group, the assignment, table recovery, the changelog topics and the
commit loop; other topics (changelog records while recovering) take Faust's
own path.

One batch: each record goes through ``Runtime.handle`` (decode, model,
metrics); table writes are kept per key (``BatchTable``: the newest value
wins) and outputs' futures collected; then ``agents.worker.checkpoint``'s order:
outputs delivered, changelog delivered, local store written, records
acknowledged.

Only contiguous records are applied (``Contiguity``): a record after a hole
in what this worker has applied (or the committed offset) is not applied;
its partition is read again from the hole, and a hole seen twice in a row
is a real one (transaction markers, compaction), marked as a gap for the
commit. Records are applied only once Faust has sought the assignment to
its committed offsets (``perform_seek``): a fault run found a worker that,
just after its recovery, applied a partition from its end onward while the
commit jumped over the records before it.

A rebalance stops a batch between records: the rest is neither applied nor
acknowledged, and the next owner reads it again from the committed offset.
The revoke handler waits (``idle``, bounded) for a batch in flight to
publish, so the next owner's changelog usually holds every state this worker
holds; then it closes the fence (``revoke``, ``agents.worker.fence``): a
batch still in flight sends nothing more for the revoked partitions and is
abandoned, its writes to the memory store undone, its pending changelog
dropped, its processors rebuilt from the tables after the rebalance, and
none of its records acknowledged. A stop or
a cancelled fetcher does not cut a batch short either (``run_to_end``): the
observers (status writer, Redis mirror) act while records are applied, so a
batch cut before its changelog went out would leave them ahead of the table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, ItemsView
from typing import Any

from aiokafka.errors import IllegalStateError

from agents.worker.checkpoint import (
    LocalStore,
    acknowledge,
    committed_offsets,
    sought_generation,
)
from agents.worker.delivery import Outbox, publish_changelog
from agents.worker.fence import Fence, Fenced, PartitionSender
from agents.worker.runtime import Runtime

log = logging.getLogger(__name__)
SOUGHT_WAIT_S = 30.0  # how long a batch fetched during Faust's seek waits for it to end
SOUGHT_POLL_S = 0.01


class BatchWrites:
    """The table writes of one batch: which tables, and the input partition of
    the record being applied (a table write lands in that changelog partition)."""

    def __init__(self) -> None:
        self.partition = 0
        self.applying = False  # reads may use ``partition`` (RocksDB: one db per partition)
        self.fenced = False  # the batch was abandoned: its writes are dropped
        self.tables: list[BatchTable] = []

    def pending(self) -> int:
        return sum(len(table.pending) for table in self.tables)

    async def publish(self, producer: Any) -> int:
        """Send one changelog record per changed key, wait until all are written,
        then write the local stores that wait for it; returns how many."""
        changes = [
            (table.local, (key, partition, value))
            for table in self.tables
            for key, (partition, value) in table.pending.items()
        ]
        if not changes:
            return 0
        offsets = await publish_changelog(producer, changes)  # a failed write raises
        for table in self.tables:
            if table.pending:
                rows = ((key, p, value) for key, (p, value) in table.pending.items())
                table.local.write(rows, offsets.get(table.local, {}))
                table.local.keep()
                table.pending = {}
        return len(changes)

    def abandon(self) -> int:
        """Drop the batch's writes (it met the fence): the memory store as it was
        before the batch, the pending changelog gone, later writes of the batch
        ignored; returns how many keys were changed."""
        self.fenced = True
        dropped = 0
        for table in self.tables:
            dropped += max(len(table.pending), table.local.undo())
            table.pending = {}
        return dropped


class BatchTable:
    """A Faust table as the batch writes it: changes kept per key for the
    changelog; the memory store written at once, RocksDB after the changelog."""

    def __init__(self, table: Any, writes: BatchWrites) -> None:
        self._table = table
        self._writes = writes
        self.local = LocalStore(table)
        self.pending: dict[bytes, tuple[int, bytes | None]] = {}
        self._read = self.local.reader()
        writes.tables.append(self)

    def get(self, key: bytes, default: Any = None) -> Any:
        entry = self.pending.get(key)
        if entry is not None:
            value = entry[1]
        else:
            writes = self._writes
            value = self._read(key, writes.partition if writes.applying else None)
        return default if value is None else value

    def items(self) -> ItemsView[bytes, bytes] | Any:
        if not (self.local.deferred and self.pending):
            return self._table.items()
        merged = {key: v for key, v in self._table.items() if key not in self.pending}
        merged.update((key, v) for key, (_, v) in self.pending.items() if v is not None)
        return merged.items()

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._change(key, value)

    def pop(self, key: bytes, default: Any = None) -> Any:
        value = self.get(key, default)
        self._change(key, None)
        return value

    def _change(self, key: bytes, value: bytes | None) -> None:
        if self._writes.fenced:
            return
        partition = self._writes.partition
        self.pending[key] = (partition, value)
        if not self.local.deferred:
            self.local.put_now(key, partition, value)


class Contiguity:
    """Per input partition, the offset the next applied record must have.

    ``expected`` is one past the last record applied in the same generation,
    else the committed offset Faust knows (``None``: unknown, anything goes).
    A record beyond it is held back and ``check`` names the offset to read the
    partition again from; the same hole met twice in a row is accepted."""

    def __init__(self) -> None:
        self._next: dict[Any, tuple[int, int]] = {}  # tp -> (generation, next offset)
        self._holes: dict[Any, tuple[int, int]] = {}  # tp -> (expected, offset) seen once

    def expected(self, tp: Any, generation: int, committed: int | None) -> int | None:
        entry = self._next.get(tp)
        if entry is not None and entry[0] == generation:
            return entry[1]
        return committed

    def check(self, tp: Any, offset: int, expected: int | None) -> int | None:
        """``None``: apply the record; else the offset to read ``tp`` again from
        (``expected`` as ``expected`` gave it)."""
        if expected is None or offset <= expected:
            return None
        hole = (expected, offset)
        if self._holes.get(tp) == hole:
            del self._holes[tp]  # read again and still there: the log has no records in it
            return None
        self._holes[tp] = hole
        return expected

    def applied(self, tp: Any, generation: int, offset: int) -> None:
        self._next[tp] = (generation, offset + 1)
        self._holes.pop(tp, None)


class BatchIngest:
    """Applies fetched input records batch by batch (see the module docstring)."""

    def __init__(self, app: Any, runtime: Runtime, status_topic: str) -> None:
        self.app = app
        self.runtime = runtime
        self.writes = BatchWrites()
        self.contiguity = Contiguity()
        self.fence = Fence(lambda: app.producer, runtime.metrics.fenced_sends)
        self._generation: int | None = None  # of the batch being applied
        self._in_flight: list[Any] | None = None  # its records
        # changelog and status records: fenced by the input partition they are written to
        self._by_partition = PartitionSender(self.fence, lambda: self._generation)
        # status writes decided while applying: delivered with the batch's outputs
        self.outbox = Outbox(lambda: self._by_partition, status_topic)
        self._lock = asyncio.Lock()
        runtime.send_output = self.send_output
        runtime.store.write_partition = self._write_partition

    def _write_partition(self, partition: int) -> None:
        self.writes.partition = partition

    def send_output(
        self,
        topic: Any,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """An output record straight to the producer, fenced by the input partition
        of the record being applied: the batch awaits its future before
        acknowledging (Faust's ``Topic.send`` layers cost more than the event)."""
        name = topic.get_topic_name()
        return self.fence.send(
            self.writes.partition, self._generation, name, key, value, partition, headers
        )

    def tables(self, table: Any) -> BatchTable:
        return BatchTable(table, self.writes)

    def _stale(self, message: Any) -> bool:
        """A revoke has begun (Faust stops the flow first), the record is from an
        older assignment, or Faust has not yet sought this assignment to its
        committed offsets. Not ``app.rebalancing``: it stays set until recovery
        has ended, after the flow resumed, and a fetch in that window is current."""
        app = self.app
        consumer = app.consumer
        generation = message.generation_id
        return (
            generation != app.consumer_generation_id
            or generation != sought_generation(consumer)
            or not consumer.flow_active
            or not app.flow_control.is_active()
            or not self.fence.owns(message.partition, generation)
        )

    async def _await_sought(self, message: Any) -> None:
        """A fetch can return while Faust is still seeking the new assignment to
        its committed offsets: wait for that seek (bounded) rather than drop it."""
        app = self.app
        generation = message.generation_id
        waited_s = 0.0
        while (
            generation == app.consumer_generation_id
            and sought_generation(app.consumer) != generation
            and waited_s < SOUGHT_WAIT_S
        ):
            await asyncio.sleep(SOUGHT_POLL_S)
            waited_s += SOUGHT_POLL_S

    async def _read_again(self, messages: list[Any], applied: list[Any]) -> None:
        """Seek back to the records of ``messages`` not applied, when no rebalance
        will (the generation is current and the flow runs): nothing is skipped."""
        app = self.app
        consumer = app.consumer
        first = messages[0]
        if not (
            first.generation_id == app.consumer_generation_id
            and consumer.flow_active
            and app.flow_control.is_active()
        ):
            return  # a rebalance or a stop: Faust seeks to the committed offsets
        done = {id(message) for message in applied}
        again: dict[Any, int] = {}
        for message in messages:
            if id(message) not in done and message.tp not in again:
                again[message.tp] = message.offset
        for tp, offset in again.items():
            await self._seek(tp, offset)

    async def _seek(self, tp: Any, offset: int) -> None:
        try:
            await self.app.consumer.seek(tp, offset)
        except IllegalStateError:  # revoked meanwhile: the next owner starts there
            log.info("batch ingest: %s was revoked before it was read again", tp)

    async def on_batch(self, messages: list[Any]) -> None:
        try:
            await self._apply(messages)
        except Fenced:
            self._abandon(messages)
        finally:
            self._in_flight = None

    async def _apply(self, messages: list[Any]) -> None:
        """Apply a batch, then the checkpoint's order (raises ``Fenced`` on a revoke)."""
        await self._await_sought(messages[0])
        async with self._lock:
            self._generation = messages[0].generation_id
            self._in_flight = messages
            self.writes.fenced = False
            runtime = self.runtime
            writes = self.writes
            outputs: list[Any] = []
            runtime.outputs = outputs
            applied = []
            held: dict[Any, int] = {}  # tp -> offset to read it again from
            holes: list[tuple[Any, int, int]] = []  # real holes: (tp, first, last)
            contiguity = self.contiguity
            committed = committed_offsets(self.app.consumer)
            writes.applying = True
            runtime.store.hold()  # a user's state packed once per batch
            try:
                for message in messages:
                    if self._stale(message):
                        break  # a rebalance began: the rest is read again by the owner
                    tp = message.tp
                    if tp in held:
                        continue
                    generation = message.generation_id
                    expected = contiguity.expected(tp, generation, committed.get(tp))
                    again = contiguity.check(tp, message.offset, expected)
                    if again is not None:
                        held[tp] = again
                        continue
                    if expected is not None and message.offset > expected:
                        holes.append((tp, expected, message.offset - 1))
                    writes.partition = message.partition
                    await runtime.handle_message(message)
                    applied.append(message)
                    contiguity.applied(tp, generation, message.offset)
            finally:
                runtime.store.release()
                runtime.metrics.flush_records()
                runtime.outputs = None
                writes.applying = False
            # the checkpoint's order (agents.worker.checkpoint): outputs, changelog, store, acks
            await self.outbox.drain()
            outputs.extend(self.outbox.take())
            for future in outputs:
                await future  # signals, transitions, DLQ and status records on the broker first
            await writes.publish(self._by_partition)
            if self._stale(messages[0]):
                log.info(
                    "batch ingest: batch not current (a rebalance, or not yet sought): %d of %d "
                    "records applied and published, none acknowledged (read again)",
                    len(applied),
                    len(messages),
                )
                await self._read_again(messages, applied)
                return
            await acknowledge(self.app, applied, holes)
            for tp, offset in held.items():
                log.info("batch ingest: a hole in %s before offset %d: read again", tp, offset)
                await self._seek(tp, offset)

    def _abandon(self, messages: list[Any]) -> None:
        """The batch met the fence: nothing of it is kept or acknowledged."""
        if self.writes.fenced:
            return  # abandoned by ``revoke`` already
        partitions = sorted({message.partition for message in messages})
        keys = self.writes.abandon()
        self.outbox.discard()
        self.runtime.forget(partitions)  # rebuilt from the tables on the next recovery
        self.runtime.metrics.batches_abandoned.inc()
        log.warning(
            "batch ingest: a batch met the fence (partitions %s revoked): %d records and "
            "%d changed keys abandoned, none acknowledged (the next owner reads them again)",
            partitions,
            len(messages),
            keys,
        )

    def assign(self, partitions: set[int], generation: int) -> None:
        """The input partitions assigned in ``generation`` (their sends may pass)."""
        self.fence.assign(partitions, generation)

    async def revoke(self, partitions: set[int], timeout_s: float) -> None:
        """Close the fence for ``partitions`` before they are let go; a batch still
        in flight is abandoned at once (never a crash: the group waits for this)."""
        await self.fence.revoke(partitions, timeout_s)
        messages = self._in_flight
        if messages is not None:
            self._abandon(messages)

    async def idle(self, timeout_s: float) -> bool:
        """Wait until no batch is being applied or published (on revoke)."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout_s)
        except TimeoutError:
            return False
        self._lock.release()
        return True
