"""Lag gauges of the input partitions this worker owns, sampled by the wall clock.

Consumer lag = the partition's high water mark (from the consumer's last
fetch) minus the next offset to be handed to the agent. Ticks the worker
writes count like any record: they are read and processed too. A partition
whose high water is not known yet (no fetch answered) is left out rather than
reported as 0.

Clock lag = wall time minus the partition's event-time clock. Handling a tick
sets it too; sampled here as well, a partition whose ticks stop arriving (not
consumed, not written) shows a lag that keeps growing, not its last tick's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agents.worker.checkpoint import read_offset
from agents.worker.metrics import Metrics
from tables.clock import NEVER


def partition_lag(consumer: Any, tp: Any) -> int | None:
    """Records of ``tp`` not yet read, or ``None`` while unknown."""
    try:
        highwater = consumer.highwater(tp)
    except (AssertionError, KeyError, AttributeError, TypeError, ValueError):
        return None  # not assigned (any more) or no fetch yet
    if highwater is None:
        return None
    read = read_offset(consumer, tp)  # the last offset handed out
    if read is None:
        return None  # nothing read since the assignment; ticks arrive within a tick interval
    return max(int(highwater) - (read + 1), 0)


def sample_consumer_lag(app: Any, topic: str, partitions: Iterable[int], metrics: Metrics) -> None:
    """Set the gauge for owned partitions (a lost partition's series is dropped at
    assignment, ``Metrics.drop_partitions``)."""
    from faust.types import TP

    consumer = app.consumer
    for partition in partitions:
        lag = partition_lag(consumer, TP(topic, partition))
        if lag is not None:
            metrics.consumer_lag.labels(partition=str(partition)).set(lag)


def sample_clock_lag(clocks_ms: Mapping[int, int], wall_ms: int, metrics: Metrics) -> None:
    """Set the clock lag of owned partitions (``partition -> clock``); a partition
    whose clock has never moved is left out (no lag to speak of yet)."""
    for partition, clock_ms in clocks_ms.items():
        if clock_ms > NEVER:
            metrics.clock_lag.labels(partition=str(partition)).set((wall_ms - clock_ms) / 1000)
