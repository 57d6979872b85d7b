"""The fence: a revoked partition gets no more sends from this worker, and a
batch in flight across the revoke is abandoned without crashing the worker.

The producer is delayed for real: it awaits before it takes a record into its
log (a slow or paused broker: aiokafka's ``send`` waits for buffer space and
metadata). The records go through a real ``Runtime`` (decode, processor,
outputs) and real Faust tables, on both stores; the consumer stands in for
Faust's. End to end on a broker: tests/integration/test_worker.py.
"""

from __future__ import annotations

import asyncio
import json
import types
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from agents.worker.batch_ingest import BatchIngest
from agents.worker.checkpoint import mark_sought
from agents.worker.fence import Fence, Fenced
from agents.worker.metrics import Metrics
from agents.worker.runtime import Runtime
from agents.worker.wiring import build_worker
from streams.app import create_app
from streams.decode import partition_for
from streams.settings import load_settings

PARTITIONS = 4
GENERATION = 5
DELAY_S = 0.05  # how long the producer waits before it takes a record


class DelayedProducer:
    """A broker's log behind a producer that waits ``DELAY_S`` before taking each
    record of ``delayed`` topics (all, when None); ``started`` is set when a
    delayed send begins to wait."""

    def __init__(self, delayed: str | None = None) -> None:
        self.log: list[tuple[str, bytes | None, bytes | None, int | None]] = []
        self.delayed = delayed
        self.started = asyncio.Event()

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, *_: Any
    ) -> asyncio.Future[Any]:
        if self.delayed is None or topic == self.delayed:
            self.started.set()
            await asyncio.sleep(DELAY_S)
        self.log.append((topic, key, value, partition))
        offset = sum(1 for record in self.log if record[0] == topic and record[3] == partition)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(types.SimpleNamespace(offset=offset - 1, partition=partition))
        return future

    async def flush(self) -> None:
        """Every record taken is delivered at once."""


def _settings(store: str, tmp_path: Path) -> Any:
    # fixed salts: the runs a test compares put each user in the same group
    overrides: dict[str, Any] = {
        "partitions": PARTITIONS,
        "store": store,
        "holdout_salt": "fence-test-holdout-salt",
        "erasure_salt": "fence-test-erasure-salt",
    }
    if store.startswith("rocksdb"):
        overrides["data_dir"] = str(tmp_path)
    return load_settings(**overrides).with_generated_secrets()


def _ingest(store: str, tmp_path: Path, producer: DelayedProducer) -> tuple[BatchIngest, Any]:
    """A batch ingest over a real runtime and tables; the consumer acknowledges into a list."""
    engine_app = create_app(_settings(store, tmp_path))
    consumer = types.SimpleNamespace(flow_active=True, _committed_offset={}, acked=[])
    consumer.ack = lambda message: consumer.acked.append(message.offset)
    mark_sought(consumer, GENERATION)
    app = types.SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=GENERATION,
        flow_control=types.SimpleNamespace(is_active=lambda: True),
        producer=producer,
        monitor=types.SimpleNamespace(),
    )
    runtime = Runtime(engine_app, Metrics(CollectorRegistry()))
    ingest = BatchIngest(app, runtime, engine_app.settings.topic_status)
    runtime.write_tables_through(ingest.tables)
    ingest.assign(set(range(PARTITIONS)), GENERATION)
    return ingest, engine_app


def _records(user: str) -> list[Any]:
    """An event of ``user`` and a record the DLQ takes, in ``user``'s partition."""
    partition = partition_for(user.encode(), PARTITIONS)
    event = {"event_id": "e1", "user_id": user, "type": "login", "ts": 1_700_000_000_000}
    values = [json.dumps(event).encode(), b"not json"]
    return [
        types.SimpleNamespace(
            topic="events",
            tp=f"events-{partition}",
            partition=partition,
            offset=offset,
            key=user.encode(),
            value=value,
            headers=[],
            timestamp=1_700_000_000.0,
            generation_id=GENERATION,
        )
        for offset, value in enumerate(values)
    ]


def _stored(engine_app: Any, key: bytes, partition: int) -> bytes | None:
    store = engine_app.users.data
    if hasattr(store, "_db_for_partition"):  # RocksDB
        found: bytes | None = store._db_for_partition(partition).get(key)
        return found
    value: bytes | None = store.data.get(key)
    return value


