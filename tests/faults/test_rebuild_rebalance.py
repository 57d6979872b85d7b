"""A rebuild of many users while the group rebalances: ``FAULTS_REBUILD_USERS``
users (default 2M, one event each) in the table, the worker killed and
started again, and while it recovers and rebuilds its index a second worker
joins and later leaves, with a live feed running. The first worker must not
be evicted (its rebuild yields to the event loop, so it heartbeats), and no
write of a worker that gave a partition away may land after its new owner's:
the status topic and Redis end equal to the table."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from support.backlog import (
    evictions,
    recovering,
    size,
    start_live_feed,
    start_on_backlog,
    use_feed,
    wait_http_up,
)
from support.faults import FaultRun, FeedPlan, Figures

REBUILD_USERS = size("FAULTS_REBUILD_USERS", 2_000_000)
LIVE_EVENTS = size("FAULTS_REBUILD_LIVE_EVENTS", 100_000)


@pytest.mark.full
async def test_rebuild_while_the_group_rebalances(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    plan = FeedPlan(events=REBUILD_USERS + LIVE_EVENTS, users=REBUILD_USERS, seed=43)
    run = fault_run(
        "rebuild+rebalance",
        kafka_broker.url,
        plan,
        redis_url=redis_server.url,
        # no user falls due during the run: every status change comes from an event
        ENGAGEMENT_AT_RISK="1h",
        ENGAGEMENT_DORMANT="2h",
        ENGAGEMENT_CHURNED="3h",
    )
    use_feed(run, plan, each_user=True)
    await start_on_backlog(run, REBUILD_USERS)
    await run.wait_fraction(REBUILD_USERS / plan.events, timeout_s=7_200)
    run.kill9()
    start_live_feed(run)
    started = time.monotonic()
    await run.start_worker("w0", wait_ready=False)
    await wait_http_up(run, "w0")
    await run.start_worker("w1", wait_ready=False)
    await wait_http_up(run, "w1")
    run.mark(f"w1 joined; w0 {recovering(run, 'w0')}")
    await run.workers["w1"].wait_ready(3_600)
    run.mark(f"w1 ready; w0 {recovering(run, 'w0')}")
    await run.workers["w0"].wait_ready(3_600)
    run.mark(f"w0 ready {time.monotonic() - started:.1f}s after its restart")
    before, left = await run.processed(), time.monotonic()
    run.workers["w1"].stop(grace_s=30.0)
    run.mark("w1 left (SIGTERM)")
    await run.wait_processing_since(before, left)
    await run.wait_done(timeout_s=3_600)
    await run.wait_quiet(timeout_s=1_800)  # statuses announced again, a bounded number a second
    figures = await run.verdict()
    report(figures)
    evicted = evictions(run, "w0")
    figures.assert_clean(run.deployment.log_tail())
    assert evicted == 0, (
        f"w0 was evicted from the group {evicted} times\n{run.deployment.log_tail()}"
    )
