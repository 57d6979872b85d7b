"""The checkpoint's order on both stores, its outbox, and the start-up check of
Faust's private API.

Real Faust apps and stores (a RocksDB store in a temporary directory); the
producer stands in for the broker and numbers what it is asked to write, as
a partition's log would. End to end (real Kafka, kill -9) the order runs in
tests/integration/test_worker.py and the fault suite, on both stores.
"""

from __future__ import annotations

import asyncio
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from prometheus_client import CollectorRegistry

from agents.worker.batch_ingest import BatchIngest, BatchTable, BatchWrites
from agents.worker.checkpoint import (
    PINNED_FAUST,
    LocalStore,
    check_faust,
    install,
    mark_sought,
    sought_generation,
)
from agents.worker.delivery import Outbox
from agents.worker.metrics import Metrics
from agents.worker.table_store import TableStore
from streams.app import create_app
from streams.settings import load_settings
from tables.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


class NumberingProducer:
    """Writes ``(topic, key, value, partition)`` and gives each its offset in the
    partition; with ``fail`` set, every write fails once it is handed over."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.ends: dict[tuple[str, int], int] = {}
        self.fail = fail

    async def send(
        self, topic: str, key: bytes, value: bytes | None, partition: int, *_: Any
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(OSError("broker gone"))
            return future
        self.sent.append((topic, key, value, partition))
        offset = self.ends.get((topic, partition), 0)
        self.ends[(topic, partition)] = offset + 1
        future.set_result(types.SimpleNamespace(offset=offset, partition=partition))
        return future


class HeldProducer(NumberingProducer):
    """Numbers writes at once; the status topic's are delivered only on ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def send(
        self, topic: str, key: bytes, value: bytes | None, partition: int, *_: Any
    ) -> asyncio.Future[Any]:
        written = await super().send(topic, key, value, partition)
        if topic != "status":
            return written
        release = self.release

        async def delivered() -> Any:
            await release.wait()
            return written.result()

        return asyncio.ensure_future(delivered())


def _rocksdb_app(tmp_path: Path) -> Any:
    settings = load_settings(partitions=4, store="rocksdb://", data_dir=str(tmp_path))
    return create_app(settings.with_generated_secrets())


async def test_rocksdb_is_written_only_after_its_changelog_is_delivered(tmp_path: Path) -> None:
    engine_app = _rocksdb_app(tmp_path)
    writes = BatchWrites()
    users = BatchTable(engine_app.users, writes)
    store = engine_app.users.data
    writes.applying, writes.partition = True, 2
    users[b"ann"] = b"v1"
    users[b"ann"] = b"v2"
    users[b"bob"] = b"b1"
    writes.partition = 3
    users[b"cid"] = b"c1"
    users.pop(b"cid")
    assert users.get(b"ann") == b"v2"  # the batch reads its own writes ...
    assert dict(users.items()) == {b"ann": b"v2", b"bob": b"b1"}
    assert store._db_for_partition(2).get(b"ann") is None  # ... the disk does not have them
    writes.applying = False
    producer = NumberingProducer()
    producer.ends[(engine_app.users.changelog_topic.get_topic_name(), 2)] = 40
    assert await writes.publish(producer) == 3
    topic = engine_app.users.changelog_topic.get_topic_name()
    assert sorted(producer.sent) == [
        (topic, b"ann", b"v2", 2),
        (topic, b"bob", b"b1", 2),
        (topic, b"cid", None, 3),
    ]
    assert store._db_for_partition(2).get(b"ann") == b"v2"
    assert store._db_for_partition(2).get(b"bob") == b"b1"
    assert store._db_for_partition(3).get(b"cid") is None
    # Faust's recovery starts after the last changelog record this worker wrote
    assert store.persisted_offset(TP(topic, 2)) == 41
    assert store.persisted_offset(TP(topic, 3)) == 0
    assert engine_app.users.get(b"ann") == b"v2"  # Faust reads it back (no current event)
    assert users.get(b"ann") == b"v2" and writes.pending() == 0


async def test_a_failed_changelog_write_leaves_rocksdb_untouched(tmp_path: Path) -> None:
    engine_app = _rocksdb_app(tmp_path)
    writes = BatchWrites()
    users = BatchTable(engine_app.users, writes)
    writes.partition = 1
    users[b"ann"] = b"v1"
    with pytest.raises(OSError):
        await writes.publish(NumberingProducer(fail=True))
    store = engine_app.users.data
    assert store._db_for_partition(1).get(b"ann") is None
    topic = engine_app.users.changelog_topic.get_topic_name()
    assert store.persisted_offset(TP(topic, 1)) is None


async def test_the_memory_store_is_written_at_once_and_keyed_to_its_partition() -> None:
    engine_app = create_app(load_settings(partitions=4).with_generated_secrets())
    writes = BatchWrites()
    writes.partition = 3
    BatchTable(engine_app.users, writes)[b"ann"] = b"v1"
    assert engine_app.users.get(b"ann") == b"v1"
    assert engine_app.users.data._key_partition[b"ann"] == 3
    assert LocalStore(engine_app.users).deferred is False


async def test_the_outbox_delivers_in_order_and_hands_the_batch_every_future() -> None:
    producer = NumberingProducer()
    outbox = Outbox(lambda: producer, "status")
    first = outbox.enqueue(b"ann", b"at_risk", 1)
    second = outbox.enqueue(b"ann", b"dormant", 1)
    tombstone = outbox.enqueue(b"bob", None, 2)
    futures = outbox.take()
    assert futures == [first, second, tombstone] and outbox.take() == []
    await outbox.drain()
    await asyncio.gather(*futures)
    assert producer.sent == [
        ("status", b"ann", b"at_risk", 1),
        ("status", b"ann", b"dormant", 1),  # the newest last, as compaction keeps it
        ("status", b"bob", None, 2),
    ]


