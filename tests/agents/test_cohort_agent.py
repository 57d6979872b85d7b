"""Cohort cells through the ingest agent (Faust's test_context, memory store): events
count in the clocks table, a tick publishes the changed cells and sets the gauges."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
from support.agent_context import agent_context

from streams.decode import partition_for
from streams.records import CohortCount

PARTITIONS = 2
DAY_MS = 1000
_count = msgspec.json.Decoder(CohortCount)


async def test_events_count_in_cells_that_a_tick_publishes_and_shows() -> None:
    async with agent_context(partitions=PARTITIONS, day_ms="1s", stall_guard_ms="1h") as (
        worker,
        ctx,
    ):
        published: list[CohortCount] = []

        async def capture(*, key: bytes, value: bytes, **_: Any) -> None:
            published.append(_count.decode(value))

        async def ignore(**_: Any) -> None:
            return None

        worker.engine_app.cohorts.send = capture
        for topic in ("signals", "lifecycle", "status", "dlq"):
            getattr(worker.engine_app, topic).send = ignore
        runtime = worker.runtime
        now = int(time.time() * 1000)
        week = runtime.settings.cohort_period_ms
        start = now - now % week - 2 * week  # two weeks ago, at a period start
        user = "ann"
        partition = partition_for(user.encode(), PARTITIONS)
        for n, ts in enumerate((start, start + week + 10, start + week + 20, start + 2 * week)):
            value = json.dumps({"event_id": f"e{n}", "user_id": user, "type": "login", "ts": ts})
            await ctx.put(
                value.encode(), key=user.encode(), partition=partition, timestamp=ts / 1000
            )
        assert published == []  # nothing before a tick
        tick, headers = runtime.tick_record(partition, now)
        runtime.events_seen_append_ms = now
        await ctx.put(tick, key=None, partition=partition, timestamp=now / 1000, headers=headers)
        assert [(c.period_start - c.cohort_start) // week for c in published] == [0, 1, 2]
        assert [c.retained for c in published] == [0, 1, 1]
        assert {c.partition for c in published} == {partition}
        registry = worker.metrics.registry
        labels = {"tenant": "other", "cohort": "2", "partition": str(partition)}
        shown = [
            registry.get_sample_value(
                "engagement_cohort_users", {**labels, "age": str(age), "group": published[0].group}
            )
            for age in range(3)
        ]
        assert shown == [1.0, 1.0, 1.0]
