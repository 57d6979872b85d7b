"""Clock lag is sampled by the wall clock, so a partition whose ticks stop shows it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from agents.worker.lag import sample_clock_lag
from agents.worker.metrics import Metrics
from tables.clock import NEVER


def test_clock_lag_keeps_growing_while_no_tick_moves_the_clock() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    clock_ms = 1_700_000_000_000
    sample_clock_lag({0: clock_ms, 1: NEVER}, clock_ms + 600_000, metrics)
    assert registry.get_sample_value("engagement_clock_lag_seconds", {"partition": "0"}) == 600
    # a partition whose clock never moved has no lag yet
    assert registry.get_sample_value("engagement_clock_lag_seconds", {"partition": "1"}) is None
    # no tick since (the partition is not consumed): the wall clock moves on, the lag too
    sample_clock_lag({0: clock_ms}, clock_ms + 2_400_000, metrics)
    assert registry.get_sample_value("engagement_clock_lag_seconds", {"partition": "0"}) == 2400
