"""A seeded population of users with human habits, as input events; no I/O, no clock.

Time is passed in and may be compressed: a "day" lasts ``day_ms`` (the demo
uses 1000 ms). Days are aligned to multiples of ``day_ms`` since the epoch, as
the engine's day buckets are, and day 0 is the one holding ``start_ms``; the
population does not exist before ``start_ms``.

Every user-day is derived from a hash of (seed, user, day), never from a
shared random stream, so any window of time gives the same events however the
timeline is cut, and ``event_id`` is stable for the same seed.

Habits (a fixed mix in every block of 25 consecutive users, so even a small
population holds each one):

- ``daily`` (4/25): most days, fewer at weekends; segment ``checkin``.
- ``several_weekly`` (4/25): two or three days a week, more at weekends.
- ``weekly_shopper`` (3/25): one preferred weekday (often Saturday or
  Sunday); segment ``shopper``, buys often.
- ``monthly`` (2/25): one visit every 26-33 days; crosses the default 7/14
  day tiers on every cycle, which is what per-user cadence is for.
- ``fading`` (3/25): rate decays from ``fade_start_day``, no event from
  ``stop_day`` (at most day 17) on, so each reaches at_risk, dormant and
  churned; more checkout failures and support tickets before leaving.
- ``returning`` (2/25): active, silent from ``pause_start_day`` to
  ``pause_end_day``, back on ``pause_end_day``. The silences (10-12, 17-22,
  33-38 days) return from at_risk, dormant and churned with the default
  7/14/30 day tiers.
- ``one_time`` (2/25): one visit, never again.
- ``gradual`` (2/25): a daily user who fades slowly, the way the declining
  signal is for: from ``fade_start_day`` (day 30-45) about every other day,
  from half-way to ``stop_day`` about every third or fourth day, then gone
  for good (``stop_day`` 35-55 days after the fade began).
- ``cancelling`` (2/25): a regular user who sends ``subscription_cancelled``
  in the last session of ``cancel_day`` (day 15-60) and is never seen again.
- ``unactivated`` (1/25): signs up, looks around on a few days of the first
  week without ever completing onboarding, and leaves.

Every user but ``one_time`` and ``unactivated`` completes onboarding
(``onboarding_completed``, the simulator's activation type,
``ACTIVATION_TYPES``) in the first session of the first day.

About 15 % of the regular users join later (``first_day`` 1-21), so ``new``
users keep appearing. A user's first day always has a visit. Tenants are
``acme`` and ``globex``; segments ``checkin``, ``shopper`` and ``casual``.

``poison_records`` builds records a producer can get wrong, each tagged with
the DLQ reason the worker must give. ``wrong_partition`` and
``bad_signature`` depend on the topic (partition count, signing keys), so the
sender makes them: see ``agents.simulation.producer.misrouted_event`` and
``forged_tick``.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

import msgspec

from tables.errors import ConfigurationError

EVENT_TYPES: Final = (
    "login",
    "view",
    "add_to_cart",
    "purchase",
    "checkout_failed",
    "support_ticket",
    "onboarding_completed",
    "subscription_cancelled",
)
ACTIVATION_TYPES: Final = ("onboarding_completed",)  # ENGAGEMENT_ACTIVATION_TYPES for a run
TENANTS: Final = ("acme", "globex")
SEGMENTS: Final = ("checkin", "shopper", "casual")
HABITS: Final = (
    "daily",
    "several_weekly",
    "weekly_shopper",
    "monthly",
    "fading",
    "returning",
    "one_time",
    "gradual",
    "cancelling",
    "unactivated",
)
# One block of 20 users; each block is shuffled by the seed.
_BLOCK: Final = (
    ("daily",) * 4
    + ("several_weekly",) * 4
    + ("weekly_shopper",) * 3
    + ("monthly",) * 2
    + ("fading",) * 3
    + ("returning",) * 2
    + ("one_time",) * 2
    + ("gradual",) * 2
    + ("cancelling",) * 2
    + ("unactivated",)
)
RETURN_GAP_DAYS: Final = ((10, 12), (17, 22), (33, 38))
MAX_STOP_DAY: Final = 17
LATE_JOIN_SHARE: Final = 0.15
HISTORY_DUPLICATE_SHARE: Final = 0.01
HISTORY_LATE_SHARE: Final = 0.02

POISON_REASONS: Final = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "user_id_too_long",
    "event_id_too_long",
    "tenant_too_long",
    "segment_too_long",
    "ts_non_finite",
    "ts_out_of_range",
    "ts_in_future",
    "too_large",
    "too_deep",
    "key_mismatch",
    "reserved_type",
)
CALLER_POISON_REASONS: Final = ("wrong_partition", "bad_signature")
# A valid but old time for poison records when no time is passed in: old
# events are accepted, so only the deliberate fault is wrong.
POISON_DEFAULT_TS_MS: Final = 1_577_836_800_000  # 2020-01-01T00:00:00Z
_TOO_LARGE_BYTES: Final = 65_536 + 4_096
_TOO_DEEP_LEVELS: Final = 24
# past the default caps (ENGAGEMENT_MAX_USER_ID_BYTES 256, _EVENT_ID_BYTES 128,
# _LABEL_BYTES 64), in bytes: "é" is two bytes of UTF-8
_TOO_LONG_BYTES: Final = {"user_id": 257, "event_id": 129, "tenant": 65, "segment": 65}

_PAGES: Final = ("home", "product", "search", "feed", "category")
_FAILURE_CODES: Final = ("card_declined", "timeout", "out_of_stock")
_TICKET_TOPICS: Final = ("delivery", "refund", "bug", "account")
_SESSION_PEAK_HOURS: Final = (8.0, 12.5, 20.0)
_SESSION_PEAK_WEIGHTS: Final = (0.3, 0.2, 0.5)


class UserProfile(msgspec.Struct, frozen=True):
    """The habit of one user; days are counted from the population's day 0."""

    user_id: str
    index: int
    habit: str
    tenant: str
    segment: str
    first_day: int
    active_p: float
    weekend_factor: float
    sessions_max: int
    trouble: float
    preferred_weekday: int | None = None
    period_days: int | None = None
    fade_start_day: int | None = None
    stop_day: int | None = None
    pause_start_day: int | None = None
    pause_end_day: int | None = None
    cancel_day: int | None = None


