"""kill -9 of the worker during processing, restarted each time; again during recovery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.faults import FaultRun, Figures


@pytest.mark.full
async def test_kill9_at_half_and_restart(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    run = fault_run("kill9-50", kafka_broker.url, redis_url=redis_server.url)
    await run.start()
    await run.wait_fraction(0.5)
    run.kill9()
    await run.restart()
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean(run.deployment.log_tail())


@pytest.mark.full
async def test_kill9_at_20_50_80_and_during_recovery(
    kafka_broker: Any,
    redis_server: Any,
    fault_run: Callable[..., FaultRun],
    report: Callable[[Figures], None],
) -> None:
    run = fault_run("kill9-20-50-80+recovery", kafka_broker.url, redis_url=redis_server.url)
    await run.start()
    for fraction in (0.2, 0.5, 0.8):
        await run.wait_fraction(fraction)
        run.kill9()
        await run.restart(kill_during_recovery=fraction == 0.8)
    await run.wait_done()
    figures = await run.verdict()
    report(figures)
    figures.assert_clean("; ".join(run.notes) + "\n" + run.deployment.log_tail())
