"""What the clock decides about a user, and the records the rules emit.

Tiers fall due at ``last_seen + threshold`` (the user's own cadence, then
segment, tenant, the population's cadence, defaults); a tier whose risk is
below its minimum (``Rules.min_risk``) moves the tier and the stage but is no
signal; time alone ends the ``new`` and ``resurrected``
days (with activation on, ``new`` ends only by activating); a user with a
tier seen again is ``reactivated`` when the episode had a signal. With activation on, a user neither
activated nor signalled gets ``not_activated`` at ``first_seen +
activation_days`` days, and the ``not_activated`` stage when in ``new``; on
a tie a tier goes first, then the deadline, then a stage change by time. Signals and
transitions are the JSON objects of docs/CONTRACTS.md, reasons in the order
of its table.
"""

from __future__ import annotations

import hashlib
from typing import Any

from reference.records import Event, Rules
from reference.risk import WINDOW_DAYS, risk
from reference.user import WEEK_DAYS, User, negative_kinds

TIERS = ("at_risk", "dormant", "churned")
USER_MULTIPLES = (3, 6, 12)  # per-user tiers: multiples of the usual gap
KIND_ORDER = ("checkout_failed", "support_ticket", "app_error", "cancellation")


def group_of(user_id: str, rules: Rules) -> str:
    digest = hashlib.sha256((rules.holdout_salt + user_id).encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    return "holdout" if share < rules.holdout_share else "treatment"


def reactivation(
    user: User, user_id: str, event: Event, tiers: tuple[int, int, int], source: str, rules: Rules
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The signal (``None`` when no signal opened the episode) and transition of a
    user with a tier seen again (``user`` as before)."""
    assert user.tier is not None
    gap_ms = event.ts_ms - user.last_seen_ms
    reasons = [reason("returned_after_days", round(gap_ms / rules.day_ms, 3))]
    to_stage = "active" if user.tier == "at_risk" else "resurrected"
    if rules.activation_types and not user.activated:
        to_stage = "not_activated" if user.not_activated_signalled else "new"
    moved = transition(user, user_id, user.tier, to_stage, event.ts_ms, reasons, rules)
    if user.first_signal_as_of_ms is None:
        return None, moved
    threshold = (tiers[TIERS.index(user.tier)], source)
    signal = {
        **signal_fields(
            user, user_id, "reactivated", event.ts_ms, gap_ms, threshold, reasons, rules
        ),
        "tier_reached": user.tier,
        "gap_ms": gap_ms,
        "time_to_return_ms": event.ts_ms - user.first_signal_as_of_ms,
        "late": event.ts_ms < user.first_signal_as_of_ms,
    }
    return signal, moved


# -- the clock -----------------------------------------------------------------


def thresholds(
    user: User, overrides: dict[str, tuple[int, int, int]], rules: Rules
) -> tuple[tuple[int, int, int], str]:
    """The user's own cadence, then segment, tenant, the population's cadence
    (its segment's, else its tenant's), defaults."""
    if (
        rules.adaptive_min_days
        and user.active_days >= rules.adaptive_min_days
        and user.usual_gap_centidays > 0
    ):
        return cadence_tiers(user.usual_gap_centidays, rules), "user"
    if user.segment and f"{user.tenant}/{user.segment}" in overrides:
        return overrides[f"{user.tenant}/{user.segment}"], "segment"
    if user.tenant in overrides:
        return overrides[user.tenant], "tenant"
    population = rules.population.get(f"{user.tenant}/{user.segment}") if user.segment else None
    population = population or rules.population.get(user.tenant)
    if population:
        return cadence_tiers(population, rules), "population"
    return (rules.at_risk_ms, rules.dormant_ms, rules.churned_ms), "default"


def cadence_tiers(gap_centidays: int, rules: Rules) -> tuple[int, int, int]:
    """Multiples of a usual gap, each within the minimum and maximum threshold."""
    gap_ms = gap_centidays * rules.day_ms / 100
    at_risk, dormant, churned = (
        min(rules.threshold_max_ms, max(rules.threshold_min_ms, round(gap_ms * multiple)))
        for multiple in USER_MULTIPLES
    )
    dormant = max(at_risk, dormant)
    return at_risk, dormant, max(dormant, churned)


def stage_ends_ms(user: User, rules: Rules) -> int | None:
    """When time alone moves the stage on (new → active, resurrected → active)."""
    if user.tier is not None:
        return None
    if user.stage == "new":
        if rules.activation_types:
            return None  # new ends by activating
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
    withheld: bool = False,
    unsignalled: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Everything due at or before ``clock_ms``, in time order (a tier first on a tie);
    no tier when ``withheld`` (``reference.activity.tiers_withheld``). A tier signal
    whose risk is below the tier's minimum goes to ``unsignalled`` instead."""
    tiers, source = thresholds(user, overrides, rules)
    signals: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    while True:
        level = 0 if user.tier is None else TIERS.index(user.tier) + 1
        tier_due = user.last_seen_ms + tiers[level] if level < len(TIERS) and not withheld else None
        stage_due = stage_ends_ms(user, rules)
        deadline = activation_due(user, rules)
        if (
            tier_due is not None
            and tier_due <= clock_ms
            and (stage_due is None or tier_due <= stage_due)
            and (deadline is None or tier_due <= deadline)
        ):
            kind = TIERS[level]
            signal = tier_signal(user, user_id, kind, tier_due, tiers[level], source, rules)
            published = signal["risk"] >= rules.min_risk[level]
            if published:
                signals.append(signal)
            elif unsignalled is not None:
                unsignalled.append(signal)
            if user.stage != kind:
                moves.append(
                    transition(user, user_id, user.stage, kind, tier_due, signal["reasons"], rules)
                )
            user.tier = user.stage = kind
            if user.first_signal_as_of_ms is None and published:
                user.first_signal_as_of_ms = tier_due
        elif (
            deadline is not None
            and deadline <= clock_ms
            and (stage_due is None or deadline <= stage_due)
        ):
            signal, moved = not_activated(user, user_id, deadline, rules)
            signals.append(signal)
            moves.extend(moved)
        elif stage_due is not None and stage_due <= clock_ms:
            reasons = [reason("active_days", float(user.active_days))]
            moves.append(transition(user, user_id, user.stage, "active", stage_due, reasons, rules))
            user.stage = "active"
        else:
            return signals, moves


# -- outputs -------------------------------------------------------------------


def reason(code: str, value: float, baseline: float | None = None) -> dict[str, Any]:
    return {"code": code, "value": value, "baseline": baseline}


def signal_fields(
    user: User,
    user_id: str,
    kind: str,
    as_of_ms: int,
    inactive_ms: int,
    threshold: tuple[int, str],
    reasons: list[dict[str, Any]],
    rules: Rules,
    episode_ms: int | None = None,
) -> dict[str, Any]:
    """The fields every signal has (docs/CONTRACTS.md); ``threshold`` is
    ``(threshold_ms, threshold_source)``, the episode ``last_seen`` unless given."""
    episode = user.last_seen_ms if episode_ms is None else episode_ms
    return {
        "signal_id": f"{user_id}:{episode}:{kind}",
        "kind": kind,
        "user_id": user_id,
        "tenant": user.tenant,
        "segment": user.segment,
        "episode": episode,
        "as_of": as_of_ms,
        "last_seen": user.last_seen_ms,
        "inactive_ms": inactive_ms,
        "threshold_ms": threshold[0],
        "threshold_source": threshold[1],
        "risk": risk_at(user, as_of_ms, rules),
        "horizon_ms": rules.horizon_ms,
        "reasons": reasons,
        "group": group_of(user_id, rules),
        "risk_model": rules.risk_model,
        "schema_version": 1,
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
    inactive_ms = due_ms - user.last_seen_ms
    reasons = tier_reasons(user, inactive_ms, threshold_ms, rules)
    return signal_fields(
        user, user_id, kind, due_ms, inactive_ms, (threshold_ms, source), reasons, rules
    )


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


# -- activation ----------------------------------------------------------------


def activation_due(user: User, rules: Rules) -> int | None:
    if not rules.activation_types or user.activated or user.not_activated_signalled:
        return None
    return user.first_seen_ms + rules.activation_days * rules.day_ms


def not_activated(
    user: User, user_id: str, due_ms: int, rules: Rules
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The signal at the deadline, and the stage change when the user is new."""
    deadline_ms = rules.activation_days * rules.day_ms
    reasons = [
        reason("active_days", float(user.active_days)),
        reason("days_since_first_seen", round(deadline_ms / rules.day_ms, 3)),
    ]
    inactive_ms = max(0, due_ms - user.last_seen_ms)
    threshold = (deadline_ms, "activation")
    unactivated = signal_fields(
        user,
        user_id,
        "not_activated",
        due_ms,
        inactive_ms,
        threshold,
        reasons,
        rules,
        episode_ms=user.first_seen_ms,
    )
    moves = []
    if user.stage == "new":
        moves.append(transition(user, user_id, "new", "not_activated", due_ms, reasons, rules))
        user.stage = "not_activated"
    user.not_activated_signalled = True
    return unactivated, moves
