"""The checkpoint: the order in which a batch of input records becomes durable,
and the one module that uses Faust's private API.

For every batch the batch ingest applies (``agents.worker.batch_ingest``), on both
stores (``memory://`` and ``rocksdb://``):

1. outputs delivered: signals, lifecycle transitions, DLQ records, and the
   status writes decided while the batch was applied
   (``agents.worker.delivery.Outbox``);
2. the state's changelog delivered: one record per changed key, in the input
   partition of the record that changed it
   (``agents.worker.delivery.publish_changelog``);
3. the local store written (``LocalStore.write``): the memory store holds the
   batch's writes already (it dies with the process); RocksDB is written only
   now, together with the changelog offset Faust's recovery starts from,
   kept inside each partition's database, so a restarted worker never finds
   on disk a state whose changelog or outputs are missing;
4. the records acknowledged in offset order (``acknowledge``); before every
   offset commit the status writer's coalesced writes are delivered
   (``before_commit``).

Every send of steps 1 and 2 goes through the fence (``agents.worker.fence``):
after a revoke nothing more is sent for the revoked partitions, and a batch
in flight is abandoned before step 3 (the memory store's writes undone with
``LocalStore.undo``).

A crash at any point leaves the committed offsets at or behind what is
durable: the records after them are read again, their outputs sent again with
the same ids (signals are at least once, docs/CONTRACTS.md), and the model
skips by offset what the changelog already holds, announcing those states to
the status writer and the Redis mirror again.

One Kafka transaction per batch would make steps 1-4 atomic, but the embedded
broker refuses idempotent and transactional producers (``InitProducerId``),
and Faust's exactly-once mode writes the RocksDB offset only on commit through
the same private paths; the order above holds on every broker.

Faust's private API is used only here and only for what its public API lacks:
replacing the consumer's drain loop with whole fetches, the committed and read
offsets, gaps in the log, a before-commit hook, and the stores' databases.
``check_faust`` refuses to start a worker on another faust-streaming version
than the pinned one, or when an attribute relied on is missing.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
import types
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final

import faust
from faust.stores.memory import Store as MemoryStore
from faust.stores.rocksdb import Store as RocksStore
from faust.transport.consumer import Consumer

from agents.worker.delivery import Change, run_to_end
from tables.errors import ConfigurationError

log = logging.getLogger(__name__)

PINNED_FAUST: Final = "0.15.3"  # pyproject.toml pins the same (tests/agents/test_checkpoint.py)
COMMIT_RETRY_S: Final = 1.0
_SOUGHT = "_engagement_sought_generation"  # the generation Faust has sought to committed offsets
_HOOKED = "_engagement_before_commit"
OnBatch = Callable[[list[Any]], Awaitable[None]]

# Private attributes of Faust's classes relied on (checked at start-up) ...
_CLASS_API: Final[tuple[tuple[type, tuple[str, ...]], ...]] = (
    (faust.App, ("_new_consumer", "_consumer")),
    (Consumer, ("_drain_messages", "_commit_offsets", "_add_gap", "perform_seek", "getmany")),
    (RocksStore, ("_db_for_partition", "offset_key", "set_persisted_offset")),
)
# ... and of instances, which Faust sets in ``__init__`` (checked when created).
_CONSUMER_API: Final = (
    "_read_offset",
    "_committed_offset",
    "_commit_every",
    "_n_acked",
    "_stopped",
    "suspend_flow",
    "callback",
)
_MEMORY_API: Final = ("data", "_key_partition")
_ROCKS_API: Final = ("_dbs", "use_rocksdict")


def check_faust(installed: str | None = None) -> None:
    """Refuse to run on a faust-streaming whose private API was not checked."""
    version = installed or importlib.metadata.version("faust-streaming")
    if version != PINNED_FAUST:
        raise ConfigurationError(
            f"faust-streaming {version} is installed; this worker relies on private parts of "
            f"{PINNED_FAUST} (agents/worker/checkpoint.py): install faust-streaming=={PINNED_FAUST}"
        )
    for cls, names in _CLASS_API:
        _require(cls, names, cls.__qualname__)


def _require(obj: Any, names: Iterable[str], what: str) -> None:
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise ConfigurationError(
            f"faust-streaming {PINNED_FAUST}'s {what} lacks {', '.join(missing)}: "
            "the checkpoint (agents/worker/checkpoint.py) cannot run on this Faust"
        )


# ------------------------------------------------------------ the consumer


def replace_drain_loop(app: Any, topic: str, on_batch: OnBatch) -> None:
    """Every consumer of ``app`` hands ``topic``'s records to ``on_batch`` per fetch."""
    new_consumer = app._new_consumer

    def consumer_with_batches() -> Any:
        consumer = new_consumer()
        install(consumer, topic, on_batch)
        return consumer

    app._new_consumer = consumer_with_batches
    if app._consumer is not None:  # created already: replace its loop too
        install(app._consumer, topic, on_batch)


