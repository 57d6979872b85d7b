"""Concrete examples of the engagement model, the due index and the groups.

A "day" is 1000 ms here; thresholds are 7/14/30 days and the lateness 500 ms.
"""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.decode import id_hash
from streams.records import Signal
from tables.activity import ActivityPolicy, ActivityTypes
from tables.due_index import DueIndex
from tables.engine import DictStore, PartitionEngine
from tables.fold import fold_events, folds_judging
from tables.groups import HOLDOUT, TREATMENT, group_of
from tables.judgement import stage_at
from tables.lifecycle import STAGE_ACTIVE
from tables.model import APPLIED, DUPLICATE_ID, DUPLICATE_OFFSET, Emission, ModelConfig, ModelEvent
from tables.state import ID_SLOTS, NO_OFFSET, UserState
from tables.step import apply_event, step_event
from tables.thresholds import ThresholdPolicy

DAY_MS = 1_000
AT_RISK_MS, DORMANT_MS, CHURNED_MS = 7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS
LATENESS_MS = 500
T0 = 1_700_000_000_000  # a multiple of DAY_MS and of the index bucket

CONFIG = ModelConfig(
    policy=ThresholdPolicy(
        defaults_ms=(AT_RISK_MS, DORMANT_MS, CHURNED_MS), min_ms=DAY_MS, max_ms=90 * DAY_MS
    ),
    lateness_ms=LATENESS_MS,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    new_days=3,
    resurrected_days=5,
    holdout_salt="salt",
    holdout_share=0.1,
)
# every type active: the arithmetic of active events whatever their type
ALL_ACTIVE = msgspec.structs.replace(
    CONFIG,
    activity=ActivityPolicy(ActivityTypes(negative=frozenset(), churn_intent=frozenset())),
)


def event(
    user_id: str,
    ts_ms: int,
    event_id: str | None = None,
    *,
    offset: int = NO_OFFSET,
    partition: int = 0,
) -> ModelEvent:
    return ModelEvent(
        user_id=user_id,
        id_hash=id_hash(event_id or f"{user_id}@{ts_ms}"),
        type="visit",
        ts_ms=ts_ms,
        append_ms=ts_ms,
        partition=partition,
        offset=offset,
    )


