"""A seeded population of users with human habits, as input events; no I/O, no clock.

Time is passed in and may be compressed: a "day" lasts ``day_ms`` (the demo
uses 1000 ms). Days are aligned to multiples of ``day_ms`` since the epoch, as
the engine's day buckets are, and day 0 is the one holding ``start_ms``; the
population does not exist before ``start_ms``.

Every user-day is derived from a hash of (seed, user, day), never from a
shared random stream, so any window of time gives the same events however the
timeline is cut, and ``event_id`` is stable for the same seed. Who the users
are and what each habit does on a day: ``agents.simulation.habits``.

the DLQ reason the worker must give. ``wrong_partition`` and
``bad_signature`` depend on the topic (partition count, signing keys), so the
sender makes them: see ``agents.simulation.producer.misrouted_event`` and
``forged_tick``.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

import msgspec

from agents.simulation.habits import (
    ACTIVATION_TYPES,
    EVENT_TYPES,
    NEVER_ACTIVATE,
    TENANTS,
    UserProfile,
    activity_p,
    hash64,
    make_profile,
    session_actions,
    unit,
    user_id_of,
)
from tables.errors import ConfigurationError

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

_SESSION_PEAK_HOURS: Final = (8.0, 12.5, 20.0)
_SESSION_PEAK_WEIGHTS: Final = (0.3, 0.2, 0.5)


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
        self.users: tuple[UserProfile, ...] = tuple(make_profile(seed, i) for i in range(users))
        self._by_id = {profile.user_id: profile for profile in self.users}
        self._cache: dict[int, tuple[list[int], list[_Event]]] = {}

    # -- who the users are -------------------------------------------------

    def profile(self, user_id: str) -> UserProfile:
        return self._by_id[user_id]

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
                late = unit(self.seed, "late", event.event_id) < HISTORY_LATE_SHARE
                duplicate = unit(self.seed, "dup", event.event_id) < HISTORY_DUPLICATE_SHARE
                delay = 1 + hash64(self.seed, "delay", event.event_id) % 8
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
        rng = random.Random(hash64(self.seed, "day", profile.index, day))
        forced = day in (profile.first_day, profile.pause_end_day, profile.cancel_day)
        if rng.random() >= activity_p(profile, day, self.weekday(day)) and not forced:
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
            actions = session_actions(rng, profile)
            if session == 0 and day == profile.first_day and profile.habit not in NEVER_ACTIVATE:
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
    rng = random.Random(hash64(seed, "poison", index))
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