class PoisonRecord(NamedTuple):
    """A record the worker must reject, with the DLQ reason it must give."""

    reason: str
    key: bytes | None
    value: bytes


class _Event(NamedTuple):
    ts: int
    event_id: str
    user_id: str
    type: str
    tenant: str
    segment: str
    props: tuple[tuple[str, int | str], ...]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "type": self.type,
            "ts": self.ts,
            "tenant": self.tenant,
            "segment": self.segment,
        }
        if self.props:
            out["props"] = dict(self.props)
        return out


def _hash64(*parts: object) -> int:
    text = "|".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    return _hash64(*parts) / 2**64


def user_id_of(index: int) -> str:
    return f"u{index:05d}"


class Population:
    """``users`` simulated users from ``seed``; day 0 holds ``start_ms``."""

    _CACHED_DAYS: Final = 4

    def __init__(self, users: int, seed: int, day_ms: int, start_ms: int) -> None:
        if users < 0:
            raise ConfigurationError(f"users must not be negative: {users}")
        if day_ms <= 0:
            raise ConfigurationError(f"day_ms must be positive: {day_ms}")
        self.seed = seed
        self.day_ms = day_ms
        self.start_ms = start_ms
        self._day0 = start_ms // day_ms
        self.users: tuple[UserProfile, ...] = tuple(self._profile(i) for i in range(users))
        self._by_id = {profile.user_id: profile for profile in self.users}
        self._cache: dict[int, tuple[list[int], list[_Event]]] = {}

    # -- who the users are -------------------------------------------------

    def profile(self, user_id: str) -> UserProfile:
        return self._by_id[user_id]

    def _profile(self, index: int) -> UserProfile:
        block, slot = divmod(index, len(_BLOCK))
        order = list(_BLOCK)
        random.Random(_hash64(self.seed, "block", block)).shuffle(order)
        habit = order[slot]
        rng = random.Random(_hash64(self.seed, "profile", index))
        tenant = TENANTS[0] if rng.random() < 0.6 else TENANTS[1]
        late_join = rng.random() < LATE_JOIN_SHARE
        first_day = 1 + rng.randrange(21) if late_join else 0
        common: dict[str, Any] = {
            "user_id": user_id_of(index),
            "index": index,
            "habit": habit,
            "tenant": tenant,
            "trouble": 0.02,
        }
        if habit == "daily":
            return UserProfile(
                **common,
                segment="checkin",
                first_day=first_day,
                active_p=0.8 + 0.15 * rng.random(),
                weekend_factor=0.6 + 0.3 * rng.random(),
                sessions_max=3,
            )
        if habit == "several_weekly":
            return UserProfile(
                **common,
                segment="checkin" if rng.random() < 0.5 else "casual",
                first_day=first_day,
                active_p=0.3 + 0.2 * rng.random(),
                weekend_factor=1.2 + 0.4 * rng.random(),
                sessions_max=2,
            )
        if habit == "weekly_shopper":
            weekday = rng.choice((5, 6)) if rng.random() < 0.5 else rng.randrange(5)
            return UserProfile(
                **common,
                segment="shopper",
                first_day=first_day,
                active_p=0.85,
                weekend_factor=1.0,
                sessions_max=2,
                preferred_weekday=weekday,
            )
        if habit == "monthly":
            return UserProfile(
                **common,
                segment="shopper",
                first_day=first_day,
                active_p=0.9,
                weekend_factor=1.0,
                sessions_max=1,
                period_days=26 + rng.randrange(8),
            )
        if habit == "fading":
            daily_like = rng.random() < 0.5
            fade_start = 1 + rng.randrange(5)
            stop_day = min(fade_start + 3 + rng.randrange(10), MAX_STOP_DAY)
            return UserProfile(
                **{**common, "trouble": 0.25},
                segment="checkin" if daily_like else "shopper",
                first_day=rng.randrange(2),
                active_p=(0.85 if daily_like else 0.5) + 0.1 * rng.random(),
                weekend_factor=0.8,
                sessions_max=2,
                fade_start_day=fade_start,
                stop_day=stop_day,
            )
        if habit == "returning":
            low, high = RETURN_GAP_DAYS[index % len(RETURN_GAP_DAYS)]
            pause_start = 3 + rng.randrange(6)
            return UserProfile(
                **common,
                segment="checkin" if rng.random() < 0.6 else "shopper",
                first_day=rng.randrange(2),
                active_p=0.65 + 0.2 * rng.random(),
                weekend_factor=0.9,
                sessions_max=2,
                pause_start_day=pause_start,
                pause_end_day=pause_start + low + rng.randrange(high - low + 1),
            )
        if habit == "gradual":
            fade_start = 30 + rng.randrange(16)
            return UserProfile(
                **common,
                segment="checkin",
                first_day=rng.randrange(2),
                active_p=0.85 + 0.1 * rng.random(),
                weekend_factor=0.9,
                sessions_max=2,
                fade_start_day=fade_start,
                stop_day=fade_start + 35 + rng.randrange(21),
            )
        if habit == "cancelling":
            cancel_day = 15 + rng.randrange(46)
            return UserProfile(
                **common,
                segment="checkin" if rng.random() < 0.5 else "casual",
                first_day=first_day,
                active_p=0.5 + 0.35 * rng.random(),
                weekend_factor=1.0,
                sessions_max=2,
                stop_day=max(cancel_day, first_day) + 1,
                cancel_day=max(cancel_day, first_day),
            )
        if habit == "unactivated":
            first = rng.randrange(11)
            return UserProfile(
                **common,
                segment="casual",
                first_day=first,
                active_p=0.4,
                weekend_factor=1.0,
                sessions_max=1,
                stop_day=first + 5 + rng.randrange(4),
            )
        # one_time
        first = rng.randrange(11)
        return UserProfile(
            **{**common, "trouble": 0.15},
            segment="casual",
            first_day=first,
            active_p=1.0,
            weekend_factor=1.0,
            sessions_max=1,
            stop_day=first + 1,
        )

    # -- time --------------------------------------------------------------

    def day_of(self, ts_ms: int) -> int:
        """The population day holding ``ts_ms`` (day 0 holds ``start_ms``)."""
        return ts_ms // self.day_ms - self._day0

    def day_start_ms(self, day: int) -> int:
        return (self._day0 + day) * self.day_ms

    def weekday(self, day: int) -> int:
        """0 = Monday; the epoch's day 0 (1970-01-01) was a Thursday."""
        return (self._day0 + day + 3) % 7

    # -- events ------------------------------------------------------------

    def events_between(self, t0_ms: int, t1_ms: int) -> list[dict[str, Any]]:
        """Events with ``t0_ms <= ts < t1_ms``, sorted by (ts, event_id)."""
        low = max(t0_ms, self.start_ms)
        if t1_ms <= low:
            return []
        out: list[dict[str, Any]] = []
        for day in range(self.day_of(low), self.day_of(t1_ms - 1) + 1):
            stamps, events = self._cached_day(day)
            first = bisect.bisect_left(stamps, low)
            last = bisect.bisect_left(stamps, t1_ms)
            out.extend(event.as_dict() for event in events[first:last])
        return out

    def history(self, days: int) -> Iterator[dict[str, Any]]:
        """Days 0..days-1 as a producer would have logged them, for JSON Lines files.

        Mostly in time order, but about 1 % of events are sent twice (same
        ``event_id``, a few lines apart) and about 2 % arrive a few lines late
        (their ts is earlier than their neighbours').
        """
        for day in range(days):
            _stamps, events = self._build_day(day)
            pending: list[tuple[int, int, _Event]] = []  # (release position, order, event)
            held_count = 0
            for position, event in enumerate(events):
                late = _unit(self.seed, "late", event.event_id) < HISTORY_LATE_SHARE
                duplicate = _unit(self.seed, "dup", event.event_id) < HISTORY_DUPLICATE_SHARE
                delay = 1 + _hash64(self.seed, "delay", event.event_id) % 8
                if late:
                    held_count += 1
                    pending.append((position + delay, held_count, event))
                else:
                    yield event.as_dict()
                if duplicate:
                    held_count += 1
                    pending.append((position + delay + 1, held_count, event))
                due = sorted(item for item in pending if item[0] <= position)
                if due:
                    pending = [item for item in pending if item[0] > position]
                    for _release, _order, held in due:
                        yield held.as_dict()
            for _release, _order, held in sorted(pending):
                yield held.as_dict()

    def _cached_day(self, day: int) -> tuple[list[int], list[_Event]]:
        cached = self._cache.get(day)
        if cached is None:
            cached = self._build_day(day)
            if len(self._cache) >= self._CACHED_DAYS:
                del self._cache[min(self._cache)]
            self._cache[day] = cached
        return cached

    def _build_day(self, day: int) -> tuple[list[int], list[_Event]]:
        if day < 0:
            return [], []
        events: list[_Event] = []
        for profile in self.users:
            events.extend(self._user_day(profile, day))
        events.sort(key=lambda event: (event.ts, event.event_id))
        return [event.ts for event in events], events

    def _activity_p(self, profile: UserProfile, day: int) -> float:
        weekday = self.weekday(day)
        if profile.preferred_weekday is not None:
            return profile.active_p if weekday == profile.preferred_weekday else 0.04
        if profile.period_days is not None:
            phase = (day - profile.first_day) % profile.period_days
            return profile.active_p if phase == 0 else 0.35 if phase == 1 else 0.01
        p = profile.active_p * (profile.weekend_factor if weekday >= 5 else 1.0)
        if profile.habit == "gradual":
            return p * _gradual_factor(profile, day)
        if profile.fade_start_day is not None and day >= profile.fade_start_day:
            p *= 0.55 ** (day - profile.fade_start_day + 1)
        if profile.pause_end_day is not None and day > profile.pause_end_day:
            p *= 0.8
        return min(p, 1.0)

    def _user_day(self, profile: UserProfile, day: int) -> list[_Event]:
        if day < profile.first_day:
            return []
        if profile.stop_day is not None and day >= profile.stop_day:
            return []
        if (
            profile.pause_start_day is not None
            and profile.pause_end_day is not None
            and profile.pause_start_day <= day < profile.pause_end_day
        ):
            return []
        rng = random.Random(_hash64(self.seed, "day", profile.index, day))
        forced = day in (profile.first_day, profile.pause_end_day, profile.cancel_day)
        if rng.random() >= self._activity_p(profile, day) and not forced:
            return []
        day_start = self.day_start_ms(day)
        low = max(day_start, self.start_ms)
        high = day_start + self.day_ms
        if high <= low:
            return []
        minute_ms = self.day_ms / 1440
        events: list[_Event] = []
        for session in range(1 + rng.randrange(profile.sessions_max)):
            hour = rng.choices(_SESSION_PEAK_HOURS, _SESSION_PEAK_WEIGHTS)[0]
            hour = (hour + (rng.random() + rng.random() + rng.random() - 1.5) * 2.0) % 24.0
            at = day_start + hour / 24.0 * self.day_ms
            if at < low:
                at = low + rng.random() * (high - low)
            actions = _session_actions(rng, profile)
            if session == 0 and day == profile.first_day and profile.habit not in _NEVER_ACTIVATE:
                actions.append((ACTIVATION_TYPES[0], ()))
            for event_type, props in actions:
                ts = min(max(math.floor(at), low), high - 1)
                events.append(
                    _Event(
                        ts=ts,
                        event_id=f"s{self.seed}-{profile.user_id}-d{day}-{len(events):03d}",
                        user_id=profile.user_id,
                        type=event_type,
                        tenant=profile.tenant,
                        segment=profile.segment,
                        props=props,
                    )
                )
                at += minute_ms * (0.3 + 3.7 * rng.random())
        if day == profile.cancel_day:  # the user's last event: after every session
            ts = min(max(event.ts for event in events) + math.ceil(minute_ms), high - 1)
            events.append(
                _Event(
                    ts=ts,
                    event_id=f"s{self.seed}-{profile.user_id}-d{day}-{len(events):03d}",
                    user_id=profile.user_id,
                    type="subscription_cancelled",
                    tenant=profile.tenant,
                    segment=profile.segment,
                    props=(("plan", "monthly"),),
                )
            )
        return events


