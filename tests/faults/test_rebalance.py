"""A second worker joins mid-run and later leaves: partitions (and their state)
move twice; nothing may be lost, double counted or signalled from the wrong
worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from support.faults import FaultRun, Figures


@pytest.mark.full
async def test_second_worker_joins_and_leaves(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    run = fault_run("rebalance-join-leave", kafka_broker.url, redis_url=redis_server.url)
    await run.start("w0")
    await run.wait_fraction(0.3)
    before, started = await run.processed(), time.monotonic()
    await run.start_worker("w1")
    run.mark("w1 joined")
    await run.wait_processing_since(before, started)
    await run.wait_metric("engagement_events_total", lambda v: v > 0, worker="w1")
    run.mark("w1 processing")
    await run.wait_fraction(0.7)
    before, started = await run.processed(), time.monotonic()
    run.workers["w1"].stop(grace_s=30.0)
    run.mark("w1 left (SIGTERM)")
    await run.wait_processing_since(before, started)
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
