"""Activation (tables.activation): new ends by activating, or in not_activated at the deadline.

Production settings (days of 24 h, 7/14/30-day tiers) with activation types
``onboarding_completed`` and ``purchase`` and the default deadline of 7 days.
"""

from __future__ import annotations

from streams.decode import id_hash
from streams.model_settings import model_config
from streams.settings import Settings
from tables.engine import DictStore
from tables.history import run_records, run_users
from tables.judgement import stage_at
from tables.model import Emission, ModelConfig, ModelEvent, Transition
from tables.processor import PartitionProcessor

DAY_MS = 86_400_000
T0 = 1_800_000_000_000 // DAY_MS * DAY_MS
ON = model_config(Settings(holdout_salt="s", activation_types="onboarding_completed, purchase"))
OFF = model_config(Settings(holdout_salt="s"))


def act(user: str, day: float, kind: str = "view") -> ModelEvent:
    ts = T0 + round(day * DAY_MS)
    return ModelEvent(user, id_hash(f"{user}-{day}-{kind}"), kind, ts, ts)


def run(
    events: list[ModelEvent], config: ModelConfig, until_day: float
) -> tuple[PartitionProcessor, list[Emission], list[Transition]]:
    processor = PartitionProcessor(0, config, DictStore())
    emissions: list[Emission] = []
    transitions: list[Transition] = []
    for event in sorted(events, key=lambda e: e.ts_ms):
        result = processor.process(event, event.append_ms)
        emissions += result.emissions
        transitions += result.transitions
    emissions += processor.engine.advance_to(T0 + round(until_day * DAY_MS))
    transitions += processor.engine.take_transitions()
    return processor, emissions, transitions


def moves(transitions: list[Transition], user: str) -> list[tuple[str | None, str, float]]:
    return [
        (t.from_stage, t.to_stage, (t.as_of - T0) / DAY_MS)
        for t in transitions
        if t.user_id == user
    ]


def test_activation_is_off_by_default_and_new_ends_by_time() -> None:
    assert OFF.activation_types == frozenset()
    _p, emissions, transitions = run([act("u", d) for d in range(10)], OFF, 10)
    assert moves(transitions, "u") == [(None, "new", 0), ("new", "active", 7)]
    assert emissions == []


def test_a_user_who_activates_leaves_new_for_active_at_that_event() -> None:
    events = [act("u", 0), act("u", 1), act("u", 2.5, "purchase"), act("u", 3), act("u", 9)]
    processor, emissions, transitions = run(events, ON, 10)
    assert moves(transitions, "u") == [(None, "new", 0), ("new", "active", 2.5)]
    assert (transitions[-1].reasons[0].code, transitions[-1].reasons[0].value) == (
        "activated_after_days",
        2.5,
    )
    assert emissions == []
    state = processor.store.get("u")
    assert state is not None and stage_at(state, T0 + 10 * DAY_MS, ON) == "active"


def test_activating_with_the_first_event_makes_a_new_and_an_active_transition() -> None:
    _p, _e, transitions = run([act("u", 0, "onboarding_completed")], ON, 1)
    assert moves(transitions, "u") == [(None, "new", 0), ("new", "active", 0)]


def test_an_unactivated_user_gets_not_activated_at_the_deadline_once() -> None:
    events = [act("u", d) for d in (0, 1, 2, 3, 5, 6, 8, 9, 10)]
    processor, emissions, transitions = run(events, ON, 12)
    (signal,) = emissions
    assert signal.kind == "not_activated"
    assert signal.as_of == T0 + 7 * DAY_MS
    assert signal.signal_id == f"u:{T0}:not_activated"
    assert signal.threshold_ms == 7 * DAY_MS and signal.threshold_source == "activation"
    assert {r.code: r.value for r in signal.reasons} == {
        "active_days": 6.0,
        "days_since_first_seen": 7.0,
    }
    assert moves(transitions, "u") == [(None, "new", 0), ("new", "not_activated", 7)]
    state = processor.store.get("u")
    assert state is not None and stage_at(state, T0 + 12 * DAY_MS, ON) == "not_activated"


def test_activating_after_the_deadline_moves_not_activated_to_active() -> None:
    events = [act("u", 0), act("u", 3), act("u", 8), act("u", 9, "purchase")]
    _p, emissions, transitions = run(events, ON, 10)
    assert [e.kind for e in emissions] == ["not_activated"]
    assert moves(transitions, "u")[-1] == ("not_activated", "active", 9)


def test_a_silent_unactivated_user_gets_at_risk_and_not_activated_and_returns_unactivated() -> None:
    events = [act("u", 0), act("u", 20)]
    _p, emissions, transitions = run(events, ON, 21)
    assert [(e.kind, (e.as_of - T0) // DAY_MS) for e in emissions] == [
        ("at_risk", 7),  # a tier first on a tie
        ("not_activated", 7),
        ("dormant", 14),
        ("reactivated", 20),
    ]
    # the tier holds the stage; back, the user is still not activated
    assert moves(transitions, "u") == [
        (None, "new", 0),
        ("new", "at_risk", 7),
        ("at_risk", "dormant", 14),
        ("dormant", "not_activated", 20),
    ]


def test_the_stage_a_reader_sees_between_records_follows_the_deadline() -> None:
    processor, _e, _t = run([act("u", 0)], ON, 1)
    state = processor.store.get("u")
    assert state is not None
    assert stage_at(state, T0 + 6 * DAY_MS, ON) == "new"
    assert stage_at(state, T0 + 7 * DAY_MS, ON) == "not_activated"


def test_the_offline_path_decides_the_same_with_activation_on() -> None:
    events = sorted(
        [act("a", d) for d in (0, 2, 9)]
        + [act("b", 0), act("b", 1, "purchase"), act("b", 30)]
        + [act("c", 3), act("c", 4)],
        key=lambda e: e.ts_ms,
    )
    end = T0 + 60 * DAY_MS
    by_user, by_record = run_users(events, ON, end), run_records(events, ON, end)
    assert by_user.emissions == by_record.emissions
    assert by_user.transitions == by_record.transitions
    assert by_user.states == dict(by_record.states)
    assert sorted(e.user_id for e in by_user.emissions if e.kind == "not_activated") == ["a", "c"]
