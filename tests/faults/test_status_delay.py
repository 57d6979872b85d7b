"""Status delivery delayed by the broker, then kill -9 right after a tick that
moves every user: the status topic and Redis must still end equal to the table.

Users get one event each, so that about ``FAULTS_TICK_USERS`` (default 50k)
move in one tick; the worker is stopped once they are applied and started again once
all of them are past ``at_risk`` (30 s; a user whose event type has longer
thresholds stays), so its first tick moves them at once. Meanwhile the broker
holds the status topic's writes (``support.backlog.hold_status_delivery``):
the tick's status writes are decided, not delivered, when the worker is
killed; it is started again with delivery released."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.backlog import (
    hold_status_delivery,
    metric_reaches,
    size,
    start_on_backlog,
    use_feed,
)
from support.faults import FaultRun, FeedPlan, Figures

TICK_USERS = size("FAULTS_TICK_USERS", 50_000)
AT_RISK_S = 30


@pytest.mark.full
async def test_status_delayed_then_kill9_after_a_tick_moving_every_user(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    # A user whose only event is of a negative type is not created, and one whose
    # type's activity class has longer thresholds is not yet at risk: about a
    # quarter of the users fed move in the tick.
    fed = TICK_USERS * 4
    plan = FeedPlan(events=fed, users=fed, late_share=0.0, seed=41)
    run = fault_run(
        "status-held+kill9-after-big-tick",
        kafka_broker.url,
        plan,
        redis_url=redis_server.url,
        ENGAGEMENT_AT_RISK=f"{AT_RISK_S}s",
        ENGAGEMENT_DORMANT="30m",
        ENGAGEMENT_CHURNED="60m",
    )
    use_feed(run, plan, each_user=True)
    await start_on_backlog(run)
    await run.wait_done(timeout_s=1_800)
    sent_by = time.monotonic()
    tracked = await run.metric("engagement_users_tracked") or 0.0
    run.mark(f"{tracked:.0f} users in the table")
    run.workers["w0"].stop(grace_s=30.0)
    run.mark("w0 stopped with every user applied")
    await asyncio.sleep(max(0.0, sent_by + AT_RISK_S + 5 - time.monotonic()))
    await hold_status_delivery(run, held=True)
    await run.start_worker("w0")
    # after the restart only ticks come in: the first immediate writes are those
    # of the tick that moves every user past its at_risk threshold, decided at once
    moved = await metric_reaches(run, "engagement_status_writes_total", 1, kind="immediate")
    run.kill9()
    run.mark(f"the tick's {moved:.0f} immediate status writes decided, none delivered")
    await hold_status_delivery(run, held=False)
    await run.restart()
    await run.wait_quiet(timeout_s=600)
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
