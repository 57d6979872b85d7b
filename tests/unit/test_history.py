"""User-by-user history runs (the record processor's fast path) decide exactly what
the processor and its engine decide record by record, in their order."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tables.activity import ActivityPolicy, ActivityTypes
from tables.engine import DictStore, PartitionEngine
from tables.history import History, run_history, run_records, run_users
from tables.model import Emission, ModelConfig, ModelEvent, Transition
from tables.thresholds import ThresholdBook, ThresholdPolicy

DAY_MS = 1_000
BASE_MS = 1_700_000_000_000
USERS = ("ana", "bo", "cy", "dee", "eve")
TYPES = ("view", "purchase", "checkout_failed", "complaint", "unsubscribe", "push_received")
# push_received passive; a one-day churn-intent grace; tiers from 2 active days
ACTIVITY = ActivityPolicy(
    ActivityTypes(passive=frozenset({"push_received"}), tier_min_active_days=2),
    intent_grace_ms=DAY_MS,
)


def config(
    user_min_active_days: int,
    lateness_ms: int,
    decline_sensitivity: float = 0.0,
    activation_types: frozenset[str] = frozenset(),
) -> ModelConfig:
    return ModelConfig(
        policy=ThresholdPolicy(
            defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS),
            min_ms=2 * DAY_MS,
            max_ms=90 * DAY_MS,
            user_min_active_days=user_min_active_days,
            day_ms=DAY_MS,  # the per-user thresholds count the gap in these days
        ),
        lateness_ms=lateness_ms,
        day_ms=DAY_MS,
        horizon_ms=30 * DAY_MS,
        new_days=3,
        resurrected_days=5,
        holdout_salt="salt",
        holdout_share=0.5,
        decline_sensitivity=decline_sensitivity,
        activation_types=activation_types,
        activation_days=4,
        activity=ACTIVITY,
    )


@st.composite
def histories(draw: st.DrawFn) -> list[ModelEvent]:
    """Bursts, daily habits and long silences, ties in time, repeated event ids (duplicates)."""
    events = []
    for n in range(draw(st.integers(0, 60))):
        user = draw(st.sampled_from(USERS))
        ts_ms = BASE_MS + draw(
            st.one_of(
                st.integers(0, 5 * DAY_MS),
                st.integers(0, 120 * DAY_MS),
                # a few days apart: per-user thresholds (3 active days) shorter than the default
                st.integers(0, 30).map(lambda day: day * DAY_MS),
            )
        )
        event_id = draw(st.one_of(st.just(n), st.integers(0, 5)))  # small ids repeat
        kind = draw(st.sampled_from(TYPES))
        anonymous = draw(st.sampled_from((None, None, None, True, False)))
        events.append(ModelEvent(user, event_id, kind, ts_ms, ts_ms, anonymous=anonymous))
    if draw(st.booleans()):  # a daily habit that fades: the declining rule's case
        daily = draw(st.integers(25, 50))
        gap = draw(st.integers(2, 4))
        days = [*range(daily), *range(daily, daily + 40, gap)]
        events += [
            ModelEvent(
                "fay", 1_000 + day, "view", BASE_MS + day * DAY_MS + 7, BASE_MS + day * DAY_MS + 7
            )
            for day in days
        ]
    events.sort(key=lambda event: event.ts_ms)
    return events


def engine_run(
    events: list[ModelEvent], cfg: ModelConfig, as_of_ms: int
) -> tuple[dict[str, object], list[Emission], list[Transition], int]:
    store = DictStore()
    engine = PartitionEngine(0, cfg, store, bucket_ms=3 * DAY_MS)
    emissions: list[Emission] = []
    transitions: list[Transition] = []
    applied = 0
    for event in events:
        result = engine.on_event(event)
        applied += result.outcome == "applied"
        emissions.extend(result.emissions)
        transitions.extend(engine.take_transitions())
    emissions.extend(engine.advance_to(as_of_ms))
    transitions.extend(engine.take_transitions())
    return dict(store), emissions, transitions, applied


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    histories(),
    st.sampled_from([0, 3]),
    st.sampled_from([0, 500, 2 * DAY_MS]),
    st.integers(0, 200 * DAY_MS),
    st.sampled_from([0.0, 0.65]),
    st.sampled_from([frozenset(), frozenset({"purchase"})]),
)
def test_user_by_user_equals_the_engine_event_by_event(
    events: list[ModelEvent],
    user_min_active_days: int,
    lateness_ms: int,
    after_ms: int,
    decline_sensitivity: float,
    activation_types: frozenset[str],
) -> None:
    cfg = config(user_min_active_days, lateness_ms, decline_sensitivity, activation_types)
    as_of_ms = (events[-1].ts_ms if events else BASE_MS) + after_ms - 3 * DAY_MS
    states, emissions, transitions, applied = engine_run(events, cfg, as_of_ms)
    history = run_users(events, cfg, as_of_ms)
    assert history.states == states
    assert history.emissions == emissions
    assert history.transitions == transitions
    assert history.applied == applied
    assert_same(run_records(events, cfg, as_of_ms), history)


def assert_same(per_record: History, fast: History) -> None:
    assert per_record.states == fast.states
    assert per_record.emissions == fast.emissions
    assert per_record.transitions == fast.transitions
    assert (per_record.applied, per_record.clock_ms) == (fast.applied, fast.clock_ms)
    assert per_record.passive == fast.passive
    assert per_record.config == fast.config


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.sampled_from([0, 3]), st.sampled_from([0, 500]))
def test_run_history_takes_the_fast_path_only_where_it_equals_the_processor(
    events: list[ModelEvent], user_min_active_days: int, lateness_ms: int
) -> None:
    """Without threshold versions ``run_history`` is the fold; an empty book is no
    version; with a version (one that changes nothing here: tenant "none" has no
    user) it steps the processor, to the same result."""
    cfg = config(user_min_active_days, lateness_ms)
    as_of_ms = (events[-1].ts_ms if events else BASE_MS) + 40 * DAY_MS
    expected = run_records(events, cfg, as_of_ms)
    assert_same(expected, run_history(events, cfg, as_of_ms))
    assert_same(expected, run_history(events, cfg, as_of_ms, ThresholdBook()))
    book = ThresholdBook().receive("none", BASE_MS, (DAY_MS, 2 * DAY_MS, 3 * DAY_MS), BASE_MS)
    stepped = run_history(events, cfg, as_of_ms, book)
    assert (stepped.states, stepped.emissions, stepped.transitions) == (
        expected.states,
        expected.emissions,
        expected.transitions,
    )


def test_signals_flow_in_a_history_long_enough_to_judge() -> None:
    """The equality above is not vacuous: a month of silence emits every tier
    (to a one-day user: tiers for every user)."""
    cfg = msgspec.structs.replace(config(0, 500), activity=ActivityPolicy())
    events = [ModelEvent("ana", 1, "view", BASE_MS, BASE_MS)]
    history = run_users(events, cfg, BASE_MS + 40 * DAY_MS)
    assert [e.kind for e in history.emissions] == ["at_risk", "dormant", "churned"]
    assert [t.to_stage for t in history.transitions] == [
        "new",
        "active",
        "at_risk",
        "dormant",
        "churned",
    ]


def test_a_users_own_shorter_threshold_is_judged_inside_a_run() -> None:
    """Daily events make the user's own at-risk threshold 3 days (per-user
    thresholds from 3 active days); a 5-day silence then crosses it, not the
    7-day default: the run of events must stop there to be judged."""
    cfg = config(3, 0)
    days = (0, 1, 2, 3, 8, 9)
    events = [
        ModelEvent("ana", n, "view", BASE_MS + day * DAY_MS, BASE_MS + day * DAY_MS)
        for n, day in enumerate(days)
    ]
    history = run_users(events, cfg, BASE_MS + 9 * DAY_MS)
    assert [(e.kind, e.as_of) for e in history.emissions] == [
        ("at_risk", BASE_MS + 6 * DAY_MS),  # day 3 + the user's own 3 days
        ("reactivated", BASE_MS + 8 * DAY_MS),
    ]
    states, emissions, transitions, applied = engine_run(events, cfg, BASE_MS + 9 * DAY_MS)
    assert (history.states, history.emissions, history.transitions, history.applied) == (
        states,
        emissions,
        transitions,
        applied,
    )


def test_events_out_of_order_are_refused() -> None:
    late = ModelEvent("ana", 1, "view", BASE_MS, BASE_MS)
    early = ModelEvent("bo", 2, "view", BASE_MS - 1, BASE_MS - 1)
    with pytest.raises(ValueError, match="ts order"):
        run_users([late, early], config(0, 0), BASE_MS)