class CountingStore(DictStore):
    """A dict store that counts reads, to show what a clock advance costs."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, user_id: str) -> UserState | None:
        self.gets += 1
        return super().get(user_id)


def engine(store: DictStore | None = None, **kwargs: int) -> PartitionEngine:
    return PartitionEngine(0, CONFIG, store if store is not None else DictStore(), **kwargs)


def kinds(emissions: list[Emission]) -> list[tuple[str, int]]:
    return [(e.kind, e.as_of) for e in emissions]


# -- tiers -----------------------------------------------------------------


def test_tiers_fire_in_order_at_their_exact_due_times() -> None:
    e = engine()
    assert e.on_event(event("u", T0)).emissions == []
    assert e.advance_to(T0 + AT_RISK_MS - 1) == []
    assert kinds(e.advance_to(T0 + AT_RISK_MS)) == [("at_risk", T0 + AT_RISK_MS)]
    assert e.advance_to(T0 + DORMANT_MS - 1) == []
    assert kinds(e.advance_to(T0 + 100 * DAY_MS)) == [
        ("dormant", T0 + DORMANT_MS),
        ("churned", T0 + CHURNED_MS),
    ]
    assert e.advance_to(T0 + 200 * DAY_MS) == []  # once per episode


def test_a_tier_is_emitted_only_once_the_clock_trails_its_due_time_by_the_lateness() -> None:
    e = engine()
    e.on_event(event("u", T0))
    # Another user's event at the due time moves the clock to due - lateness only.
    assert e.on_event(event("v", T0 + AT_RISK_MS)).emissions == []
    emitted = e.on_event(event("v", T0 + AT_RISK_MS + LATENESS_MS)).emissions
    assert kinds(emitted) == [("at_risk", T0 + AT_RISK_MS)]


def test_tier_signal_describes_the_silence() -> None:
    e = engine()
    e.on_event(event("u", T0))
    (signal,) = e.advance_to(T0 + AT_RISK_MS)
    assert signal.signal_id == f"u:{T0}:at_risk"
    assert (signal.episode, signal.last_seen) == (T0, T0)
    assert (signal.inactive_ms, signal.threshold_ms) == (AT_RISK_MS, AT_RISK_MS)
    assert signal.threshold_source == "default"
    assert 0.0 <= signal.risk <= 1.0
    assert signal.horizon_ms == CONFIG.horizon_ms
    assert signal.group == group_of("u", CONFIG.holdout_salt, CONFIG.holdout_share)
    assert signal.reasons[0].code == "inactive_days"
    assert signal.reasons[0].value == 7.0
    assert signal.reasons[0].baseline == 7.0


def test_signal_id_is_user_episode_kind_also_on_the_wire() -> None:
    e = engine()
    e.on_event(event("user-42", T0 + 123))
    (signal,) = e.advance_to(T0 + 123 + AT_RISK_MS)
    assert signal.signal_id == f"user-42:{T0 + 123}:at_risk"
    assert Signal.from_emission(signal).signal_id == signal.signal_id
    returned = e.on_event(event("user-42", T0 + 10 * DAY_MS)).emissions
    assert [r.signal_id for r in returned] == [f"user-42:{T0 + 123}:reactivated"]


def test_a_late_first_event_of_a_user_already_due_is_judged_at_once() -> None:
    e = engine()
    e.on_event(event("v", T0 + 40 * DAY_MS))
    result = e.on_event(event("w", T0))  # first seen long before the clock
    assert result.created
    assert kinds(result.emissions) == [
        ("at_risk", T0 + AT_RISK_MS),
        ("dormant", T0 + DORMANT_MS),
        ("churned", T0 + CHURNED_MS),
    ]


# -- reactivation ----------------------------------------------------------


def test_reactivated_carries_tier_reached_gap_and_time_to_return() -> None:
    e = engine()
    e.on_event(event("u", T0))
    assert [s.kind for s in e.advance_to(T0 + 15 * DAY_MS)] == ["at_risk", "dormant"]
    (back,) = e.on_event(event("u", T0 + 20 * DAY_MS)).emissions
    assert back.kind == "reactivated"
    assert back.signal_id == f"u:{T0}:reactivated"
    assert (back.episode, back.last_seen, back.as_of) == (T0, T0, T0 + 20 * DAY_MS)
    assert back.tier_reached == "dormant"
    assert back.gap_ms == 20 * DAY_MS
    assert back.time_to_return_ms == 20 * DAY_MS - AT_RISK_MS  # from the first signal's as_of
    assert back.late is False
    assert back.threshold_ms == DORMANT_MS
    # The episode is closed: a new silence starts from the return.
    assert kinds(e.advance_to(T0 + 27 * DAY_MS)) == [("at_risk", T0 + 27 * DAY_MS)]


def test_a_return_that_happened_before_the_signal_but_arrived_after_it_is_late() -> None:
    e = engine()
    e.on_event(event("u", T0))
    flagged = e.on_event(event("v", T0 + AT_RISK_MS + 600)).emissions  # clock at due + 100
    assert kinds(flagged) == [("at_risk", T0 + AT_RISK_MS)]
    # u's event from before the due time arrives 700 ms behind: beyond the lateness.
    (back,) = e.on_event(event("u", T0 + AT_RISK_MS - 100)).emissions
    assert back.kind == "reactivated"
    assert back.late is True
    assert back.time_to_return_ms == -100
    assert back.gap_ms == AT_RISK_MS - 100
    assert back.tier_reached == "at_risk"


def test_a_return_arriving_within_the_lateness_prevents_the_signal() -> None:
    e = engine()
    e.on_event(event("u", T0))
    e.on_event(event("v", T0 + AT_RISK_MS + 300))  # clock at due - 200
    assert e.on_event(event("u", T0 + AT_RISK_MS - 100)).emissions == []
    assert e.advance_to(T0 + AT_RISK_MS + 200) == []


def test_an_event_at_or_before_last_seen_only_updates_counters() -> None:
    e = engine()
    e.on_event(event("u", T0 + 5 * DAY_MS))
    e.advance_to(T0 + 12 * DAY_MS)  # at_risk for the episode that began at 5 days
    result = e.on_event(event("u", T0 + 1 * DAY_MS))
    assert result.outcome == APPLIED
    assert result.emissions == []  # no reactivation: ts precedes last_seen
    state = result.state
    assert state is not None
    assert (state.first_seen_ms, state.last_seen_ms) == (T0 + DAY_MS, T0 + 5 * DAY_MS)
    assert state.events_total == 2
    assert state.tier == 1


# -- duplicates ------------------------------------------------------------


def test_redelivered_offset_is_skipped_but_another_partition_is_not() -> None:
    state: UserState | None = None
    outcome, state, _ = apply_event(state, event("u", T0, "a", offset=5), CONFIG)
    assert outcome == APPLIED
    assert apply_event(state, event("u", T0 + 1, "b", offset=5), CONFIG)[0] == DUPLICATE_OFFSET
    assert apply_event(state, event("u", T0 + 1, "b", offset=4), CONFIG)[0] == DUPLICATE_OFFSET
    moved = event("u", T0 + 1, "b", offset=0, partition=1)
    outcome, after, _ = apply_event(state, moved, CONFIG)
    assert outcome == APPLIED
    assert (after.partition, after.offset, after.events_total) == (1, 0, 2)


def test_producer_duplicate_is_skipped_until_dedup_ids_newer_events_pushed_it_out() -> None:
    def total_with_copy_after(newer: int) -> tuple[list[str], int]:
        state: UserState | None = None
        outcomes = []
        events = [event("u", T0, "orig", offset=0)]
        events += [event("u", T0 + i, f"n{i}", offset=i) for i in range(1, newer + 1)]
        events.append(event("u", T0, "orig", offset=newer + 1))
        for e in events:
            outcome, state, _ = apply_event(state, e, CONFIG)
            outcomes.append(outcome)
        assert state is not None
        return outcomes, state.events_total

    outcomes, total = total_with_copy_after(CONFIG.dedup_ids - 1)
    assert outcomes[-1] == DUPLICATE_ID
    assert total == CONFIG.dedup_ids
    outcomes, total = total_with_copy_after(CONFIG.dedup_ids)  # the documented limit
    assert outcomes[-1] == APPLIED
    assert total == CONFIG.dedup_ids + 2


# -- lifecycle stages ------------------------------------------------------


def test_stage_moves_new_active_at_risk_and_back_to_active() -> None:
    e = engine()
    state = e.on_event(event("u", T0)).state
    assert state is not None
    assert stage_at(state, T0 + 2 * DAY_MS, CONFIG) == "new"
    for day in (1, 2, 3):
        e.on_event(event("u", T0 + day * DAY_MS))
    state = e.store.get("u")
    assert state is not None
    assert stage_at(state, T0 + 4 * DAY_MS, CONFIG) == "active"
    e.advance_to(T0 + 11 * DAY_MS)
    state = e.store.get("u")
    assert state is not None
    assert stage_at(state, e.clock_ms, CONFIG) == "at_risk"
    e.on_event(event("u", T0 + 12 * DAY_MS))  # a return from at_risk: active, not resurrected
    state = e.store.get("u")
    assert state is not None
    assert stage_at(state, T0 + 12 * DAY_MS, CONFIG) == "active"


def test_stage_after_dormant_and_churned_then_resurrected_then_active() -> None:
    e = engine()
    e.on_event(event("u", T0))
    e.advance_to(T0 + DORMANT_MS)
    state = e.store.get("u")
    assert state is not None
    assert stage_at(state, e.clock_ms, CONFIG) == "dormant"
    e.advance_to(T0 + CHURNED_MS)
    state = e.store.get("u")
    assert state is not None
    assert stage_at(state, e.clock_ms, CONFIG) == "churned"
    back_ms = T0 + 40 * DAY_MS
    state = e.on_event(event("u", back_ms)).state
    assert state is not None
    assert stage_at(state, back_ms, CONFIG) == "resurrected"
    assert stage_at(state, back_ms + (CONFIG.resurrected_days - 1) * DAY_MS, CONFIG) == (
        "resurrected"
    )
    assert stage_at(state, back_ms + CONFIG.resurrected_days * DAY_MS, CONFIG) == "active"


# -- groups ----------------------------------------------------------------


def test_group_is_the_salted_sha256_cut_and_stable() -> None:
    for user_id in ("alice", "bob", "ünïcode", ""):
        digest = hashlib.sha256(("salt" + user_id).encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        expected = HOLDOUT if position < 0.3 else TREATMENT
        assert group_of(user_id, "salt", 0.3) == expected == group_of(user_id, "salt", 0.3)


@settings(max_examples=300, deadline=None)
@given(
    user_id=st.text(max_size=20),
    salt=st.text(max_size=8),
    shares=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
)
def test_raising_the_holdout_share_only_moves_users_into_holdout(
    user_id: str, salt: str, shares: list[float]
) -> None:
    lower, higher = shares
    if group_of(user_id, salt, lower) == HOLDOUT:
        assert group_of(user_id, salt, higher) == HOLDOUT
    if group_of(user_id, salt, higher) == TREATMENT:
        assert group_of(user_id, salt, lower) == TREATMENT


def test_holdout_share_is_roughly_the_fraction_of_users() -> None:
    users = [f"user-{i}" for i in range(4_000)]
    assert all(group_of(u, "s", 0.0) == TREATMENT for u in users)
    assert all(group_of(u, "s", 1.0) == HOLDOUT for u in users)
    share = sum(group_of(u, "s", 0.1) == HOLDOUT for u in users) / len(users)
    assert 0.08 < share < 0.12


# -- due index and cost ----------------------------------------------------


def test_due_index_pops_only_buckets_at_or_before_the_clock() -> None:
    index = DueIndex(bucket_ms=1_000)
    index.add("a", 5_000)
    index.add("b", 5_999)
    index.add("c", 7_000)
    assert index.pop_candidates(4_999) == []
    assert len(index) == 3
    # The 5 s bucket straddles a clock of 5.5 s: both come back, the caller re-checks.
    assert index.pop_candidates(5_500) == ["a", "b"]
    assert len(index) == 1
    assert index.next_bucket_start_ms() == 7_000


def test_due_index_moves_users_exactly() -> None:
    index = DueIndex(bucket_ms=1_000)
    index.add("a", 5_000)
    index.move("a", 5_000, 9_000)
    assert index.pop_candidates(8_999) == []
    index.move("a", 9_000, None)
    assert len(index) == 0
    assert index.next_bucket_start_ms() is None
    assert index.pop_candidates(10**15) == []
    with pytest.raises(ValueError):
        DueIndex(bucket_ms=0)


def test_clock_advance_costs_the_due_users_not_all_users() -> None:
    users = 2_000
    store = CountingStore()
    for i in range(users):
        # Already past their ``new`` days, so only tiers fall due.
        store.put(f"user-{i:05d}", UserState(T0 + i * DAY_MS, T0 + i * DAY_MS, stage=STAGE_ACTIVE))
    e = engine(store, high_ms=T0 + LATENESS_MS)  # restored: clock at T0
    assert e.rebuild_index(store.states.items()) == users
    assert store.gets == 0

    # A tick with nobody due reads no user at all.
    assert e.observe(T0 + AT_RISK_MS - 1 + LATENESS_MS) == []
    assert store.gets == 0

    # Three users fall due: three reads, three signals.
    emitted = e.advance_to(T0 + AT_RISK_MS + 2 * DAY_MS)
    assert [s.user_id for s in emitted] == ["user-00000", "user-00001", "user-00002"]
    assert store.gets == 3

    store.gets = 0
    assert e.advance_to(T0 + AT_RISK_MS + 2 * DAY_MS + 999) == []  # still inside that bucket
    assert store.gets == 0


def test_forget_removes_state_and_due_entry() -> None:
    store = CountingStore()
    e = engine(store)
    e.on_event(event("u", T0))
    e.on_event(event("v", T0))
    e.forget("u")
    assert store.get("u") is None
    assert [s.user_id for s in e.advance_to(T0 + AT_RISK_MS)] == ["v"]
    assert e.users_tracked == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 300)), min_size=1, max_size=30))
def test_day_counters_equal_a_plain_per_day_count(batches: list[tuple[int, int]]) -> None:
    """Events on arbitrary days (late ones too, and over 255 on a day): the
    packed counters equal a plain count per day within the window, saturated."""
    per_day: dict[int, int] = {}
    known_days: set[int] = set()  # days within the window when their event came
    state: UserState | None = None
    n = 0
    for day, count in batches:
        if max(per_day, default=day) - day < 28:
            known_days.add(day)
        for _ in range(count):
            event = ModelEvent("u", n, "view", T0 + day * DAY_MS, T0 + day * DAY_MS)
            n += 1
            _outcome, state, _ = apply_event(state, event, CONFIG)
            per_day[day] = per_day.get(day, 0) + 1
    assert state is not None
    newest = max(per_day)
    assert state.newest_day == T0 // DAY_MS + newest
    expected = bytes(min(255, per_day.get(newest - age, 0)) for age in range(28))
    # (a day inside the final window was inside it when each of its events came)
    assert state.day_counts == expected
    assert state.events_total == n
    assert state.active_days == len(known_days)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 40), st.sampled_from(["view", "checkout_failed", "complaint", "crash"])
        ),
        min_size=1,
        max_size=25,
    )
)
def test_negative_flags_follow_the_cadence_rules_for_every_event(
    events: list[tuple[int, str]],
) -> None:
    """The state's flags equal the cadence rules applied event by event (same
    day, later days, late events alike), so no path of the model skips them.
    Every type active here (a scope may make negative types active); negative
    events that are not activity: tests/unit/test_activity.py."""
    from tables.cadence import update_negative_flags

    state: UserState | None = None
    expected = 0
    newest_day = None
    for n, (day, kind) in enumerate(events):
        at_ms = T0 + day * DAY_MS
        event = ModelEvent("u", n, kind, at_ms, at_ms)
        _outcome, state, _ = apply_event(state, event, ALL_ACTIVE)
        assert state is not None
        absolute = at_ms // DAY_MS
        if newest_day is None:
            expected = update_negative_flags(0, absolute, absolute, kind)
            newest_day = absolute
        else:
            expected = update_negative_flags(expected, newest_day, absolute, kind)
            newest_day = max(newest_day, absolute)
        assert state.negative_flags == expected


def test_a_failed_checkout_on_the_last_day_is_a_reason_of_the_signal() -> None:
    events = [
        ModelEvent("u", 1, "view", T0, T0),
        ModelEvent("u", 2, "checkout_failed", T0 + 10, T0 + 10),
        ModelEvent("u", 3, "view", T0 + 20, T0 + 20),
    ]
    engine = PartitionEngine(0, CONFIG, DictStore())
    for event in events:
        engine.on_event(event)
    (signal,) = engine.advance_to(T0 + AT_RISK_MS + 100)
    assert signal.kind == "at_risk"
    assert "recent_checkout_failed" in {reason.code for reason in signal.reasons}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-3 * DAY_MS, 40 * DAY_MS),  # before first_seen too
            st.integers(0, 6),  # small ids repeat: duplicates by id
            st.sampled_from(["visit", "complaint", "checkout_failed"]),
            st.sampled_from([NO_OFFSET, 3, 5, 9]),  # and by offset
            st.sampled_from([0, 1]),
            st.sampled_from([None, "acme", "beta"]),
            st.sampled_from([None, "eu"]),
        ),
        min_size=1,
        max_size=300,  # past 255 events on one day
    ),
    st.integers(0, 3),
)
def test_folding_a_run_equals_stepping_event_by_event(
    items: list[tuple[int, int, str, int, int, str | None, str | None]], dedup_ids: int
) -> None:
    """``fold_events`` over a user's run makes the state ``step_event`` makes one
    event at a time (no stop rule: tiers and stages are the caller's), for
    active events (the only ones folded)."""
    config = msgspec.structs.replace(ALL_ACTIVE, dedup_ids=dedup_ids or ID_SLOTS)
    events = [
        ModelEvent("u", n, kind, T0 + at_ms, T0 + at_ms, partition, offset, tenant, segment)
        for at_ms, n, kind, offset, partition, tenant, segment in items
    ]
    first_step = step_event(None, events[0], config)
    assert first_step is not None
    first = first_step.state
    stepped, applied = first, 0
    for one in events[1:]:
        step = step_event(stepped, one, config)
        assert step is not None
        stepped = step.state
        applied += step.outcome == APPLIED
    positions = list(range(len(events)))
    folded, index, folded_applied = fold_events(first, events, positions, 1, config)
    assert (folded, index, folded_applied) == (stepped, len(events), applied)


def test_runs_are_judged_in_folds_only_where_no_event_can_move_the_thresholds() -> None:
    """Tenant/segment thresholds switch with an event's tenant: no judged folds.
    Nor when a threshold in force, with the lateness, ends at the event's own clock."""
    policy = CONFIG.policy
    assert folds_judging(CONFIG)
    assert folds_judging(
        msgspec.structs.replace(
            CONFIG, policy=msgspec.structs.replace(policy, user_min_active_days=3)
        )
    )
    with_overrides = msgspec.structs.replace(policy, overrides={"acme": policy.defaults_ms})
    assert not folds_judging(msgspec.structs.replace(CONFIG, policy=with_overrides))
    zero_floor = msgspec.structs.replace(policy, user_min_active_days=3, min_ms=0, max_ms=0)
    assert not folds_judging(msgspec.structs.replace(CONFIG, policy=zero_floor, lateness_ms=0))
    assert folds_judging(msgspec.structs.replace(CONFIG, policy=zero_floor, lateness_ms=1))
