"""Properties of the partition engine over generated event logs.

A log is a timeline of moments (user events and clock ticks) delivered to a
``PartitionEngine`` in some arrival order, then a final ``advance_to``. Most
properties use arrival orders in which every record arrives less than the
allowed lateness behind the newest record before it (the engine's promise
covers those); the invariants that must hold whatever the order also run on
arbitrary permutations.

With day_ms = 1000 a "day" is a second: thresholds 7/14/30 days are 7/14/30 s.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.decode import id_hash
from tables.clock import clock_ms, tick_contribution_ms
from tables.engine import DictStore, PartitionEngine
from tables.judgement import judge
from tables.model import REACTIVATED, Emission, ModelConfig, ModelEvent
from tables.state import ID_SLOTS, TIER_NAMES, UserState
from tables.thresholds import ThresholdPolicy

DAY_MS = 1_000
TIERS_MS = (7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS)
AT_RISK_MS = TIERS_MS[0]
LATENESS_MS = 500
BASE_MS = 1_700_000_000_000
USERS = ("ana", "bo", "cy", "dee")
TIER_KINDS = TIER_NAMES[1:]

CONFIG = ModelConfig(
    policy=ThresholdPolicy(defaults_ms=TIERS_MS, min_ms=DAY_MS, max_ms=90 * DAY_MS),
    lateness_ms=LATENESS_MS,
    day_ms=DAY_MS,
    horizon_ms=30 * DAY_MS,
    holdout_salt="test-salt",
    holdout_share=0.5,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- logs ------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A user event as it happened: ``ts_ms`` is event time."""

    user_id: str
    event_id: str
    ts_ms: int


@dataclass(frozen=True)
class Tick:
    """A clock record contributing ``high_ms``."""

    high_ms: int


Moment = Event | Tick


@dataclass(frozen=True)
class Delivery:
    """An event as a record of the input partition."""

    event: Event
    offset: int
    append_ms: int


Record = Delivery | Tick


@dataclass(frozen=True)
class Timeline:
    moments: tuple[Moment, ...]  # in event-time order
    delays_ms: tuple[int, ...]  # per moment, each < LATENESS_MS (0 for ticks)
    final_clock_ms: int

    @property
    def events(self) -> list[Event]:
        return [m for m in self.moments if isinstance(m, Event)]


GAPS_MS = st.one_of(
    st.integers(0, 1_500),
    st.integers(0, 12_000),
    # Boundaries around the tiers and the lateness band, for one-user logs.
    st.sampled_from([6_999, 7_000, 7_001, 7_499, 7_500, 7_501, 14_000, 14_500, 30_000, 30_500]),
)


@st.composite
def timelines(draw: st.DrawFn, max_moments: int = 24, ticks: bool = True) -> Timeline:
    users = USERS[: draw(st.integers(1, len(USERS)))]
    count = draw(st.integers(1, max_moments))
    now = BASE_MS + draw(st.integers(0, 999))
    moments: list[Moment] = []
    delays: list[int] = []
    for number in range(count):
        now += draw(GAPS_MS)
        if ticks and draw(st.integers(0, 3)) == 0:
            moments.append(Tick(now))
            delays.append(0)
        else:
            moments.append(Event(draw(st.sampled_from(users)), f"e{number}", now))
            delays.append(draw(st.integers(0, LATENESS_MS - 1)))
    # A final clock behind the newest record moves nothing; one ahead judges the idle users.
    final = now + draw(
        st.one_of(st.integers(-2_000, 40_000), st.sampled_from([-LATENESS_MS, 6_999, 7_000]))
    )
    return Timeline(tuple(moments), tuple(delays), final)


def arrival(timeline: Timeline, delayed: bool) -> list[Record]:
    """Records in arrival order: each moment arrives at its time plus its delay.

    Every record then arrives less than the lateness behind any record before
    it. Offsets follow arrival, as the broker assigns them.
    """
    keyed = sorted(
        (
            (m.ts_ms + (d if delayed else 0), 0, i, m)
            if isinstance(m, Event)
            else (m.high_ms, 1, i, m)
            for i, (m, d) in enumerate(zip(timeline.moments, timeline.delays_ms, strict=True))
        ),
        key=lambda item: item[:3],
    )
    return number_offsets([(m, key) for key, _kind, _i, m in keyed])


