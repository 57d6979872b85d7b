"""Gauges derived from user states: users per lifecycle stage, DAU/WAU/MAU, streaks.

All O(1) per event, per partition (a worker exports its own partitions;
Prometheus sums them):

- **Stages**: a count per stage, moved by each lifecycle transition, set
  from the states when a partition is (re)built.
- **Active users**: per partition and tenant label, a ring of counters
  "users whose last active day is d" over the last ``MAU_DAYS`` days (days
  of ``DAY_MS`` on the partition's event time). An event moves its user from
  the old last day to the new one, so the trailing DAU (today), WAU (7
  days) and MAU (30 days) are exact sums of the ring: no per-user history,
  no decrements to schedule. An erased user leaves the ring at once.
- **Streaks**: a histogram of the current active-day streak, observed on
  each user's first event of a day.
- **Activation cohorts** (activation on): handed every change, see
  ``agents.worker.activation_cohorts``.

The ``tenant`` label holds tenants present in the config topic, else
``other`` (docs/CONTRACTS.md: bounded label sets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from prometheus_client import Gauge, Histogram

from agents.worker.activation_cohorts import ActivationCohorts
from tables.lifecycle import STAGES
from tables.state import UserState

DAU_DAYS: Final = 1
WAU_DAYS: Final = 7
MAU_DAYS: Final = 30
OTHER_TENANT: Final = "other"


class StageCounts:
    """Users per lifecycle stage for each owned partition."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._counts: dict[int, list[int]] = {}

    def reset(self, partition: int, states: Iterable[UserState]) -> None:
        self.clear(partition)
        for state in states:
            self.add(partition, state)
        self.publish(partition)

    def clear(self, partition: int) -> None:
        self._counts[partition] = [0] * len(STAGES)

    def add(self, partition: int, state: UserState) -> None:
        self._counts.setdefault(partition, [0] * len(STAGES))[state.stage] += 1

    def publish(self, partition: int) -> None:
        counts = self._counts.get(partition, [0] * len(STAGES))
        for stage, count in zip(STAGES, counts, strict=True):
            self._gauge.labels(stage=stage, partition=str(partition)).set(count)

    def move(self, partition: int, from_stage: str | None, to_stage: str | None) -> None:
        counts = self._counts.setdefault(partition, [0] * len(STAGES))
        for stage, delta in ((from_stage, -1), (to_stage, 1)):
            if stage is None:
                continue
            index = STAGES.index(stage)
            counts[index] = max(0, counts[index] + delta)
            self._gauge.labels(stage=stage, partition=str(partition)).set(counts[index])

    def forget(self, partition: int) -> None:
        if self._counts.pop(partition, None) is not None:
            for stage in STAGES:
                self._gauge.remove(stage, str(partition))


class _Ring:
    """Users by last active day over the trailing ``MAU_DAYS`` days."""

    __slots__ = ("counts", "newest_day")

    def __init__(self, newest_day: int) -> None:
        self.newest_day = newest_day
        self.counts = [0] * MAU_DAYS  # index 0 = newest_day, 1 = the day before, ...

    def roll(self, day: int) -> None:
        shift = day - self.newest_day
        if shift <= 0:
            return
        self.counts = ([0] * min(shift, MAU_DAYS) + self.counts)[:MAU_DAYS]
        self.newest_day = day

    def add(self, day: int, delta: int) -> None:
        age = self.newest_day - day
        if 0 <= age < MAU_DAYS:
            self.counts[age] = max(0, self.counts[age] + delta)

    def active(self, days: int) -> int:
        return sum(self.counts[:days])