_NEVER_ACTIVATE: Final = frozenset({"one_time", "unactivated"})


def _gradual_factor(profile: UserProfile, day: int) -> float:
    """A gradual fader's share of its old rate: 1 before the fade, about a half
    in its first half, about a quarter in the second."""
    start = profile.fade_start_day
    stop = profile.stop_day
    if start is None or stop is None or day < start:
        return 1.0
    return 0.5 if day < (start + stop) // 2 else 0.28


def _session_actions(
    rng: random.Random, profile: UserProfile
) -> list[tuple[str, tuple[tuple[str, int | str], ...]]]:
    """What one visit does: log in, look around, maybe buy, maybe complain."""
    actions: list[tuple[str, tuple[tuple[str, int | str], ...]]] = []
    if rng.random() < 0.7:
        actions.append(("login", ()))
    for _view in range(1 + min(int(rng.expovariate(0.5)), 7)):
        actions.append(("view", (("page", rng.choice(_PAGES)),)))
    if profile.habit == "unactivated":
        return [*actions, ("view", (("page", "onboarding"),))]
    cart_p = 0.45 if profile.segment == "shopper" else 0.12
    if rng.random() < cart_p:
        actions.append(("add_to_cart", (("items", 1 + rng.randrange(3)),)))
        if rng.random() < profile.trouble:
            actions.append(("checkout_failed", (("code", rng.choice(_FAILURE_CODES)),)))
        elif rng.random() < 0.6:
            amount = 500 + rng.randrange(19_500)
            actions.append(("purchase", (("amount_cents", amount), ("currency", "EUR"))))
    if rng.random() < profile.trouble * 0.3:
        actions.append(("support_ticket", (("topic", rng.choice(_TICKET_TOPICS)),)))
    return actions


