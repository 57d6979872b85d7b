"""Bad and awkward input at volume: every DLQ reason mixed in, producer
duplicates, one hot user flooding its partition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.faults import FaultRun, FeedPlan, Figures

from streams.records import DLQ_REASONS


@pytest.mark.full
async def test_poison_of_every_reason_mixed_in(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    plan = FeedPlan(events=100_000, poison_every=50, seed=11)
    run = fault_run("poison-mix", kafka_broker.url, plan, redis_url=redis_server.url)
    await run.start()
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
    assert set(figures.dlq_reasons) == set(DLQ_REASONS), figures.dlq_reasons
    assert figures.dlq >= run.feed.poison_sent  # a retried send may land twice


@pytest.mark.full
async def test_producer_duplicates(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    plan = FeedPlan(events=100_000, dup_share=0.05, seed=13)
    run = fault_run("producer-duplicates", kafka_broker.url, plan, redis_url=redis_server.url)
    await run.start()
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
    assert figures.deduplicated > 0


@pytest.mark.full
async def test_hot_user_flood(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    plan = FeedPlan(events=100_000, hot_share=0.3, seed=17)
    run = fault_run("hot-user-30pct", kafka_broker.url, plan, redis_url=redis_server.url)
    await run.start()
    await run.wait_fraction(0.5)
    run.kill9()
    await run.restart()
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