def install(consumer: Any, topic: str, on_batch: OnBatch) -> None:
    """Replace ``consumer``'s drain loop: ``topic``'s records go to ``on_batch`` per fetch.

    The rest of Faust's loop is kept: read offsets, gaps in the log, the
    commit every ``broker_commit_every`` acknowledgements, and the per-record
    callback for every other topic (table changelogs while recovering)."""
    _require(consumer, _CONSUMER_API, "consumer")

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
        await _uncommitted_to_beginning(consumer, topic)
        setattr(consumer, _SOUGHT, generation)

    consumer.perform_seek = sought_to_committed
    consumer._drain_messages = types.MethodType(drain_messages, consumer)
    log.info("batch ingest: records of %s are applied per fetch", topic)


async def _uncommitted_to_beginning(consumer: Any, topic: str) -> None:
    """An assigned input partition without a committed offset (or one at 0) is read
    from its first record, the ``earliest`` policy, not from wherever the consumer
    stands.

    Faust's seek moves only partitions with a committed offset above 0. Records
    fetched while the assignment was being recovered, and not handed on, have
    already moved the consumer's position: without a commit to seek back to they
    were skipped. A worker killed before its first commit and restarted skipped
    its whole backlog that way (tests/integration/test_worker.py)."""
    committed = consumer._committed_offset  # partition -> offset; None or absent: none
    fresh = [tp for tp in consumer.assignment() if tp.topic == topic and not committed.get(tp)]
    if fresh:
        for tp, offset in (await consumer.earliest_offsets(*fresh)).items():
            await consumer.seek(tp, offset)
            consumer._read_offset[tp] = None  # nothing read yet, as after Faust's own seek
        log.info(
            "batch ingest: %d input partitions without a commit: read from the start", len(fresh)
        )


def sought_generation(consumer: Any) -> int | None:
    """The generation whose assignment Faust has sought to its committed offsets."""
    sought: int | None = getattr(consumer, _SOUGHT, None)
    return sought


def mark_sought(consumer: Any, generation: int) -> None:
    """As ``perform_seek`` does for ``generation`` (tests of the batch ingest)."""
    setattr(consumer, _SOUGHT, generation)


def committed_offsets(consumer: Any) -> Any:
    """Faust's committed offset per input partition (the mapping it keeps)."""
    return consumer._committed_offset


def read_offset(consumer: Any, tp: Any) -> int | None:
    """The last offset Faust's fetch loop handed out for ``tp``."""
    read: int | None = consumer._read_offset.get(tp)
    return read


async def acknowledge(app: Any, applied: list[Any], holes: list[tuple[Any, int, int]]) -> None:
    """Step 4: acknowledge the applied records in offset order (their outputs and
    changelog are delivered); ``holes`` are ranges the log has no records in."""
    consumer = app.consumer
    for tp, first, last in holes:
        await consumer._add_gap(tp, first, last)  # committable: the log has none
    inbound = getattr(app.monitor, "stream_inbound_time", None)
    now = time.monotonic()
    for message in applied:
        consumer.ack(message)
        if inbound is not None:
            inbound[message.tp] = now  # else Faust's livelock check logs "stream idle"


