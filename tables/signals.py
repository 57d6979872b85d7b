"""What a signal and a transition say: reasons, the holdout group and experiment arm,
and the records of each signal kind."""

from __future__ import annotations

from collections.abc import Iterable

from tables.activation import NOT_ACTIVATED, SOURCE_ACTIVATION
from tables.cadence import recent_negative_kinds
from tables.decline import DECLINING, RECENT_DAYS, baseline_rate, recent_days
from tables.groups import arm_group, arm_of, group_of
from tables.lifecycle import STAGES
from tables.model import REACTIVATED, Emission, ModelConfig, ModelEvent, Reason, Transition
from tables.risk import expected_active_days
from tables.state import DAY_WINDOW, TIER_NAMES, UserState, counts_by_age
from tables.user_risk import risk_at


def tier_reasons(
    state: UserState, inactive_ms: int, threshold_ms: int, config: ModelConfig
) -> list[Reason]:
    """Why this user looks inactive: codes with values and the user's own baselines."""
    day_ms = config.day_ms
    inactive_days = round(inactive_ms / day_ms, 3)
    reasons = [Reason("inactive_days", inactive_days, round(threshold_ms / day_ms, 3))]
    if state.active_days >= 3 and state.usual_gap_centidays > 0:
        reasons.append(Reason("gap_vs_usual", inactive_days, state.usual_gap_centidays / 100))
    counts = counts_by_age(state, state.last_seen_ms // day_ms)
    recent_week = sum(counts[:7])
    earlier_weeks = sum(counts[7:DAY_WINDOW]) / 3
    if earlier_weeks > 0 and recent_week < earlier_weeks:
        reasons.append(Reason("frequency_drop", float(recent_week), round(earlier_weeks, 3)))
    active_recent = sum(1 for count in counts[:7] if count)
    active_earlier = sum(1 for count in counts[7:DAY_WINDOW] if count) / 3
    if active_earlier > 0 and active_recent < active_earlier:
        reasons.append(Reason("active_days_drop", float(active_recent), round(active_earlier, 3)))
    if state.streak_days >= 3:
        reasons.append(Reason("streak_broken", float(state.streak_days), None))
    for kind in recent_negative_kinds(state.negative_flags):
        reasons.append(Reason(f"recent_{kind}", 1.0, None))
    if state.active_days == 1:
        reasons.append(Reason("single_visit", 1.0, None))
    age_days = (state.last_seen_ms + inactive_ms - state.first_seen_ms) / day_ms
    expected = expected_active_days(config.risk, state.active_days, age_days) * inactive_days
    reasons.append(Reason("expected_active_days", round(expected, 3), None))
    return reasons


def signal_group(
    user_id: str, state: UserState, config: ModelConfig, reasons: Iterable[Reason] | None = None
) -> tuple[str, str | None]:
    """``(group, arm)`` of the user's signals in the episode ``state`` is in (or would
    begin): the arm (``None`` without an experiment) follows the episode's reason
    codes, which the silence does not change (tables.groups)."""
    if not config.experiment_id:
        return group_of(user_id, config.holdout_salt, config.holdout_share), None
    if reasons is None:
        reasons = tier_reasons(state, 0, 0, config)
    arm = arm_of((reason.code for reason in reasons), config.experiment_reasons)
    group = arm_group(user_id, config.holdout_salt, config.experiment_id, arm, config.holdout_share)
    return group, arm


def stage_transition(
    state: UserState,
    user_id: str,
    from_stage: str | None,
    to_stage: int,
    as_of_ms: int,
    reasons: tuple[Reason, ...],
    config: ModelConfig,
) -> Transition:
    return Transition(
        user_id=user_id,
        tenant=state.tenant,
        segment=state.segment,
        from_stage=from_stage,
        to_stage=STAGES[to_stage],
        as_of=as_of_ms,
        episode=state.last_seen_ms,
        reasons=reasons,
        group=group_of(user_id, config.holdout_salt, config.holdout_share),
    )


def emission(
    kind: str,
    state: UserState,
    user_id: str,
    as_of_ms: int,
    config: ModelConfig,
    *,
    episode: int,
    inactive_ms: int,
    threshold: tuple[int, str],
    reasons: tuple[Reason, ...],
    arm_by_reasons: bool,
    tier_reached: str | None = None,
    gap_ms: int | None = None,
    time_to_return_ms: int | None = None,
    late: bool | None = None,
    churn_intent_as_of: int | None = None,
) -> Emission:
    """A signal of ``kind`` about ``state`` as of ``as_of_ms``: the user's labels, the
    risk then, the ``(threshold_ms, source)`` in force, the holdout group and the
    experiment arm. The arm follows ``reasons`` when ``arm_by_reasons`` (a signal
    whose own reasons make its episode), else the episode's tier reasons."""
    threshold_ms, source = threshold
    group, arm = signal_group(user_id, state, config, reasons if arm_by_reasons else None)
    return Emission(
        kind=kind,
        user_id=user_id,
        tenant=state.tenant,
        segment=state.segment,
        episode=episode,
        as_of=as_of_ms,
        last_seen=state.last_seen_ms,
        inactive_ms=inactive_ms,
        threshold_ms=threshold_ms,
        threshold_source=source,
        risk=risk_at(state, as_of_ms, config),
        horizon_ms=config.horizon_ms,
        reasons=reasons,
        group=group,
        tier_reached=tier_reached,
        gap_ms=gap_ms,
        time_to_return_ms=time_to_return_ms,
        late=late,
        arm=arm,
        churn_intent_as_of=churn_intent_as_of,
        risk_model=config.risk_model,
    )


def tier_signal(
    state: UserState,
    user_id: str,
    tier: int,
    due_ms: int,
    threshold: tuple[int, str],
    config: ModelConfig,
) -> Emission:
    """The signal of ``tier`` (at_risk, dormant, churned), due at ``due_ms``."""
    inactive_ms = due_ms - state.last_seen_ms
    reasons = tuple(tier_reasons(state, inactive_ms, threshold[0], config))
    return emission(
        TIER_NAMES[tier],
        state,
        user_id,
        due_ms,
        config,
        episode=state.last_seen_ms,
        inactive_ms=inactive_ms,
        threshold=threshold,
        reasons=reasons,
        arm_by_reasons=True,
    )


def reactivated_signal(
    state: UserState,
    event: ModelEvent,
    config: ModelConfig,
    first_as_of_ms: int,
    intent_ms: int | None = None,
) -> Emission:
    """``reactivated``: ``event`` returns the user after the episode's first signal at
    ``first_as_of_ms`` (a tier, or the churn intent at ``intent_ms``)."""
    tier = state.tier
    tiers, source = config.policy.resolve(state)
    day_ms = config.day_ms
    gap_ms = event.ts_ms - state.last_seen_ms
    returned = Reason("returned_after_days", round(gap_ms / day_ms, 3), None)
    reasons: tuple[Reason, ...] = (returned,)
    if intent_ms is not None:
        after = round((event.ts_ms - intent_ms) / day_ms, 3)
        reasons = (returned, Reason("after_churn_intent", after, None))
    return emission(
        REACTIVATED,
        state,
        event.user_id,
        event.ts_ms,
        config,
        episode=state.last_seen_ms,
        inactive_ms=gap_ms,
        threshold=(tiers[max(tier - 1, 0)], source),
        reasons=reasons,
        arm_by_reasons=False,
        tier_reached=TIER_NAMES[tier] if tier else None,
        gap_ms=gap_ms,
        time_to_return_ms=event.ts_ms - first_as_of_ms,
        late=event.ts_ms < first_as_of_ms,
        churn_intent_as_of=intent_ms,
    )


def declining_signal(state: UserState, event: ModelEvent, config: ModelConfig) -> Emission:
    """``declining``: the recent active days against the user's own baseline
    (``tables.decline``); its episode is the instant it was detected."""
    day_ms = config.day_ms
    tiers, source = config.policy.resolve(state)
    recent = recent_days(state.day_counts)
    rate = baseline_rate(
        state.baseline, state.last_seen_ms // day_ms - state.first_seen_ms // day_ms + 1
    )
    reasons = (
        Reason("recent_active_days", float(recent), round(RECENT_DAYS * rate, 3)),
        Reason("active_day_rate", round(recent / RECENT_DAYS, 3), round(rate, 3)),
        *(
            Reason(f"recent_{kind}", 1.0, None)
            for kind in recent_negative_kinds(state.negative_flags)
        ),
    )
    return emission(
        DECLINING,
        state,
        event.user_id,
        event.ts_ms,
        config,
        episode=event.ts_ms,
        inactive_ms=0,
        threshold=(tiers[0], source),
        reasons=reasons,
        arm_by_reasons=True,
    )


def not_activated_signal(
    state: UserState, user_id: str, due_ms: int, config: ModelConfig
) -> Emission:
    """``not_activated``: the deadline passed without an activation event; one per user
    (its episode is the first seen)."""
    deadline_ms = config.activation_days * config.day_ms
    reasons = (
        Reason("active_days", float(state.active_days), None),
        Reason("days_since_first_seen", round(deadline_ms / config.day_ms, 3), None),
    )
    return emission(
        NOT_ACTIVATED,
        state,
        user_id,
        due_ms,
        config,
        episode=state.first_seen_ms,
        inactive_ms=max(0, due_ms - state.last_seen_ms),
        threshold=(deadline_ms, SOURCE_ACTIVATION),
        reasons=reasons,
        arm_by_reasons=True,
    )
