"""Declining and activation, as docs/MODEL.md states them.

Declining: the baseline ``b`` (whole units of 1/10,000) is set to 200 by a
user's first event and, at each event on a day after the user's newest
active day, ``g`` days after it, becomes ``min(10,000, round(b · 0.98^g) + 200)``.
At such an event of a user without a tier (before the event), with ``n``
days from the first seen day to this one (both counted) and ``k`` active days
among the 14 ending on this day: ``B = b / 10,000 / (1 - 0.98^n)``, and when
``n ≥ 28`` and ``14 · B ≥ 3`` an episode opens (``declining`` is emitted) if
``k < s · 14 · B`` and an open one closes if ``k ≥ (1 + s) / 2 · 14 · B``.

Activation (on when activation types are configured): the first event of
an activation type activates the user, moving new and not_activated to
active (a user with a tier keeps its stage). The deadline is the clock's:
``reference.judge``.
"""

from __future__ import annotations

from typing import Any

from reference.judge import group_of, reason, risk_at, thresholds, transition
from reference.records import Event, Rules
from reference.user import User, negative_kinds

KIND_ORDER = ("checkout_failed", "support_ticket", "app_error", "cancellation")
FULL = 10_000
STEP = 200
RECENT = 14


def move_baseline(user: User, gap_days: int) -> None:
    user.baseline = min(FULL, round(user.baseline * 0.98**gap_days) + STEP)


def judge_decline(
    user: User, user_id: str, day: int, overrides: dict[str, tuple[int, int, int]], rules: Rules
) -> list[dict[str, Any]]:
    """After a new newest active day of a user without a tier: the ``declining`` signal
    when an episode opens."""
    s = rules.decline_sensitivity
    n = day - user.first_seen_ms // rules.day_ms + 1
    if s <= 0 or n < 28:
        return []
    rate = user.baseline / FULL / (1 - 0.98**n)
    expected = RECENT * rate
    if expected < 3:
        return []
    k = sum(1 for d in range(day - RECENT + 1, day + 1) if user.days.get(d, 0) > 0)
    if user.declining:
        if k >= (1 + s) / 2 * expected:
            user.declining = False
        return []
    if not k < s * expected:
        return []
    user.declining = True
    ts = user.last_seen_ms
    tiers, source = thresholds(user, overrides, rules)
    newest, before = negative_kinds(user, rules)
    reasons = [
        reason("recent_active_days", float(k), round(expected, 3)),
        reason("active_day_rate", round(k / RECENT, 3), round(rate, 3)),
    ]
    reasons += [
        reason(f"recent_{kind}", 1.0) for kind in KIND_ORDER if kind in newest or kind in before
    ]
    return [
        {
            "signal_id": f"{user_id}:{ts}:declining",
            "kind": "declining",
            "user_id": user_id,
            "tenant": user.tenant,
            "segment": user.segment,
            "episode": ts,
            "as_of": ts,
            "last_seen": ts,
            "inactive_ms": 0,
            "threshold_ms": tiers[0],
            "threshold_source": source,
            "risk": risk_at(user, ts, rules),
            "horizon_ms": rules.horizon_ms,
            "reasons": reasons,
            "group": group_of(user_id, rules),
            "risk_model": rules.risk_model,
            "schema_version": 1,
        }
    ]


# -- activation ----------------------------------------------------------------


def activate(user: User, user_id: str, event: Event, rules: Rules) -> list[dict[str, Any]]:
    """After an applied event: the transition to active when it activates the user."""
    if event.type not in rules.activation_types or user.activated:
        return []
    user.activated = True
    if user.tier is not None or user.stage not in ("new", "not_activated"):
        return []
    days = round((event.ts_ms - user.first_seen_ms) / rules.day_ms, 3)
    moved = transition(
        user,
        user_id,
        user.stage,
        "active",
        event.ts_ms,
        [reason("activated_after_days", days)],
        rules,
    )
    user.stage = "active"
    return [moved]
