"""Activation per weekly cohort, as gauges (activation on: ``ENGAGEMENT_ACTIVATION_TYPES``).

Per partition, users are counted by the model week (``7 · DAY_MS``) of
their first event, and those of them who activated (the state's activated
bit, ``tables.activation``). The gauges ``engagement_activation_cohort_users`` and
``engagement_activation_cohort_activated_users`` carry the last ``COHORT_WEEKS`` cohorts
by ``weeks_ago`` (0 = the week holding the partition clock), so the label
set stays bounded; the activation rate of a cohort is
``sum(activated) / sum(users)`` over partitions. O(1) per event, recounted
from the states when a partition is rebuilt, and an erased user leaves its
cohort at once. Driven by ``agents.worker.stickiness.Stickiness``, which
already sees every user change.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Gauge

from tables.activation import ACTIVATED
from tables.state import UserState

COHORT_WEEKS: Final = 8
WEEK_DAYS: Final = 7


class ActivationCohorts:
    """Users and activated users per weekly cohort of first events, per partition."""

    def __init__(self, users: Gauge, activated: Gauge, day_ms: int) -> None:
        self._users = users
        self._activated = activated
        self._week_ms = WEEK_DAYS * day_ms
        self._counts: dict[int, dict[int, list[int]]] = {}  # partition -> week -> [users, act]

    def add(self, partition: int, state: UserState, delta: int = 1) -> None:
        week = state.first_seen_ms // self._week_ms
        counts = self._counts.setdefault(partition, {}).setdefault(week, [0, 0])
        counts[0] += delta
        if state.growth_flags & ACTIVATED:
            counts[1] += delta

    def on_event(self, partition: int, previous: UserState | None, state: UserState) -> None:
        if previous is None:
            self.add(partition, state)
        elif (
            previous.first_seen_ms != state.first_seen_ms
            or (previous.growth_flags ^ state.growth_flags) & ACTIVATED
        ):
            self.add(partition, previous, -1)
            self.add(partition, state)

    def remove(self, partition: int, state: UserState) -> None:
        self.add(partition, state, -1)

    def clear(self, partition: int) -> None:
        self.forget(partition)
        self._counts[partition] = {}

    def publish(self, partition: int, clock_ms: int) -> None:
        """Set the gauges of the last ``COHORT_WEEKS`` cohorts as of ``clock_ms``."""
        weeks = self._counts.get(partition, {})
        current = clock_ms // self._week_ms
        for stale in [week for week in weeks if week <= current - COHORT_WEEKS]:
            del weeks[stale]  # older than the gauges show: not needed again
        label = str(partition)
        for ago in range(COHORT_WEEKS):
            users, activated = weeks.get(current - ago, (0, 0))
            self._users.labels(weeks_ago=str(ago), partition=label).set(users)
            self._activated.labels(weeks_ago=str(ago), partition=label).set(activated)

    def forget(self, partition: int) -> None:
        if self._counts.pop(partition, None) is None:
            return
        for gauge in (self._users, self._activated):
            gauge.remove_by_labels({"partition": str(partition)})