def number_offsets(items: Sequence[tuple[Moment, int]]) -> list[Record]:
    records: list[Record] = []
    for offset, (moment, append_ms) in enumerate(items):
        records.append(moment if isinstance(moment, Tick) else Delivery(moment, offset, append_ms))
    return records


def model_event(delivery: Delivery) -> ModelEvent:
    event = delivery.event
    return ModelEvent(
        user_id=event.user_id,
        id_hash=id_hash(event.event_id),
        type="visit",
        ts_ms=event.ts_ms,
        append_ms=delivery.append_ms,
        partition=0,
        offset=delivery.offset,
    )


# -- running ---------------------------------------------------------------


@dataclass
class Run:
    engine: PartitionEngine
    emissions: list[Emission]
    clocks_ms: list[int]  # the partition clock right after each emission's record
    outcomes: list[str]

    @property
    def states(self) -> dict[str, UserState]:
        store = self.engine.store
        assert isinstance(store, DictStore)
        return store.states

    @property
    def signal_ids(self) -> list[str]:
        return [e.signal_id for e in self.emissions]


def fresh_engine() -> PartitionEngine:
    return PartitionEngine(0, CONFIG, DictStore())


def feed(run: Run, records: Sequence[Record]) -> Run:
    for record in records:
        if isinstance(record, Tick):
            emitted = run.engine.observe(record.high_ms)
        else:
            result = run.engine.on_event(model_event(record))
            run.outcomes.append(result.outcome)
            emitted = result.emissions
        run.emissions.extend(emitted)
        run.clocks_ms.extend([run.engine.clock_ms] * len(emitted))
    return run


def finish(run: Run, final_clock_ms: int) -> Run:
    emitted = run.engine.advance_to(final_clock_ms)
    run.emissions.extend(emitted)
    run.clocks_ms.extend([run.engine.clock_ms] * len(emitted))
    return run


def run_log(records: Sequence[Record], final_clock_ms: int) -> Run:
    return finish(feed(Run(fresh_engine(), [], [], []), records), final_clock_ms)


# -- what the contracts say a log must produce -------------------------------


def user_times(events: Sequence[Event]) -> dict[str, list[int]]:
    times: dict[str, list[int]] = defaultdict(list)
    for event in events:
        times[event.user_id].append(event.ts_ms)
    return {user: sorted(set(ts)) for user, ts in times.items()}


def certain_and_band(events: Sequence[Event], final_clock_ms: int) -> tuple[set[str], set[str]]:
    """Signal ids every in-lateness order must emit, and those it may emit.

    A silence from ``s`` to the user's next event ``e`` earns tier k for sure
    when ``e - s >= T_k + lateness`` (the clock passes the due time before
    ``e`` can arrive) and may earn it when ``T_k < e - s < T_k + lateness``
    (``e`` arrived after the due time but within the lateness); the last
    silence earns tier k when the final clock reaches ``s + T_k``. A
    reactivated follows a tier of its episode whenever the user came back.
    """
    certain: set[str] = set()
    band: set[str] = set()
    for user, times in user_times(events).items():
        nexts: list[int | None] = [*times[1:], None]
        for s, e in zip(times, nexts, strict=True):
            certain_tier = band_tier = False
            for kind, threshold in zip(TIER_KINDS, TIERS_MS, strict=True):
                signal_id = f"{user}:{s}:{kind}"
                if e is None:
                    if final_clock_ms >= s + threshold:
                        certain.add(signal_id)
                        certain_tier = True
                elif e - s >= threshold + LATENESS_MS:
                    certain.add(signal_id)
                    certain_tier = True
                elif e - s > threshold:
                    band.add(signal_id)
                    band_tier = True
            if e is not None and certain_tier:
                certain.add(f"{user}:{s}:{REACTIVATED}")
            elif e is not None and band_tier:
                band.add(f"{user}:{s}:{REACTIVATED}")
    return certain, band