def before_commit(
    consumer: Any, flush: Callable[[], Awaitable[bool]], retry_s: float = COMMIT_RETRY_S
) -> None:
    """Make ``consumer`` send and confirm pending status writes before committing offsets.

    Faust has no awaitable before-commit hook (the sensor's
    ``on_commit_initiated`` is synchronous), so this wraps the consumer's
    ``_commit_offsets`` (every commit path goes through it, also the one on
    shutdown). By then Faust has taken the offsets off its list of acked
    offsets: a commit may be late but must not be skipped (the partition
    would never commit again), so unconfirmed writes are retried until they
    are delivered, as Faust's own producer flush before a commit waits too.
    Only a consumer that is stopping gives up (its records are processed
    again by the next owner, never skipped).
    """
    if getattr(consumer, _HOOKED, False):
        return
    original = consumer._commit_offsets

    async def commit_offsets(offsets: Any, start_new_transaction: bool = True) -> bool:
        while not await flush():
            if getattr(consumer, "should_stop", False):
                log.warning("user-status writes not confirmed while stopping: no commit")
                return False
            log.warning("user-status writes not confirmed yet: the commit waits")
            await asyncio.sleep(retry_s)
        return bool(await original(offsets, start_new_transaction=start_new_transaction))

    consumer._commit_offsets = commit_offsets
    setattr(consumer, _HOOKED, True)


# ------------------------------------------------------------ the stores


class LocalStore:
    """Direct reads and writes of one table's local store, with no current event.

    Faust's ``Table.__setitem__`` needs the event being processed (its
    partition) and RocksDB's ``Store._set`` asserts one; a batch has none.
    ``deferred``: the batch keeps its writes aside until its changelog is
    delivered (RocksDB outlives the process; the memory store does not)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.topic: str = table.changelog_topic.get_topic_name()
        store = table.data
        self._store = store
        if isinstance(store, RocksStore):
            _require(store, _ROCKS_API, "RocksDB store")
            if not store.use_rocksdict:
                raise ConfigurationError("the RocksDB store must use rocksdict")
            self.deferred = True
        elif isinstance(store, MemoryStore):
            _require(store, _MEMORY_API, "memory store")
            self.deferred = False
            self._data: MutableMapping[bytes, bytes] = store.data
            self._key_partition: MutableMapping[bytes, int] = store._key_partition
        else:
            raise ConfigurationError(f"no batch writer for the store {type(store).__name__}")
        # memory store: what each key written since ``keep`` held before (``undo``)
        self._before: dict[bytes, tuple[int | None, bytes | None]] = {}

    def reader(self) -> Callable[[bytes, int | None], bytes | None]:
        """``read(key, partition)``; ``partition=None``: not known, every partition is looked in."""
        if not self.deferred:
            data = self._data

            def read_memory(key: bytes, partition: int | None) -> bytes | None:
                return data.get(key)

            return read_memory
        store, table = self._store, self.table

        def read_rocks(key: bytes, partition: int | None) -> bytes | None:
            if partition is not None:
                found: bytes | None = store._db_for_partition(partition).get(key)
                if found is not None:
                    return found
            # Not known, or not there: another task (the Redis mirror's resync, a
            # retried status write) may read a key of another partition while a
            # batch applies a record. Faust's lookup asks every partition's db.
            value: bytes | None = table.get(key)
            return value

        return read_rocks

    def put_now(self, key: bytes, partition: int, value: bytes | None) -> None:
        """Write the memory store at once (not ``deferred``); ``undo`` can take it back."""
        before = self._before
        if key not in before:
            before[key] = (self._key_partition.get(key), self._data.get(key))
        if value is None:
            self._data.pop(key, None)
            self._key_partition.pop(key, None)
        else:
            self._data[key] = value
            # so a partition given away drops this key after the next recovery
            self._key_partition[key] = partition

    def keep(self) -> None:
        """The writes so far are delivered to the changelog: ``undo`` no longer takes them back."""
        self._before.clear()

    def undo(self) -> int:
        """Restore the memory store as it was at ``keep`` (an abandoned batch); returns
        how many keys."""
        restored = len(self._before)
        for key, (partition, value) in self._before.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value
            if value is None or partition is None:
                self._key_partition.pop(key, None)
            else:
                self._key_partition[key] = partition
        self._before.clear()
        return restored

    def write(self, changes: Iterable[Change], offsets: dict[int, int]) -> None:
        """Step 3 for a ``deferred`` store: the changes and, per partition, the last
        changelog offset delivered, in one RocksDB write batch per partition."""
        if not self.deferred:
            return
        from rocksdict import WriteBatch

        batches: dict[int, Any] = {}
        for key, partition, value in changes:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        offset_key = self._store.offset_key
        for partition, batch in batches.items():
            batch.put(offset_key, str(offsets[partition]).encode())
            self._store._db_for_partition(partition).write(batch)
