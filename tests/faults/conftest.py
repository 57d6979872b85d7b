"""Fixtures of the fault-injection suite: a run factory that always cleans up
(once per store), and the terminal line of figures per scenario."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support.faults import FaultRun, FeedPlan, Figures, record_figures

# At least 100k events per scenario, at a rate one worker keeps up with on a
# small machine; faults are placed by processing progress, not by time.
EVENTS = 100_000
RATE_PER_S = 2_000.0


@pytest.fixture(params=["memory://", "rocksdb://"], ids=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest) -> str:
    """Every scenario runs on each store the worker offers."""
    name: str = request.param
    return name


@pytest.fixture
async def fault_run(tmp_path: Path, store: str) -> AsyncIterator[Callable[..., FaultRun]]:
    runs: list[FaultRun] = []

    def make(name: str, broker_url: str, plan: FeedPlan | None = None, **kwargs: Any) -> FaultRun:
        run = FaultRun(
            name,
            broker_url,
            tmp_path,
            plan or FeedPlan(events=EVENTS, rate_per_s=RATE_PER_S),
            ENGAGEMENT_STORE=store,
            **kwargs,
        )
        runs.append(run)
        return run

    yield make
    for run in runs:
        await run.close()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[Figures], None]:
    """Print the scenario's line of figures past pytest's output capture."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")

    def emit(figures: Figures) -> None:
        with capture.global_and_fixture_disabled():
            record_figures(figures, reporter)

    return emit