# -- poison --------------------------------------------------------------


def poison_records(n: int, seed: int, *, now_ms: int | None = None) -> list[PoisonRecord]:
    """``n`` bad records cycling through ``POISON_REASONS`` (every reason once in each
    ``len(POISON_REASONS)`` records)."""
    return [poison_record(index, seed, now_ms=now_ms) for index in range(n)]


def poison_record(index: int, seed: int, *, now_ms: int | None = None) -> PoisonRecord:
    """The ``index``-th bad record: reason ``POISON_REASONS[index % len(POISON_REASONS)]``,
    a seeded variant.

    Each record is wrong in exactly one way, so the worker's checks (which run
    in a fixed order) give the tagged reason. ``now_ms`` sets the time of the
    parts that are valid; without it they carry an old, still valid, time.
    """
    reason = POISON_REASONS[index % len(POISON_REASONS)]
    rng = random.Random(_hash64(seed, "poison", index))
    ts_ms = POISON_DEFAULT_TS_MS if now_ms is None else now_ms
    user = user_id_of(rng.randrange(1000))
    key = user.encode()
    event: dict[str, Any] = {
        "event_id": f"poison-{seed}-{index}",
        "user_id": user,
        "type": rng.choice(EVENT_TYPES),
        "ts": ts_ms,
        "tenant": rng.choice(TENANTS),
    }
    variant = rng.randrange(4)

    def encoded(value: Any) -> bytes:
        return msgspec.json.encode(value)

    def with_raw_ts(raw: bytes) -> bytes:
        return encoded({**event, "ts": "@TS@"}).replace(b'"@TS@"', raw)

    if reason == "not_json":
        whole = encoded(event)
        options = (
            whole[: max(1, len(whole) - 1 - rng.randrange(len(whole) // 2))],  # cut short
            repr(event).encode(),  # a Python dict, single quotes
            f"{event['type']} {user} {ts_ms}".encode(),  # a log line
            whole + b"}",  # trailing garbage
        )
        return PoisonRecord(reason, key, options[variant])
    if reason == "not_object":
        options = (
            encoded(list(event.values())),
            encoded(encoded(event).decode()),  # JSON encoded twice
            b"null",
            encoded(ts_ms),
        )
        return PoisonRecord(reason, key, options[variant])
    if reason == "missing_field":
        missing = ("event_id", "user_id", "type", "ts")[variant]
        return PoisonRecord(reason, key, encoded({k: v for k, v in event.items() if k != missing}))
    if reason == "wrong_type":
        changes: tuple[dict[str, Any], ...] = (
            {"ts": "yesterday"},
            {"ts": ts_ms + 0.5},
            {"user_id": rng.randrange(1, 100_000)},
            {"props": ["not", "an", "object"]},
        )
        return PoisonRecord(reason, key, encoded({**event, **changes[variant]}))
    if reason.endswith("_too_long"):
        return _too_long(reason.removesuffix("_too_long"), event, variant)
    if reason == "ts_non_finite":
        raws = (b"NaN", b"Infinity", b'"-Infinity"', b"1e999")
        return PoisonRecord(reason, key, with_raw_ts(raws[variant]))
    if reason == "ts_out_of_range":
        stamps: tuple[int | str, ...] = (  # before ENGAGEMENT_MIN_TS's default, 10^11 ms
            ts_ms // 1000,  # seconds where ms are due
            99_999_999_999,
            "1970-01-02T00:00:00Z",
            -1,
        )
        return PoisonRecord(reason, key, encoded({**event, "ts": stamps[variant]}))
    if reason == "ts_in_future":
        future: tuple[int | str, ...] = (
            ts_ms * 1000,  # microseconds where ms are due
            7_258_118_400_000,  # 2200-01-01
            "2199-06-01T00:00:00Z",
            10**15,
        )
        return PoisonRecord(reason, key, encoded({**event, "ts": future[variant]}))
    if reason == "too_large":
        padding = "x" * _TOO_LARGE_BYTES
        return PoisonRecord(reason, key, encoded({**event, "props": {"blob": padding}}))
    if reason == "too_deep":
        nested: Any = {}
        for _level in range(_TOO_DEEP_LEVELS):
            nested = {"n": nested} if variant % 2 == 0 else {"n": [nested]}
        return PoisonRecord(reason, key, encoded({**event, "props": nested}))
    if reason == "key_mismatch":
        keys: tuple[bytes | None, ...] = (
            user_id_of(rng.randrange(1000, 2000)).encode(),  # another user's key
            None,  # no key at all
            user.upper().encode(),
            b" " + key,
        )
        return PoisonRecord(reason, keys[variant], encoded(event))
    # reserved_type: a control type without the control header
    reserved = ("$tick", "$erase", "$config", "$anything")[variant]
    return PoisonRecord(reason, key, encoded({**event, "type": reserved}))


def _too_long(field: str, event: dict[str, Any], variant: int) -> PoisonRecord:
    """``event`` with ``field`` past its cap in UTF-8 bytes; a long user id is also
    the key, as its producer would send it."""
    too_long = _TOO_LONG_BYTES[field]
    text = (
        "x" * too_long,
        "é" * (too_long // 2 + 1),  # fewer characters than the cap, more bytes
        f"{event['user_id']}-" + "z" * too_long,
        "€" * (too_long // 3 + 1),
    )[variant]
    bad = {**event, field: text}
    key = text.encode() if field == "user_id" else str(event["user_id"]).encode()
    return PoisonRecord(f"{field}_too_long", key, msgspec.json.encode(bad))
