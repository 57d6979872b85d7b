"""A whole history of events at once: the record processor's offline paths.

``run_history`` is what ``engagement replay``, ``evaluate`` and ``fit`` call.
With tenant or segment threshold versions it feeds the events one by one to
a ``tables.processor.PartitionProcessor`` (``run_records``). Without, it
takes the processor's fast path, ``run_users``: what the processor fed the
same events in order decides, user by user, without its due index
(``tests/unit/test_history.py`` checks the two paths equal on generated
histories).

Offline replay knows every event up front. With events in event-time order
the clock at event ``j`` is ``ts_j - lateness`` (the greatest contribution so
far; replay's append time is the event time), so each user's decisions depend
only on that user's events and the clock values at them: before its event
``j`` a user is judged at the clock of ``j`` (``advance_user`` emits, in
order, every tier and stage change due by then, with their own ``as_of``),
after it the late-event rule applies, and at the end the clock moves to
``--as-of``. Running user by user skips the per-event scheduling work (the
due index, one of the two due-time computations), about a quarter of the
per-event cost. A run of a user's events with nothing due at their clocks is
folded (``tables.fold.fold_events``): one state made per run, not per event
(not with tenant or segment thresholds, which an event may switch).

The processor would have emitted a judged change at the first event whose
clock reached its due time, users in id order within one clock step, and
an event's own changes after those; the results are sorted back into that
order, so signals and transitions come out exactly as the processor's.
Threshold versions (``ThresholdBook``) switch policy mid-history and are not
handled by ``run_users``: ``run_history`` takes the per-record path for them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from tables.engine import DictStore
from tables.fold import fold_events, folds_judging
from tables.judgement import advance_user, next_change_ms
from tables.model import APPLIED, PASSIVE, Emission, ModelConfig, ModelEvent, Transition
from tables.processor import PartitionProcessor
from tables.state import TIER_NONE, UserState
from tables.step import step_event
from tables.thresholds import ThresholdBook

JUDGED: Final = 0  # a change judged when the clock moved (before that step's event)
OWN: Final = 1  # a change made by the step's own event (and the late-event judgement)
PROGRESS_EVENTS: Final = 50_000

# (clock step, JUDGED/OWN, user id for JUDGED else "", order within the user)
_Key = tuple[int, int, str, int]


class History(msgspec.Struct):
    """The outcome of a history: final states and every change, in the processor's
    order; ``config`` is the model's configuration in force at the end (its
    thresholds score the users)."""

    states: dict[str, UserState]
    emissions: list[Emission]
    transitions: list[Transition]
    applied: int
    clock_ms: int
    config: ModelConfig
    passive: int = 0  # events that are not activity and changed no user


def run_history(
    events: Sequence[ModelEvent],
    config: ModelConfig,
    as_of_ms: int,
    book: ThresholdBook | None = None,
    on_progress: Callable[[int], None] | None = None,
    by_user: dict[str, list[int]] | None = None,
) -> History:
    """Apply ``events`` (in ``ts`` order, ``append_ms`` equal to ``ts_ms``) and move the
    clock to ``as_of_ms``: user by user, or record by record with threshold versions."""
    if book is not None and book.scopes:
        return run_records(events, config, as_of_ms, book, on_progress)
    return run_users(events, config, as_of_ms, on_progress, by_user)


def run_records(
    events: Sequence[ModelEvent],
    config: ModelConfig,
    as_of_ms: int,
    book: ThresholdBook | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> History:
    """One processor over every user, record by record; threshold versions in ``book``
    switch on its clock."""
    states = DictStore()
    processor = PartitionProcessor(0, config, states, book=book)
    on_event = processor.on_event  # process() for events, without the type dispatch
    emissions: list[Emission] = []
    transitions: list[Transition] = []
    applied = passive = 0
    for done, event in enumerate(events, 1):
        result = on_event(event)
        if result.outcome == APPLIED:
            applied += 1
        elif result.outcome == PASSIVE:
            passive += 1
        if result.emissions:
            emissions.extend(result.emissions)
        if result.transitions:
            transitions.extend(result.transitions)
        if on_progress is not None and done % PROGRESS_EVENTS == 0:
            on_progress(PROGRESS_EVENTS)
    if on_progress is not None and len(events) % PROGRESS_EVENTS:
        on_progress(len(events) % PROGRESS_EVENTS)
    engine = processor.engine
    emissions.extend(engine.advance_to(as_of_ms))
    transitions.extend(engine.take_transitions())
    return History(states, emissions, transitions, applied, engine.clock_ms, engine.config, passive)


def positions_by_user(events: Sequence[ModelEvent]) -> dict[str, list[int]]:
    """Each user's positions in ``events``, in order, users in order of first event."""
    positions: defaultdict[str, list[int]] = defaultdict(list)
    for position, event in enumerate(events):
        positions[event.user_id].append(position)
    return positions


