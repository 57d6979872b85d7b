"""Outages of what the worker depends on: Redis stopped or frozen, the broker
stopped and restarted, one broker of a three-broker cluster killed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.faults import FaultRun, Figures, KafkaCluster


@pytest.mark.full
async def test_redis_stopped_for_30s(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    run = fault_run("redis-stop-30s", kafka_broker.url, redis_url=redis_server.url)
    await run.start()
    await run.wait_fraction(0.2)
    await run.redis_outage(redis_server, freeze=False)
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
    await run.redis_outage(redis_server, freeze=True)
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