def check_signal_invariants(run: Run) -> None:
    """What must hold for any arrival order, records far too late included."""
    ids = run.signal_ids
    assert len(ids) == len(set(ids)), "a signal_id was emitted twice"
    tiers_of_episode: dict[tuple[str, int], list[Emission]] = defaultdict(list)
    for emission, clock_at_ms in zip(run.emissions, run.clocks_ms, strict=True):
        key = (emission.user_id, emission.episode)
        assert emission.signal_id == f"{emission.user_id}:{emission.episode}:{emission.kind}"
        assert emission.last_seen == emission.episode
        if emission.kind in TIER_KINDS:
            tier = TIER_KINDS.index(emission.kind)
            assert emission.threshold_ms == TIERS_MS[tier]
            assert emission.as_of == emission.last_seen + emission.threshold_ms
            assert emission.inactive_ms == emission.threshold_ms
            assert clock_at_ms >= emission.as_of, "a tier was emitted before the clock passed it"
            # Tiers of an episode come in order, each once.
            assert [e.kind for e in tiers_of_episode[key]] == list(TIER_KINDS[:tier])
            tiers_of_episode[key].append(emission)
        else:
            assert emission.kind == REACTIVATED
            tiers = tiers_of_episode.get(key)
            assert tiers, "reactivated without a tier signal in its episode"
            first_as_of = tiers[0].as_of
            assert emission.as_of > emission.episode
            assert emission.tier_reached == tiers[-1].kind
            assert emission.gap_ms == emission.as_of - emission.episode
            assert emission.time_to_return_ms == emission.as_of - first_as_of
            assert emission.late is (emission.as_of < first_as_of)
    # Nothing is left pending: every tier the clock has passed was emitted.
    for user_id, state in run.states.items():
        assert judge(state, user_id, run.engine.clock_ms, CONFIG)[1] == []


# -- properties ------------------------------------------------------------


@PROPERTY
@given(timeline=timelines(), delayed=st.booleans())
def test_replaying_the_same_log_gives_the_same_signals(timeline: Timeline, delayed: bool) -> None:
    records = arrival(timeline, delayed)
    first = run_log(records, timeline.final_clock_ms)
    second = run_log(records, timeline.final_clock_ms)
    assert second.signal_ids == first.signal_ids
    assert second.emissions == first.emissions
    assert second.states == first.states


@PROPERTY
@given(timeline=timelines(), delayed=st.booleans())
def test_users_never_quiet_longer_than_at_risk_get_no_tier_signal(
    timeline: Timeline, delayed: bool
) -> None:
    run = run_log(arrival(timeline, delayed), timeline.final_clock_ms)
    final_clock_ms = run.engine.clock_ms
    flagged = {e.user_id for e in run.emissions if e.kind in TIER_KINDS}
    for user, times in user_times(timeline.events).items():
        gaps = [b - a for a, b in pairwise(times)]
        if all(gap <= AT_RISK_MS for gap in gaps) and final_clock_ms - times[-1] < AT_RISK_MS:
            assert user not in flagged


@PROPERTY
@given(timeline=timelines(), delayed=st.booleans())
def test_in_lateness_logs_signal_every_long_silence_and_only_real_ones(
    timeline: Timeline, delayed: bool
) -> None:
    run = run_log(arrival(timeline, delayed), timeline.final_clock_ms)
    certain, band = certain_and_band(timeline.events, run.engine.clock_ms)
    ids = set(run.signal_ids)
    assert certain <= ids, "a silence longer than threshold + lateness went unsignalled"
    assert ids <= certain | band, "a tier was signalled for a user active before its due time"
    if not delayed:
        # In event-time order nothing arrives late, so a return within the
        # lateness after the due time always arrives before the clock passes it.
        assert ids == certain


