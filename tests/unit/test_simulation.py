"""The simulated population: deterministic, additive over time, with the habits it promises."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.simulation.habits import EVENT_TYPES, HABITS, MAX_STOP_DAY, SEGMENTS, TENANTS
from agents.simulation.population import POISON_REASONS, Population, poison_record, poison_records
from agents.simulation.producer import forged_tick, misrouted_event, write_history
from streams.control import ControlSigner
from streams.decode import DecodeRules, decode_record, partition_for
from streams.records import DLQ_REASONS, InputEvent
from streams.validate import MAX_DEPTH, EventRules, Rejected, nests_deeper
from tables.model import ModelEvent

DAY_MS = 1_000
START_MS = 1_700_000_000_250  # not on a day boundary, on purpose
DAYS = 60
PARTITIONS = 8
RULES = DecodeRules(topic="engagement.events", partitions=PARTITIONS, event=EventRules())


@pytest.fixture(scope="module")
def population() -> Population:
    return Population(users=250, seed=7, day_ms=DAY_MS, start_ms=START_MS)


@pytest.fixture(scope="module")
def events(population: Population) -> list[dict[str, Any]]:
    return population.events_between(START_MS, START_MS + DAYS * DAY_MS)


@pytest.fixture(scope="module")
def days_by_user(population: Population, events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Sorted active days per user."""
    days: dict[str, set[int]] = defaultdict(set)
    for event in events:
        days[event["user_id"]].add(population.day_of(event["ts"]))
    return {user: sorted(active) for user, active in days.items()}


def _decode(key: bytes | None, value: bytes, append_ms: int) -> ModelEvent | Rejected | Any:
    partition = partition_for(key, PARTITIONS) if key is not None else 0
    return decode_record(key, value, None, partition, append_ms, 0, RULES)


# -- determinism and time -------------------------------------------------


def test_same_seed_gives_same_events_and_another_seed_differs() -> None:
    window = (START_MS, START_MS + 20 * DAY_MS)
    first = Population(50, 11, DAY_MS, START_MS).events_between(*window)
    again = Population(50, 11, DAY_MS, START_MS).events_between(*window)
    other = Population(50, 12, DAY_MS, START_MS).events_between(*window)
    assert first == again
    assert first
    assert [e["event_id"] for e in first] != [e["event_id"] for e in other]


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=-500, max_value=25 * DAY_MS), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_consecutive_windows_give_the_same_events_as_their_union(
    cuts: list[int], seed: int
) -> None:
    whole = Population(20, seed, DAY_MS, START_MS)
    pieces = Population(20, seed, DAY_MS, START_MS)
    bounds = [START_MS - 1_000, *sorted(START_MS + cut for cut in cuts), START_MS + 26 * DAY_MS]
    stitched: list[dict[str, Any]] = []
    for low, high in itertools.pairwise(bounds):
        stitched.extend(pieces.events_between(low, high))
    assert stitched == whole.events_between(bounds[0], bounds[-1])


def test_events_are_sorted_inside_the_window_and_after_the_start(
    population: Population,
) -> None:
    low, high = START_MS + 3_333, START_MS + 9_876
    window = population.events_between(low, high)
    stamps = [event["ts"] for event in window]
    assert window
    assert stamps == sorted(stamps)
    assert all(low <= ts < high for ts in stamps)
    assert population.events_between(START_MS - 10 * DAY_MS, START_MS) == []
    assert population.events_between(high, low) == []


def test_population_never_reads_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("the population read the clock")

    monkeypatch.setattr(time, "time", no_clock)
    monkeypatch.setattr(time, "time_ns", no_clock)
    monkeypatch.setattr(time, "monotonic", no_clock)
    population = Population(40, 3, DAY_MS, START_MS)
    assert population.events_between(START_MS, START_MS + 10 * DAY_MS)
    assert next(population.history(3))


# -- the contract ---------------------------------------------------------


def test_every_event_meets_the_input_contract(events: list[dict[str, Any]]) -> None:
    ids = Counter(event["event_id"] for event in events)
    assert ids.most_common(1)[0][1] == 1
    for event in events:
        value = msgspec.json.encode(event)
        decoded = _decode(event["user_id"].encode(), value, append_ms=event["ts"])
        assert isinstance(decoded, ModelEvent), (event, decoded)
        assert decoded.tenant == event["tenant"]
        assert decoded.segment == event["segment"]
        assert isinstance(event["ts"], int)
        assert set(event) <= {"event_id", "user_id", "type", "ts", "tenant", "segment", "props"}