async def test_a_batch_applies_and_acknowledges_when_no_revoke_comes(tmp_path: Path) -> None:
    """The reference run for the tests below: the same records, no revoke."""
    producer = DelayedProducer()
    ingest, engine_app = _ingest("memory://", tmp_path, producer)
    records = _records("ann")
    await ingest.on_batch(records)
    topics = {record[0] for record in producer.log}
    changelog = engine_app.users.changelog_topic.get_topic_name()
    assert engine_app.settings.topic_dlq in topics and changelog in topics
    assert ingest.app.consumer.acked == [0, 1]
    assert _stored(engine_app, b"ann", records[0].partition) is not None


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
@pytest.mark.parametrize("revoked_during", ["outputs", "changelog"])
async def test_a_batch_in_flight_at_a_revoke_publishes_nothing_more_for_the_partition(
    store: str, revoked_during: str, tmp_path: Path
) -> None:
    producer = DelayedProducer()
    ingest, engine_app = _ingest(store, tmp_path, producer)
    changelog = engine_app.users.changelog_topic.get_topic_name()
    if revoked_during == "changelog":
        producer.delayed = changelog
    records = _records("ann")
    partition = records[0].partition
    batch = asyncio.ensure_future(ingest.on_batch(records))
    await producer.started.wait()  # a send of the batch waits in the producer
    await ingest.revoke({partition}, timeout_s=1.0)
    published_at_revoke = list(producer.log)
    new_owner = (changelog, b"ann", b"the new owner's state", partition)
    producer.log.append(new_owner)  # the next owner writes once the revoke has returned
    await batch  # the worker does not crash
    await asyncio.sleep(3 * DELAY_S)  # a send that slipped through would land by now
    assert producer.log == [*published_at_revoke, new_owner]  # nothing after the revoke
    assert [r for r in producer.log if r[0] == changelog and r[1] == b"ann"][-1] == new_owner
    if revoked_during == "changelog":  # its outputs went out first, in the checkpoint's order
        assert engine_app.settings.topic_dlq in {record[0] for record in published_at_revoke}
    assert changelog not in {record[0] for record in published_at_revoke}
    assert ingest.app.consumer.acked == []  # read again by the next owner
    assert _stored(engine_app, b"ann", partition) is None  # the memory store's write undone
    assert partition not in ingest.runtime.processors  # rebuilt from the tables when regained
    metrics = ingest.runtime.metrics
    assert metrics.batches_abandoned._value.get() == 1
    assert metrics.fenced_sends._value.get() >= 1


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_the_next_batch_after_a_regained_partition_applies_from_the_tables(
    store: str, tmp_path: Path
) -> None:
    """The partition comes back in a new generation: the abandoned records are
    applied again, once, and their state reaches the changelog and the store."""
    producer = DelayedProducer()
    ingest, engine_app = _ingest(store, tmp_path, producer)
    records = _records("ann")
    partition = records[0].partition
    batch = asyncio.ensure_future(ingest.on_batch(records))
    await producer.started.wait()
    await ingest.revoke(set(range(PARTITIONS)), timeout_s=1.0)
    await batch
    app = ingest.app
    app.consumer_generation_id = GENERATION + 1
    mark_sought(app.consumer, GENERATION + 1)
    ingest.assign(set(range(PARTITIONS)), GENERATION + 1)
    await ingest.runtime.rebuild(range(PARTITIONS))  # Faust's recovery, then the worker's rebuild
    again = [types.SimpleNamespace(**{**vars(r), "generation_id": GENERATION + 1}) for r in records]
    await ingest.on_batch(again)
    assert app.consumer.acked == [0, 1]
    clean, clean_app = _ingest(store, tmp_path / "clean", DelayedProducer())
    await clean.on_batch(_records("ann"))  # the same records, never revoked
    assert _stored(engine_app, b"ann", partition) == _stored(clean_app, b"ann", partition)

    def sent(log: list[Any]) -> list[tuple[Any, ...]]:  # DLQ values carry the wall time
        return sorted((topic, key, partition) for topic, key, _, partition in log)

    assert sent(producer.log) == sent(clean.app.producer.log)  # every output once