@PROPERTY
@given(timeline=timelines(), order=st.randoms(use_true_random=False), delayed=st.booleans())
def test_signal_ids_unique_tiers_due_and_ordered_reactivated_follows_a_tier(
    timeline: Timeline, order: random.Random, delayed: bool
) -> None:
    records = arrival(timeline, delayed)
    check_signal_invariants(run_log(records, timeline.final_clock_ms))
    # The invariants hold whatever the order, even for records far too late.
    shuffled = list(records)
    order.shuffle(shuffled)
    check_signal_invariants(run_log(shuffled, timeline.final_clock_ms))


@PROPERTY
@given(timeline=timelines())
def test_reordering_within_lateness_changes_only_returns_inside_the_lateness_band(
    timeline: Timeline,
) -> None:
    # Delivered in event-time order vs. each record delayed by less than the
    # lateness, so records that arrive within the lateness of each other swap.
    in_order = run_log(arrival(timeline, False), timeline.final_clock_ms)
    reordered = run_log(arrival(timeline, True), timeline.final_clock_ms)
    assert reordered.engine.clock_ms == in_order.engine.clock_ms
    _certain, band = certain_and_band(timeline.events, in_order.engine.clock_ms)
    in_order_ids, reordered_ids = set(in_order.signal_ids), set(reordered.signal_ids)
    # Reordering never loses a signal. It may add one only where the user came
    # back after the due time but within the lateness: a real silence, which
    # the in-order run cannot see because the return arrives before the clock
    # passes the due time. Without such returns the signals are the same.
    assert in_order_ids <= reordered_ids
    assert reordered_ids - in_order_ids <= band
    if not band:
        assert reordered_ids == in_order_ids


@st.composite
def redelivered(draw: st.DrawFn) -> tuple[Timeline, list[Record], list[Record]]:
    """A log and the same log with a range of records delivered a second time."""
    timeline = draw(timelines())
    records = arrival(timeline, draw(st.booleans()))
    end = draw(st.integers(0, len(records) - 1))
    start = draw(st.integers(0, end))
    again = records[: end + 1] + records[start : end + 1] + records[end + 1 :]
    return timeline, records, again


@PROPERTY
@given(case=redelivered())
def test_redelivered_records_change_nothing(
    case: tuple[Timeline, list[Record], list[Record]],
) -> None:
    timeline, records, again = case
    once = run_log(records, timeline.final_clock_ms)
    twice = run_log(again, timeline.final_clock_ms)
    assert twice.emissions == once.emissions
    assert twice.states == once.states
    events_redelivered = sum(isinstance(r, Delivery) for r in again) - sum(
        isinstance(r, Delivery) for r in records
    )
    assert twice.outcomes.count("duplicate_offset") == events_redelivered


@st.composite
def producer_duplicates(draw: st.DrawFn) -> tuple[Timeline, list[Record], list[Record]]:
    """A log, and the same log with some events sent again by the producer.

    Each copy has the same event_id and ts and a new offset, and arrives
    after at most ``DEDUP_IDS - 1`` newer events of the same user.
    """
    timeline = draw(timelines())
    records = arrival(timeline, draw(st.booleans()))
    deliveries = {i: r for i, r in enumerate(records) if isinstance(r, Delivery)}
    chosen = draw(st.lists(st.sampled_from(sorted(deliveries)), max_size=6)) if deliveries else []
    copies_before: dict[int, list[Delivery]] = defaultdict(list)
    for original in chosen:
        user = deliveries[original].event.user_id
        newer = [i for i, d in deliveries.items() if i > original and d.event.user_id == user]
        # Inserting before the DEDUP_IDS-th newer event leaves DEDUP_IDS - 1 in between.
        limit = newer[CONFIG.dedup_ids - 1] if len(newer) >= CONFIG.dedup_ids else len(records)
        copies_before[draw(st.integers(original + 1, limit))].append(deliveries[original])
    items: list[tuple[Moment, int]] = []
    for position in range(len(records) + 1):
        items.extend((copy.event, copy.append_ms + 1) for copy in copies_before[position])
        if position < len(records):
            record = records[position]
            items.append(
                (record.event, record.append_ms) if isinstance(record, Delivery) else (record, 0)
            )
    return timeline, records, number_offsets(items)