def run_users(
    events: Sequence[ModelEvent],
    config: ModelConfig,
    as_of_ms: int,
    on_progress: Callable[[int], None] | None = None,
    by_user: dict[str, list[int]] | None = None,
) -> History:
    """Apply ``events`` (sorted by ``ts_ms``; ``append_ms`` must equal it, as in
    replay, because the clock here follows ``ts_ms`` alone) and move the
    clock to ``as_of_ms``; the same states, signals and transitions, in the same
    order, as ``run_records`` (the processor fed each event, then the clock moved).
    ``on_progress`` gets the number of events done about every ``PROGRESS_EVENTS``.
    ``by_user`` is ``positions_by_user(events)`` when the caller made it already
    (replay does while reading), in the same key order."""
    lateness_ms = config.lateness_ms
    times_ms = [event.ts_ms for event in events]
    if times_ms != sorted(times_ms):
        raise ValueError("run_users needs events in ts order")
    final_clock_ms = max(times_ms[-1] - lateness_ms, as_of_ms) if events else as_of_ms
    positions = positions_by_user(events) if by_user is None else by_user

    states: dict[str, UserState] = {}
    emitted: list[tuple[_Key, Emission]] = []
    moved: list[tuple[_Key, Transition]] = []
    applied = passive = 0

    def judged(user_id: str, state: UserState, clock_at_ms: int, seq: int) -> tuple[UserState, int]:
        """Judge at a clock the engine reached earlier or now; key each change by
        the first clock step that reached its ``as_of``."""
        step = advance_user(state, user_id, clock_at_ms, config)
        for emission in step.emissions:
            at = bisect_left(times_ms, emission.as_of + lateness_ms)
            emitted.append(((at, JUDGED, user_id, seq), emission))
            seq += 1
        for transition in step.transitions:
            at = bisect_left(times_ms, transition.as_of + lateness_ms)
            moved.append(((at, JUDGED, user_id, seq), transition))
            seq += 1
        return step.state, seq

    # runs of events with nothing due at their clocks are folded: one state per run
    judging = folds_judging(config)
    done = reported = 0
    for user_id, at in positions.items():
        count = len(at)
        done += count
        if on_progress is not None and done - reported >= PROGRESS_EVENTS:
            on_progress(done - reported)
            reported = done
        state: UserState | None = None
        due_ms: int | None = None
        seq = 0
        index = 0
        while index < count:
            if judging and state is not None and state.tier == TIER_NONE:
                state, index, folded = fold_events(state, events, at, index, config, True)
                if folded:
                    applied += folded
                    due_ms = next_change_ms(state, config)
                if index == count:
                    break
            position = at[index]
            index += 1
            event = events[position]
            clock_at_ms = event.ts_ms - lateness_ms
            if state is not None and due_ms is not None and due_ms <= clock_at_ms:
                state, seq = judged(user_id, state, clock_at_ms, seq)
                due_ms = next_change_ms(state, config)
            step = step_event(state, event, config)
            if step is None:
                passive += 1
                continue
            if step.outcome != APPLIED:
                continue
            applied += 1
            state = step.state
            if step.emissions:
                for emission in step.emissions:
                    emitted.append(((position, OWN, "", seq), emission))
                    seq += 1
            if step.transitions:
                for transition in step.transitions:
                    moved.append(((position, OWN, "", seq), transition))
                    seq += 1
            due_ms = next_change_ms(state, config)
            if due_ms is not None and due_ms <= clock_at_ms:  # the late-event rule
                late = advance_user(state, user_id, clock_at_ms, config)
                for emission in late.emissions:
                    emitted.append(((position, OWN, "", seq), emission))
                    seq += 1
                for transition in late.transitions:
                    moved.append(((position, OWN, "", seq), transition))
                    seq += 1
                state = late.state
                due_ms = next_change_ms(state, config)
        if state is None:
            continue
        if due_ms is not None and due_ms <= final_clock_ms:
            state, seq = judged(user_id, state, final_clock_ms, seq)
        states[user_id] = state

    if on_progress is not None and done > reported:
        on_progress(done - reported)
    emitted.sort(key=_first)
    moved.sort(key=_first)
    return History(
        states=states,
        emissions=[emission for _key, emission in emitted],
        transitions=[transition for _key, transition in moved],
        applied=applied,
        clock_ms=final_clock_ms,
        config=config,
        passive=passive,
    )


def _first(item: tuple[_Key, object]) -> _Key:
    return item[0]