class UndeliveredProducer(DelayedProducer):
    """Takes every record at once, but delivers none until ``release`` (a broker
    that stopped answering): the producer's flush never ends by itself."""

    def __init__(self) -> None:
        super().__init__(delayed="none")
        self.release = asyncio.Event()

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None, *_: Any
    ) -> asyncio.Future[Any]:
        taken = await super().send(topic, key, value, partition)
        self.started.set()
        release = self.release

        async def delivered() -> Any:
            await release.wait()
            return taken.result()

        return asyncio.ensure_future(delivered())

    async def flush(self) -> None:
        await self.release.wait()


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
async def test_a_revoke_that_times_out_abandons_the_batch_waiting_for_its_outputs(
    store: str, tmp_path: Path
) -> None:
    """The batch waits for its outputs' delivery when the revoke comes, and the
    producer's flush does not end within the budget: the revoke returns anyway
    (no crash), the batch is abandoned at once, and once the broker answers
    again the batch sends no changelog and acknowledges nothing."""
    producer = UndeliveredProducer()
    ingest, engine_app = _ingest(store, tmp_path, producer)
    records = _records("ann")
    partition = records[0].partition
    batch = asyncio.ensure_future(ingest.on_batch(records))
    await producer.started.wait()
    for _ in range(20):  # the batch reaches the wait for its outputs
        await asyncio.sleep(0)
    await ingest.revoke({partition}, timeout_s=0.05)
    assert _stored(engine_app, b"ann", partition) is None  # undone at the revoke
    assert ingest.runtime.metrics.batches_abandoned._value.get() == 1
    taken_at_revoke = list(producer.log)
    producer.release.set()  # the broker answers again
    await batch
    assert producer.log == taken_at_revoke  # no changelog, nothing else after the revoke
    changelog = engine_app.users.changelog_topic.get_topic_name()
    assert changelog not in {record[0] for record in producer.log}
    assert ingest.app.consumer.acked == []
    assert _stored(engine_app, b"ann", partition) is None


async def test_a_stale_generation_is_refused_even_when_the_partition_came_back() -> None:
    producer = DelayedProducer(delayed="none")
    fence = Fence(lambda: producer)
    fence.assign({1}, GENERATION)
    await fence.revoke({1}, timeout_s=0.1)
    fence.assign({1}, GENERATION + 1)
    with pytest.raises(Fenced):
        await fence.send(1, GENERATION, "signals", b"ann", b"v")
    await fence.send(1, GENERATION + 1, "signals", b"ann", b"v")
    await fence.send(1, None, "status", b"ann", b"v", 1)  # ownership only: the status writer
    assert [record[0] for record in producer.log] == ["signals", "status"]


async def test_records_already_buffered_are_delivered_before_the_revoke_returns() -> None:
    """A record the producer took before the revoke may still be in its buffer:
    the revoke flushes the producer, so it cannot land after the next owner's."""

    class BufferingProducer:
        def __init__(self) -> None:
            self.buffered: list[bytes | None] = []
            self.delivered: list[bytes | None] = []

        async def send(self, topic: str, key: bytes | None, value: bytes | None, *_: Any) -> Any:
            self.buffered.append(value)
            return asyncio.get_running_loop().create_future()

        async def flush(self) -> None:
            await asyncio.sleep(DELAY_S)  # the broker takes its time
            self.delivered += self.buffered
            self.buffered = []

    producer = BufferingProducer()
    fence = Fence(lambda: producer)
    fence.assign({2}, GENERATION)
    await fence.send(2, GENERATION, "signals", b"ann", b"taken before the revoke")
    assert producer.delivered == []
    assert await fence.revoke({2}, timeout_s=5.0)
    assert producer.delivered == [b"taken before the revoke"]


async def test_a_revoke_reports_records_the_producer_could_not_deliver_in_time() -> None:
    class StuckProducer(DelayedProducer):
        async def flush(self) -> None:
            await asyncio.Event().wait()  # a broker that never answers

    fence = Fence(lambda: StuckProducer(delayed="none"))
    fence.assign({2}, GENERATION)
    assert not await fence.revoke({2}, timeout_s=0.05)  # bounded: the group waits for it
    assert not fence.owns(2)


async def test_a_revoke_whose_batch_never_ends_does_not_crash_the_worker() -> None:
    """The revoke handler waits (bounded) for the batch, then fences it: the
    worker keeps running (an earlier fixed wait crashed it under load)."""
    settings = load_settings(
        partitions=PARTITIONS, ingest="batch", ENGAGEMENT_SESSION_TIMEOUT="200ms"
    )
    worker = build_worker(settings.with_generated_secrets(), CollectorRegistry(), web_enabled=False)
    app, batch = worker.app, worker.batch
    assert batch is not None
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    app.crash = crash
    batch.assign({0, 1}, app.consumer_generation_id)
    await batch._lock.acquire()  # a batch in flight that never ends
    try:
        await app.on_partitions_revoked.send({TP(settings.topic_events, p) for p in (0, 1)})
    finally:
        batch._lock.release()
    assert crashed == []
    assert not batch.fence.owns(0) and not batch.fence.owns(1)
