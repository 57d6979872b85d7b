"""Churn intent, passive events and anonymous users through the ingest agent
(Faust's test_context, memory store): what is published and counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from support.agent_context import agent_context

from agents.worker.wiring import Worker
from streams.decode import partition_for
from streams.records import Signal
from tables.state import unpack_state

PARTITIONS = 2
DAY_MS = 1_000  # the model's days are seconds here
T0 = 1_800_000_000_000
_signal = msgspec.json.Decoder(Signal)


class Harness:
    def __init__(self, worker: Worker, ctx: Any) -> None:
        self.worker = worker
        self.ctx = ctx
        self.signals: list[Signal] = []
        self.n = 0

    async def event(self, user: str, type_: str, ts_ms: int, **fields: Any) -> None:
        self.n += 1
        body = {"event_id": f"e{self.n}", "user_id": user, "type": type_, "ts": ts_ms, **fields}
        await self.ctx.put(
            json.dumps(body).encode(),
            key=user.encode(),
            partition=partition_for(user.encode(), PARTITIONS),
            timestamp=ts_ms / 1000,
        )

    async def tick(self, wall_ms: int) -> None:
        runtime = self.worker.runtime
        runtime.events_seen_append_ms = wall_ms
        for partition in range(PARTITIONS):
            value, headers = runtime.tick_record(partition, wall_ms)
            await self.ctx.put(
                value, key=None, partition=partition, timestamp=wall_ms / 1000, headers=headers
            )

    def kinds(self, user: str) -> list[str]:
        return [signal.kind for signal in self.signals if signal.user_id == user]

    def state(self, user: str) -> Any:
        blob = self.worker.engine_app.users.get(user.encode())
        return None if blob is None else unpack_state(blob)

    def events_counted(self, outcome: str) -> float | None:
        return self.worker.metrics.registry.get_sample_value(
            "engagement_events_total", {"type": "other", "outcome": outcome}
        )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with agent_context(
        partitions=PARTITIONS,
        at_risk_ms="7s",
        dormant_ms="14s",
        churned_ms="30s",
        lateness_ms="100ms",
        day_ms="1s",
        stall_guard_ms="1h",
        passive_types="push_received",
        threshold_min_ms="1s",
    ) as (worker, ctx):
        h = Harness(worker, ctx)

        async def capture_signal(*, key: bytes, value: bytes, **_: Any) -> None:
            h.signals.append(_signal.decode(value))

        async def ignore(**_: Any) -> None:
            return None

        worker.engine_app.signals.send = capture_signal
        worker.engine_app.lifecycle.send = ignore
        yield h


async def test_a_cancellation_is_published_at_once_and_is_no_return(harness: Harness) -> None:
    for day in range(6):
        await harness.event("carol", "login", T0 + day * DAY_MS)
    last_ms = T0 + 5 * DAY_MS
    await harness.tick(last_ms + 4 * DAY_MS)  # at_risk after 3 days of a daily user
    assert harness.kinds("carol") == ["at_risk"]
    cancel_ms = last_ms + 4 * DAY_MS + 200
    await harness.event("carol", "subscription_cancelled", cancel_ms)
    assert harness.kinds("carol") == ["at_risk", "churn_intent"]
    intent = harness.signals[-1]
    assert intent.as_of == cancel_ms
    assert intent.signal_id == f"carol:{last_ms}:churn_intent"
    # the confirmation page and a last look around: inside the grace
    await harness.event("carol", "page_view", cancel_ms + 100)
    await harness.event("carol", "login", cancel_ms + 900)
    await harness.tick(cancel_ms + 950)
    assert harness.kinds("carol") == ["at_risk", "churn_intent"]
    state = harness.state("carol")
    assert state.last_seen_ms == last_ms and state.tier == 1
    assert harness.events_counted("passive") == 2


async def test_passive_events_make_no_user_and_anonymous_users_no_tiers(
    harness: Harness,
) -> None:
    for day in range(3):
        await harness.event("pat", "push_received", T0 + day * DAY_MS)
    await harness.event("anon", "view", T0, anonymous=True)
    await harness.event("known", "view", T0)
    await harness.tick(T0 + 40 * DAY_MS)
    assert harness.state("pat") is None
    assert harness.kinds("anon") == []
    assert harness.kinds("known") == ["at_risk", "dormant", "churned"]
    assert harness.events_counted("passive") == 3
