"""Lifecycle transitions: every stage change is one record, in time order, also on restart.

A "day" is 1000 ms; thresholds 7/14/30 days, NEW_DAYS 3, RESURRECTED_DAYS 5.
"""

from __future__ import annotations

from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.decode import id_hash
from streams.records import LifecycleTransition, encode
from tables.engine import DictStore, PartitionEngine
from tables.judgement import stage_at
from tables.lifecycle import STAGE_ACTIVE, STAGES
from tables.model import ModelConfig, ModelEvent, Transition
from tables.thresholds import ThresholdPolicy

DAY_MS = 1_000
T0 = 1_700_000_000_000
CONFIG = ModelConfig(
    policy=ThresholdPolicy(
        defaults_ms=(7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
    ),
    lateness_ms=500,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    new_days=3,
    resurrected_days=5,
    holdout_salt="salt",
)


def event(user: str, ts_ms: int, offset: int = -1) -> ModelEvent:
    return ModelEvent(
        user_id=user,
        id_hash=id_hash(f"{user}@{ts_ms}"),
        type="visit",
        ts_ms=ts_ms,
        append_ms=ts_ms,
        offset=offset,
    )


def moves(transitions: list[Transition]) -> list[tuple[str | None, str, int]]:
    return [(t.from_stage, t.to_stage, t.as_of - T0) for t in transitions]


def test_a_user_goes_through_every_stage_once_each_in_time_order() -> None:
    e = PartitionEngine(0, CONFIG, DictStore())
    for day in (0, 1, 2, 4):
        e.on_event(event("u", T0 + day * DAY_MS))
    # The event of day 4 moved the clock past the end of the new days.
    assert moves(e.take_transitions()) == [(None, "new", 0), ("new", "active", 3 * DAY_MS)]
    e.advance_to(T0 + 40 * DAY_MS)
    assert moves(e.take_transitions()) == [
        ("active", "at_risk", 11 * DAY_MS),
        ("at_risk", "dormant", 18 * DAY_MS),
        ("dormant", "churned", 34 * DAY_MS),
    ]
    e.on_event(event("u", T0 + 41 * DAY_MS))
    (back,) = e.take_transitions()
    assert (back.from_stage, back.to_stage, back.as_of) == ("churned", "resurrected", T0 + 41_000)
    assert back.episode == T0 + 4 * DAY_MS
    assert back.reasons[0].code == "returned_after_days"
    e.on_event(event("u", T0 + 44 * DAY_MS))
    e.advance_to(T0 + 47 * DAY_MS)
    assert moves(e.take_transitions()) == [("resurrected", "active", 46 * DAY_MS)]
    assert e.take_transitions() == []


def test_a_return_from_at_risk_goes_to_active_even_within_the_new_days() -> None:
    config = ModelConfig(
        policy=ThresholdPolicy(
            defaults_ms=(2 * DAY_MS, 4 * DAY_MS, 8 * DAY_MS), min_ms=1, max_ms=10**9
        ),
        lateness_ms=0,
        day_ms=DAY_MS,
        horizon_ms=30 * DAY_MS,
        new_days=7,
    )
    e = PartitionEngine(0, config, DictStore())
    e.on_event(event("u", T0))
    e.advance_to(T0 + 2 * DAY_MS)
    e.on_event(event("u", T0 + 3 * DAY_MS))
    assert moves(e.take_transitions()) == [
        (None, "new", 0),
        ("new", "at_risk", 2 * DAY_MS),
        ("at_risk", "active", 3 * DAY_MS),
    ]
    state = e.store.get("u")
    assert state is not None and state.stage == STAGE_ACTIVE
    assert stage_at(state, T0 + 3 * DAY_MS, config) == "active"


def test_silence_starting_when_new_ends_goes_straight_to_at_risk() -> None:
    config = ModelConfig(
        policy=CONFIG.policy, lateness_ms=0, day_ms=DAY_MS, horizon_ms=DAY_MS, new_days=7
    )
    e = PartitionEngine(0, config, DictStore())
    e.on_event(event("one-time", T0))
    e.advance_to(T0 + 7 * DAY_MS)
    assert moves(e.take_transitions()) == [(None, "new", 0), ("new", "at_risk", 7 * DAY_MS)]


def test_new_to_active_falls_due_on_an_idle_partition_via_the_index() -> None:
    e = PartitionEngine(0, CONFIG, DictStore())
    e.on_event(event("u", T0))
    e.on_event(event("u", T0 + 2 * DAY_MS))
    e.take_transitions()
    assert e.advance_to(T0 + 3 * DAY_MS - 1) == []
    assert e.take_transitions() == []
    assert e.advance_to(T0 + 3 * DAY_MS) == []  # a stage change, not a signal
    assert moves(e.take_transitions()) == [("new", "active", 3 * DAY_MS)]


def test_transition_record_has_the_contract_id_and_fields() -> None:
    e = PartitionEngine(0, CONFIG, DictStore())
    e.on_event(event("user-7", T0))
    e.advance_to(T0 + 7 * DAY_MS)
    transitions = e.take_transitions()
    record = LifecycleTransition.from_transition(transitions[-1])
    assert record.transition_id == f"user-7:{T0 + 7 * DAY_MS}:at_risk"
    assert (record.from_stage, record.to_stage, record.episode) == ("active", "at_risk", T0)
    assert record.reasons[0].code == "inactive_days"
    born = LifecycleTransition.from_transition(transitions[0])
    assert born.from_stage is None and born.to_stage == "new"
    assert b'"transition_id"' in encode(record)


USERS = ("a", "b", "c")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(USERS), st.integers(0, 12 * DAY_MS)), min_size=1, max_size=25
    ),
    cut=st.integers(0, 25),
    final=st.integers(0, 60 * DAY_MS),
)
def test_transitions_chain_per_user_and_survive_a_restart(
    steps: list[tuple[str, int]], cut: int, final: int
) -> None:
    now = T0
    events = []
    for offset, (user, gap) in enumerate(steps):
        now += gap
        events.append(event(user, now, offset))
    end = now + final

    def run(engine: PartitionEngine, batch: list[ModelEvent]) -> list[Transition]:
        for item in batch:
            engine.on_event(item)
        return engine.take_transitions()

    whole = PartitionEngine(0, CONFIG, DictStore())
    all_moves = run(whole, events)
    whole.advance_to(end)
    all_moves += whole.take_transitions()

    first = PartitionEngine(0, CONFIG, DictStore())
    before = run(first, events[:cut])
    store = DictStore()
    store.update(first.store.states)  # type: ignore[attr-defined]
    second = PartitionEngine(0, CONFIG, store, high_ms=first.high_ms)
    second.rebuild_index(store.states.items())
    after = run(second, events[cut:])
    second.advance_to(end)
    after += second.take_transitions()
    assert before + after == all_moves

    ids = [t.transition_id for t in all_moves]
    assert len(ids) == len(set(ids))
    for user in USERS:
        chain = [t for t in all_moves if t.user_id == user]
        if not chain:
            continue
        assert chain[0].from_stage is None and chain[0].to_stage == "new"
        for earlier, later in pairwise(chain):
            assert later.from_stage == earlier.to_stage
            assert later.as_of >= earlier.as_of
        state = whole.store.get(user)
        assert state is not None
        assert STAGES[state.stage] == chain[-1].to_stage
        assert stage_at(state, whole.clock_ms, CONFIG) == chain[-1].to_stage
