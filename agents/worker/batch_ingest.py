"""The batch ingest path (``ENGAGEMENT_INGEST=batch``): whole fetches beneath Faust's stream.

Faust hands every fetched record to its conductor, a channel queue, a
``Stream`` and an ``Event`` one at a time (docs/BATCH-INGEST.md measured its
fetch loop alone at 29 µs per record). Here the consumer's drain loop is
replaced for the input topic only: each fetch of input records goes to
``BatchIngest.on_batch`` as one list, while Faust keeps the group, the
assignment, table recovery, the changelog topics and the commit loop; other
topics (changelog records while recovering) take Faust's own path.

One batch, in order:

1. each record goes through ``Runtime.handle`` (decode, model, metrics) as
   in stream mode; table writes land in the table's memory store at once
   and are remembered per key (``BatchWrites``: the newest value wins);
   outputs (signals, lifecycle, DLQ) are sent and their futures kept;
2. the outputs are awaited: delivered, or the worker crashes;
3. one changelog record per changed key goes out, with the record's input
   partition (Faust's ``table[key] = value`` takes it from the current
   event, and there is none here), and is awaited;
4. only then are the records acknowledged, in offset order, so every offset
   Faust commits has its state and outputs on the broker (the status
   writer's ``flush_before_commit`` still runs before each commit).

Only contiguous records are applied (``Contiguity``): a record after a hole
in what this worker has applied (or the committed offset) is not applied;
its partition is read again from the hole, and a hole seen twice in a row
is a real one (transaction markers, compaction), marked as a gap for the
commit. Records are applied only once Faust has sought the assignment to
its committed offsets (``perform_seek``). A fault run found a worker that,
just after its recovery, applied a partition from its end onward while the
commit jumped over the ~2,800 records before it (docs/BATCH-INGEST.md).

A rebalance stops a batch between records: the rest is neither applied nor
acknowledged, and the next owner reads it again from the committed offset.
The revoke handler waits (``idle``) for a batch in flight to publish, so
the next owner's changelog never lacks a state this worker holds. A stop or
a cancelled fetcher does not cut a batch short either (``run_to_end``): the
observers (status writer, Redis mirror) act while records are applied, so a
batch cut before its changelog went out would leave them ahead of the table.
Needs the memory store (``memory://``): RocksDB writes need a current event.
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.errors import IllegalStateError

from agents.worker.runtime import Runtime
from tables.errors import ConfigurationError

log = logging.getLogger(__name__)
OnBatch = Callable[[list[Any]], Awaitable[None]]
FINISH_ON_CANCEL_S = 15.0  # how long a cancelled fetcher lets its batch in flight finish
SOUGHT_GENERATION = "_engagement_sought_generation"  # set on the consumer by ``install``
SOUGHT_WAIT_S = 30.0  # how long a batch fetched during Faust's seek waits for it to end
SOUGHT_POLL_S = 0.01


async def run_to_end(batch: Awaitable[None], bound_s: float = FINISH_ON_CANCEL_S) -> None:
    """Await ``batch``; when the caller is cancelled, let the batch finish first.

    Faust cancels the fetcher on stop and on some rebalances (and cancels it
    again every second while it waits). The batch runs on; the cancellation
    is re-raised once it has ended, or after ``bound_s``, when the batch is
    cancelled too (nothing of it is acknowledged, so it is read again)."""
    task = asyncio.ensure_future(batch)
    loop = asyncio.get_running_loop()
    deadline_s: float | None = None
    while not task.done():
        remaining_s = None if deadline_s is None else deadline_s - loop.time()
        if remaining_s is not None and remaining_s <= 0:
            log.warning("batch ingest: a batch did not finish %.0f s after a cancel", bound_s)
            task.cancel()
            break
        try:
            await asyncio.wait({task}, timeout=remaining_s)
        except asyncio.CancelledError:
            if deadline_s is None:
                deadline_s = loop.time() + bound_s
    if task.done() and not task.cancelled():
        task.result()  # a failed batch raises, cancelled or not
    if deadline_s is not None or task.cancelled():
        raise asyncio.CancelledError


class BatchWrites:
    """Table writes of one batch, coalesced per key: ``(table, partition, value)``."""

    def __init__(self) -> None:
        self.partition = 0  # the input partition of the record being handled
        self.pending: dict[tuple[int, bytes], tuple[Any, int, bytes | None]] = {}

    def changed(self, table: Any, key: bytes, value: bytes | None) -> None:
        self.pending[(id(table), key)] = (table, self.partition, value)

    async def publish(self, producer: Any) -> int:
        """Send one changelog record per changed key and wait until all are written."""
        if not self.pending:
            return 0
        futures = []
        for (_table_id, key), (table, partition, value) in self.pending.items():
            topic = table.changelog_topic.get_topic_name()
            futures.append(await producer.send(topic, key, value, partition, None, None))
        count = len(self.pending)
        self.pending.clear()
        for future in futures:
            await future  # a failed write raises: the batch is not acknowledged
        return count


class BatchTable:
    """A Faust table whose writes go to its memory store and to ``BatchWrites``."""

    def __init__(self, table: Any, writes: BatchWrites) -> None:
        self._table = table
        self._writes = writes
        store = table.data
        self._store = store
        self._key_partition: dict[bytes, int] | None = getattr(store, "_key_partition", None)
        # the memory store's own dict: reads without the table's mapping layers
        self._read = store.data.get if isinstance(getattr(store, "data", None), dict) else table.get

    def get(self, key: bytes, default: Any = None) -> Any:
        return self._read(key, default)

    def items(self) -> Any:
        return self._table.items()

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._store[key] = value
        if self._key_partition is not None:
            # so a partition given away drops this key after the next recovery
            self._key_partition[key] = self._writes.partition
        self._writes.changed(self._table, key, value)

    def pop(self, key: bytes, default: Any = None) -> Any:
        value = self._store.pop(key, default)
        if self._key_partition is not None:
            self._key_partition.pop(key, None)
        self._writes.changed(self._table, key, None)
        return value


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

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.writes = BatchWrites()
        self.contiguity = Contiguity()
        self._lock = asyncio.Lock()
        runtime.send_output = self.send_output

    async def send_output(self, topic: Any, key: bytes | None, value: bytes) -> Any:
        """An output record straight to the producer: the batch awaits its future
        before acknowledging (Faust's ``Topic.send`` layers cost more than the event)."""
        return await self.app.producer.send(topic.get_topic_name(), key, value, None, None, None)

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
            or generation != getattr(consumer, SOUGHT_GENERATION, None)
            or not consumer.flow_active
            or not app.flow_control.is_active()
        )

    async def _await_sought(self, message: Any) -> None:
        """A fetch can return while Faust is still seeking the new assignment to
        its committed offsets: wait for that seek (bounded) rather than drop it."""
        app = self.app
        generation = message.generation_id
        waited_s = 0.0
        while (
            generation == app.consumer_generation_id
            and getattr(app.consumer, SOUGHT_GENERATION, None) != generation
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
        await self._await_sought(messages[0])
        async with self._lock:
            runtime = self.runtime
            writes = self.writes
            outputs: list[Any] = []
            runtime.outputs = outputs
            applied = []
            held: dict[Any, int] = {}  # tp -> offset to read it again from
            holes: list[tuple[Any, int, int]] = []  # real holes: (tp, first, last)
            contiguity = self.contiguity
            committed = self.app.consumer._committed_offset
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
                runtime.outputs = None
            for future in outputs:
                await future  # signals, transitions, DLQ records on the broker first
            await writes.publish(self.app.producer)
            if self._stale(messages[0]):
                log.info(
                    "batch ingest: batch not current (a rebalance, or not yet sought): %d of %d "
                    "records applied and published, none acknowledged (read again)",
                    len(applied),
                    len(messages),
                )
                await self._read_again(messages, applied)
                return
            consumer = self.app.consumer
            for tp, first, last in holes:
                await consumer._add_gap(tp, first, last)  # committable: the log has none
            inbound = getattr(self.app.monitor, "stream_inbound_time", None)
            now = time.monotonic()
            for message in applied:
                consumer.ack(message)
                if inbound is not None:
                    inbound[message.tp] = now
            for tp, offset in held.items():
                log.info("batch ingest: a hole in %s before offset %d: read again", tp, offset)
                await self._seek(tp, offset)

    async def idle(self, timeout_s: float) -> bool:
        """Wait until no batch is being applied or published (on revoke)."""
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout_s)
        except TimeoutError:
            return False
        self._lock.release()
        return True


