"""One user: state, the effect of one event, and what the clock decides about them.

Rules of docs/CONTRACTS.md and docs/MODEL.md, written out plainly: the user
keeps every applied day's count (the engine keeps only 28 one-byte counters;
the view shows those), the raw event ids of the de-duplication ring, and the
negative kinds per week.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from reference.records import Event, Rules, UserView
from reference.risk import WINDOW_DAYS, risk

TIERS = ("at_risk", "dormant", "churned")
ID_RING = 4
MAX_DAY_COUNT = 255  # one byte per day counter
MAX_LABEL_BYTES = 255
MAX_GAP_CENTIDAYS = 0xFFFF
GAP_WEIGHT = 0.3  # the EWMA weight of a new gap between active days
USER_MULTIPLES = (3, 6, 12)  # per-user tiers: multiples of the usual gap
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
KIND_ORDER = ("checkout_failed", "support_ticket", "app_error", "cancellation")


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


def label(text: str) -> str:
    """A tenant or segment as the state keeps it: at most 255 bytes of UTF-8,
    cut on a character boundary."""
    return text.encode()[:MAX_LABEL_BYTES].decode(errors="ignore")


def group_of(user_id: str, rules: Rules) -> str:
    digest = hashlib.sha256((rules.holdout_salt + user_id).encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    return "holdout" if share < rules.holdout_share else "treatment"


# -- events --------------------------------------------------------------------


def first_event(event: Event, rules: Rules) -> User:
    user = User(
        first_seen_ms=event.ts_ms,
        last_seen_ms=event.ts_ms,
        partition=rules.partition,
        offset=event.offset,
        tenant=label(event.tenant or ""),
        segment=label(event.segment or ""),
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


def reactivation(
    user: User, user_id: str, event: Event, tiers: tuple[int, int, int], source: str, rules: Rules
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The signal and transition of a user with a tier seen again (``user`` as before)."""
    assert user.tier is not None and user.first_signal_as_of_ms is not None
    gap_ms = event.ts_ms - user.last_seen_ms
    reasons = [reason("returned_after_days", round(gap_ms / rules.day_ms, 3))]
    signal = {
        **_signal_head(user, user_id, "reactivated", event.ts_ms, rules),
        "inactive_ms": gap_ms,
        "threshold_ms": tiers[TIERS.index(user.tier)],
        "threshold_source": source,
        "risk": risk_at(user, event.ts_ms, rules),
        "horizon_ms": rules.horizon_ms,
        "reasons": reasons,
        "group": group_of(user_id, rules),
        "schema_version": 1,
        "tier_reached": user.tier,
        "gap_ms": gap_ms,
        "time_to_return_ms": event.ts_ms - user.first_signal_as_of_ms,
        "late": event.ts_ms < user.first_signal_as_of_ms,
    }
    to_stage = "active" if user.tier == "at_risk" else "resurrected"
    moved = transition(user, user_id, user.tier, to_stage, event.ts_ms, reasons, rules)
    return signal, moved


def come_back(user: User, event: Event, rules: Rules) -> None:
    """After a reactivation: the episode closes."""
    if user.tier in ("dormant", "churned"):
        user.stage = "resurrected"
        user.returned_day = event.ts_ms // rules.day_ms
    else:
        user.stage = "active"
    user.tier = None
    user.first_signal_as_of_ms = None


# -- the clock -----------------------------------------------------------------


def thresholds(
    user: User, overrides: dict[str, tuple[int, int, int]], rules: Rules
) -> tuple[tuple[int, int, int], str]:
    """The user's own cadence, then segment, tenant, defaults."""
    if (
        rules.adaptive_min_days
        and user.active_days >= rules.adaptive_min_days
        and user.usual_gap_centidays > 0
    ):
        gap_ms = user.usual_gap_centidays * rules.day_ms / 100
        at_risk, dormant, churned = (
            min(rules.threshold_max_ms, max(rules.threshold_min_ms, round(gap_ms * multiple)))
            for multiple in USER_MULTIPLES
        )
        dormant = max(at_risk, dormant)
        return (at_risk, dormant, max(dormant, churned)), "user"
    if user.segment and f"{user.tenant}/{user.segment}" in overrides:
        return overrides[f"{user.tenant}/{user.segment}"], "segment"
    if user.tenant in overrides:
        return overrides[user.tenant], "tenant"
    return (rules.at_risk_ms, rules.dormant_ms, rules.churned_ms), "default"


def stage_ends_ms(user: User, rules: Rules) -> int | None:
    """When time alone moves the stage on (new → active, resurrected → active)."""
    if user.tier is not None:
        return None
    if user.stage == "new":
        return user.first_seen_ms + rules.new_days * rules.day_ms
    if user.stage == "resurrected" and user.returned_day is not None:
        return (user.returned_day + rules.resurrected_days) * rules.day_ms
    return None


