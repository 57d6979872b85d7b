"""One input partition's engine: its clock, its due index, its users' states.

The same object runs live (states in a Faust table) and in offline replay
(states in a dict), so both decide alike. Storage is injected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

from tables.clock import NEVER, clock_ms, event_contribution_ms
from tables.due_index import DueIndex
from tables.model import APPLIED, Emission, ModelConfig, ModelEvent, apply_event, judge
from tables.state import UserState
from tables.thresholds import next_due_ms


class StateStore(Protocol):
    """Where one partition's user states live."""

    def get(self, user_id: str) -> UserState | None: ...

    def put(self, user_id: str, state: UserState) -> None: ...

    def delete(self, user_id: str) -> None: ...


class DictStore:
    """A plain in-memory store (replay, tests)."""

    def __init__(self) -> None:
        self.states: dict[str, UserState] = {}

    def get(self, user_id: str) -> UserState | None:
        return self.states.get(user_id)

    def put(self, user_id: str, state: UserState) -> None:
        self.states[user_id] = state

    def delete(self, user_id: str) -> None:
        self.states.pop(user_id, None)


class EventResult(msgspec.Struct, frozen=True):
    outcome: str
    emissions: list[Emission]
    state: UserState | None
    created: bool = False


class PartitionEngine:
    """Clock + due index + model for one partition."""

    def __init__(
        self,
        partition: int,
        config: ModelConfig,
        store: StateStore,
        high_ms: int = NEVER,
        bucket_ms: int | None = None,
    ) -> None:
        self.partition = partition
        self.config = config
        self.store = store
        self.high_ms = high_ms
        self.users_tracked = 0
        self.index = DueIndex(bucket_ms or max(1_000, min(config.policy.defaults_ms) // 64))

    @property
    def clock_ms(self) -> int:
        return clock_ms(self.high_ms, self.config.lateness_ms)

    def _due(self, state: UserState) -> int | None:
        tiers, _source = self.config.policy.resolve(state)
        return next_due_ms(state, tiers)

    def index_user(self, user_id: str, state: UserState) -> None:
        """Put a restored user into the due index (rebuild after restart/rebalance)."""
        due = self._due(state)
        if due is not None:
            self.index.add(user_id, due)

    def rebuild_index(self, users: Iterable[tuple[str, UserState]]) -> int:
        self.index.clear()
        count = 0
        for user_id, state in users:
            self.index_user(user_id, state)
            count += 1
        return count

    def observe(self, contribution_ms: int) -> list[Emission]:
        """Feed a clock contribution (event or tick); judge whoever fell due."""
        if contribution_ms > self.high_ms:
            self.high_ms = contribution_ms
            return self._judge_due()
        return []

    def advance_to(self, clock_at_ms: int) -> list[Emission]:
        """Move the clock itself to ``clock_at_ms`` (replay's ``--as-of``)."""
        return self.observe(clock_at_ms + self.config.lateness_ms)

    def on_event(self, event: ModelEvent) -> EventResult:
        emissions = self.observe(event_contribution_ms(event.ts_ms, event.append_ms))
        before = self.store.get(event.user_id)
        outcome, after, more = apply_event(before, event, self.config)
        if outcome != APPLIED:
            return EventResult(outcome, emissions, before)
        self.store.put(event.user_id, after)
        self.index.move(
            event.user_id, None if before is None else self._due(before), self._due(after)
        )
        emissions.extend(more)
        # A late event for a user already due (e.g. first seen long ago) is judged at once.
        if (due := self._due(after)) is not None and due <= self.clock_ms:
            emissions.extend(self._judge_user(event.user_id, after))
        if before is None:
            self.users_tracked += 1
        return EventResult(outcome, emissions, after, created=before is None)

    def forget(self, user_id: str) -> None:
        """Remove a user's state and due entry (erasure)."""
        state = self.store.get(user_id)
        if state is not None:
            due = self._due(state)
            if due is not None:
                self.index.discard(user_id, due)
            self.users_tracked -= 1
        self.store.delete(user_id)

    def _judge_user(self, user_id: str, state: UserState) -> list[Emission]:
        old_due = self._due(state)
        judged, emissions = judge(state, user_id, self.clock_ms, self.config)
        if emissions:
            self.store.put(user_id, judged)
            self.index.move(user_id, old_due, self._due(judged))
        return emissions

    def _judge_due(self) -> list[Emission]:
        now = self.clock_ms
        start = self.index.next_bucket_start_ms()
        if start is None or start > now:
            return []
        emissions: list[Emission] = []
        for user_id in self.index.pop_candidates(now):
            state = self.store.get(user_id)
            if state is None:
                continue
            judged, more = judge(state, user_id, now, self.config)
            if more:
                self.store.put(user_id, judged)
                emissions.extend(more)
            due = self._due(judged)
            if due is not None:
                self.index.add(user_id, due)
        return emissions
