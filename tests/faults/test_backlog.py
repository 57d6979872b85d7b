"""Faults with a backlog: the input topic filled before the worker starts, so
every fetch is a whole batch. kill -9 in the middle of the backlog, and
SIGTERM in the middle of a batch; the worker is started again each time.

Sizes: ``FAULTS_BACKLOG_EVENTS`` (kill -9, default 1M), ``FAULTS_SIGTERM_EVENTS``
(SIGTERM, default 200k)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.backlog import send_backlog, size, start_on_backlog
from support.faults import FaultRun, FeedPlan, Figures

BACKLOG_EVENTS = size("FAULTS_BACKLOG_EVENTS", 1_000_000)
SIGTERM_EVENTS = size("FAULTS_SIGTERM_EVENTS", 200_000)


@pytest.mark.full
async def test_kill9_in_the_middle_of_a_backlog(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    plan = FeedPlan(events=BACKLOG_EVENTS, users=20_000, seed=31)
    run = fault_run("kill9-mid-backlog", kafka_broker.url, plan, redis_url=redis_server.url)
    await start_on_backlog(run)
    await run.wait_fraction(0.5, timeout_s=3_600)
    run.kill9()
    await run.restart()
    await run.wait_done(timeout_s=3_600)
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())


@pytest.mark.full
async def test_sigterm_in_the_middle_of_a_batch(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    """A backlog twice: the second lands while the worker is idle, so the first
    fetch after it is a whole batch, and SIGTERM comes once it is being applied."""
    plan = FeedPlan(events=SIGTERM_EVENTS, users=20_000, seed=37)
    run = fault_run("sigterm-mid-batch", kafka_broker.url, plan, redis_url=redis_server.url)
    await start_on_backlog(run, SIGTERM_EVENTS // 2)
    await run.wait_fraction(0.5, timeout_s=1_800)
    await send_backlog(run)
    run.stats.done = True
    await run.wait_fraction(0.55, timeout_s=1_800)
    process = run.workers["w0"]
    process.stop(grace_s=60.0)
    code = process.proc.returncode if process.proc is not None else None
    run.mark(f"SIGTERM w0 in a batch: exit code {code} (-9: killed after the grace time)")
    await run.restart()
    await run.wait_done(timeout_s=1_800)
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())
    assert code == 0, f"w0 did not finish its batch and leave within 60 s (exit code {code})"