def advance(
    user: User,
    user_id: str,
    clock_ms: int,
    overrides: dict[str, tuple[int, int, int]],
    rules: Rules,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Everything due at or before ``clock_ms``, in time order (a tier first on a tie)."""
    tiers, source = thresholds(user, overrides, rules)
    signals: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    while True:
        level = 0 if user.tier is None else TIERS.index(user.tier) + 1
        tier_due = user.last_seen_ms + tiers[level] if level < len(TIERS) else None
        stage_due = stage_ends_ms(user, rules)
        if (
            tier_due is not None
            and tier_due <= clock_ms
            and (stage_due is None or tier_due <= stage_due)
        ):
            kind = TIERS[level]
            signal = tier_signal(user, user_id, kind, tier_due, tiers[level], source, rules)
            signals.append(signal)
            if user.stage != kind:
                moves.append(
                    transition(user, user_id, user.stage, kind, tier_due, signal["reasons"], rules)
                )
            user.tier = user.stage = kind
            if user.first_signal_as_of_ms is None:
                user.first_signal_as_of_ms = tier_due
        elif stage_due is not None and stage_due <= clock_ms:
            reasons = [reason("active_days", float(user.active_days))]
            moves.append(transition(user, user_id, user.stage, "active", stage_due, reasons, rules))
            user.stage = "active"
        else:
            return signals, moves


# -- outputs -------------------------------------------------------------------


def reason(code: str, value: float, baseline: float | None = None) -> dict[str, Any]:
    return {"code": code, "value": value, "baseline": baseline}


def _signal_head(
    user: User, user_id: str, kind: str, as_of_ms: int, rules: Rules
) -> dict[str, Any]:
    return {
        "signal_id": f"{user_id}:{user.last_seen_ms}:{kind}",
        "kind": kind,
        "user_id": user_id,
        "tenant": user.tenant,
        "segment": user.segment,
        "episode": user.last_seen_ms,
        "as_of": as_of_ms,
        "last_seen": user.last_seen_ms,
    }


def tier_signal(
    user: User,
    user_id: str,
    kind: str,
    due_ms: int,
    threshold_ms: int,
    source: str,
    rules: Rules,
) -> dict[str, Any]:
    return {
        **_signal_head(user, user_id, kind, due_ms, rules),
        "inactive_ms": due_ms - user.last_seen_ms,
        "threshold_ms": threshold_ms,
        "threshold_source": source,
        "risk": risk_at(user, due_ms, rules),
        "horizon_ms": rules.horizon_ms,
        "reasons": tier_reasons(user, due_ms - user.last_seen_ms, threshold_ms, rules),
        "group": group_of(user_id, rules),
        "schema_version": 1,
    }


def transition(
    user: User,
    user_id: str,
    from_stage: str | None,
    to_stage: str,
    as_of_ms: int,
    reasons: list[dict[str, Any]],
    rules: Rules,
) -> dict[str, Any]:
    return {
        "transition_id": f"{user_id}:{as_of_ms}:{to_stage}",
        "user_id": user_id,
        "tenant": user.tenant,
        "segment": user.segment,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "as_of": as_of_ms,
        "episode": user.last_seen_ms,
        "reasons": reasons,
        "group": group_of(user_id, rules),
        "schema_version": 1,
    }


def counts_back_from(user: User, day: int, days: int) -> list[int]:
    """Event counts of ``day``, the day before, ... (``days`` of them)."""
    return [user.days.get(day - age, 0) for age in range(days)]


def tier_reasons(
    user: User, inactive_ms: int, threshold_ms: int, rules: Rules
) -> list[dict[str, Any]]:
    """The reason codes of docs/MODEL.md, in its table's order."""
    inactive_days = round(inactive_ms / rules.day_ms, 3)
    out = [reason("inactive_days", inactive_days, round(threshold_ms / rules.day_ms, 3))]
    if user.active_days >= 3 and user.usual_gap_centidays > 0:
        out.append(reason("gap_vs_usual", inactive_days, user.usual_gap_centidays / 100))
    counts = counts_back_from(user, user.last_seen_ms // rules.day_ms, WINDOW_DAYS)
    last_week, weeks_before = counts[:WEEK_DAYS], counts[WEEK_DAYS:]
    weekly_mean = sum(weeks_before) / 3
    if weekly_mean > 0 and sum(last_week) < weekly_mean:
        out.append(reason("frequency_drop", float(sum(last_week)), round(weekly_mean, 3)))
    active_last_week = sum(1 for count in last_week if count > 0)
    active_weekly_mean = sum(1 for count in weeks_before if count > 0) / 3
    if active_weekly_mean > 0 and active_last_week < active_weekly_mean:
        out.append(
            reason("active_days_drop", float(active_last_week), round(active_weekly_mean, 3))
        )
    if user.streak_days >= 3:
        out.append(reason("streak_broken", float(user.streak_days)))
    newest, before = negative_kinds(user, rules)
    out.extend(
        reason(f"recent_{kind}", 1.0) for kind in KIND_ORDER if kind in newest or kind in before
    )
    if user.active_days == 1:
        out.append(reason("single_visit", 1.0))
    # the posterior mean rate of an alive user: Gamma(r + x, alpha + T) has mean (r + x) / (alpha + T)
    age_days = max((user.last_seen_ms + inactive_ms - user.first_seen_ms) / rules.day_ms, 0.0)
    rate = (rules.risk_r + max(user.active_days - 1, 0)) / (rules.risk_alpha + age_days)
    out.append(reason("expected_active_days", round(rate * inactive_days, 3)))
    return out


def risk_at(user: User, at_ms: int, rules: Rules) -> float:
    day_ms = rules.day_ms
    at_ms = max(at_ms, user.last_seen_ms)
    today = at_ms // day_ms
    window_days = [today - age for age in range(WINDOW_DAYS)]
    recent_active = sum(1 for day in window_days if user.days.get(day, 0) > 0)
    first_in_window = user.first_seen_ms // day_ms in window_days
    value = risk(
        (rules.risk_r, rules.risk_alpha, rules.risk_a, rules.risk_b),
        user.active_days,
        recent_active - (1 if first_in_window else 0),
        (user.last_seen_ms - user.first_seen_ms) / day_ms,
        (at_ms - user.first_seen_ms) / day_ms,
        rules.horizon_ms / day_ms,
    )
    return value


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
    )
