"""What counts as activity, churn intent, and who gets tiers, from docs/MODEL.md
("Activity") and docs/CONTRACTS.md (the ``churn_intent`` signal).

An event type is, in the user's scope, a churn intent, else negative, else
passive, else active (with an active list: only the types listed; the rest
passive). Passive events, and active ones within the grace after a churn
intent, change nothing. The first churn intent of an episode is a signal at
once; the first active event after the grace and after ``last_seen`` is a
``reactivated`` that names the intent. Anonymous users (unless the setting
asks) and users with fewer active days than their scope's minimum have no
tier due.
"""

from __future__ import annotations

from typing import Any

from reference.judge import KIND_ORDER, TIERS, reason, signal_fields, transition
from reference.records import Activity, Event, Rules
from reference.risk import WINDOW_DAYS
from reference.user import User, negative_kinds

ACTIVE, PASSIVE, NEGATIVE, CHURN_INTENT = "active", "passive", "negative", "churn_intent"


def activity_of(
    tenant: str, segment: str, overrides: dict[str, Activity], rules: Rules
) -> Activity:
    """The classes of a scope: ``tenant/segment``, then ``tenant``, then the settings."""
    if segment and f"{tenant}/{segment}" in overrides:
        return overrides[f"{tenant}/{segment}"]
    if tenant in overrides:
        return overrides[tenant]
    return rules.activity


def class_of(event_type: str, activity: Activity) -> str:
    if event_type in activity.churn_intent:
        return CHURN_INTENT
    if event_type in activity.negative:
        return NEGATIVE
    if event_type in activity.passive:
        return PASSIVE
    if activity.active is not None and event_type not in activity.active:
        return PASSIVE
    return ACTIVE


def event_class(
    user: User | None, event: Event, overrides: dict[str, Activity], rules: Rules
) -> str:
    """The class of an event under its own tenant and segment, else the user's."""
    tenant = event.tenant if event.tenant is not None else (user.tenant if user else "")
    segment = event.segment if event.segment is not None else (user.segment if user else "")
    return class_of(event.type, activity_of(tenant, segment, overrides, rules))


def tiers_withheld(user: User, overrides: dict[str, Activity], rules: Rules) -> bool:
    if user.anonymous and not rules.anonymous_tiers:
        return True
    activity = activity_of(user.tenant, user.segment, overrides, rules)
    return user.active_days < activity.tier_min_active_days


def in_grace(user: User, event: Event, rules: Rules) -> bool:
    return user.intent_ms is not None and event.ts_ms < user.intent_ms + rules.intent_grace_ms


def intent_signal(
    user: User, user_id: str, event: Event, tiers: tuple[int, int, int], source: str, rules: Rules
) -> dict[str, Any]:
    """``churn_intent``, from the user as it is once the intent event is noted."""
    day = event.ts_ms // rules.day_ms
    newest_day = user.last_seen_ms // rules.day_ms
    inactive_ms = max(event.ts_ms - user.last_seen_ms, 0)
    recent_days = sum(
        1
        for d in range(day - WINDOW_DAYS + 1, day + 1)
        if d > newest_day - WINDOW_DAYS and user.days.get(d, 0) > 0
    )
    usual = user.usual_gap_centidays / 100 if user.usual_gap_centidays else None
    newest, before = negative_kinds(user, rules)
    reasons = [
        # the contract's closed set: the default types by name, any other as intent_other
        reason(
            f"intent_{event.type}"
            if event.type in ("subscription_cancelled", "unsubscribe")
            else "intent_other",
            1.0,
        ),
        reason("days_since_active", round(inactive_ms / rules.day_ms, 3), usual),
        reason("recent_active_days", float(recent_days)),
        reason("active_days", float(user.active_days)),
    ]
    reasons += [reason(f"recent_{k}", 1.0) for k in KIND_ORDER if k in newest or k in before]
    threshold = (tiers[0], source)
    return signal_fields(
        user, user_id, CHURN_INTENT, event.ts_ms, inactive_ms, threshold, reasons, rules
    )


def return_after_intent(
    user: User, user_id: str, event: Event, tiers: tuple[int, int, int], source: str, rules: Rules
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ``reactivated`` signal (and the return's transition when the episode
    reached a tier) of the first active event after the grace; ``user`` as before."""
    assert user.intent_ms is not None
    gap_ms = event.ts_ms - user.last_seen_ms
    first_ms = user.first_signal_as_of_ms or user.intent_ms
    reasons = [
        reason("returned_after_days", round(gap_ms / rules.day_ms, 3)),
        reason("after_churn_intent", round((event.ts_ms - user.intent_ms) / rules.day_ms, 3)),
    ]
    level = TIERS.index(user.tier) if user.tier is not None else 0
    threshold = (tiers[level], source)
    signal = {
        **signal_fields(
            user, user_id, "reactivated", event.ts_ms, gap_ms, threshold, reasons, rules
        ),
        "gap_ms": gap_ms,
        "time_to_return_ms": event.ts_ms - first_ms,
        "late": event.ts_ms < first_ms,
        "churn_intent_as_of": user.intent_ms,
    }
    if user.tier is None:
        return signal, None
    signal["tier_reached"] = user.tier
    to_stage = "active" if user.tier == "at_risk" else "resurrected"
    if rules.activation_types and not user.activated:  # as come_back: not yet activated
        to_stage = "not_activated" if user.not_activated_signalled else "new"
    moved = transition(user, user_id, user.tier, to_stage, event.ts_ms, reasons, rules)
    return signal, moved
