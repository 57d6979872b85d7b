"""One user's state and the effect of one event on it.

Rules of docs/CONTRACTS.md and docs/MODEL.md, written out plainly: the user
keeps every applied day's count (the engine keeps only 28 one-byte counters;
the view shows those), the raw event ids of the de-duplication ring, and the
negative kinds per week. What the clock decides about a user: ``reference.judge``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reference.records import Event, Rules, UserView
from reference.risk import WINDOW_DAYS

ID_RING = 4
MAX_DAY_COUNT = 255  # one byte per day counter
MAX_LABEL_BYTES = 255
MAX_GAP_CENTIDAYS = 0xFFFF
GAP_WEIGHT = 0.3  # the EWMA weight of a new gap between active days
WEEK_DAYS = 7
NEGATIVE_KINDS = {
    "checkout_failed": "checkout_failed",
    "payment_failed": "checkout_failed",
    "order_failed": "checkout_failed",
    "support_ticket": "support_ticket",
    "complaint": "support_ticket",
    "negative_feedback": "support_ticket",
    "app_error": "app_error",
    "error": "app_error",
    "crash": "app_error",
    "refund_requested": "cancellation",
    "subscription_cancelled": "cancellation",
    "unsubscribe": "cancellation",
    "order_cancelled": "cancellation",
}


@dataclass
class User:
    first_seen_ms: int
    last_seen_ms: int
    partition: int
    offset: int
    tenant: str
    segment: str
    recent_event_ids: list[str] = field(default_factory=list)
    days: dict[int, int] = field(default_factory=dict)  # day -> events applied that day
    active_days: int = 0
    streak_days: int = 0
    usual_gap_centidays: int = 0
    events_total: int = 0
    tier: str | None = None
    stage: str = "new"
    first_signal_as_of_ms: int | None = None
    returned_day: int | None = None
    negative_weeks: dict[int, set[str]] = field(default_factory=dict)
    baseline: int = 200  # reference.growth
    declining: bool = False
    activated: bool = False
    not_activated_signalled: bool = False
    intent_ms: int | None = None  # the churn intent of the current episode
    anonymous: bool = False


def label(text: str) -> str:
    """A tenant or segment as the state keeps it: at most 255 bytes of UTF-8,
    cut on a character boundary."""
    return text.encode()[:MAX_LABEL_BYTES].decode(errors="ignore")


# -- events --------------------------------------------------------------------


def first_event(event: Event, rules: Rules) -> User:
    user = User(
        first_seen_ms=event.ts_ms,
        last_seen_ms=event.ts_ms,
        partition=rules.partition,
        offset=event.offset,
        tenant=label(event.tenant or ""),
        segment=label(event.segment or ""),
        anonymous=bool(event.anonymous),
    )
    _count(user, event, rules)
    user.streak_days = 1
    return user


def duplicate(user: User, event: Event, rules: Rules) -> str | None:
    if event.offset <= user.offset and user.partition == rules.partition:
        return "duplicate_offset"
    if rules.dedup_ids and event.event_id in user.recent_event_ids[-rules.dedup_ids :]:
        return "duplicate_id"
    return None


def apply_event(user: User, event: Event, rules: Rules) -> None:
    """A non-duplicate event of a known user (its reactivation is judged by the caller)."""
    day = event.ts_ms // rules.day_ms
    last_day = user.last_seen_ms // rules.day_ms
    if day > last_day:  # a new newest active day
        gap_days = day - last_day
        user.streak_days = user.streak_days + 1 if gap_days == 1 else 1
        if user.usual_gap_centidays == 0:
            user.usual_gap_centidays = 100 * gap_days
        else:
            old = user.usual_gap_centidays
            user.usual_gap_centidays = round(old + GAP_WEIGHT * (100 * gap_days - old))
        user.usual_gap_centidays = min(user.usual_gap_centidays, MAX_GAP_CENTIDAYS)
    _count(user, event, rules)
    user.first_seen_ms = min(user.first_seen_ms, event.ts_ms)
    user.last_seen_ms = max(user.last_seen_ms, event.ts_ms)
    user.partition = rules.partition
    user.offset = event.offset
    if event.tenant is not None:
        user.tenant = label(event.tenant)
    if event.segment is not None:
        user.segment = label(event.segment)
    if event.anonymous is not None:
        user.anonymous = event.anonymous


def note_event(user: User, event: Event, rules: Rules) -> None:
    """A negative or churn-intent event of a known user: applied, but not activity.
    Its negative kind counts in its own week, or in the week of the newest active
    day when it is later than that."""
    user.events_total += 1
    user.recent_event_ids = [*user.recent_event_ids, event.event_id][-ID_RING:]
    user.partition = rules.partition
    user.offset = event.offset
    if event.tenant is not None:
        user.tenant = label(event.tenant)
    if event.segment is not None:
        user.segment = label(event.segment)
    if event.anonymous is not None:
        user.anonymous = event.anonymous
    kind = NEGATIVE_KINDS.get(event.type)
    if kind is not None:
        week = min(event.ts_ms // rules.day_ms, user.last_seen_ms // rules.day_ms) // WEEK_DAYS
        user.negative_weeks.setdefault(week, set()).add(kind)


def _count(user: User, event: Event, rules: Rules) -> None:
    """Totals, the day counts, the id ring and the negative kinds."""
    day = event.ts_ms // rules.day_ms
    user.events_total += 1
    user.recent_event_ids = [*user.recent_event_ids, event.event_id][-ID_RING:]
    newest_day = max(user.days, default=day)
    # a day more than 28 days before the newest is outside the counters: its
    # events count in the total only (the state cannot tell whether it was active)
    if day > newest_day - WINDOW_DAYS:
        if user.days.get(day, 0) == 0:
            user.active_days += 1
        user.days[day] = min(user.days.get(day, 0) + 1, MAX_DAY_COUNT)
    kind = NEGATIVE_KINDS.get(event.type)
    if kind is not None:
        user.negative_weeks.setdefault(day // WEEK_DAYS, set()).add(kind)


def come_back(user: User, event: Event, rules: Rules) -> None:
    """After a reactivation: the episode closes."""
    if user.tier in ("dormant", "churned"):
        user.stage = "resurrected"
        user.returned_day = event.ts_ms // rules.day_ms
    else:
        user.stage = "active"
    if rules.activation_types and not user.activated:
        user.stage = "not_activated" if user.not_activated_signalled else "new"
    user.tier = None
    user.first_signal_as_of_ms = None


def negative_kinds(user: User, rules: Rules) -> tuple[frozenset[str], frozenset[str]]:
    week = user.last_seen_ms // rules.day_ms // WEEK_DAYS
    return (
        frozenset(user.negative_weeks.get(week, ())),
        frozenset(user.negative_weeks.get(week - 1, ())),
    )


def view(user: User, rules: Rules) -> UserView:
    newest_day = user.last_seen_ms // rules.day_ms
    newest, before = negative_kinds(user, rules)
    return UserView(
        first_seen_ms=user.first_seen_ms,
        last_seen_ms=user.last_seen_ms,
        partition=user.partition,
        offset=user.offset,
        recent_event_ids=tuple(user.recent_event_ids),
        newest_day=newest_day,
        day_counts={
            day: count
            for day, count in user.days.items()
            if newest_day - WINDOW_DAYS < day <= newest_day and count > 0
        },
        active_days=user.active_days,
        streak_days=user.streak_days,
        usual_gap_centidays=user.usual_gap_centidays,
        events_total=user.events_total,
        tier=user.tier,
        stage=user.stage,
        first_signal_as_of_ms=user.first_signal_as_of_ms,
        returned_day=user.returned_day,
        negative_kinds_newest_week=newest,
        negative_kinds_week_before=before,
        tenant=user.tenant,
        segment=user.segment,
        baseline=user.baseline,
        declining=user.declining,
        activated=user.activated,
        not_activated_signalled=user.not_activated_signalled,
        intent_ms=user.intent_ms,
        anonymous=user.anonymous,
    )