def install(consumer: Any, topic: str, on_batch: OnBatch) -> None:
    """Replace ``consumer``'s drain loop: ``topic``'s records go to ``on_batch`` per fetch.

    The rest of Faust's loop is kept: read offsets, gaps in the log, the
    commit every ``broker_commit_every`` acknowledgements, and the per-record
    callback for every other topic (table changelogs while recovering)."""
    if not hasattr(consumer, "_drain_messages"):
        raise ConfigurationError("this Faust consumer has no drain loop to replace")

    async def drain_messages(self: Any, fetcher: Any) -> None:
        callback = self.callback
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                records = self.getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                batch: list[Any] = []
                skipped = 0
                async for tp, message in records:
                    offset = message.offset
                    read = get_read_offset(tp)
                    if read is not None and offset < read:
                        skipped += 1
                        continue
                    if message.topic == topic:
                        # holes in the input are judged by on_batch (``Contiguity``)
                        batch.append(message)
                    else:
                        if read and offset - read > 1 and acks_enabled_for(message.topic):
                            await self._add_gap(tp, read + 1, offset)
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                if skipped:
                    log.info("batch ingest: %d records before the read offset skipped", skipped)
                if batch:
                    await run_to_end(on_batch(batch))
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    perform_seek = consumer.perform_seek

    async def sought_to_committed() -> None:
        generation = consumer.app.consumer_generation_id
        await perform_seek()
        setattr(consumer, SOUGHT_GENERATION, generation)

    consumer.perform_seek = sought_to_committed
    consumer._drain_messages = types.MethodType(drain_messages, consumer)
    log.info("batch ingest: records of %s are applied per fetch", topic)