def test_mix_has_every_habit_tenant_segment_and_event_type(
    population: Population, events: list[dict[str, Any]]
) -> None:
    assert {profile.habit for profile in population.users} == set(HABITS)
    assert {event["tenant"] for event in events} == set(TENANTS)
    assert {event["segment"] for event in events} == set(SEGMENTS)
    assert {event["type"] for event in events} == set(EVENT_TYPES)
    assert [profile.user_id for profile in population.users[:3]] == ["u00000", "u00001", "u00002"]


def test_every_block_of_twenty_five_users_holds_the_whole_mix() -> None:
    population = Population(75, 5, DAY_MS, START_MS)
    for block in range(3):
        habits = Counter(p.habit for p in population.users[block * 25 : block * 25 + 25])
        assert habits == Counter(
            daily=4,
            several_weekly=4,
            weekly_shopper=3,
            monthly=2,
            fading=3,
            returning=2,
            one_time=2,
            gradual=2,
            cancelling=2,
            unactivated=1,
        )


# -- habits ---------------------------------------------------------------


def test_nobody_appears_before_their_first_day_and_some_join_late(
    population: Population, days_by_user: dict[str, list[int]]
) -> None:
    for profile in population.users:
        active = days_by_user[profile.user_id]
        assert active[0] == profile.first_day
    assert any(profile.first_day > 0 for profile in population.users if profile.habit == "daily")


def test_daily_users_come_less_at_weekends_and_shoppers_on_their_day(
    population: Population, days_by_user: dict[str, list[int]]
) -> None:
    weekday_rate: list[float] = []
    weekend_rate: list[float] = []
    on_preferred = elsewhere = 0
    for profile in population.users:
        active = set(days_by_user[profile.user_id])
        span = range(profile.first_day, DAYS)
        if profile.habit == "daily":
            weekdays = [d for d in span if population.weekday(d) < 5]
            weekends = [d for d in span if population.weekday(d) >= 5]
            weekday_rate.append(sum(d in active for d in weekdays) / len(weekdays))
            weekend_rate.append(sum(d in active for d in weekends) / len(weekends))
        if profile.habit == "weekly_shopper":
            for day in active - {profile.first_day}:
                if population.weekday(day) == profile.preferred_weekday:
                    on_preferred += 1
                else:
                    elsewhere += 1
    assert sum(weekend_rate) / len(weekend_rate) < sum(weekday_rate) / len(weekday_rate) - 0.1
    assert on_preferred > 2 * elsewhere


def test_fading_users_slow_down_then_stop_for_good(
    population: Population, days_by_user: dict[str, list[int]]
) -> None:
    fading = [p for p in population.users if p.habit == "fading"]
    assert len(fading) == 30
    for profile in fading:
        active = days_by_user[profile.user_id]
        assert profile.stop_day is not None and profile.stop_day <= MAX_STOP_DAY
        assert active, profile
        assert active[-1] < profile.stop_day
        # the final silence lasts past the churned tier (30 days) inside the window
        assert DAYS - active[-1] > 30
    later = Population(250, 7, DAY_MS, START_MS).events_between(
        START_MS + MAX_STOP_DAY * DAY_MS, START_MS + 400 * DAY_MS
    )
    assert not {event["user_id"] for event in later} & {p.user_id for p in fading}
    before = sum(1 for p in fading for d in days_by_user[p.user_id] if d < (p.fade_start_day or 0))
    after = sum(1 for p in fading for d in days_by_user[p.user_id] if d >= (p.fade_start_day or 0))
    span_before = sum((p.fade_start_day or 0) - p.first_day for p in fading)
    span_after = sum((p.stop_day or 0) - (p.fade_start_day or 0) for p in fading)
    assert after / span_after < before / span_before


def test_returning_users_go_silent_then_come_back_from_every_tier(
    population: Population, days_by_user: dict[str, list[int]]
) -> None:
    gaps: list[int] = []
    for profile in population.users:
        if profile.habit != "returning":
            continue
        assert profile.pause_start_day is not None and profile.pause_end_day is not None
        active = days_by_user[profile.user_id]
        before = [d for d in active if d < profile.pause_start_day]
        after = [d for d in active if d >= profile.pause_start_day]
        assert before, profile
        assert after[0] == profile.pause_end_day
        gaps.append(after[0] - before[-1])
    # silences beyond the default at_risk, dormant and churned tiers (7/14/30 days)
    assert any(7 < gap <= 14 for gap in gaps)
    assert any(14 < gap <= 30 for gap in gaps)
    assert any(gap > 30 for gap in gaps)