class Stickiness:
    """Trailing DAU/WAU/MAU and streaks per partition and tenant label."""

    def __init__(
        self,
        active: dict[int, Gauge],
        ratio: Gauge,
        streaks: Histogram,
        day_ms: int,
        tenants: Callable[[], set[str]],
        cohorts: ActivationCohorts | None = None,
    ) -> None:
        self._cohorts = cohorts
        self._active = active
        self._ratio = ratio
        self._streaks = streaks
        self._day_ms = day_ms
        self._tenants = tenants
        self._rings: dict[int, dict[str, _Ring]] = {}

    def tenant_label(self, tenant: str) -> str:
        return tenant if tenant and tenant in self._tenants() else OTHER_TENANT

    def reset(self, partition: int, states: Iterable[UserState], today_ms: int) -> None:
        """Recount a partition from its users' states (after recovery or a config change)."""
        self.clear(partition)
        for state in states:
            self.add(partition, state, today_ms)
        self.publish(partition, today_ms)

    def clear(self, partition: int) -> None:
        self.forget(partition)
        self._rings[partition] = {}
        if self._cohorts is not None:
            self._cohorts.clear(partition)

    def add(self, partition: int, state: UserState, today_ms: int) -> None:
        """Count one user of a partition being rebuilt."""
        if self._cohorts is not None:
            self._cohorts.add(partition, state)
        rings = self._rings.setdefault(partition, {})
        label = self.tenant_label(state.tenant)
        ring = rings.get(label)
        if ring is None:
            ring = rings[label] = _Ring(today_ms // self._day_ms)
        last_day = state.last_seen_ms // self._day_ms
        ring.roll(last_day)
        ring.add(last_day, 1)

    def on_event(
        self, partition: int, previous: UserState | None, state: UserState, today_ms: int
    ) -> None:
        """An applied event: move the user from the old last active day to the new one."""
        if self._cohorts is not None:
            self._cohorts.on_event(partition, previous, state)
        day_ms = self._day_ms
        rings = self._rings.setdefault(partition, {})
        label = self.tenant_label(state.tenant)
        ring = rings.get(label)
        if ring is None:
            ring = rings[label] = _Ring(max(today_ms, state.last_seen_ms) // day_ms)
        ring.roll(max(today_ms, state.last_seen_ms) // day_ms)
        new_day = state.last_seen_ms // day_ms
        if previous is None:
            ring.add(new_day, 1)
        else:
            old_day = previous.last_seen_ms // day_ms
            old_label = self.tenant_label(previous.tenant)
            if old_day != new_day or old_label != label:
                old_ring = rings.get(old_label)
                if old_ring is not None:
                    old_ring.add(old_day, -1)
                ring.add(new_day, 1)
        if previous is None or state.active_days > previous.active_days:
            self._streaks.observe(state.streak_days)

    def remove(self, partition: int, state: UserState, today_ms: int) -> None:
        """An erased user: no longer counted on their last active day."""
        if self._cohorts is not None:
            self._cohorts.remove(partition, state)
        ring = self._rings.get(partition, {}).get(self.tenant_label(state.tenant))
        if ring is None:
            return
        ring.add(state.last_seen_ms // self._day_ms, -1)
        self.publish(partition, today_ms)

    def publish(self, partition: int, today_ms: int) -> None:
        """Set the gauges of a partition as of ``today_ms`` (on ticks: cheap, O(30))."""
        if self._cohorts is not None:
            self._cohorts.publish(partition, today_ms)
        today = today_ms // self._day_ms
        for label, ring in self._rings.get(partition, {}).items():
            ring.roll(today)
            counts = {days: ring.active(days) for days in self._active}
            for days, count in counts.items():
                self._active[days].labels(tenant=label, partition=str(partition)).set(count)
            month = counts.get(MAU_DAYS, 0)
            ratio = counts.get(DAU_DAYS, 0) / month if month else 0.0
            self._ratio.labels(tenant=label, partition=str(partition)).set(ratio)

    def forget(self, partition: int) -> None:
        if self._cohorts is not None:
            self._cohorts.forget(partition)
        rings = self._rings.pop(partition, None)
        if not rings:
            return
        for label in rings:
            for gauge in self._active.values():
                gauge.remove(label, str(partition))
            self._ratio.remove(label, str(partition))

    def active_users(self, partition: int, days: int, tenant: str | None = None) -> int:
        rings = self._rings.get(partition, {})
        if tenant is not None:
            ring = rings.get(tenant)
            return 0 if ring is None else ring.active(days)
        return sum(ring.active(days) for ring in rings.values())