async def test_a_failed_status_write_fails_its_future() -> None:
    outbox = Outbox(lambda: NumberingProducer(fail=True), "status")
    future = outbox.enqueue(b"ann", b"at_risk", 1)
    await outbox.drain()
    with pytest.raises(OSError):
        await future


def test_the_pinned_faust_is_the_one_pyproject_installs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert f"faust-streaming=={PINNED_FAUST}" in pyproject["project"]["dependencies"]
    check_faust()  # the installed one passes


def test_another_faust_version_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=rf"faust-streaming=={PINNED_FAUST}"):
        check_faust("0.16.0")


def test_a_missing_private_attribute_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(Consumer, "_add_gap")
    with pytest.raises(ConfigurationError, match="_add_gap"):
        check_faust()


def test_a_consumer_without_the_attributes_relied_on_is_refused() -> None:
    async def on_batch(batch: list[Any]) -> None:
        return None

    with pytest.raises(ConfigurationError, match="_read_offset"):
        install(types.SimpleNamespace(), "events", on_batch)


async def test_a_batch_delivers_its_status_writes_before_its_changelog_and_acks(
    tmp_path: Path,
) -> None:
    engine_app = _rocksdb_app(tmp_path)
    producer = HeldProducer()
    acked: list[int] = []
    consumer = types.SimpleNamespace(
        flow_active=True, _committed_offset={}, ack=lambda m: acked.append(m.offset)
    )
    mark_sought(consumer, 1)
    app = types.SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=1,
        flow_control=types.SimpleNamespace(is_active=lambda: True),
        producer=producer,
        monitor=types.SimpleNamespace(),
    )

    class Runtime:
        outputs: list[Any] | None = None
        send_output: Any = None
        store = TableStore({})
        metrics = Metrics(CollectorRegistry())

    ingest = BatchIngest(app, Runtime(), "status")  # type: ignore[arg-type]
    ingest.assign({2}, 1)
    users = ingest.tables(engine_app.users)

    async def handle_message(message: Any) -> None:  # a stage change: state and status
        users[b"ann"] = b"at_risk"
        ingest.outbox.enqueue(b"ann", b"status at_risk", message.partition)

    ingest.runtime.handle_message = handle_message  # type: ignore[method-assign]
    record = types.SimpleNamespace(tp="events-2", partition=2, offset=7, generation_id=1)
    batch = asyncio.ensure_future(ingest.on_batch([record]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert [sent[0] for sent in producer.sent] == ["status"]  # the changelog waits
    assert engine_app.users.data._db_for_partition(2).get(b"ann") is None and acked == []
    producer.release.set()
    await batch
    changelog = engine_app.users.changelog_topic.get_topic_name()
    assert [sent[0] for sent in producer.sent] == ["status", changelog]
    assert engine_app.users.data._db_for_partition(2).get(b"ann") == b"at_risk"
    assert acked == [7]


async def test_a_read_during_a_batch_finds_a_key_of_another_partition(tmp_path: Path) -> None:
    """The Redis mirror's resync reads any user while a batch applies a record
    of some partition: the read must not look in that partition's db only."""
    engine_app = _rocksdb_app(tmp_path)
    writes = BatchWrites()
    users = BatchTable(engine_app.users, writes)
    writes.partition = 1
    users[b"ann"] = b"v1"
    await writes.publish(NumberingProducer())
    writes.applying, writes.partition = True, 3  # a record of partition 3 is being applied
    assert users.get(b"ann") == b"v1"
    assert users.get(b"nobody") is None


async def test_an_input_partition_without_a_commit_is_read_from_its_first_record() -> None:
    # Records fetched during the assignment's recovery and not handed on have moved
    # the position; only partitions with a commit are sought back by Faust.
    sought_to_beginning: list[TP] = []
    committed = {TP("events", 0): 40, TP("events", 1): None, TP("events", 3): 0}
    assignment = {TP("events", p) for p in range(4)} | {TP("users-changelog", 1)}

    async def perform_seek() -> None:
        return None

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {tp: 3 for tp in tps}  # the log's start (retention removed 0-2)

    async def seek(tp: TP, offset: int) -> None:
        assert offset == 3
        sought_to_beginning.append(tp)

    consumer = types.SimpleNamespace(
        _read_offset={tp: 77 for tp in assignment},
        _committed_offset=committed,
        _commit_every=None,
        _n_acked=0,
        _stopped=asyncio.Event(),
        suspend_flow=asyncio.Event(),
        callback=None,
        perform_seek=perform_seek,
        earliest_offsets=earliest_offsets,
        seek=seek,
        assignment=lambda: assignment,
        app=types.SimpleNamespace(consumer_generation_id=5),
    )

    async def on_batch(batch: list[Any]) -> None:
        return None

    install(consumer, "events", on_batch)
    await consumer.perform_seek()
    assert sorted(sought_to_beginning) == [TP("events", 1), TP("events", 2), TP("events", 3)]
    assert {tp.partition for tp, read in consumer._read_offset.items() if read is None} == {1, 2, 3}
    assert consumer._read_offset[TP("events", 0)] == 77  # committed: Faust's seek stands
    assert consumer._read_offset[TP("users-changelog", 1)] == 77
    assert sought_generation(consumer) == 5
