"""One input partition's engine: its clock, its due index, its users' states.

The record processor (``tables.processor``) holds one per partition, live
(states in a Faust table) and offline (states in a dict), so both decide
alike. Storage is injected. Signals come back from each call; lifecycle
transitions collect in ``transitions`` until the caller takes them
(``take_transitions``), so the calls keep their shape.
A user's due time is the earlier of the next tier and the next stage change
that time alone makes (new → active, resurrected → active).

Tenant and segment thresholds arrive as versions (``receive_config``); the
engine switches its policy exactly when a version starts to apply on the
clock, judging the users due before that instant with the old thresholds,
and rebuilds the due index, which needs every user's exact due time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import msgspec

from tables.activity import ActivityTypes
from tables.clock import NEVER, clock_ms
from tables.due_index import DueIndex
from tables.errors import ConfigurationError
from tables.judgement import advance_user, next_change_ms
from tables.model import APPLIED, PASSIVE, Emission, ModelConfig, ModelEvent, Transition
from tables.state import UserState
from tables.step import step_event
from tables.thresholds import ThresholdBook, Tiers

UsersOf = Callable[[], Iterable[tuple[str, UserState]]]


class StateStore(Protocol):
    """Where one partition's user states live."""

    def get(self, user_id: str) -> UserState | None: ...

    def put(self, user_id: str, state: UserState) -> None: ...

    def delete(self, user_id: str) -> None: ...


class DictStore(dict[str, UserState]):
    """A plain in-memory store (replay, tests): a dict whose ``get`` and ``put``
    are the dict's own C methods (no Python frame per event)."""

    put = dict.__setitem__

    def delete(self, user_id: str) -> None:
        self.pop(user_id, None)

    @property
    def states(self) -> dict[str, UserState]:
        return self

    def items_list(self) -> list[tuple[str, UserState]]:
        return list(self.items())


class EventResult(msgspec.Struct, frozen=True, gc=False):
    outcome: str
    emissions: list[Emission]
    state: UserState | None
    created: bool = False
    previous: UserState | None = None


