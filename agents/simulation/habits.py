"""Who the simulated users are and what they do on a day, by habit; no I/O, no clock.

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
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Final

import msgspec

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

_PAGES: Final = ("home", "product", "search", "feed", "category")
_FAILURE_CODES: Final = ("card_declined", "timeout", "out_of_stock")
_TICKET_TOPICS: Final = ("delivery", "refund", "bug", "account")


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


def hash64(*parts: object) -> int:
    """A 64-bit number fixed by ``parts``."""
    text = "|".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    return hash64(*parts) / 2**64


def user_id_of(index: int) -> str:
    return f"u{index:05d}"


def make_profile(seed: int, index: int) -> UserProfile:
    """The profile of the user at ``index`` in a population of ``seed``."""
    block, slot = divmod(index, len(_BLOCK))
    order = list(_BLOCK)
    random.Random(hash64(seed, "block", block)).shuffle(order)
    habit = order[slot]
    rng = random.Random(hash64(seed, "profile", index))
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


def activity_p(profile: UserProfile, day: int, weekday: int) -> float:
    """The chance that ``profile`` visits on ``day`` (a ``weekday``: 0 = Monday)."""
    if profile.preferred_weekday is not None:
        return profile.active_p if weekday == profile.preferred_weekday else 0.04
    if profile.period_days is not None:
        phase = (day - profile.first_day) % profile.period_days
        return profile.active_p if phase == 0 else 0.35 if phase == 1 else 0.01
    p = profile.active_p * (profile.weekend_factor if weekday >= 5 else 1.0)
    if profile.habit == "gradual":
        return p * gradual_factor(profile, day)
    if profile.fade_start_day is not None and day >= profile.fade_start_day:
        p *= 0.55 ** (day - profile.fade_start_day + 1)
    if profile.pause_end_day is not None and day > profile.pause_end_day:
        p *= 0.8
    return min(p, 1.0)


NEVER_ACTIVATE: Final = frozenset({"one_time", "unactivated"})


def gradual_factor(profile: UserProfile, day: int) -> float:
    """A gradual fader's share of its old rate: 1 before the fade, about a half
    in its first half, about a quarter in the second."""
    start = profile.fade_start_day
    stop = profile.stop_day
    if start is None or stop is None or day < start:
        return 1.0
    return 0.5 if day < (start + stop) // 2 else 0.28


def session_actions(
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
