"""The ingest agent in Faust's test_context (memory store, no broker)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry
from support.agent_context import agent_context

from agents.worker.wiring import Worker
from streams.decode import partition_for
from streams.records import CONTROL_HEADER, DlqRecord, Erase, Signal
from tables.state import unpack_state

PARTITIONS = 2
_signal = msgspec.json.Decoder(Signal)
_dlq = msgspec.json.Decoder(DlqRecord)


class Harness:
    def __init__(self, worker: Worker, ctx: Any) -> None:
        self.worker = worker
        self.ctx = ctx
        self.signals: list[Signal] = []
        self.dlq: list[DlqRecord] = []

    @property
    def registry(self) -> CollectorRegistry:
        return self.worker.metrics.registry

    async def event(
        self, user: str, event_id: str, ts_ms: int, append_ms: int | None = None
    ) -> None:
        value = json.dumps({"event_id": event_id, "user_id": user, "type": "login", "ts": ts_ms})
        await self.raw(
            user.encode(),
            value.encode(),
            partition_for(user.encode(), PARTITIONS),
            append_ms if append_ms is not None else ts_ms,
        )

    async def raw(
        self, key: bytes | None, value: bytes, partition: int, append_ms: int, headers: Any = None
    ) -> None:
        await self.ctx.put(
            value, key=key, partition=partition, timestamp=append_ms / 1000, headers=headers
        )

    async def tick(self, partition: int, wall_ms: int, events_seen_ms: int) -> None:
        self.worker.runtime.events_seen_append_ms = events_seen_ms
        value, headers = self.worker.runtime.tick_record(partition, wall_ms)
        await self.raw(None, value, partition, wall_ms, headers)

    def state(self, user: str) -> Any:
        blob = self.worker.engine_app.users.get(user.encode())
        return None if blob is None else unpack_state(blob)


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
    ) as (worker, ctx):
        h = Harness(worker, ctx)

        async def capture_signal(*, key: bytes, value: bytes, **_: Any) -> None:
            h.signals.append(_signal.decode(value))

        async def capture_dlq(*, key: bytes | None, value: bytes, **_: Any) -> None:
            h.dlq.append(_dlq.decode(value))

        worker.engine_app.signals.send = capture_signal
        worker.engine_app.dlq.send = capture_dlq

        async def ignore_lifecycle(**_: Any) -> None:  # transitions: tests/agents/test_config.py
            return None

        worker.engine_app.lifecycle.send = ignore_lifecycle
        yield h


async def test_valid_event_is_applied_to_the_users_table(harness: Harness) -> None:
    now = int(time.time() * 1000)
    await harness.event("alice", "e1", now)
    await harness.event("alice", "e2", now + 10)
    state = harness.state("alice")
    assert state.events_total == 2
    assert state.last_seen_ms == now + 10
    assert (
        harness.registry.get_sample_value(
            "engagement_events_total", {"type": "other", "outcome": "applied"}
        )
        == 2
    )


async def test_producer_duplicate_is_dropped_and_counted(harness: Harness) -> None:
    now = int(time.time() * 1000)
    await harness.event("bob", "same", now)
    await harness.event("bob", "same", now)
    assert harness.state("bob").events_total == 1
    assert (
        harness.registry.get_sample_value(
            "engagement_duplicates_dropped_total", {"kind": "duplicate_id"}
        )
        == 1
    )


async def test_malformed_record_goes_to_the_dlq_with_reason(harness: Harness) -> None:
    now = int(time.time() * 1000)
    await harness.raw(b"x", b"{not json", 0, now)
    await harness.raw(b"x", b"[1,2]", 0, now)
    assert [d.reason for d in harness.dlq] == ["not_json", "not_object"]
    assert harness.dlq[0].value_b64 == "e25vdCBqc29u"
    assert harness.registry.get_sample_value("engagement_dlq_total", {"reason": "not_json"}) == 1


async def test_signed_tick_on_idle_partition_emits_due_tiers(harness: Harness) -> None:
    now = int(time.time() * 1000)
    await harness.event("carol", "c1", now)
    partition = partition_for(b"carol", PARTITIONS)
    await harness.tick(partition, now + 3_400, now)  # clock = now + 2.9 s: nothing due
    assert harness.signals == []
    await harness.tick(partition, now + 6_600, now)  # clock = now + 6.1 s: at_risk, dormant
    assert [s.kind for s in harness.signals] == ["at_risk", "dormant"]
    assert [s.as_of for s in harness.signals] == [now + 3_000, now + 6_000]
    assert harness.state("carol").tier == 2


async def test_stall_guard_holds_the_clock_when_producers_stop(harness: Harness) -> None:
    now = int(time.time() * 1000)
    await harness.event("dave", "d1", now)
    partition = partition_for(b"dave", PARTITIONS)
    # events_seen far behind the tick: the tick may advance at most events_seen + 1h
    await harness.tick(partition, now + 10 * 3_600_000, now - 3_600_000 + 1_000)
    assert harness.signals == []


async def test_forged_tick_goes_to_the_dlq_and_moves_no_clock(harness: Harness) -> None:
    now = int(time.time() * 1000)
    await harness.event("erin", "x1", now)
    partition = partition_for(b"erin", PARTITIONS)
    forged = json.dumps(
        {
            "type": "$tick",
            "wall_ms": now + 10**9,
            "events_seen_append_ms": now + 10**9,
            "kid": "k1",
            "sig": "ab" * 32,
        }
    ).encode()
    await harness.raw(None, forged, partition, now + 10**9, [(CONTROL_HEADER, b"tick")])
    assert [d.reason for d in harness.dlq] == ["bad_signature"]
    assert harness.signals == []


async def test_reactivation_closes_the_episode(harness: Harness) -> None:
    now = int(time.time() * 1000)
    await harness.event("fay", "f1", now)
    partition = partition_for(b"fay", PARTITIONS)
    await harness.tick(partition, now + 4_000, now)
    await harness.event("fay", "f2", now + 5_000, append_ms=now + 5_000)
    kinds = [s.kind for s in harness.signals]
    assert kinds == ["at_risk", "reactivated"]
    back = harness.signals[-1]
    assert back.episode == now and back.tier_reached == "at_risk"
    assert back.gap_ms == 5_000 and back.time_to_return_ms == 2_000 and back.late is False
    assert harness.state("fay").tier == 0


def partition_samples(registry: CollectorRegistry, partition: int) -> dict[str, float]:
    """Every exported sample labelled with ``partition``, by name and labels."""
    return {
        f"{item.name}{sorted(item.labels.items())}": item.value
        for family in registry.collect()
        for item in family.samples
        if item.labels.get("partition") == str(partition)
    }


async def test_a_lost_partition_stops_exporting_its_gauges(harness: Harness) -> None:
    """A rebalance takes partition 1 away: every series of partition 1 goes (its
    new owner exports them; a copy frozen here would count its users twice and,
    read by ``min by (partition)``, hide a clock stalled on the new owner);
    partition 0's stay as they were. Given back, partition 1 exports again."""
    worker, registry = harness.worker, harness.registry
    topic = worker.engine_app.settings.topic_events
    signer = worker.runtime.signer
    assert signer is not None
    users = {
        p: [u for u in (f"g{i}" for i in range(100)) if partition_for(u.encode(), 2) == p]
        for p in (0, 1)
    }
    now = int(time.time() * 1000)
    for partition in (0, 1):
        for user in users[partition][:2]:
            await harness.event(user, f"{user}-1", now)
        await harness.tick(partition, now + 1000, now)
    # an erasure on partition 1: its suppression gauge is labelled by partition too
    value, headers = signer.sign(topic, 1, Erase(user_id=users[1][1], issued_ms=now))
    await harness.raw(None, value, 1, now + 1000, headers)
    await worker.runtime.rebuild({0, 1})  # what recovery does: stage and stickiness gauges
    before = {p: partition_samples(registry, p) for p in (0, 1)}
    for partition, tracked in ((0, 2), (1, 1)):
        labels = {"partition": str(partition)}
        assert registry.get_sample_value("engagement_users_tracked", labels) == tracked
        assert registry.get_sample_value("engagement_clock_lag_seconds", labels) is not None
        assert registry.get_sample_value("engagement_clock_seconds", labels) is not None
        assert registry.get_sample_value("engagement_mau", {**labels, "tenant": "other"}) == tracked
    assert registry.get_sample_value("engagement_erasure_suppressions", {"partition": "1"}) == 1
    assert (
        registry.get_sample_value("engagement_users_by_stage", {"partition": "1", "stage": "new"})
        == 1
    )

    # the new assignment: partition 0 of the input, and a standby copy of partition 1's table
    changelog = f"{worker.engine_app.settings.app_id}-users-changelog"
    await worker.app.on_partitions_assigned.send(assigned={TP(topic, 0), TP(changelog, 1)})
    assert partition_samples(registry, 1) == {}
    assert partition_samples(registry, 0) == before[0]
    await worker.runtime.rebuild({0})  # recovery of the new assignment
    assert partition_samples(registry, 1) == {}
    assert registry.get_sample_value("engagement_users_tracked", {"partition": "0"}) == 2

    await worker.app.on_partitions_assigned.send(assigned={TP(topic, 0), TP(topic, 1)})
    await worker.runtime.rebuild({0, 1})
    assert registry.get_sample_value("engagement_users_tracked", {"partition": "1"}) == 1