def test_one_time_users_visit_on_one_day_only(
    population: Population, days_by_user: dict[str, list[int]]
) -> None:
    one_time = [p for p in population.users if p.habit == "one_time"]
    assert one_time
    for profile in one_time:
        assert days_by_user[profile.user_id] == [profile.first_day]


def test_gradual_faders_keep_coming_at_a_falling_rate_then_stop() -> None:
    population = Population(250, 7, DAY_MS, START_MS)
    gradual = [p for p in population.users if p.habit == "gradual"]
    assert len(gradual) == 20
    days: dict[str, set[int]] = defaultdict(set)
    for event in population.events_between(START_MS, START_MS + 120 * DAY_MS):
        days[event["user_id"]].add(population.day_of(event["ts"]))
    rates: list[tuple[float, float, float]] = []
    for profile in gradual:
        start, stop = profile.fade_start_day, profile.stop_day
        assert start is not None and stop is not None and 30 <= start < stop <= 120
        active = days[profile.user_id]
        assert max(active) < stop
        half = (start + stop) // 2
        rates.append(
            (
                len([d for d in active if d < start]) / (start - profile.first_day),
                len([d for d in active if start <= d < half]) / (half - start),
                len([d for d in active if half <= d < stop]) / (stop - half),
            )
        )
    before, first_half, second_half = (sum(r[i] for r in rates) / len(rates) for i in range(3))
    # still active in both halves (not silent), each well below the rate before
    assert before > 0.75 > 0.6 * before > first_half > second_half > 0.1


def test_cancelling_users_cancel_in_their_last_session_and_never_return(
    population: Population, events: list[dict[str, Any]]
) -> None:
    cancelling = {p.user_id: p for p in population.users if p.habit == "cancelling"}
    assert len(cancelling) == 20
    last: dict[str, dict[str, Any]] = {}
    for event in events:
        if event["user_id"] in cancelling:
            last[event["user_id"]] = event
    cancelled = [e for e in events if e["type"] == "subscription_cancelled"]
    assert {e["user_id"] for e in cancelled} <= set(cancelling)
    for user, profile in cancelling.items():
        if profile.cancel_day is not None and profile.cancel_day < DAYS:
            assert last[user]["type"] == "subscription_cancelled"
            assert population.day_of(last[user]["ts"]) == profile.cancel_day


def test_everyone_but_one_time_and_unactivated_users_completes_onboarding_on_day_one(
    population: Population, events: list[dict[str, Any]]
) -> None:
    onboarded = {
        e["user_id"]: population.day_of(e["ts"])
        for e in events
        if e["type"] == "onboarding_completed"
    }
    for profile in population.users:
        if profile.habit in ("one_time", "unactivated"):
            assert profile.user_id not in onboarded
        else:
            assert onboarded[profile.user_id] == profile.first_day
    unactivated = [p for p in population.users if p.habit == "unactivated"]
    assert len(unactivated) == 10
    seen = Counter(e["user_id"] for e in events if e["user_id"] in {p.user_id for p in unactivated})
    assert all(seen[p.user_id] for p in unactivated)


def test_monthly_users_leave_gaps_longer_than_a_week(
    population: Population, days_by_user: dict[str, list[int]]
) -> None:
    longest = [
        max(b - a for a, b in itertools.pairwise(days))
        for profile in population.users
        if profile.habit == "monthly" and len(days := days_by_user[profile.user_id]) > 1
    ]
    assert longest
    assert sum(gap > 14 for gap in longest) > len(longest) / 2


# -- poison ---------------------------------------------------------------


@pytest.mark.parametrize("now_ms", [None, 1_760_000_000_000])
def test_one_round_of_poison_covers_every_reason_a_producer_can_cause(
    now_ms: int | None,
) -> None:
    triples = poison_records(len(POISON_REASONS), seed=3, now_ms=now_ms)
    assert Counter(reason for reason, _key, _value in triples) == Counter(POISON_REASONS)
    assert set(POISON_REASONS) | {"wrong_partition", "bad_signature"} == set(DLQ_REASONS)
    append_ms = 1_760_000_000_000
    for reason, key, value in triples:
        decoded = _decode(key, value, append_ms)
        assert isinstance(decoded, Rejected) and decoded.reason == reason, (reason, decoded)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(min_value=0, max_value=10_000), seed=st.integers(0, 2**32))
