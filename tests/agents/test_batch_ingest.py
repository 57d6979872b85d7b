"""The batch ingest's table writes: coalesced per key, with the record's partition.

A real Faust app and tables (memory store, no broker); the producer records
what it is asked to send. End to end (real Kafka, kill -9, rebalances) the
batch path runs in tests/integration/test_worker.py and the fault suite.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.worker.batch_ingest import BatchIngest, BatchTable, BatchWrites, Contiguity
from agents.worker.checkpoint import mark_sought, run_to_end
from agents.worker.metrics import Metrics
from agents.worker.runtime import TableStore
from agents.worker.wiring import build_worker
from streams.app import create_app
from streams.settings import load_settings
from tables.errors import ConfigurationError


class RecordingProducer:
    """Stands in for Faust's producer: keeps ``(topic, key, value, partition)``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []

    async def send(
        self, topic: str, key: bytes, value: bytes | None, partition: int, *_: Any
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_writes_coalesce_per_key_and_keep_the_input_partition() -> None:
    engine_app = create_app(load_settings(partitions=4).with_generated_secrets())
    writes = BatchWrites()
    users = BatchTable(engine_app.users, writes)
    clocks = BatchTable(engine_app.clocks, writes)
    writes.partition = 2
    users[b"ann"] = b"v1"
    users[b"ann"] = b"v2"  # the newest value wins
    clocks[b"2"] = b"clock"
    writes.partition = 3
    users[b"bob"] = b"b1"
    users.pop(b"bob")  # a deletion is a tombstone
    assert engine_app.users.get(b"ann") == b"v2"  # readable at once
    assert engine_app.users.get(b"bob") is None
    assert engine_app.users.data._key_partition[b"ann"] == 2
    producer = RecordingProducer()
    assert await writes.publish(producer) == 3
    users_topic = engine_app.users.changelog_topic.get_topic_name()
    clocks_topic = engine_app.clocks.changelog_topic.get_topic_name()
    assert sorted(producer.sent, key=lambda s: s[1]) == [
        (clocks_topic, b"2", b"clock", 2),
        (users_topic, b"ann", b"v2", 2),
        (users_topic, b"bob", None, 3),
    ]
    assert writes.pending() == 0
    assert await writes.publish(producer) == 0  # nothing left to send


async def test_a_failed_changelog_write_raises() -> None:
    engine_app = create_app(load_settings(partitions=4).with_generated_secrets())
    writes = BatchWrites()
    BatchTable(engine_app.users, writes)[b"ann"] = b"v1"

    class FailingProducer:
        async def send(self, *_: Any) -> asyncio.Future[None]:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(OSError("broker gone"))
            return future

    with pytest.raises(OSError):
        await writes.publish(FailingProducer())


class GatedProducer(RecordingProducer):
    """Records sends at once; their futures resolve only when ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def send(
        self, topic: str, key: bytes, value: bytes | None, partition: int, *_: Any
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        gate = self.gate

        async def written() -> None:
            await gate.wait()

        return asyncio.ensure_future(written())


async def test_a_cancelled_fetcher_lets_its_batch_publish_the_changelog_first() -> None:
    engine_app = create_app(load_settings(partitions=4).with_generated_secrets())
    writes = BatchWrites()
    BatchTable(engine_app.users, writes)[b"ann"] = b"churned"
    producer = GatedProducer()
    published: list[int] = []

    async def batch() -> None:
        published.append(await writes.publish(producer))

    fetcher = asyncio.ensure_future(run_to_end(batch()))
    await asyncio.sleep(0.01)
    assert len(producer.sent) == 1 and not published  # the write is in flight
    fetcher.cancel()  # Faust's stop, then its repeated cancels while it waits
    await asyncio.sleep(0.01)
    fetcher.cancel()
    await asyncio.sleep(0.01)
    assert not fetcher.done()  # still waiting for the batch
    producer.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await fetcher
    assert published == [1]  # the changelog went out before the fetcher ended


async def test_a_batch_that_never_ends_is_cancelled_after_the_bound() -> None:
    stuck = asyncio.Event()
    ended: list[str] = []

    async def batch() -> None:
        try:
            await stuck.wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    fetcher = asyncio.ensure_future(run_to_end(batch(), bound_s=0.05))
    await asyncio.sleep(0.01)
    fetcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetcher
    await asyncio.sleep(0.01)
    assert ended == ["cancelled"]


async def test_a_failing_batch_raises_through_run_to_end() -> None:
    async def batch() -> None:
        raise OSError("broker gone")

    with pytest.raises(OSError):
        await run_to_end(batch())


def test_batch_ingest_routes_every_table_write_through_the_batch_writer() -> None:
    settings = load_settings(partitions=4, ingest="auto").with_generated_secrets()
    worker = build_worker(settings, CollectorRegistry(), web_enabled=False)
    runtime = worker.runtime
    assert isinstance(runtime.store.table, BatchTable)
    assert isinstance(runtime.erasures.store.table, BatchTable)
    assert isinstance(runtime._clocks, BatchTable)
    assert isinstance(worker.batch, BatchIngest)
    # the consumer Faust creates applies the input topic per fetch
    drain = worker.app.consumer._drain_messages
    assert drain.__func__.__qualname__ == "install.<locals>.drain_messages"


def test_a_worker_on_rocksdb_takes_the_batch_path_on_auto() -> None:
    settings = load_settings(partitions=4, ingest="auto", store="rocksdb://")
    worker = build_worker(settings.with_generated_secrets(), CollectorRegistry(), web_enabled=False)
    assert isinstance(worker.batch, BatchIngest)
    assert isinstance(worker.runtime.store.table, BatchTable)


def test_the_stream_path_on_rocksdb_is_refused() -> None:
    settings = load_settings(partitions=4, ingest="stream", store="rocksdb://")
    with pytest.raises(ConfigurationError, match="memory://"):
        build_worker(settings.with_generated_secrets(), CollectorRegistry(), web_enabled=False)


def test_a_fetch_after_recovery_resumed_is_applied_while_faust_still_rebalances() -> None:
    """Faust resumes the flow before it ends the rebalance; records fetched in
    between are current (they were once dropped unacknowledged: a stall)."""
    settings = load_settings(partitions=4, ingest="batch").with_generated_secrets()
    worker = build_worker(settings, CollectorRegistry(), web_enabled=False)
    app, batch = worker.app, worker.batch
    assert batch is not None
    message = types.SimpleNamespace(generation_id=app.consumer_generation_id)
    app.rebalancing = True
    app.flow_control.resume()
    app.consumer.resume_flow()
    assert batch._stale(message)  # not yet sought to the committed offsets
    mark_sought(app.consumer, app.consumer_generation_id)
    assert not batch._stale(message)
    app.consumer.stop_flow()  # a revoke begins
    assert batch._stale(message)
    app.consumer.resume_flow()
    old = types.SimpleNamespace(generation_id=app.consumer_generation_id - 1)
    assert batch._stale(old)


def test_contiguity_holds_a_record_after_a_hole_until_the_hole_is_seen_twice() -> None:
    guard = Contiguity()
    tp = "events-0"

    def check(tp: str, generation: int, offset: int, committed: int | None) -> int | None:
        return guard.check(tp, offset, guard.expected(tp, generation, committed))

    assert check(tp, 1, 100, committed=100) is None  # the committed offset: go
    guard.applied(tp, 1, 100)
    assert check(tp, 1, 101, committed=100) is None  # contiguous
    guard.applied(tp, 1, 101)
    assert check(tp, 1, 180, committed=100) == 102  # a hole: read again from 102
    assert check(tp, 1, 102, committed=100) is None  # the records were there
    guard.applied(tp, 1, 102)
    assert check(tp, 1, 150, committed=100) == 103
    assert check(tp, 1, 150, committed=100) is None  # the same hole again: a real one
    guard.applied(tp, 1, 150)
    assert check(tp, 1, 120, committed=100) is None  # read again after a seek back
    assert check(tp, 2, 500, committed=400) == 400  # a new generation: the committed
    assert check("events-1", 2, 7, committed=None) is None  # nothing known: go


class FakeConsumer:
    def __init__(self, generation: int) -> None:
        self.flow_active = True
        self._committed_offset: dict[str, int] = {}
        self.acked: list[int] = []
        self.sought: list[tuple[str, int]] = []
        self.gaps: list[tuple[str, int, int]] = []
        mark_sought(self, generation)

    def ack(self, message: Any) -> None:
        self.acked.append(message.offset)

    async def seek(self, tp: str, offset: int) -> None:
        self.sought.append((tp, offset))

    async def _add_gap(self, tp: str, first: int, last: int) -> None:
        self.gaps.append((tp, first, last))


class FakeRuntime:
    def __init__(self) -> None:
        self.outputs: list[Any] | None = None
        self.handled: list[int] = []
        self.store = TableStore({})
        self.metrics = Metrics(CollectorRegistry())

    async def handle_message(self, message: Any) -> None:
        self.handled.append(message.offset)


def _fake_ingest() -> tuple[BatchIngest, FakeConsumer, FakeRuntime]:
    consumer = FakeConsumer(generation=3)
    app = types.SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=3,
        flow_control=types.SimpleNamespace(is_active=lambda: True),
        producer=RecordingProducer(),
        monitor=types.SimpleNamespace(stream_inbound_time={}),
    )
    runtime = FakeRuntime()
    return BatchIngest(app, runtime, "status"), consumer, runtime  # type: ignore[arg-type]


def _records(*offsets: int) -> list[Any]:
    return [
        types.SimpleNamespace(tp="events-0", partition=0, offset=o, generation_id=3)
        for o in offsets
    ]


async def test_records_after_a_hole_are_not_applied_and_the_partition_is_read_again() -> None:
    """The fault run's loss: a fetch that starts past the committed offset must
    not be applied and acknowledged (the commit would jump over the hole)."""
    ingest, consumer, runtime = _fake_ingest()
    consumer._committed_offset["events-0"] = 4629
    await ingest.on_batch(_records(7555, 7556))
    assert runtime.handled == [] and consumer.acked == []
    assert consumer.sought == [("events-0", 4629)]
    await ingest.on_batch(_records(4629, 4630))  # read again from the committed offset
    assert runtime.handled == consumer.acked == [4629, 4630]
    await ingest.on_batch(_records(4631, 4700, 4701))  # a hole inside a batch
    assert runtime.handled == consumer.acked == [4629, 4630, 4631]
    assert consumer.sought[-1] == ("events-0", 4632)
    await ingest.on_batch(_records(4700, 4701))  # the same hole again: nothing is there
    assert runtime.handled[-2:] == consumer.acked[-2:] == [4700, 4701]
    assert consumer.gaps == [("events-0", 4632, 4699)]  # committable, as Faust's gaps are


async def test_a_batch_fetched_during_the_seek_waits_for_it() -> None:
    """Seen in CI: a fetch returned while Faust sought the new assignment; the
    batch was dropped and, with no later records, never read again."""
    ingest, consumer, runtime = _fake_ingest()
    mark_sought(consumer, 2)  # perform_seek not done for generation 3

    async def seek_ends() -> None:
        await asyncio.sleep(0.05)
        mark_sought(consumer, 3)

    ending = asyncio.ensure_future(seek_ends())
    await ingest.on_batch(_records(10, 11))
    await ending
    assert runtime.handled == consumer.acked == [10, 11]


async def test_a_batch_whose_seek_never_ends_is_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agents.worker.batch_ingest.SOUGHT_WAIT_S", 0.05)
    ingest, consumer, runtime = _fake_ingest()
    mark_sought(consumer, 2)
    await ingest.on_batch(_records(10, 11))
    assert runtime.handled == [] and consumer.acked == []
    assert consumer.sought == [("events-0", 10)]  # not skipped: read again from 10


async def test_a_partition_revoked_before_it_is_read_again_is_left_to_its_next_owner() -> None:
    from aiokafka.errors import IllegalStateError

    ingest, consumer, runtime = _fake_ingest()
    consumer._committed_offset["events-0"] = 100

    async def revoked(tp: str, offset: int) -> None:
        raise IllegalStateError(f"{tp} is not assigned")

    consumer.seek = revoked  # type: ignore[method-assign]
    await ingest.on_batch(_records(150))  # must not raise: the fetcher would crash
    assert runtime.handled == [] and consumer.acked == []
