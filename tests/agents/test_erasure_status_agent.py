"""Erasure and the user-status writer inside the ingest agent (Faust test_context)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from support.agent_context import agent_context

from agents.worker.wiring import Worker
from streams.decode import partition_for
from streams.records import CONTROL_HEADER, DLQ_REASONS, Erase, Signal, UserStatus
from tables.erasure import erased_hash
from tables.state import unpack_state

PARTITIONS = 2
_signal = msgspec.json.Decoder(Signal)
_status = msgspec.json.Decoder(UserStatus)


class Harness:
    def __init__(self, worker: Worker, ctx: Any) -> None:
        self.worker = worker
        self.ctx = ctx
        self.signals: list[Signal] = []
        self.status: list[tuple[bytes, bytes | None, int]] = []

    @property
    def registry(self) -> CollectorRegistry:
        return self.worker.metrics.registry

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def event(self, user: str, event_id: str, ts_ms: int) -> None:
        value = json.dumps({"event_id": event_id, "user_id": user, "type": "login", "ts": ts_ms})
        await self.ctx.put(
            value.encode(),
            key=user.encode(),
            partition=partition_for(user.encode(), PARTITIONS),
            timestamp=ts_ms / 1000,
        )

    async def control(self, record: Any, partition: int, append_ms: int) -> None:
        signer = self.worker.runtime.signer
        assert signer is not None
        value, headers = signer.sign(
            self.worker.engine_app.settings.topic_events, partition, record
        )
        await self.ctx.put(
            value, key=None, partition=partition, timestamp=append_ms / 1000, headers=headers
        )

    async def erase(self, user: str, issued_ms: int, append_ms: int | None = None) -> None:
        partition = partition_for(user.encode(), PARTITIONS)
        record = Erase(user_id=user, issued_ms=issued_ms)
        await self.control(record, partition, issued_ms if append_ms is None else append_ms)

    async def tick(self, partition: int, wall_ms: int, events_seen_ms: int) -> None:
        self.worker.runtime.events_seen_append_ms = events_seen_ms
        value, headers = self.worker.runtime.tick_record(partition, wall_ms)
        await self.ctx.put(
            value, key=None, partition=partition, timestamp=wall_ms / 1000, headers=headers
        )

    def state(self, user: str) -> Any:
        blob = self.worker.engine_app.users.get(user.encode())
        return None if blob is None else unpack_state(blob)

    def statuses(self, user: str) -> list[UserStatus | None]:
        return [
            None if value is None else _status.decode(value)
            for key, value, _p in self.status
            if key == user.encode()
        ]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with agent_context(
        partitions=PARTITIONS,
        at_risk_ms="3s",
        dormant_ms="6s",
        churned_ms="9s",
        lateness_ms="500ms",
        day_ms="1s",
        stall_guard_ms="1h",
        erasure_suppress_ms="20s",
    ) as (worker, ctx):
        h = Harness(worker, ctx)

        async def capture_signal(*, key: bytes, value: bytes, **_: Any) -> None:
            h.signals.append(_signal.decode(value))

        def capture_status(
            *, key: bytes, value: bytes | None, partition: int, **_: Any
        ) -> asyncio.Future[Any]:
            h.status.append((key, value, partition))
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

        async def capture_status_now(
            *, key: bytes, value: bytes | None, partition: int, **_: Any
        ) -> asyncio.Future[Any]:
            return capture_status(key=key, value=value, partition=partition)

        worker.engine_app.signals.send = capture_signal
        worker.engine_app.status.send_soon = capture_status
        worker.engine_app.status.send = capture_status_now

        async def ignore_lifecycle(**_: Any) -> None:  # transitions: tests/agents/test_config.py
            return None

        worker.engine_app.lifecycle.send = ignore_lifecycle
        yield h


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_erasure_removes_state_and_due_entry_and_keeps_only_a_hash(
    harness: Harness,
) -> None:
    t0 = now_ms()
    await harness.event("alice", "a1", t0)
    await harness.event("bob", "b1", t0)
    assert harness.state("alice") is not None
    partition = partition_for(b"alice", PARTITIONS)
    await harness.erase("alice", t0 + 10)
    assert harness.state("alice") is None
    engine = harness.worker.runtime.engines[partition]
    assert "alice" not in {u for users in engine.index._buckets.values() for u in users}
    keys = [key.decode() for key in harness.worker.engine_app.erased]
    salt = harness.worker.engine_app.settings.erasure_salt
    assert salt is not None
    digest = erased_hash(salt.get_secret_value().encode(), "alice")
    assert keys == [f"{partition}:{digest}"]
    assert all("alice" not in key for key in keys)
    assert harness.sample("engagement_erasures_total", outcome="applied") == 1
    # a tick past alice's due time emits nothing for her
    await harness.tick(partition, t0 + 4_000, t0)
    assert all(s.user_id != "alice" for s in harness.signals)


async def test_erasure_removes_the_user_from_dau_wau_mau_and_stage_counts(
    harness: Harness,
) -> None:
    t0 = now_ms()
    users = [u for u in (f"s{i}" for i in range(20)) if partition_for(u.encode(), PARTITIONS) == 0]
    kept, erased = users[0], users[1]
    await harness.event(kept, "k1", t0)
    await harness.event(erased, "e1", t0 + 5)
    await harness.tick(0, t0 + 10, t0 + 10)
    labels = {"tenant": "other", "partition": "0"}
    for name in ("engagement_dau", "engagement_wau", "engagement_mau"):
        assert harness.sample(name, **labels) == 2
    assert harness.sample("engagement_users_by_stage", stage="new", partition="0") == 2
    await harness.erase(erased, t0 + 20)
    for name in ("engagement_dau", "engagement_wau", "engagement_mau"):
        assert harness.sample(name, **labels) == 1
    assert harness.sample("engagement_users_by_stage", stage="new", partition="0") == 1
    # a later tick still counts only the kept user
    await harness.tick(0, t0 + 30, t0 + 30)
    assert harness.sample("engagement_mau", **labels) == 1


async def test_late_events_of_an_erased_user_are_dropped_and_counted(harness: Harness) -> None:
    t0 = now_ms()
    await harness.event("carol", "c1", t0)
    await harness.erase("carol", t0 + 10)
    await harness.event("carol", "c2", t0 + 20)
    await harness.event("carol", "c3", t0 + 30)
    assert harness.state("carol") is None
    assert harness.sample("engagement_events_total", type="other", outcome="suppressed") == 2
    assert harness.sample("engagement_dlq_total") == 0


async def test_after_the_window_the_user_starts_as_new(harness: Harness) -> None:
    t0 = now_ms()
    await harness.event("dave", "d1", t0)
    await harness.erase("dave", t0)
    partition = partition_for(b"dave", PARTITIONS)
    # window 20 s on the clock; a tick moves the clock past it and expires the entry
    await harness.tick(partition, t0 + 21_000, t0 + 21_000)
    assert len(harness.worker.engine_app.erased) == 0
    await harness.event("dave", "d2", t0 + 21_500)
    state = harness.state("dave")
    assert state is not None and state.events_total == 1


async def test_a_stale_erase_request_is_ignored(harness: Harness) -> None:
    t0 = now_ms()
    await harness.event("erin", "e1", t0)
    await harness.erase("erin", t0 - 2 * 3_600_000, append_ms=t0)
    assert harness.state("erin") is not None
    assert harness.sample("engagement_erasures_total", outcome="stale") == 1


async def test_erasure_writes_a_status_tombstone_and_drops_the_pending_write(
    harness: Harness,
) -> None:
    t0 = now_ms()
    await harness.event("fay", "f1", t0)
    await harness.event("fay", "f2", t0 + 10)  # coalesced: same stage and tier
    assert harness.worker.status is not None
    assert harness.worker.status.pending == 1
    await harness.erase("fay", t0 + 20)
    assert harness.worker.status.pending == 0
    statuses = harness.statuses("fay")
    assert statuses[-1] is None  # the tombstone is the last write
    assert [s.last_seen for s in statuses if s is not None] == [t0]
    await harness.worker.status.flush()
    assert harness.statuses("fay")[-1] is None


async def test_status_tier_changes_are_written_at_once_others_coalesced(
    harness: Harness,
) -> None:
    t0 = now_ms()
    partition = partition_for(b"gus", PARTITIONS)
    await harness.event("gus", "g1", t0)
    first = harness.statuses("gus")
    assert len(first) == 1 and first[0] is not None
    assert first[0].stage == "new" and first[0].tier is None
    for n in range(2, 6):
        await harness.event("gus", f"g{n}", t0 + n)
    assert len(harness.statuses("gus")) == 1  # coalesced, waiting for the flush
    await harness.tick(partition, t0 + 4_000, t0)  # at_risk: a tier change
    statuses = harness.statuses("gus")
    assert len(statuses) == 2
    latest = statuses[-1]
    assert latest is not None and latest.tier == "at_risk" and latest.stage == "at_risk"
    assert latest.last_seen == t0 + 5 and latest.episode == t0 + 5
    assert 0.0 <= latest.risk <= 1.0
    # every record goes to the user's own input partition
    assert {p for key, _v, p in harness.status if key == b"gus"} == {partition}
    await harness.worker.status.flush() if harness.worker.status else None
    assert len(harness.statuses("gus")) == 2  # nothing was left pending


async def test_flush_sends_the_newest_coalesced_state(harness: Harness) -> None:
    t0 = now_ms()
    await harness.event("hal", "h1", t0)
    await harness.event("hal", "h2", t0 + 100)
    await harness.event("hal", "h3", t0 + 200)
    status = harness.worker.status
    assert status is not None
    assert await status.flush()
    statuses = harness.statuses("hal")
    assert [s.last_seen for s in statuses if s is not None] == [t0, t0 + 200]
    assert harness.sample("engagement_status_writes_total", kind="coalesced") == 1


class FakeConsumer:
    def __init__(self, status: Any) -> None:
        self.status = status
        self.committed: list[tuple[Any, int]] = []  # (offsets, status writes still failing)
        self.should_stop = False

    async def _commit_offsets(self, offsets: Any, start_new_transaction: bool = True) -> bool:
        self.committed.append((offsets, self.status.pending))
        return True


async def test_a_commit_waits_until_the_status_writes_are_confirmed(harness: Harness) -> None:
    """Faust has already taken the offsets off its acked list when it calls
    ``_commit_offsets``: the hook may delay the commit, never skip it."""
    from agents.worker.checkpoint import before_commit

    status = harness.worker.status
    assert status is not None
    status._owned = lambda: {0, 1}  # test_context assigns no partitions
    consumer = FakeConsumer(status)
    before_commit(consumer, status.flush, retry_s=0.01)
    before_commit(consumer, status.flush, retry_s=0.01)  # idempotent
    loop = asyncio.get_running_loop()
    attempts: list[bytes] = []

    def flaky_send(*, key: bytes, value: bytes | None, partition: int, **_: Any) -> Any:
        future: asyncio.Future[Any] = loop.create_future()
        attempts.append(key)
        if len(attempts) == 1:
            future.set_exception(RuntimeError("broker unavailable"))
        else:
            future.set_result(None)
        harness.status.append((key, value, partition))
        return future

    async def flaky_send_now(**kwargs: Any) -> Any:
        return flaky_send(**kwargs)

    harness.worker.engine_app.status.send_soon = flaky_send
    harness.worker.engine_app.status.send = flaky_send_now
    t0 = now_ms()
    await harness.event("ivy", "i1", t0)  # immediate write: fails
    assert await consumer._commit_offsets({"tp": 1})
    assert consumer.committed == [({"tp": 1}, 0)]  # after the write went through again
    assert attempts == [b"ivy", b"ivy"]
    last = harness.statuses("ivy")[-1]
    assert last is not None and last.last_seen == t0
    # a stopping consumer gives up instead of waiting for a dead producer
    attempts.clear()
    await harness.event("ivy", "i2", t0 + 1)  # coalesced
    harness.worker.engine_app.status.send = flaky_send_now  # its first call fails again
    consumer.should_stop = True
    assert not await consumer._commit_offsets({"tp": 2})
    assert len(consumer.committed) == 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    value=st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    ).map(lambda obj: json.dumps(obj).encode()),
    key=st.none() | st.binary(max_size=8),
    control=st.booleans(),
)
async def test_any_record_through_the_agent_is_quarantined_with_a_reason(
    harness: Harness, value: bytes, key: bytes | None, control: bool
) -> None:
    """Arbitrary bytes or JSON into the running agent: it never stops, and each
    record ends as exactly one DLQ record with a known reason (none of these
    can be a valid event: they lack the required fields or the signature)."""
    dlq: list[str] = []

    async def capture_dlq(*, key: bytes | None, value: bytes, **_: Any) -> None:
        dlq.append(msgspec.json.decode(value)["reason"])

    harness.worker.engine_app.dlq.send = capture_dlq
    headers = [(CONTROL_HEADER, b"tick")] if control else None
    await harness.ctx.put(value, key=key, partition=0, timestamp=now_ms() / 1000, headers=headers)
    assert len(dlq) == 1 and dlq[0] in DLQ_REASONS


async def test_a_coalesced_write_queues_behind_an_undelivered_immediate_one(
    harness: Harness,
) -> None:
    status = harness.worker.status
    assert status is not None
    loop = asyncio.get_running_loop()
    queued: list[tuple[bytes, asyncio.Future[Any]]] = []
    direct: list[bytes] = []

    def slow_queue(*, key: bytes, value: bytes | None, partition: int, **_: Any) -> Any:
        future: asyncio.Future[Any] = loop.create_future()
        queued.append((key, future))
        return future

    async def now(*, key: bytes, value: bytes | None, partition: int, **_: Any) -> Any:
        direct.append(key)
        future: asyncio.Future[Any] = loop.create_future()
        future.set_result(None)
        return future

    harness.worker.engine_app.status.send_soon = slow_queue
    harness.worker.engine_app.status.send = now
    t0 = now_ms()
    await harness.event("kim", "k1", t0)  # immediate: queued, not yet delivered
    await harness.event("lee", "l1", t0)
    queued[-1][1].set_result(None)  # lee's immediate write is delivered
    await harness.event("kim", "k2", t0 + 10)  # coalesced
    await harness.event("lee", "l2", t0 + 10)  # coalesced
    await status.tick()
    assert [key for key, _ in queued] == [b"kim", b"lee", b"kim"]  # behind kim's first
    assert direct == [b"lee"]


async def test_a_gained_partition_has_every_users_status_announced_again(
    harness: Harness,
) -> None:
    """After a recovery the status topic may lack what the last owner decided
    after its last commit: every user of the partition is written again."""
    from agents.worker.status import users_of

    t0 = now_ms()
    users = [f"re{i}" for i in range(6)]
    for index, user in enumerate(users):
        await harness.event(user, f"{user}-1", t0 + index)
    status = harness.worker.status
    assert status is not None
    status._owned = lambda: {0, 1}  # test_context assigns no partitions
    assert await status.flush()
    harness.status.clear()  # as if the status topic had lost them all
    table = harness.worker.engine_app.users
    mine = {u for u in users if partition_for(u.encode(), PARTITIONS) == 1}
    assert mine and mine != set(users)
    assert status.reannounce(users_of(table, {1}, PARTITIONS)) == len(mine)
    assert status.reannounce(users_of(table, set(), PARTITIONS)) == 0
    assert status.pending == len(mine)  # counted as pending: the suite waits for them
    assert await status.flush() and harness.status == []  # a commit does not wait for them
    await status.tick()
    assert await status.flush()
    written = {key.decode(): value for key, value, _p in harness.status}
    assert set(written) == mine
    for user in mine:
        announced = harness.statuses(user)[-1]
        assert announced is not None and announced.last_seen == harness.state(user).last_seen_ms


async def test_an_announced_status_of_a_partition_given_away_is_not_sent(
    harness: Harness,
) -> None:
    """A recovery that reads its table while the loop runs may announce users of
    a partition revoked meanwhile (after ``forget_announced``): only the owner
    of a partition writes its statuses."""
    from agents.worker.status import users_of

    t0 = now_ms()
    users = [f"gone{i}" for i in range(6)]
    for index, user in enumerate(users):
        await harness.event(user, f"{user}-1", t0 + index)
    status = harness.worker.status
    assert status is not None
    status._owned = lambda: {0, 1}  # test_context assigns no partitions
    assert await status.flush()
    harness.status.clear()
    table = harness.worker.engine_app.users
    assert status.reannounce(users_of(table, {0, 1}, PARTITIONS)) == len(users)
    status._owned = lambda: {0}  # partition 1 revoked, its announcements already queued
    await status.tick()
    assert await status.flush()
    mine = {u for u in users if partition_for(u.encode(), PARTITIONS) == 0}
    assert mine and mine != set(users)
    assert {key.decode() for key, _v, _p in harness.status} == mine
    assert status.pending == 0


async def test_a_write_chosen_before_a_newer_change_is_not_sent_after_it(
    harness: Harness,
) -> None:
    """A flush sends its chosen writes one by one; a user changed meanwhile must
    not end with the older status last (re-announcing many users makes the
    window long)."""
    import msgspec

    from agents.worker.status import users_of

    t0 = now_ms()
    await harness.event("old1", "o1", t0)
    await harness.event("old2", "o2", t0 + 1)
    status = harness.worker.status
    assert status is not None
    assert await status.flush()
    harness.status.clear()
    table = harness.worker.engine_app.users
    assert status.reannounce(users_of(table, {0, 1}, PARTITIONS)) == 2
    for user in ("old1", "old2"):  # as coalesced writes chosen by one flush
        status._pending[user] = status._announce.pop(user)
    gate = asyncio.Event()
    first: list[bytes] = []
    send_now = harness.worker.engine_app.status.send

    async def gated_send(*, key: bytes, value: bytes | None, partition: int, **kw: Any) -> Any:
        if not first:
            first.append(key)
            await gate.wait()
        return await send_now(key=key, value=value, partition=partition, **kw)

    harness.worker.engine_app.status.send = gated_send
    flushing = asyncio.ensure_future(status.flush())
    while not first:
        await asyncio.sleep(0)
    other = "old2" if first[0] == b"old1" else "old1"
    newer = msgspec.structs.replace(harness.state(other), last_seen_ms=t0 + 500)
    status.observe(other, newer)  # a change while the flush is sending
    gate.set()
    assert await flushing
    assert await status.flush()
    written = [s for s in harness.statuses(other) if s is not None]
    assert [s.last_seen for s in written] == [t0 + 500]


async def test_announced_statuses_go_out_a_bounded_number_a_tick(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.worker.status import users_of

    monkeypatch.setattr("agents.worker.status.ANNOUNCE_PER_TICK", 2)
    t0 = now_ms()
    users = [f"tick{i}" for i in range(5)]
    for index, user in enumerate(users):
        await harness.event(user, f"{user}-1", t0 + index)
    status = harness.worker.status
    assert status is not None
    assert await status.flush()
    harness.status.clear()
    status._owned = lambda: {0, 1}  # test_context assigns no partitions
    table = harness.worker.engine_app.users
    assert status.reannounce(users_of(table, {0, 1}, PARTITIONS)) == 5
    await harness.event(users[0], f"{users[0]}-2", t0 + 100)  # a newer write supersedes it
    mine1 = {u for u in users if partition_for(u.encode(), PARTITIONS) == 1} - {users[0]}
    status.forget_announced({1})  # partition 1 given away: its next owner announces
    left = set(users[1:]) - mine1
    assert status.pending >= len(left)
    harness.status.clear()
    await status.tick()
    assert await status.flush()
    first = {key.decode() for key, _v, _p in harness.status} - {users[0]}
    assert len(first) == 2 and first <= left  # two a tick
    await status.tick()
    assert await status.flush()
    announced = {key.decode() for key, _v, _p in harness.status} - {users[0]}
    assert announced == left  # users of the forgotten partition not among them
