"""declining and not_activated through the ingest agent (Faust test_context, memory store).

Days of 1 s; 7/14/30-day tiers, per-user thresholds from 5 active days,
the default decline sensitivity; activation by ``onboarding_completed`` with a
3-day deadline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from support.agent_context import agent_context

from agents.worker.wiring import Worker
from streams.decode import partition_for
from streams.records import LifecycleTransition, Signal
from tables.state import unpack_state

PARTITIONS = 2
DAY_MS = 1_000
T0 = 1_800_000_000_000
_signal = msgspec.json.Decoder(Signal)
_move = msgspec.json.Decoder(LifecycleTransition)


class Feed:
    def __init__(self, worker: Worker, ctx: Any) -> None:
        self.worker = worker
        self.ctx = ctx
        self.signals: list[Signal] = []
        self.moves: list[LifecycleTransition] = []
        self.sent = 0

    async def event(self, user: str, ts_ms: int, kind: str = "view") -> None:
        self.sent += 1
        value = json.dumps(
            {"event_id": f"{user}-{self.sent}", "user_id": user, "type": kind, "ts": ts_ms}
        )
        await self.ctx.put(
            value.encode(),
            key=user.encode(),
            partition=partition_for(user.encode(), PARTITIONS),
            timestamp=ts_ms / 1000,
        )

    def kinds(self, user: str) -> list[tuple[str, int]]:
        return [(s.kind, (s.as_of - T0) // DAY_MS) for s in self.signals if s.user_id == user]

    def stages(self, user: str) -> list[tuple[str | None, str]]:
        return [(m.from_stage, m.to_stage) for m in self.moves if m.user_id == user]


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    async with agent_context(
        partitions=PARTITIONS,
        at_risk_ms="7s",
        dormant_ms="14s",
        churned_ms="30s",
        threshold_min_ms="1s",
        threshold_max_ms="90s",
        lateness_ms="100ms",
        day_ms="1s",
        stall_guard_ms="1h",
        activation_types="onboarding_completed",
        activation_days=3,
    ) as (worker, ctx):
        f = Feed(worker, ctx)

        async def signal(*, key: bytes, value: bytes, **_: Any) -> None:
            f.signals.append(_signal.decode(value))

        async def move(*, key: bytes, value: bytes, **_: Any) -> None:
            f.moves.append(_move.decode(value))

        worker.engine_app.signals.send = signal
        worker.engine_app.lifecycle.send = move
        yield f


async def test_a_fading_user_gets_declining_before_at_risk(feed: Feed) -> None:
    days = [*range(40), *range(40, 70, 2), *range(70, 130, 3)]
    await feed.event("fader", T0, "onboarding_completed")
    for day in days[1:]:
        await feed.event("fader", T0 + day * DAY_MS + 300)
    await feed.event("fader", T0 + 200 * DAY_MS)  # a long silence before it: tiers
    kinds = feed.kinds("fader")
    assert kinds[0][0] == "declining" and 40 < kinds[0][1] < 130
    assert [k for k, _d in kinds].index("at_risk") > 0
    (declining,) = [s for s in feed.signals if s.kind == "declining"]
    assert declining.signal_id == f"fader:{declining.as_of}:declining"
    assert {r.code for r in declining.reasons} >= {"recent_active_days", "active_day_rate"}


async def test_an_unactivated_user_gets_not_activated_and_an_activated_one_does_not(
    feed: Feed,
) -> None:
    await feed.event("lurker", T0)
    await feed.event("lurker", T0 + DAY_MS)
    await feed.event("doer", T0 + 10)
    await feed.event("doer", T0 + DAY_MS + 10, "onboarding_completed")
    # each one's next event moves its partition's clock past the deadline
    # (first seen + 3 days) before it is applied
    for user in ("lurker", "doer"):
        await feed.event(user, T0 + 4 * DAY_MS + 10)
    assert feed.kinds("lurker") == [("not_activated", 3)]
    (signal,) = [s for s in feed.signals if s.user_id == "lurker"]
    assert signal.as_of == T0 + 3 * DAY_MS and signal.signal_id == f"lurker:{T0}:not_activated"
    assert feed.stages("lurker") == [(None, "new"), ("new", "not_activated")]
    assert feed.kinds("doer") == []
    assert feed.stages("doer") == [(None, "new"), ("new", "active")]
    blob = feed.worker.engine_app.users.get(b"lurker")
    assert blob is not None and unpack_state(blob).stage == 6


async def test_activation_per_weekly_cohort_is_exported_as_gauges(feed: Feed) -> None:
    for user, kind in (("a", "onboarding_completed"), ("b", "view"), ("c", "view")):
        await feed.event(user, T0 + 10, kind)
    await feed.event("c", T0 + DAY_MS, "onboarding_completed")
    runtime = feed.worker.runtime
    runtime.events_seen_append_ms = T0 + DAY_MS
    for partition in range(PARTITIONS):  # a tick publishes the partition's gauges
        value, headers = runtime.tick_record(partition, T0 + 4_500)
        await feed.ctx.put(
            value, partition=partition, timestamp=(T0 + 4_500) / 1000, headers=headers
        )
    registry = feed.worker.metrics.registry

    def total(name: str, weeks_ago: str) -> float:
        return sum(
            registry.get_sample_value(name, {"weeks_ago": weeks_ago, "partition": str(p)}) or 0.0
            for p in range(PARTITIONS)
        )

    assert total("engagement_activation_cohort_users", "0") == 3
    assert total("engagement_activation_cohort_activated_users", "0") == 2
    assert total("engagement_activation_cohort_users", "1") == 0
