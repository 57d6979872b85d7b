"""Thresholds: the user's own cadence, tenant/segment versions by effective time, defaults.

A "day" is 1000 ms; default tiers 7/14/30 days.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.decode import id_hash
from tables.engine import DictStore, PartitionEngine
from tables.model import Emission, ModelConfig, ModelEvent
from tables.state import UserState
from tables.thresholds import (
    SOURCE_DEFAULT,
    SOURCE_SEGMENT,
    SOURCE_TENANT,
    SOURCE_USER,
    ThresholdBook,
    ThresholdPolicy,
    decode_book,
    encode_book,
)

DAY_MS = 1_000
T0 = 1_700_000_000_000
DEFAULTS = (7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS)
POLICY = ThresholdPolicy(defaults_ms=DEFAULTS, min_ms=2 * DAY_MS, max_ms=60 * DAY_MS, day_ms=DAY_MS)
ADAPTIVE = msgspec.structs.replace(POLICY, user_min_active_days=5)
CONFIG = ModelConfig(
    policy=POLICY, lateness_ms=0, day_ms=DAY_MS, horizon_ms=30 * DAY_MS, new_days=0
)


def state(active_days: int, gap_centidays: int, tenant: str = "", segment: str = "") -> UserState:
    return UserState(
        T0,
        T0,
        active_days=active_days,
        usual_gap_centidays=gap_centidays,
        tenant=tenant,
        segment=segment,
    )


def event(user: str, ts_ms: int, tenant: str = "acme", segment: str = "pro") -> ModelEvent:
    return ModelEvent(
        user_id=user,
        id_hash=id_hash(f"{user}@{ts_ms}"),
        type="visit",
        ts_ms=ts_ms,
        append_ms=ts_ms,
        tenant=tenant,
        segment=segment,
    )


def tiers_of(emissions: list[Emission]) -> list[tuple[str, int, str]]:
    return [(e.kind, e.threshold_ms, e.threshold_source) for e in emissions]


# -- per user --------------------------------------------------------------


def test_a_daily_user_is_at_risk_after_three_silent_days_a_weekly_one_after_three_weeks() -> None:
    assert ADAPTIVE.resolve(state(10, 100)) == ((3_000, 6_000, 12_000), SOURCE_USER)
    assert ADAPTIVE.resolve(state(10, 700)) == ((21_000, 42_000, 60_000), SOURCE_USER)


def test_user_thresholds_are_clamped_and_stay_ordered() -> None:
    tiers, source = ADAPTIVE.resolve(state(10, 30))  # 0.3 days: below the minimum
    assert source == SOURCE_USER
    assert tiers == (2_000, 2_000, 3_600)
    tiers, _ = ADAPTIVE.resolve(state(10, 5_000))  # 50 days: above the maximum
    assert tiers == (60_000, 60_000, 60_000)


def test_too_little_history_falls_back_to_scope_then_defaults() -> None:
    policy = msgspec.structs.replace(
        ADAPTIVE, overrides={"acme": (1_000, 2_000, 3_000), "acme/pro": (4_000, 5_000, 6_000)}
    )
    assert policy.resolve(state(4, 100, "acme", "pro")) == ((4_000, 5_000, 6_000), SOURCE_SEGMENT)
    assert policy.resolve(state(4, 100, "acme", "lite")) == ((1_000, 2_000, 3_000), SOURCE_TENANT)
    assert policy.resolve(state(4, 100, "globex")) == (DEFAULTS, SOURCE_DEFAULT)
    assert policy.resolve(state(5, 100, "acme", "pro"))[1] == SOURCE_USER
    assert POLICY.resolve(state(50, 100))[1] == SOURCE_DEFAULT  # per-user off by default


def test_engine_signals_a_daily_user_with_its_own_threshold() -> None:
    config = msgspec.structs.replace(CONFIG, policy=ADAPTIVE)
    e = PartitionEngine(0, config, DictStore())
    for day in range(6):
        e.on_event(event("daily", T0 + day * DAY_MS))
    emitted = e.advance_to(T0 + 5 * DAY_MS + 3 * DAY_MS)
    assert tiers_of(emitted) == [("at_risk", 3_000, SOURCE_USER)]
    assert emitted[0].as_of == T0 + 8 * DAY_MS


# -- per tenant / segment from config versions ------------------------------


def test_greatest_effective_from_wins_and_older_or_resent_versions_change_nothing() -> None:
    book = ThresholdBook()
    first = book.receive("acme", 100, (1, 2, 3), clock_ms=50)
    assert first is not None
    assert first.receive("acme", 100, (9, 9, 9), clock_ms=60) is None  # re-sent
    assert first.receive("acme", 90, (9, 9, 9), clock_ms=60) is None  # older
    second = first.receive("acme", 200, (4, 5, 6), clock_ms=300)
    assert second is not None
    assert second.overrides_at(99) == {}
    assert second.overrides_at(100) == {"acme": (1, 2, 3)}
    assert second.overrides_at(299) == {"acme": (1, 2, 3)}  # applies from the clock on arrival
    assert second.overrides_at(300) == {"acme": (4, 5, 6)}
    assert second.next_activation_ms(100) == 300
    assert decode_book(encode_book(second)) == second
    assert second.pruned(400).scopes == {"acme": second.scopes["acme"][1:]}


def test_a_version_arriving_now_reindexes_and_signals_users_already_overdue() -> None:
    e = PartitionEngine(0, CONFIG, DictStore())
    e.on_event(event("u", T0))
    e.on_event(event("v", T0, tenant="globex"))
    e.advance_to(T0 + 4 * DAY_MS)
    changed, emitted = e.receive_config("acme", T0, (3 * DAY_MS, 5 * DAY_MS, 9 * DAY_MS))
    assert changed
    assert tiers_of(emitted) == [("at_risk", 3 * DAY_MS, SOURCE_TENANT)]
    assert emitted[0].as_of == T0 + 3 * DAY_MS
    assert tiers_of(e.advance_to(T0 + 7 * DAY_MS)) == [
        ("dormant", 5 * DAY_MS, SOURCE_TENANT),
        ("at_risk", 7 * DAY_MS, SOURCE_DEFAULT),  # globex keeps the defaults
    ]


def test_a_future_version_applies_only_when_the_clock_reaches_effective_from() -> None:
    e = PartitionEngine(0, CONFIG, DictStore())
    e.on_event(event("u", T0))
    early = e.on_event(event("w", T0 + 9 * DAY_MS)).emissions
    changed, emitted = e.receive_config(
        "acme/pro", T0 + 20 * DAY_MS, (2 * DAY_MS, 4 * DAY_MS, 8 * DAY_MS)
    )
    assert changed and emitted == []
    # Before the switch the defaults hold: u at_risk at 7, dormant at 14 days.
    early += e.advance_to(T0 + 19 * DAY_MS)
    assert [(s.user_id, s.kind, s.as_of - T0) for s in early] == [
        ("u", "at_risk", 7 * DAY_MS),
        ("u", "dormant", 14 * DAY_MS),
        ("w", "at_risk", 16 * DAY_MS),
    ]
    late = e.advance_to(T0 + 20 * DAY_MS)
    # At the switch the segment's tiers (2/4/8 days) apply: w, silent 11 days,
    # is dormant and churned at once; as_of keeps last_seen + threshold.
    assert [(s.user_id, s.kind, s.threshold_source, s.as_of - T0) for s in late] == [
        ("u", "churned", SOURCE_SEGMENT, 8 * DAY_MS),
        ("w", "dormant", SOURCE_SEGMENT, 13 * DAY_MS),
        ("w", "churned", SOURCE_SEGMENT, 17 * DAY_MS),
    ]


@settings(max_examples=80, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(
            st.integers(0, 30),  # day of arrival on the clock
            st.integers(0, 40),  # effective_from day
            st.integers(1, 10),  # at_risk days
            st.sampled_from(["acme", "acme/pro"]),
        ),
        max_size=5,
    ),
    cut=st.integers(0, 40),
)
def test_a_restart_with_the_persisted_book_decides_like_an_uninterrupted_run(
    arrivals: list[tuple[int, int, int, str]], cut: int
) -> None:
    users = [("a", 0), ("b", 2), ("c", 5), ("a", 6), ("b", 12)]
    script: list[tuple[int, object]] = [(day, ("event", user)) for user, day in users]
    script += [(day, ("config", (scope, eff, at_risk))) for day, eff, at_risk, scope in arrivals]
    script.sort(key=lambda item: (item[0], str(item[1])))

    def play(engine: PartitionEngine, items: list[tuple[int, object]]) -> list[Emission]:
        out: list[Emission] = []
        for day, (what, payload) in items:  # type: ignore[misc]
            if what == "event":
                out += engine.on_event(event(payload, T0 + day * DAY_MS)).emissions
            else:
                scope, eff, at_risk = payload
                tiers = (at_risk * DAY_MS, (at_risk + 3) * DAY_MS, (at_risk + 9) * DAY_MS)
                out += engine.advance_to(T0 + day * DAY_MS)
                out += engine.receive_config(scope, T0 + eff * DAY_MS, tiers)[1]
        return out

    whole = PartitionEngine(0, CONFIG, DictStore())
    expected = play(whole, script) + whole.advance_to(T0 + 80 * DAY_MS)

    head = [item for item in script if item[0] < cut]
    tail = [item for item in script if item[0] >= cut]
    first = PartitionEngine(0, CONFIG, DictStore())
    got = play(first, head)
    store = DictStore()
    assert isinstance(first.store, DictStore)
    store.update(first.store.states)
    second = PartitionEngine(
        0, CONFIG, store, high_ms=first.high_ms, book=decode_book(encode_book(first.book))
    )
    second.rebuild_index(store.items())
    got += play(second, tail) + second.advance_to(T0 + 80 * DAY_MS)
    assert [(s.signal_id, s.as_of, s.threshold_ms) for s in got] == [
        (s.signal_id, s.as_of, s.threshold_ms) for s in expected
    ]
