"""Outages of what the worker depends on: Redis stopped or frozen, the broker
stopped and restarted, one broker of a three-broker cluster killed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.faults import FaultRun, Figures, KafkaCluster

REDIS_OUTAGE_S = 30.0  # the fault itself lasts this long (not a wait for an outcome)
REDIS_FREEZE_S = 20.0


async def redis_outage(run: FaultRun, redis_server: Any, *, freeze: bool) -> None:
    """Take Redis away while the worker processes; it must keep processing,
    then the mirror must catch up (no mismatch at the end)."""
    before = await run.processed()
    if freeze:
        redis_server.freeze()
        run.mark("redis frozen (SIGSTOP)")
    else:
        await asyncio.to_thread(redis_server.stop)
        run.mark("redis stopped")
    try:
        await asyncio.sleep(REDIS_FREEZE_S if freeze else REDIS_OUTAGE_S)
        during = await run.processed()
        run.mark(f"{during - before} records processed during the outage")
        assert during > before, "the worker must keep processing while Redis is away"
    finally:
        if freeze:
            redis_server.thaw()
        else:
            await asyncio.to_thread(redis_server.start)
    back = time.monotonic()
    run.mark("redis back")
    await run.wait_metric("engagement_redis_up", lambda v: v == 1)
    await run.wait_metric("engagement_redis_needs_resync", lambda v: v == 0)
    run.recoveries_s.append(time.monotonic() - back)
    run.mark(f"mirror writing again after {run.recoveries_s[-1]:.1f}s")


async def test_redis_stopped_for_30s(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    run = fault_run("redis-stop-30s", kafka_broker.url, redis_url=redis_server.url)
    await run.start()
    await run.wait_fraction(0.2)
    await redis_outage(run, redis_server, freeze=False)
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
    assert figures.redis_mismatches is not None, "the mirror wrote nothing"


@pytest.mark.full
async def test_redis_frozen_then_resumed(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    run = fault_run("redis-sigstop-20s", kafka_broker.url, redis_url=redis_server.url)
    await run.start()
    await run.wait_fraction(0.2)
    await redis_outage(run, redis_server, freeze=True)
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())


@pytest.mark.full
async def test_broker_stopped_and_restarted(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    run = fault_run("broker-restart", kafka_broker.url, redis_url=redis_server.url)
    await run.start()
    await run.wait_fraction(0.3)
    before = await run.processed()
    await asyncio.to_thread(kafka_broker.stop)
    run.mark("broker stopped")
    started = time.monotonic()
    await asyncio.to_thread(kafka_broker.start)
    run.mark("broker started again")
    await run.wait_processing_since(before, started)
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())


@pytest.mark.full
async def test_one_broker_of_three_killed(
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    cluster = KafkaCluster()
    try:
        await asyncio.to_thread(cluster.start)
        run = fault_run(
            "cluster-rf3-broker-killed",
            cluster.url,
            redis_url=redis_server.url,
            ENGAGEMENT_REPLICATION_FACTOR="3",
        )
        await run.start()
        await run.wait_fraction(0.4)
        before = await run.processed()
        await asyncio.to_thread(cluster.kill_node, 2)
        run.mark("broker 2 of 3 killed (kill -9)")
        await run.wait_processing_since(before, time.monotonic())
        await run.wait_fraction(0.75)
        await asyncio.to_thread(cluster.start_node, 2)
        run.mark("broker 2 started again")
        await run.wait_done()
        figures = await run.verdict()
        report(figures)
        figures.assert_clean(run.deployment.log_tail())
    finally:
        await asyncio.to_thread(cluster.close)
