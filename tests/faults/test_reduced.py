"""The reduced fault set of the CI gate, in one run of 100k events: poison of
every DLQ reason mixed in, Redis stopped for 30 s, and a kill -9 of the
worker with a restart. The full suite (``make faults-full``) runs each of
these as its own scenario, and the others."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from support.faults import FaultRun, FeedPlan, Figures

from streams.records import DLQ_REASONS


async def test_poison_redis_outage_and_kill9_with_restart(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    plan = FeedPlan(events=100_000, poison_every=50, seed=23)
    run = fault_run("ci-poison+redis-30s+kill9", kafka_broker.url, plan, redis_url=redis_server.url)
    await run.start()
    await run.wait_fraction(0.2)
    await run.redis_outage(redis_server, freeze=False)
    await run.wait_fraction(0.6)
    run.kill9()
    await run.restart()
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
    assert set(figures.dlq_reasons) == set(DLQ_REASONS), figures.dlq_reasons
    assert figures.dlq >= run.feed.poison_sent  # a retried send may land twice
    assert figures.redis_mismatches is not None, "the mirror wrote nothing"