def test_every_poison_variant_is_rejected_for_its_tagged_reason(index: int, seed: int) -> None:
    now_ms = 1_760_000_000_000
    for given_now in (None, now_ms):
        record = poison_record(index, seed, now_ms=given_now)
        decoded = _decode(record.key, record.value, now_ms)
        assert isinstance(decoded, Rejected), record
        assert decoded.reason == record.reason, (record.reason, decoded, record.value[:200])


def test_poison_is_really_bad() -> None:
    by_reason: dict[str, list[bytes]] = defaultdict(list)
    for reason, _key, value in poison_records(len(POISON_REASONS) * 8, seed=9):
        by_reason[reason].append(value)
    for value in by_reason["not_json"]:
        with pytest.raises(ValueError):
            json.loads(value)
    for value in by_reason["not_object"]:
        assert not isinstance(json.loads(value), dict)
    for value in by_reason["too_large"]:
        assert len(value) > 65_536
    for value in by_reason["too_deep"]:
        assert nests_deeper(json.loads(value), MAX_DEPTH)
    for value in by_reason["reserved_type"]:
        assert json.loads(value)["type"].startswith("$")
    for field, cap in (("user_id", 256), ("event_id", 128), ("tenant", 64), ("segment", 64)):
        for value in by_reason[f"{field}_too_long"]:
            assert len(json.loads(value)[field].encode()) > cap
    assert (
        len({value for values in by_reason.values() for value in values}) > len(POISON_REASONS) * 3
    )


def test_misrouted_event_is_rejected_as_wrong_partition() -> None:
    key, value, partition = misrouted_event(5, seed=1, now_ms=1_760_000_000_000, partitions=8)
    assert partition != partition_for(key, 8)
    decoded = decode_record(key, value, None, partition, 1_760_000_000_000, 0, RULES)
    assert isinstance(decoded, Rejected) and decoded.reason == "wrong_partition"


@pytest.mark.parametrize("signer", [None, ControlSigner({"k1": b"the-real-secret"}, "k1")])
def test_forged_tick_is_rejected_as_bad_signature(signer: ControlSigner | None) -> None:
    value, headers = forged_tick(1_760_000_000_000)
    rules = msgspec.structs.replace(RULES, signer=signer)
    decoded = decode_record(None, value, headers, 3, 1_760_000_000_000, 0, rules)
    assert isinstance(decoded, Rejected) and decoded.reason == "bad_signature"


# -- histories ------------------------------------------------------------


def test_history_repeats_only_its_deliberate_duplicates_and_has_late_lines() -> None:
    days = 30
    population = Population(60, 4, DAY_MS, START_MS)
    lines = list(population.history(days))
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        by_id[line["event_id"]].append(line)
    repeated = {eid: copies for eid, copies in by_id.items() if len(copies) > 1}
    assert repeated
    assert all(len(copies) == 2 and copies[0] == copies[1] for copies in repeated.values())
    assert len(repeated) < len(by_id) * 0.05
    late = sum(1 for before, line in itertools.pairwise(lines) if line["ts"] < before["ts"])
    assert late > 0
    assert late < len(lines) * 0.1
    # one copy of each history event is exactly the population's timeline
    unique = sorted(
        (copies[0] for copies in by_id.values()), key=lambda e: (e["ts"], e["event_id"])
    )
    end_ms = population.day_start_ms(days)
    assert unique == population.events_between(START_MS, end_ms)


def test_write_history_writes_input_events_as_json_lines(tmp_path: Any) -> None:
    path = tmp_path / "history.jsonl"
    lines = write_history(path, users=30, days=10, seed=2, day_ms=DAY_MS, start_ms=START_MS)
    raw = path.read_bytes().splitlines()
    assert len(raw) == lines > 0
    decoder = msgspec.json.Decoder(InputEvent)
    decoded = [decoder.decode(line) for line in raw]
    assert {event.user_id for event in decoded} <= {f"u{i:05d}" for i in range(30)}
    assert list(Population(30, 2, DAY_MS, START_MS).history(10)) == [json.loads(x) for x in raw]