class PartitionEngine:
    """Clock + due index + model for one partition."""

    def __init__(
        self,
        partition: int,
        config: ModelConfig,
        store: StateStore,
        high_ms: int = NEVER,
        bucket_ms: int | None = None,
        users: UsersOf | None = None,
        book: ThresholdBook | None = None,
    ) -> None:
        self.partition = partition
        self.config = config
        self.store = store
        self.high_ms = high_ms
        self.users_tracked = 0
        self.index = DueIndex(bucket_ms or max(1_000, min(config.policy.defaults_ms) // 64))
        self.transitions: list[Transition] = []
        self._users = users if users is not None else getattr(store, "items_list", None)
        self._base_overrides = dict(config.policy.overrides)
        self._base_activity = dict(config.activity.overrides)
        self.book = book if book is not None else ThresholdBook()
        self._next_activation_ms: int | None = None
        self._apply_book(self.clock_ms)

    @property
    def clock_ms(self) -> int:
        return clock_ms(self.high_ms, self.config.lateness_ms)

    def _due(self, state: UserState) -> int | None:
        return next_change_ms(state, self.config)

    def take_transitions(self) -> list[Transition]:
        """The lifecycle transitions decided since the last call, in order."""
        taken, self.transitions = self.transitions, []
        return taken

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
        if contribution_ms <= self.high_ms:
            return []
        emissions: list[Emission] = []
        target_ms = clock_ms(contribution_ms, self.config.lateness_ms)
        while self._next_activation_ms is not None and self._next_activation_ms <= target_ms:
            switch_ms = self._next_activation_ms
            emissions.extend(self._judge_due(switch_ms - 1))
            self._apply_book(switch_ms)
            self.reindex()
        self.high_ms = contribution_ms
        if target_ms >= self.index.floor_ms:  # else nobody can be due yet
            emissions.extend(self._judge_due(target_ms))
        return emissions

    def receive_config(
        self,
        scope: str,
        effective_from_ms: int,
        tiers_ms: Tiers,
        activity: ActivityTypes | None = None,
    ) -> tuple[bool, list[Emission]]:
        """A threshold version for ``scope``: ``(changed, signals now due)``."""
        now = self.clock_ms
        book = self.book.receive(scope, effective_from_ms, tiers_ms, now, activity)
        if book is None:
            return False, []
        self.book = book.pruned(now)
        before = self.config
        self._apply_book(now)
        if self.config == before:
            return True, []  # applies later: observe switches when the clock gets there
        self.reindex()
        return True, self._judge_due(now)

    def reindex(self) -> int:
        """Rebuild the due index from every user of the partition (after a threshold change)."""
        if self._users is None:
            raise ConfigurationError("this engine cannot list its users, so cannot reindex")
        return self.rebuild_index(self._users())

    def _apply_book(self, at_ms: int) -> None:
        overrides = {**self._base_overrides, **self.book.overrides_at(at_ms)}
        if overrides != self.config.policy.overrides:
            policy = msgspec.structs.replace(self.config.policy, overrides=overrides)
            self.config = msgspec.structs.replace(self.config, policy=policy)
        activity = {**self._base_activity, **self.book.activity_at(at_ms)}
        if activity != self.config.activity.overrides:
            classes = msgspec.structs.replace(self.config.activity, overrides=activity)
            self.config = msgspec.structs.replace(self.config, activity=classes)
        self._next_activation_ms = self.book.next_activation_ms(at_ms)

    def advance_to(self, clock_at_ms: int) -> list[Emission]:
        """Move the clock itself to ``clock_at_ms`` (replay's ``--as-of``)."""
        return self.observe(clock_at_ms + self.config.lateness_ms)

    def on_event(self, event: ModelEvent) -> EventResult:
        """Apply one event (after moving the clock by it); what it did to its user."""
        emissions: list[Emission] = []
        outcome, before, after = self.apply(event, emissions)
        return EventResult(outcome, emissions, after, outcome == APPLIED and before is None, before)

    def apply(
        self, event: ModelEvent, emissions: list[Emission]
    ) -> tuple[str, UserState | None, UserState | None]:
        """Observe the event's clock contribution, then apply it: ``(outcome, before, after)``;
        its signals are appended to ``emissions`` (``on_event`` without a result object)."""
        # tables.clock.event_contribution_ms, inlined: the hot path
        ts_ms = event.ts_ms
        contribution_ms = ts_ms if ts_ms <= event.append_ms else event.append_ms
        if contribution_ms > self.high_ms:
            if (
                self._next_activation_ms is None
                and contribution_ms - self.config.lateness_ms < self.index.floor_ms
            ):
                self.high_ms = contribution_ms  # the clock moves, nobody can be due yet
            else:
                emissions.extend(self.observe(contribution_ms))
        user_id = event.user_id
        before = self.store.get(user_id)
        step = step_event(before, event, self.config)
        if step is None:
            return PASSIVE, before, before
        after = step.state
        if step.outcome != APPLIED:
            return step.outcome, before, before
        if step.transitions:
            self.transitions.extend(step.transitions)
        self.store.put(user_id, after)
        config = self.config
        due = next_change_ms(after, config)
        self.index.move(user_id, None if before is None else next_change_ms(before, config), due)
        if step.emissions:
            emissions.extend(step.emissions)
        # A late event for a user already due (e.g. first seen long ago) is judged at once.
        if due is not None and due <= clock_ms(self.high_ms, config.lateness_ms):
            after, more = self._judge_user(user_id, after)
            emissions.extend(more)
        if before is None:
            self.users_tracked += 1
        return APPLIED, before, after

    def forget(self, user_id: str) -> None:
        """Remove a user's state and due entry (erasure)."""
        state = self.store.get(user_id)
        if state is not None:
            due = self._due(state)
            if due is not None:
                self.index.discard(user_id, due)
            self.users_tracked -= 1
        self.store.delete(user_id)

    def _judge_user(self, user_id: str, state: UserState) -> tuple[UserState, list[Emission]]:
        old_due = self._due(state)
        step = advance_user(state, user_id, self.clock_ms, self.config)
        if step.state != state:
            self.store.put(user_id, step.state)
            self.index.move(user_id, old_due, self._due(step.state))
            self.transitions.extend(step.transitions)
        return step.state, step.emissions

    def _judge_due(self, now: int) -> list[Emission]:
        if now < self.index.floor_ms:
            return []  # nobody can be due yet (the common case, without a heap look)
        start = self.index.next_bucket_start_ms()
        if start is None or start > now:
            return []
        emissions: list[Emission] = []
        for user_id in self.index.pop_candidates(now):
            state = self.store.get(user_id)
            if state is None:
                continue
            step = advance_user(state, user_id, now, self.config)
            judged = step.state
            if judged != state:
                self.store.put(user_id, judged)
                emissions.extend(step.emissions)
                self.transitions.extend(step.transitions)
            due = self._due(judged)
            if due is not None:
                self.index.add(user_id, due)
        return emissions