def counters(state: UserState) -> tuple[object, ...]:
    return (
        state.events_total,
        state.day_counts,
        state.newest_day,
        state.active_days,
        state.streak_days,
        state.usual_gap_centidays,
        state.first_seen_ms,
        state.last_seen_ms,
        state.tier,
    )


@PROPERTY
@given(case=producer_duplicates())
def test_producer_duplicates_within_dedup_ids_are_not_counted_twice(
    case: tuple[Timeline, list[Record], list[Record]],
) -> None:
    timeline, records, with_copies = case
    clean = run_log(records, timeline.final_clock_ms)
    duplicated = run_log(with_copies, timeline.final_clock_ms)
    copies = len(with_copies) - len(records)
    assert duplicated.outcomes.count("duplicate_id") == copies
    assert duplicated.signal_ids == clean.signal_ids
    assert duplicated.emissions == clean.emissions
    assert {u: counters(s) for u, s in duplicated.states.items()} == {
        u: counters(s) for u, s in clean.states.items()
    }
    assert sum(s.events_total for s in duplicated.states.values()) == len(timeline.events)


@st.composite
def restarts(draw: st.DrawFn) -> tuple[Timeline, list[Record], int, int]:
    timeline = draw(timelines())
    records = arrival(timeline, draw(st.booleans()))
    stop = draw(st.integers(0, len(records)))
    resume = draw(st.integers(0, stop))  # the committed offset may lag the state
    return timeline, records, stop, resume


@PROPERTY
@given(case=restarts())
def test_restart_from_stored_states_and_clock_neither_loses_nor_repeats_signals(
    case: tuple[Timeline, list[Record], int, int],
) -> None:
    timeline, records, stop, resume = case
    uninterrupted = run_log(records, timeline.final_clock_ms)

    before = feed(Run(fresh_engine(), [], [], []), records[:stop])
    restored = DictStore()
    restored.update(before.states)
    engine = PartitionEngine(0, CONFIG, restored, high_ms=before.engine.high_ms)
    assert engine.rebuild_index(restored.states.items()) == len(restored.states)
    after = finish(feed(Run(engine, [], [], []), records[resume:]), timeline.final_clock_ms)

    assert before.emissions + after.emissions == uninterrupted.emissions
    assert after.states == uninterrupted.states


@settings(max_examples=300, deadline=None)
@given(
    wall_ms=st.integers(0, 2**50),
    append_ms=st.integers(0, 2**50),
    events_seen_ms=st.integers(0, 2**50),
    stall_guard_ms=st.integers(0, 2**40),
)
def test_tick_contribution_never_exceeds_wall_append_or_stall_guard(
    wall_ms: int, append_ms: int, events_seen_ms: int, stall_guard_ms: int
) -> None:
    contribution = tick_contribution_ms(wall_ms, append_ms, events_seen_ms, stall_guard_ms)
    assert contribution <= wall_ms
    assert contribution <= append_ms
    bounds = [wall_ms, append_ms]
    if stall_guard_ms > 0:
        assert contribution <= events_seen_ms + stall_guard_ms
        bounds.append(events_seen_ms + stall_guard_ms)
    assert contribution == min(bounds)  # and no lower than it needs to be


def test_stall_guard_zero_removes_the_cap() -> None:
    assert tick_contribution_ms(10_000, 9_000, 0, 0) == 9_000
    assert tick_contribution_ms(10_000, 9_000, 0, 1_000) == 1_000


def test_clock_trails_the_newest_contribution_by_the_lateness() -> None:
    engine = fresh_engine()
    engine.observe(BASE_MS)
    engine.observe(BASE_MS - 5_000)  # an older contribution never moves it back
    assert engine.clock_ms == clock_ms(BASE_MS, LATENESS_MS) == BASE_MS - LATENESS_MS


def test_dedup_ids_matches_the_state_ring() -> None:
    assert CONFIG.dedup_ids == ID_SLOTS
